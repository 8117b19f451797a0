//! `config.json` of T5, T5 v1.1 and FLAN-T5 checkpoints, with Hugging Face's defaults.

use model_manager_generate::token_ids;
use serde::Deserialize;

/// The parts of a Hugging Face `T5Config` the model reads.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    /// `t5` or `mt5` (others, such as `umt5` with a position bias in every block, differ).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Rows of the shared embedding (and of the output layer).
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    /// Width of one attention head.
    #[serde(default = "default_d_kv")]
    pub d_kv: usize,
    /// Width of the feed-forward layer.
    #[serde(default = "default_d_ff")]
    pub d_ff: usize,
    /// Encoder blocks.
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    /// Decoder blocks (`num_layers` when absent).
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Attention heads.
    #[serde(default = "default_heads")]
    pub num_heads: usize,
    /// Relative-position buckets.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distance from which all positions share the last bucket.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMS layer norm epsilon.
    #[serde(default = "default_epsilon")]
    pub layer_norm_epsilon: f64,
    /// `relu` (T5), `gated-gelu` (T5 v1.1, FLAN-T5), `gated-silu`, …
    #[serde(default = "default_feed_forward")]
    pub feed_forward_proj: String,
    /// The activation as saved by recent transformers; overrides `feed_forward_proj`'s.
    #[serde(default)]
    pub dense_act_fn: Option<String>,
    /// Whether the feed-forward is gated, as saved by recent transformers.
    #[serde(default)]
    pub is_gated_act: Option<bool>,
    /// Whether the output layer is the shared embedding (then the decoder output is scaled
    /// by `d_model ** -0.5` first, as Hugging Face does).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// A T5 checkpoint is an encoder-decoder.
    #[serde(default = "default_true")]
    pub is_encoder_decoder: bool,
    /// Padding id (also the decoder start when `decoder_start_token_id` is absent).
    #[serde(default, deserialize_with = "token_ids::id_or_null")]
    pub pad_token_id: u32,
    /// End-of-sequence id (the first, when config.json lists several).
    #[serde(
        default = "token_ids::default_eos",
        deserialize_with = "token_ids::first_id"
    )]
    pub eos_token_id: u32,
    /// First decoder input.
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
}

/// The feed-forward block's activation and whether it is gated (`wi_0`, `wi_1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedForwardKind {
    /// Two input projections multiplied (`act(wi_0 x) * wi_1 x`) instead of one.
    pub gated: bool,
    /// The activation.
    pub activation: Activation,
}

/// Activations T5 checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `relu`.
    Relu,
    /// The tanh approximation of GELU (`gelu_new`; what `gated-gelu` means in Hugging Face).
    GeluTanh,
    /// The exact GELU.
    GeluErf,
    /// `silu`.
    Silu,
}

impl T5Config {
    /// Decoder blocks.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// The first decoder input.
    pub fn decoder_start(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or(self.pad_token_id)
    }

    /// Width of all heads together.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// `feed_forward_proj` parsed the way Hugging Face's `T5Config` does; `dense_act_fn` and
    /// `is_gated_act`, when the file has them, win (they are set after it in transformers).
    pub fn feed_forward(&self) -> Result<FeedForwardKind, String> {
        let proj = self.feed_forward_proj.as_str();
        let (gated, name) = match proj.strip_prefix("gated-") {
            Some(name) => (true, name),
            None => (false, proj),
        };
        let gated = self.is_gated_act.unwrap_or(gated);
        let activation = match self.dense_act_fn.as_deref() {
            Some(explicit) => activation(explicit, false),
            // Hugging Face maps `gated-gelu` to `gelu_new` for backwards compatibility.
            None => activation(name, proj == "gated-gelu"),
        }
        .ok_or_else(|| {
            format!(
                "feed_forward_proj {proj:?} / dense_act_fn {:?} is not supported (relu, gelu, \
                 gelu_new, silu, optionally gated-)",
                self.dense_act_fn
            )
        })?;
        Ok(FeedForwardKind { gated, activation })
    }

