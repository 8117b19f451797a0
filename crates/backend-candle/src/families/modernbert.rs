//! ModernBERT: pre-norm layers without biases, rotary positions, GeGLU, and attention that
//! alternates between global layers and local ones seeing `local_attention / 2` tokens
//! either side, each kind with its own rotary base.

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
use candle_core::{bail, Result};
use candle_nn::VarBuilder;
use serde_json::Value;

/// Whether layer `n` attends globally: transformers 5 lists `layer_types`; older configs
/// give `global_attn_every_n_layers` (layer `n` is global when `n` is a multiple of it).
fn is_global(config: &Config, n: usize) -> Result<bool> {
    if let Some(types) = config.get(&["layer_types"]).and_then(Value::as_array) {
        return match types.get(n).and_then(Value::as_str) {
            Some("full_attention") => Ok(true),
            Some("sliding_attention") => Ok(false),
            other => bail!("config.json: layer_types[{n}] is {other:?}"),
        };
    }
    let every = config.usize_or(&["global_attn_every_n_layers"], 3)?;
    Ok(every == 0 || n.is_multiple_of(every))
}

pub fn load(config: &Value, vb: VarBuilder) -> Result<EncoderParts> {
    let config = Config(config);
    config.refuse_rope_scaling()?;
    let hidden = config.usize(&["hidden_size"])?;
    let heads = config.usize(&["num_attention_heads"])?;
    let layers = config.usize(&["num_hidden_layers"])?;
    let inner = config.usize(&["intermediate_size"])?;
    let vocab = config.usize(&["vocab_size"])?;
    let positions = config.usize_or(&["max_position_embeddings"], 8192)?;
    let eps = config.f64_or(&["norm_eps"], 1e-5)?;
    let norm_bias = config.bool_or(&["norm_bias"], false)?;
    let attention_bias = config.bool_or(&["attention_bias"], false)?;
    let mlp_bias = config.bool_or(&["mlp_bias"], false)?;
    let act = activation(config.str_or(&["hidden_activation", "hidden_act"], "gelu")?)?;
    let window = config.usize_or(&["local_attention"], 128)? / 2;
    let global = config.rope_theta(Some("full_attention"), &["global_rope_theta"], 160_000.0)?;
    let local = config.rope_theta(Some("sliding_attention"), &["local_rope_theta"], 10_000.0)?;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        bail!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
    }
    let layout = Heads::new(heads, hidden / heads);
    let vb = root(vb, "embeddings.tok_embeddings.weight", &["model"])?;
    let e = vb.pp("embeddings");
    let embeddings = Embeddings::new(table(&e, "tok_embeddings", vocab, hidden)?, vocab)
        .with_norm(Norm::layer(e.pp("norm"), hidden, eps, norm_bias)?);
    let layers = (0..layers)
        .map(|n| {
            let vb = vb.pp(format!("layers.{n}"));
            let (mask, theta) = match is_global(&config, n)? {
                true => (Mask::Full, global),
                false => (Mask::Window(window), local),
            };
            let qkv = Linear::load(
                &vb.pp("attn"),
                &["Wqkv"],
                hidden,
                3 * hidden,
                attention_bias,
            )?;
            let output = Linear::load(&vb.pp("attn"), &["Wo"], hidden, hidden, attention_bias)?;
            let attention = SelfAttention::new(qkv, output, layout, mask)?
                .with_rotary(Rotary::new(theta, layout.head_dim, RotaryStyle::Halves))?;
            // `Wi` holds [input | gate] and the block computes act(input) * gate: already
            // the activated half first.
            let up = Linear::load(&vb.pp("mlp"), &["Wi"], hidden, 2 * inner, mlp_bias)?;
            let down = Linear::load(&vb.pp("mlp"), &["Wo"], inner, hidden, mlp_bias)?;
            let attention_norm = match n {
                0 => None,
                _ => Some(Norm::layer(vb.pp("attn_norm"), hidden, eps, norm_bias)?),
            };
            Ok(Layer {
                attention,
                feed_forward: FeedForward::gated(up, act, down)?,
                norms: Norms::Pre {
                    attention: attention_norm,
                    feed_forward: Norm::layer(vb.pp("mlp_norm"), hidden, eps, norm_bias)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EncoderParts {
        embeddings,
        layers,
        final_norm: Some(Norm::layer(vb.pp("final_norm"), hidden, eps, norm_bias)?),
        relative_bias: None,
        max_tokens: Some(positions),
        hidden,
    })
}
