//! The model families `embedding` serves on candle: each module reads its family's
//! `config.json` and tensor names and wires the shared blocks of [`crate::encoder`]; none
//! has attention or feed-forward code of its own.
//!
//! | family | `model_type` | wiring |
//! |---|---|---|
//! | BERT | `bert` | learned positions, token types, post-norm, plain feed-forward |
//! | XLM-RoBERTa | `xlm-roberta`, `roberta`, `camembert` | BERT with positions after the padding id |
//! | DistilBERT | `distilbert` | BERT without token types, its own tensor names |
//! | MPNet | `mpnet` | RoBERTa positions plus a relative bias shared by the layers |
//! | ModernBERT | `modernbert` | pre-norm, rotary (two bases), GeGLU, global and windowed layers |
//! | NomicBert | `nomic_bert` | rotary, SwiGLU, post-norm (nomic-ai's and transformers' names) |
//! | GTE | `new`, `gte` | rotary (NTK-scaled when configured), GeGLU, post-norm |
//! | Qwen3 | `qwen3` | decoder: causal, grouped-query heads, q/k RMS norms, SwiGLU |

mod bert;
mod config;
mod distilbert;
mod gte;
pub mod heads;
mod modernbert;
mod mpnet;
mod nomic;
mod qwen3;

use crate::encoder::PackedEncoder;
use candle_core::Result;
use candle_nn::VarBuilder;
use serde_json::Value;

/// A family of checkpoints the packed encoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT and MiniLM.
    Bert,
    /// XLM-RoBERTa, RoBERTa and CamemBERT (multilingual-e5, bge-m3).
    XlmRoberta,
    /// DistilBERT.
    DistilBert,
    /// MPNet (all-mpnet-base-v2).
    MpNet,
    /// ModernBERT (gte-modernbert, ModernBERT-embed).
    ModernBert,
    /// NomicBert (nomic-embed-text).
    NomicBert,
    /// GTE v1.5 (gte-base-en-v1.5).
    Gte,
    /// Qwen3 decoders (Qwen3-Embedding), last-token pooled.
    Qwen3,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 8] = [
        Family::Bert,
        Family::XlmRoberta,
        Family::DistilBert,
        Family::MpNet,
        Family::ModernBert,
        Family::NomicBert,
        Family::Gte,
        Family::Qwen3,
    ];

    /// The family's name in status.
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::XlmRoberta => "xlm-roberta",
            Family::DistilBert => "distilbert",
            Family::MpNet => "mpnet",
            Family::ModernBert => "modernbert",
            Family::NomicBert => "nomic_bert",
            Family::Gte => "gte",
            Family::Qwen3 => "qwen3",
        }
    }

    /// The `model_type` values of `config.json` that mean this family.
    pub fn model_types(self) -> &'static [&'static str] {
        match self {
            Family::Bert => &["bert"],
            Family::XlmRoberta => &["xlm-roberta", "roberta", "camembert"],
            Family::DistilBert => &["distilbert"],
            Family::MpNet => &["mpnet"],
            Family::ModernBert => &["modernbert"],
            Family::NomicBert => &["nomic_bert"],
            Family::Gte => &["new", "gte"],
            Family::Qwen3 => &["qwen3"],
        }
    }

    /// Every supported `model_type`, for error messages.
    pub fn supported() -> String {
        let types: Vec<&str> = Self::ALL
            .iter()
            .flat_map(|f| f.model_types())
            .copied()
            .collect();
        types.join(", ")
    }

    /// The family of a `config.json`: its `model_type` (a config without one is BERT, as
    /// the oldest sentence-transformers checkpoints are). `Err` holds the unknown type.
    pub fn detect(config: &Value) -> std::result::Result<Family, String> {
        let Some(model_type) = config.get("model_type").and_then(Value::as_str) else {
            return Ok(Family::Bert);
        };
        Self::ALL
            .into_iter()
            .find(|f| f.model_types().contains(&model_type))
            .ok_or_else(|| model_type.to_owned())
    }

    /// Whether a token sees only the tokens before it (decoders: pooled by their last token).
    pub fn is_causal(self) -> bool {
        self == Family::Qwen3
    }

    /// The encoder of a checkpoint of this family.
    pub fn load(self, config: &Value, vb: VarBuilder) -> Result<PackedEncoder> {
        let dtype = vb.dtype();
        let device = vb.device().clone();
        let parts = match self {
            Family::Bert => bert::load(config, vb, bert::Variant::Bert)?,
            Family::XlmRoberta => bert::load(config, vb, bert::Variant::Roberta)?,
            Family::DistilBert => distilbert::load(config, vb)?,
            Family::MpNet => mpnet::load(config, vb)?,
            Family::ModernBert => modernbert::load(config, vb)?,
            Family::NomicBert => nomic::load(config, vb)?,
            Family::Gte => gte::load(config, vb)?,
            Family::Qwen3 => qwen3::load(config, vb)?,
        };
        PackedEncoder::new(parts, &device, dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_detected_by_model_type() {
        let of = |t: &str| Family::detect(&serde_json::json!({ "model_type": t }));
        assert_eq!(of("camembert"), Ok(Family::XlmRoberta));
        assert_eq!(of("new"), Ok(Family::Gte));
        assert_eq!(of("qwen3"), Ok(Family::Qwen3));
        assert_eq!(of("llama"), Err("llama".into()));
        assert_eq!(Family::detect(&serde_json::json!({})), Ok(Family::Bert));
        assert!(Family::supported().contains("modernbert"));
    }
}
