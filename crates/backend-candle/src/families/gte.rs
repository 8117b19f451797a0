//! GTE v1.5 (gte-base-en-v1.5, gte-large-en-v1.5): post-norm layers with rotary positions
//! (NTK-scaled when the config asks) and a GeGLU feed-forward, token types only where
//! `type_vocab_size > 0`. Two spellings: Alibaba-NLP's own code (`model_type = "new"`,
//! `encoder.layer.N.attention.qkv_proj`, `mlp.up_gate_proj`, `attn_ln`, `mlp_ln`) and
//! transformers' native one (`model_type = "gte"`, `layers.N.self_attn.q_proj`,
//! `mlp.gate_proj`/`up_proj`, `post_attention_layernorm`, `post_mlp_layernorm`).

use super::config::{activation, root, Config};
use crate::encoder::attention::SelfAttention;
use crate::encoder::embeddings::{table, Embeddings};
use crate::encoder::feed_forward::FeedForward;
use crate::encoder::kernels::layout::{Heads, Mask};
use crate::encoder::kernels::rotary::RotaryStyle;
use crate::encoder::layer::{Layer, Norms};
use crate::encoder::linear::Linear;
use crate::encoder::norm::Norm;
use crate::encoder::rotary::Rotary;
use crate::encoder::EncoderParts;
use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

/// The frequencies of `NTKScalingRotaryEmbedding` in Alibaba-NLP/new-impl: its cache is
/// built for `max_position_embeddings * factor` positions, which takes the scaled branch:
/// `inv_freq = (theta * factor) ^ (-2i / d) / factor ^ (2 / d)`.
fn ntk_inv_freq(theta: f64, dims: usize, factor: f64) -> Vec<f32> {
    let base = (theta * factor) as f32;
    let shrink = (factor as f32).powf(2.0 / dims as f32);
    (0..dims / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / dims as f32) / shrink)
        .collect()
}

/// The published config's rotary: plain, or NTK-scaled by `rope_scaling`.
fn published_rotary(config: &Config, head_dim: usize) -> Result<Rotary> {
    for (key, allowed) in [
        ("position_embedding_type", "rope"),
        ("layer_norm_type", "layer_norm"),
    ] {
        let value = config.str_or(&[key], allowed)?;
        if value != allowed {
            bail!("config.json: {key} `{value}` is not supported ({allowed})");
        }
    }
    if config.bool_or(&["logn_attention_scale"], false)? {
        bail!("config.json: logn_attention_scale is not supported");
    }
    let theta = config.f64_or(&["rope_theta"], 10_000.0)?;
    let Some(scaling) = config.get(&["rope_scaling"]) else {
        return Ok(Rotary::new(theta, head_dim, RotaryStyle::Halves));
    };
    let kind = scaling.get("type").or_else(|| scaling.get("rope_type"));
    let factor = scaling.get("factor").and_then(Value::as_f64);
    match (kind.and_then(Value::as_str), factor) {
        (Some("ntk"), Some(f)) if f > 0.0 && scaling.get("mixed_b").is_none_or(Value::is_null) => {
            Ok(Rotary::from_inv_freq(
                ntk_inv_freq(theta, head_dim, f),
                RotaryStyle::Halves,
            ))
        }
        _ => bail!(
            "config.json: rope_scaling {scaling} is not supported (type \"ntk\" with a factor)"
        ),
    }
}

