//! Qwen3 decoders as embedders (Qwen3-Embedding): causal attention with grouped-query
//! heads and RMS norms of each query and key head, rotary positions, SwiGLU, pre-norm
//! layers with RMS norms, no biases; pooled by the last token.

use super::config::{activation, root, Config};
use crate::encoder::attention::{HeadNorms, SelfAttention};
use crate::encoder::embeddings::{table, Embeddings};
use crate::encoder::feed_forward::FeedForward;
use crate::encoder::kernels::layout::{Heads, Mask};
use crate::encoder::kernels::rotary::RotaryStyle;
use crate::encoder::layer::{Layer, Norms};
use crate::encoder::linear::Linear;
use crate::encoder::norm::Norm;
use crate::encoder::rotary::Rotary;
use crate::encoder::EncoderParts;
use candle_core::{bail, Result};
use candle_nn::VarBuilder;
use serde_json::Value;

pub fn load(config: &Value, vb: VarBuilder) -> Result<EncoderParts> {
    let config = Config(config);
    config.refuse_rope_scaling()?;
    if config.bool_or(&["use_sliding_window"], false)? {
        bail!("config.json: use_sliding_window is not supported");
    }
    let hidden = config.usize(&["hidden_size"])?;
    let heads = config.usize(&["num_attention_heads"])?;
    let kv_heads = config.usize_or(&["num_key_value_heads"], heads)?;
    let head_dim = config.usize_or(&["head_dim"], hidden / heads.max(1))?;
    let layers = config.usize(&["num_hidden_layers"])?;
    let inner = config.usize(&["intermediate_size"])?;
    let vocab = config.usize(&["vocab_size"])?;
    let eps = config.f64_or(&["rms_norm_eps"], 1e-6)?;
    let bias = config.bool_or(&["attention_bias"], false)?;
    let act = activation(config.str_or(&["hidden_act"], "silu")?)?;
    let theta = config.rope_theta(None, &["rope_theta"], 1_000_000.0)?;
    let layout = Heads {
        heads,
        kv_heads,
        head_dim,
    };
    if !layout.is_valid() {
        bail!("{heads} attention heads do not split into groups of {kv_heads} key/value heads");
    }
    let vb = root(vb, "embed_tokens.weight", &["model"])?;
    let embeddings = Embeddings::new(table(&vb, "embed_tokens", vocab, hidden)?, vocab);
    let layers = (0..layers)
        .map(|n| {
            let vb = vb.pp(format!("layers.{n}"));
            let a = vb.pp("self_attn");
            let part = |name: &str, outputs: usize| -> Result<_> {
                let w = a.get((outputs, hidden), &format!("{name}.weight"))?;
                let b = match bias {
                    true => Some(a.get(outputs, &format!("{name}.bias"))?),
                    false => None,
                };
                Ok((w, b))
            };
            let parts = [
                part("q_proj", heads * head_dim)?,
                part("k_proj", kv_heads * head_dim)?,
                part("v_proj", kv_heads * head_dim)?,
            ];
            let weights: Vec<_> = parts.iter().map(|(w, _)| w.clone()).collect();
            let biases: Option<Vec<_>> = parts.iter().map(|(_, b)| b.clone()).collect();
            let qkv = Linear::from_parts(&weights, biases.as_deref())?;
            let output = Linear::load(&a, &["o_proj"], heads * head_dim, hidden, bias)?;
            let attention = SelfAttention::new(qkv, output, layout, Mask::Causal)?
                .with_rotary(Rotary::new(theta, head_dim, RotaryStyle::Halves))?
                .with_head_norms(HeadNorms {
                    q: Norm::rms(a.pp("q_norm"), head_dim, eps)?,
                    k: Norm::rms(a.pp("k_norm"), head_dim, eps)?,
                });
            let mlp = vb.pp("mlp");
            let up = Linear::load(&mlp, &["gate_proj", "up_proj"], hidden, inner, false)?;
            let down = Linear::load(&mlp, &["down_proj"], inner, hidden, false)?;
            Ok(Layer {
                attention,
                feed_forward: FeedForward::gated(up, act, down)?,
                norms: Norms::Pre {
                    attention: Some(Norm::rms(vb.pp("input_layernorm"), hidden, eps)?),
                    feed_forward: Norm::rms(vb.pp("post_attention_layernorm"), hidden, eps)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EncoderParts {
        embeddings,
        layers,
        final_norm: Some(Norm::rms(vb.pp("norm"), hidden, eps)?),
        relative_bias: None,
        max_tokens: Some(config.usize_or(&["max_position_embeddings"], 32_768)?),
        hidden,
    })
}
