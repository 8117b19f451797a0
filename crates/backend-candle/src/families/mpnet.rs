//! MPNet: BERT-like post-norm layers (`attention.attn.{q,k,v,o}`), positions numbered after
//! the padding id, no token types, and one relative position bias (`encoder.
//! relative_attention_bias`, T5's two-way buckets) added to the scores of every layer.

use super::bert::{post_norm_layer, Sizes};
use super::config::{activation, root, Config};
use crate::encoder::attention::SelfAttention;
use crate::encoder::embeddings::{table, Embeddings, PositionTable, Positions};
use crate::encoder::kernels::layout::Mask;
use crate::encoder::linear::Linear;
use crate::encoder::norm::Norm;
use crate::encoder::{BucketBias, EncoderParts};
use candle_core::{DType, Result};
use candle_nn::VarBuilder;
use serde_json::Value;

/// transformers' `MPNetEmbeddings` fixes its padding index at 1 whatever the config says.
const PADDING_IDX: u32 = 1;
/// `MPNetEncoder.compute_position_bias` is called with its defaults: 32 buckets, distances
/// up to 128 (not the config's `relative_attention_num_buckets`).
const BUCKETS: usize = 32;
const MAX_DISTANCE: usize = 128;

pub fn load(config: &Value, vb: VarBuilder) -> Result<EncoderParts> {
    let config = Config(config);
    let s = Sizes::read(&config)?;
    let act = activation(config.str_or(&["hidden_act"], "gelu")?)?;
    let table_rows = config.usize_or(&["relative_attention_num_buckets"], BUCKETS)?;
    if table_rows < BUCKETS {
        candle_core::bail!(
            "relative_attention_num_buckets {table_rows} is below the 32 buckets MPNet reads"
        );
    }
    let vb = root(vb, "embeddings.word_embeddings.weight", &["mpnet"])?;
    let e = vb.pp("embeddings");
    let embeddings = Embeddings::new(table(&e, "word_embeddings", s.vocab, s.hidden)?, s.vocab)
        .with_positions(PositionTable {
            table: table(&e, "position_embeddings", s.positions, s.hidden)?,
            size: s.positions,
            numbering: Positions::AfterPadding(PADDING_IDX),
        })
        .with_norm(Norm::layer(e.pp("LayerNorm"), s.hidden, s.eps, true)?);
    let heads = s.heads()?;
    let bias = vb
        .pp("encoder.relative_attention_bias")
        .get((table_rows, s.heads), "weight")?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (h, i) = (s.hidden, s.intermediate);
    let layers = (0..s.layers)
        .map(|n| {
            let vb = vb.pp(format!("encoder.layer.{n}"));
            let attention = vb.pp("attention");
            let qkv = Linear::load(&attention.pp("attn"), &["q", "k", "v"], h, h, true)?;
            let output = Linear::load(&attention.pp("attn"), &["o"], h, h, true)?;
            Ok(post_norm_layer(
                SelfAttention::new(qkv, output, heads, Mask::Full)?,
                Linear::load(&vb.pp("intermediate"), &["dense"], h, i, true)?,
                act,
                Linear::load(&vb.pp("output"), &["dense"], i, h, true)?,
                [
                    Norm::layer(attention.pp("LayerNorm"), h, s.eps, true)?,
                    Norm::layer(vb.pp("output.LayerNorm"), h, s.eps, true)?,
                ],
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EncoderParts {
        embeddings,
        layers,
        final_norm: None,
        relative_bias: Some(BucketBias {
            values: bias,
            heads: s.heads,
            buckets: BUCKETS,
            max_distance: MAX_DISTANCE,
        }),
        max_tokens: None,
        hidden: s.hidden,
    })
}
