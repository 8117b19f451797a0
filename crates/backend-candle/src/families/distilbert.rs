//! DistilBERT: BERT's layers under its own names (`q_lin`, `sa_layer_norm`, `ffn.lin1`…)
//! and config keys (`dim`, `n_layers`…), without token types.

use super::bert::post_norm_layer;
use super::config::{activation, root, Config};
use crate::encoder::attention::SelfAttention;
use crate::encoder::embeddings::{table, Embeddings, PositionTable, Positions};
use crate::encoder::kernels::layout::{Heads, Mask};
use crate::encoder::linear::Linear;
use crate::encoder::norm::Norm;
use crate::encoder::EncoderParts;
use candle_core::{bail, Result};
use candle_nn::VarBuilder;
use serde_json::Value;

/// DistilBERT hard-codes this epsilon for its layer norms (its config has no key for it).
const EPS: f64 = 1e-12;

pub fn load(config: &Value, vb: VarBuilder) -> Result<EncoderParts> {
    let config = Config(config);
    let hidden = config.usize(&["dim", "hidden_size"])?;
    let heads = config.usize(&["n_heads", "num_attention_heads"])?;
    let layers = config.usize(&["n_layers", "num_hidden_layers"])?;
    let inner = config.usize(&["hidden_dim", "intermediate_size"])?;
    let vocab = config.usize(&["vocab_size"])?;
    let positions = config.usize_or(&["max_position_embeddings"], 512)?;
    let act = activation(config.str_or(&["activation", "hidden_act"], "gelu")?)?;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        bail!("dim {hidden} is not a multiple of n_heads {heads}");
    }
    let layout = Heads::new(heads, hidden / heads);
    let vb = root(vb, "embeddings.word_embeddings.weight", &["distilbert"])?;
    let e = vb.pp("embeddings");
    let embeddings = Embeddings::new(table(&e, "word_embeddings", vocab, hidden)?, vocab)
        .with_positions(PositionTable {
            table: table(&e, "position_embeddings", positions, hidden)?,
            size: positions,
            numbering: Positions::FromZero,
        })
        .with_norm(Norm::layer(e.pp("LayerNorm"), hidden, EPS, true)?);
    let layers = (0..layers)
        .map(|n| {
            let vb = vb.pp(format!("transformer.layer.{n}"));
            let a = vb.pp("attention");
            let qkv = Linear::load(&a, &["q_lin", "k_lin", "v_lin"], hidden, hidden, true)?;
            let output = Linear::load(&a, &["out_lin"], hidden, hidden, true)?;
            Ok(post_norm_layer(
                SelfAttention::new(qkv, output, layout, Mask::Full)?,
                Linear::load(&vb.pp("ffn"), &["lin1"], hidden, inner, true)?,
                act,
                Linear::load(&vb.pp("ffn"), &["lin2"], inner, hidden, true)?,
                [
                    Norm::layer(vb.pp("sa_layer_norm"), hidden, EPS, true)?,
                    Norm::layer(vb.pp("output_layer_norm"), hidden, EPS, true)?,
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
        hidden,
    })
}