    /// Checks the sizes before any tensor is read, so a bad config names itself.
    pub fn validate(&self) -> Result<(), String> {
        self.feed_forward()?;
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} is 0"));
        }
        if !self.is_encoder_decoder {
            return Err("is_encoder_decoder is false: not a T5 encoder-decoder".into());
        }
        if let Some(kind) = self
            .model_type
            .as_deref()
            .filter(|k| !["t5", "mt5"].contains(k))
        {
            return Err(format!("model_type {kind:?} is not T5 (t5 or mt5)"));
        }
        if self.num_layers == 0 || self.decoder_layers() == 0 {
            return Err("num_layers and num_decoder_layers must be at least 1".into());
        }
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 2 {
            return Err(
                "relative_attention_max_distance must exceed half of relative_attention_num_buckets"
                    .into(),
            );
        }
        if self.relative_attention_num_buckets < 4 {
            return Err("relative_attention_num_buckets must be at least 4".into());
        }
        for (name, id) in [
            ("eos_token_id", self.eos_token_id),
            ("decoder_start_token_id", self.decoder_start()),
        ] {
            if id as usize >= self.vocab_size {
                return Err(format!("{name} {id} is outside the vocabulary"));
            }
        }
        Ok(())
    }
}

/// The activation named `name`; `legacy_gated_gelu`: `gelu` means the tanh approximation.
fn activation(name: &str, legacy_gated_gelu: bool) -> Option<Activation> {
    Some(match name {
        "relu" => Activation::Relu,
        "gelu" if legacy_gated_gelu => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "silu" | "swish" => Activation::Silu,
        _ => return None,
    })
}

fn default_d_model() -> usize {
    512
}
fn default_d_kv() -> usize {
    64
}
fn default_d_ff() -> usize {
    2048
}
fn default_layers() -> usize {
    6
}
fn default_heads() -> usize {
    8
}
fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_epsilon() -> f64 {
    1e-6
}
fn default_feed_forward() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> T5Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_follow_hugging_face() {
        let c = config(r#"{"vocab_size": 32128}"#);
        assert_eq!((c.d_model, c.num_heads, c.decoder_layers()), (512, 8, 6));
        assert!(c.tie_word_embeddings);
        assert_eq!(c.decoder_start(), 0);
        assert_eq!(
            c.feed_forward().unwrap(),
            FeedForwardKind {
                gated: false,
                activation: Activation::Relu
            }
        );
        let flan = config(r#"{"vocab_size": 32128, "feed_forward_proj": "gated-gelu"}"#);
        assert_eq!(
            flan.feed_forward().unwrap(),
            FeedForwardKind {
                gated: true,
                activation: Activation::GeluTanh
            }
        );
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let err = config(r#"{"vocab_size": 8, "feed_forward_proj": "tanh"}"#)
            .validate()
            .unwrap_err();
        assert!(err.contains("tanh"), "{err}");
        let err = config(r#"{"vocab_size": 8, "d_kv": 0}"#)
            .validate()
            .unwrap_err();
        assert!(err.contains("d_kv"), "{err}");
        let err = config(r#"{"vocab_size": 1}"#).validate().unwrap_err();
        assert!(err.contains("eos_token_id"), "{err}");
        for (json, needle) in [
            (r#"{"vocab_size": 8, "num_layers": 0}"#, "num_layers"),
            (r#"{"vocab_size": 8, "model_type": "umt5"}"#, "umt5"),
            (
                r#"{"vocab_size": 8, "relative_attention_max_distance": 8}"#,
                "max_distance",
            ),
        ] {
            let err = config(json).validate().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn recent_transformers_fields_are_read() {
        let c = config(
            r#"{"vocab_size": 8, "eos_token_id": [1, 2], "pad_token_id": null,
                "feed_forward_proj": "relu", "dense_act_fn": "silu", "is_gated_act": true}"#,
        );
        assert_eq!((c.eos_token_id, c.pad_token_id), (1, 0));
        assert_eq!(
            c.feed_forward().unwrap(),
            FeedForwardKind {
                gated: true,
                activation: Activation::Silu
            }
        );
    }
}
