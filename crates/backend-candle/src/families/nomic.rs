//! NomicBert (nomic-embed-text): post-norm layers with rotary positions and a SwiGLU
//! feed-forward, token types, no learned positions. Checkpoints come in two spellings:
//! nomic-ai's own code (`n_embd`, `encoder.layers.N.attn.Wqkv`, `mlp.fc11`/`fc12`, `emb_ln`,
//! `norm1`/`norm2`) and transformers' native one (`hidden_size`, `layers.N.self_attn.q_proj`,
//! `mlp.up_proj`/`gate_proj`, `post_attention_layernorm`).

use super::config::{activation, root, Config};
use crate::encoder::attention::SelfAttention;
use crate::encoder::embeddings::{table, Embeddings};
use crate::encoder::feed_forward::FeedForward;
use crate::encoder::kernels::layout::{Heads, Mask};
use crate::encoder::kernels::math::Activation;
use crate::encoder::kernels::rotary::RotaryStyle;
use crate::encoder::layer::{Layer, Norms};
use crate::encoder::linear::Linear;
use crate::encoder::norm::Norm;
use crate::encoder::rotary::Rotary;
use crate::encoder::EncoderParts;
use candle_core::{bail, Result};
use candle_nn::VarBuilder;
use serde_json::Value;

/// Tensor names of one spelling.
struct Names {
    embedding_norm: &'static str,
    layer: &'static str,
    qkv: &'static [&'static str],
    output: &'static str,
    /// The gate's matrix (activated), then the up matrix.
    gate_up: [&'static str; 2],
    down: &'static str,
    norms: [&'static str; 2],
}

const PUBLISHED: Names = Names {
    embedding_norm: "emb_ln",
    layer: "encoder.layers",
    qkv: &["attn.Wqkv"],
    output: "attn.out_proj",
    gate_up: ["mlp.fc12", "mlp.fc11"],
    down: "mlp.fc2",
    norms: ["norm1", "norm2"],
};

const NATIVE: Names = Names {
    embedding_norm: "embeddings.LayerNorm",
    layer: "layers",
    qkv: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    output: "self_attn.o_proj",
    gate_up: ["mlp.gate_proj", "mlp.up_proj"],
    down: "mlp.down_proj",
    norms: ["post_attention_layernorm", "post_mlp_layernorm"],
};

/// What the two spellings' configs say.
struct Shape {
    hidden: usize,
    heads: usize,
    layers: usize,
    inner: usize,
    eps: f64,
    act: Activation,
    /// Values rotated per head.
    rotated: usize,
    style: RotaryStyle,
    theta: f64,
    qkv_bias: bool,
    up_bias: bool,
    down_bias: bool,
}

fn published(config: &Config) -> Result<Shape> {
    if config.bool_or(&["prenorm"], false)? || config.bool_or(&["causal"], false)? {
        bail!("config.json: prenorm or causal NomicBert checkpoints are not supported");
    }
    if let Some(v) = config.get(&["rotary_scaling_factor"]) {
        bail!("config.json: rotary_scaling_factor {v} (dynamic NTK) is not supported");
    }
    let hidden = config.usize(&["n_embd"])?;
    let heads = config.usize(&["n_head"])?;
    let act = match config.str_or(&["activation_function"], "swiglu")? {
        "swiglu" => Activation::Silu,
        "geglu" => Activation::GeluErf,
        other => {
            bail!("config.json: activation_function `{other}` is not supported (swiglu, geglu)")
        }
    };
    let fraction = config.f64_or(&["rotary_emb_fraction"], 1.0)?;
    let head_dim = hidden / heads.max(1);
    Ok(Shape {
        hidden,
        heads,
        layers: config.usize(&["n_layer"])?,
        inner: config.usize_or(&["n_inner"], 4 * hidden)?,
        eps: config.f64_or(&["layer_norm_epsilon"], 1e-5)?,
        act,
        rotated: (head_dim as f64 * fraction) as usize,
        style: match config.bool_or(&["rotary_emb_interleaved"], false)? {
            true => RotaryStyle::Interleaved,
            false => RotaryStyle::Halves,
        },
        theta: config.f64_or(&["rotary_emb_base"], 10_000.0)?,
        qkv_bias: config.bool_or(&["qkv_proj_bias"], true)?,
        up_bias: config.bool_or(&["mlp_fc1_bias"], true)?,
        down_bias: config.bool_or(&["mlp_fc2_bias"], true)?,
    })
}

fn native(config: &Config) -> Result<Shape> {
    config.refuse_rope_scaling()?;
    let hidden = config.usize(&["hidden_size"])?;
    let heads = config.usize(&["num_attention_heads"])?;
    let head_dim = config.usize_or(&["head_dim"], hidden / heads.max(1))?;
    Ok(Shape {
        hidden,
        heads,
        layers: config.usize(&["num_hidden_layers"])?,
        inner: config.usize(&["intermediate_size"])?,
        eps: config.f64_or(&["layer_norm_eps"], 1e-12)?,
        act: activation(config.str_or(&["hidden_act"], "silu")?)?,
        rotated: head_dim,
        style: RotaryStyle::Halves,
        theta: config.rope_theta(None, &["rope_theta"], 1000.0)?,
        qkv_bias: false,
        up_bias: false,
        down_bias: false,
    })
}

pub fn load(config: &Value, vb: VarBuilder) -> Result<EncoderParts> {
    let config = Config(config);
    let (s, names) = match config.get(&["n_embd"]) {
        Some(_) => (published(&config)?, &PUBLISHED),
        None => (native(&config)?, &NATIVE),
    };
    let vocab = config.usize(&["vocab_size"])?;
    let types = config.usize_or(&["type_vocab_size"], 2)?;
    if s.heads == 0 || !s.hidden.is_multiple_of(s.heads) {
        bail!(
            "hidden size {} is not a multiple of {} heads",
            s.hidden,
            s.heads
        );
    }
    let layout = Heads::new(s.heads, s.hidden / s.heads);
    let vb = root(
        vb,
        "embeddings.word_embeddings.weight",
        &["nomic_bert", "bert", "model"],
    )?;
    let e = vb.pp("embeddings");
    let mut embeddings =
        Embeddings::new(table(&e, "word_embeddings", vocab, s.hidden)?, vocab).with_norm(
            Norm::layer(vb.pp(names.embedding_norm), s.hidden, s.eps, true)?,
        );
    if types > 0 {
        embeddings =
            embeddings.with_types(table(&e, "token_type_embeddings", types, s.hidden)?, types);
    }
    let (h, i) = (s.hidden, s.inner);
    let layers = (0..s.layers)
        .map(|n| {
            let vb = vb.pp(format!("{}.{n}", names.layer));
            let qkv_outputs = 3 * h / names.qkv.len();
            let qkv = Linear::load(&vb, names.qkv, h, qkv_outputs, s.qkv_bias)?;
            let output = Linear::load(&vb, &[names.output], h, h, s.qkv_bias)?;
            let rotary = Rotary::new(s.theta, s.rotated, s.style);
            let attention =
                SelfAttention::new(qkv, output, layout, Mask::Full)?.with_rotary(rotary)?;
            let up = Linear::load(&vb, &names.gate_up, h, i, s.up_bias)?;
            let down = Linear::load(&vb, &[names.down], i, h, s.down_bias)?;
            Ok(Layer {
                attention,
                feed_forward: FeedForward::gated(up, s.act, down)?,
                norms: Norms::Post {
                    attention: Norm::layer(vb.pp(names.norms[0]), h, s.eps, true)?,
                    feed_forward: Norm::layer(vb.pp(names.norms[1]), h, s.eps, true)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EncoderParts {
        embeddings,
        layers,
        final_norm: None,
        relative_bias: None,
        max_tokens: Some(config.usize_or(&["max_position_embeddings", "n_positions"], 2048)?),
        hidden: s.hidden,
    })
}