pub fn load(config: &Value, vb: VarBuilder) -> Result<EncoderParts> {
    let config = Config(config);
    let published = config.str_or(&["model_type"], "new")? == "new";
    let hidden = config.usize(&["hidden_size"])?;
    let heads = config.usize(&["num_attention_heads"])?;
    let layers = config.usize(&["num_hidden_layers"])?;
    let inner = config.usize(&["intermediate_size"])?;
    let vocab = config.usize(&["vocab_size"])?;
    let types = config.usize_or(&["type_vocab_size"], 0)?;
    let eps = config.f64_or(&["layer_norm_eps"], 1e-12)?;
    let act = activation(config.str_or(&["hidden_act"], "gelu")?)?;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        bail!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
    }
    let layout = Heads::new(heads, hidden / heads);
    let rotary = match published {
        true => published_rotary(&config, layout.head_dim)?,
        false => {
            config.refuse_rope_scaling()?;
            let theta = config.rope_theta(None, &["rope_theta"], 160_000.0)?;
            Rotary::new(theta, layout.head_dim, RotaryStyle::Halves)
        }
    };
    let vb = root(
        vb,
        "embeddings.word_embeddings.weight",
        &["new", "gte", "model"],
    )?;
    let e = vb.pp("embeddings");
    let mut embeddings = Embeddings::new(table(&e, "word_embeddings", vocab, hidden)?, vocab)
        .with_norm(Norm::layer(e.pp("LayerNorm"), hidden, eps, true)?);
    if types > 0 {
        embeddings =
            embeddings.with_types(table(&e, "token_type_embeddings", types, hidden)?, types);
    }
    let layers = (0..layers)
        .map(|n| {
            let (layer, attention, up, norms) = match published {
                true => (
                    vb.pp(format!("encoder.layer.{n}")),
                    Attention::Published,
                    published_up(&vb.pp(format!("encoder.layer.{n}.mlp")), hidden, inner)?,
                    ["attn_ln", "mlp_ln"],
                ),
                false => (
                    vb.pp(format!("layers.{n}")),
                    Attention::Native,
                    Linear::load(
                        &vb.pp(format!("layers.{n}.mlp")),
                        &["gate_proj", "up_proj"],
                        hidden,
                        inner,
                        false,
                    )?,
                    ["post_attention_layernorm", "post_mlp_layernorm"],
                ),
            };
            let (qkv, output) = attention.load(&layer, hidden)?;
            Ok(Layer {
                attention: SelfAttention::new(qkv, output, layout, Mask::Full)?
                    .with_rotary(rotary.clone())?,
                feed_forward: FeedForward::gated(
                    up,
                    act,
                    Linear::load(&layer.pp("mlp"), &["down_proj"], inner, hidden, true)?,
                )?,
                norms: Norms::Post {
                    attention: Norm::layer(layer.pp(norms[0]), hidden, eps, true)?,
                    feed_forward: Norm::layer(layer.pp(norms[1]), hidden, eps, true)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EncoderParts {
        embeddings,
        layers,
        final_norm: None,
        relative_bias: None,
        max_tokens: Some(config.usize_or(&["max_position_embeddings"], 8192)?),
        hidden,
    })
}

/// `up_gate_proj` holds [up | gate]; the block wants the activated gate first.
fn published_up(vb: &VarBuilder, hidden: usize, inner: usize) -> Result<Linear> {
    let both: Tensor = vb.get((2 * inner, hidden), "up_gate_proj.weight")?;
    let (up, gate) = (both.narrow(0, 0, inner)?, both.narrow(0, inner, inner)?);
    let bias = match vb.contains_tensor("up_gate_proj.bias") {
        true => {
            let b = vb.get(2 * inner, "up_gate_proj.bias")?;
            Some([b.narrow(0, inner, inner)?, b.narrow(0, 0, inner)?])
        }
        false => None,
    };
    Linear::from_parts(&[gate, up], bias.as_ref().map(|b| &b[..]))
}

/// The attention projections of the two spellings.
enum Attention {
    Published,
    Native,
}

impl Attention {
    fn load(&self, layer: &VarBuilder, hidden: usize) -> Result<(Linear, Linear)> {
        Ok(match self {
            Attention::Published => {
                let a = layer.pp("attention");
                (
                    Linear::load(&a, &["qkv_proj"], hidden, 3 * hidden, true)?,
                    Linear::load(&a, &["o_proj"], hidden, hidden, true)?,
                )
            }
            Attention::Native => {
                let a = layer.pp("self_attn");
                (
                    Linear::load(&a, &["q_proj", "k_proj", "v_proj"], hidden, hidden, true)?,
                    Linear::load(&a, &["o_proj"], hidden, hidden, true)?,
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ntk_frequencies_follow_the_published_formula() {
        // theta 500000, factor 2, head 64: the first is 2^(-1/32), the last much smaller.
        let f = super::ntk_inv_freq(500_000.0, 64, 2.0);
        assert_eq!(f.len(), 32);
        assert!((f[0] - 2f32.powf(-2.0 / 64.0)).abs() < 1e-6);
        let want = 1.0 / 1_000_000f64.powf(62.0 / 64.0) / 2f64.powf(2.0 / 64.0);
        assert!(((f[31] as f64 - want) / want).abs() < 1e-5);
    }
}
