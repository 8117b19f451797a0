//! BERT, and the RoBERTa variant (XLM-RoBERTa, CamemBERT): post-norm layers, learned
//! positions, token types; RoBERTa numbers positions after its padding id.

use super::config::{activation, root, Config};
use crate::encoder::attention::SelfAttention;
use crate::encoder::embeddings::{table, Embeddings, PositionTable, Positions};
use crate::encoder::feed_forward::FeedForward;
use crate::encoder::kernels::layout::{Heads, Mask};
use crate::encoder::layer::{Layer, Norms};
use crate::encoder::linear::Linear;
use crate::encoder::norm::Norm;
use crate::encoder::EncoderParts;
use candle_core::{bail, Result};
use candle_nn::VarBuilder;
use serde_json::Value;

/// Which numbering of positions the checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Positions from 0.
    Bert,
    /// Positions from `pad_token_id + 1`.
    Roberta,
}

/// The sizes every BERT-like config gives.
pub(super) struct Sizes {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub positions: usize,
    pub eps: f64,
}

impl Sizes {
    pub fn read(config: &Config) -> Result<Self> {
        let sizes = Self {
            hidden: config.usize(&["hidden_size"])?,
            heads: config.usize(&["num_attention_heads"])?,
            layers: config.usize(&["num_hidden_layers"])?,
            intermediate: config.usize(&["intermediate_size"])?,
            vocab: config.usize(&["vocab_size"])?,
            positions: config.usize_or(&["max_position_embeddings"], 512)?,
            eps: config.f64_or(&["layer_norm_eps"], 1e-12)?,
        };
        sizes.heads()?;
        Ok(sizes)
    }

    /// Heads that split the hidden size evenly.
    pub fn heads(&self) -> Result<Heads> {
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden,
                self.heads
            );
        }
        Ok(Heads::new(self.heads, self.hidden / self.heads))
    }
}

/// A post-norm layer with a plain feed-forward, from its attention and its linear layers.
pub(super) fn post_norm_layer(
    attention: SelfAttention,
    up: Linear,
    act: crate::encoder::kernels::math::Activation,
    down: Linear,
    norms: [Norm; 2],
) -> Layer {
    let [attention_norm, feed_forward_norm] = norms;
    Layer {
        attention,
        feed_forward: FeedForward::Plain { up, act, down },
        norms: Norms::Post {
            attention: attention_norm,
            feed_forward: feed_forward_norm,
        },
    }
}

pub fn load(config: &Value, vb: VarBuilder, variant: Variant) -> Result<EncoderParts> {
    let config = Config(config);
    let s = Sizes::read(&config)?;
    let act = activation(config.str_or(&["hidden_act"], "gelu")?)?;
    let model_type = config.str_or(&["model_type"], "bert")?.to_owned();
    let prefixes = [
        "bert",
        "roberta",
        "xlm-roberta",
        "camembert",
        model_type.as_str(),
    ];
    let vb = root(vb, "embeddings.word_embeddings.weight", &prefixes)?;
    let e = vb.pp("embeddings");
    let numbering = match variant {
        Variant::Bert => Positions::FromZero,
        Variant::Roberta => Positions::AfterPadding(config.usize_or(&["pad_token_id"], 1)? as u32),
    };
    let types = config.usize_or(&["type_vocab_size"], 2)?;
    let mut embeddings = Embeddings::new(table(&e, "word_embeddings", s.vocab, s.hidden)?, s.vocab)
        .with_positions(PositionTable {
            table: table(&e, "position_embeddings", s.positions, s.hidden)?,
            size: s.positions,
            numbering,
        })
        .with_norm(Norm::layer(e.pp("LayerNorm"), s.hidden, s.eps, true)?);
    if types > 0 {
        embeddings =
            embeddings.with_types(table(&e, "token_type_embeddings", types, s.hidden)?, types);
    }
    let heads = s.heads()?;
    let (h, i) = (s.hidden, s.intermediate);
    let layers = (0..s.layers)
        .map(|n| {
            let vb = vb.pp(format!("encoder.layer.{n}"));
            let attention = vb.pp("attention");
            let qkv = Linear::load(
                &attention.pp("self"),
                &["query", "key", "value"],
                h,
                h,
                true,
            )?;
            let output = Linear::load(&attention.pp("output"), &["dense"], h, h, true)?;
            Ok(post_norm_layer(
                SelfAttention::new(qkv, output, heads, Mask::Full)?,
                Linear::load(&vb.pp("intermediate"), &["dense"], h, i, true)?,
                act,
                Linear::load(&vb.pp("output"), &["dense"], i, h, true)?,
                [
                    Norm::layer(attention.pp("output.LayerNorm"), h, s.eps, true)?,
                    Norm::layer(vb.pp("output.LayerNorm"), h, s.eps, true)?,
                ],
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EncoderParts {
        embeddings,
        layers,
        final_norm: None,
        relative_bias: None,
        max_tokens: None,
        hidden: s.hidden,
    })
}
