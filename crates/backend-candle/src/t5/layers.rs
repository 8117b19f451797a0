//! The pieces of a T5 block: RMS layer norm, attention without score scaling, and the
//! (gated) feed-forward layer, with Hugging Face's weight names.

use super::config::{Activation, FeedForwardKind, T5Config};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

/// Rows up to which [`project`] multiplies `W · xᵀ` instead of `x · Wᵀ`.
const FEW_ROWS: usize = 32;

/// `linear` over the last dimension of `x` as one matrix product. candle's `Linear` on a 3-D
/// input multiplies each batch row by its own broadcast copy of the weight, and `x · Wᵀ`
/// with a few rows runs ~3x slower than `(W · xᵀ)ᵀ` on the CPU (measured with 4 rows and a
/// 32128x512 output layer: 18.9 against 6.3 ms), which would make a decoder step of 4
/// beams cost 4 greedy steps.
pub fn project(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let width = dims[dims.len() - 1];
    let flat = x.reshape((rows, width))?;
    let out = if rows <= FEW_ROWS {
        linear.weight().matmul(&flat.t()?)?.t()?
    } else {
        linear.forward(&flat)?
    };
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("a tensor with dimensions") = out.dim(1)?;
    out.reshape(shape)
}

/// `T5LayerNorm`: scales by the root mean square, no mean subtracted, no bias.
pub struct LayerNorm {
    weight: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, config: &T5Config) -> Result<Self> {
        Ok(Self {
            weight: vb.get(config.d_model, "weight")?,
            eps: config.layer_norm_epsilon as f32,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The fused op accumulates in f32 for half types, like Hugging Face's float32 variance.
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// Multi-head attention as T5 does it: no `1/sqrt(d_kv)` (folded into the weights at
/// training), an additive position bias instead of position embeddings.
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    d_kv: usize,
    /// `[buckets, heads]`, only in the first block of each stack's self-attention.
    relative_bias: Option<Embedding>,
}

impl Attention {
    pub fn load(vb: VarBuilder, config: &T5Config, with_relative_bias: bool) -> Result<Self> {
        let (d, inner) = (config.d_model, config.inner_dim());
        let relative_bias = if with_relative_bias {
            Some(candle_nn::embedding(
                config.relative_attention_num_buckets,
                config.num_heads,
                vb.pp("relative_attention_bias"),
            )?)
        } else {
            None
        };
        Ok(Self {
            q: candle_nn::linear_no_bias(d, inner, vb.pp("q"))?,
            k: candle_nn::linear_no_bias(d, inner, vb.pp("k"))?,
            v: candle_nn::linear_no_bias(d, inner, vb.pp("v"))?,
            o: candle_nn::linear_no_bias(inner, d, vb.pp("o"))?,
            heads: config.num_heads,
            d_kv: config.d_kv,
            relative_bias,
        })
    }

    /// `[batch, positions, d_model]` projected to `[batch, heads, positions, d_kv]`.
    fn heads_of(&self, linear: &Linear, x: &Tensor) -> Result<Tensor> {
        let (batch, positions, _) = x.dims3()?;
        project(linear, x)?
            .reshape((batch, positions, self.heads, self.d_kv))?
            .transpose(1, 2)?
            .contiguous()
    }

    pub fn queries(&self, x: &Tensor) -> Result<Tensor> {
        self.heads_of(&self.q, x)
    }

    /// Keys and values of `x`, each `[batch, heads, positions, d_kv]`.
    pub fn keys_values(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.heads_of(&self.k, x)?, self.heads_of(&self.v, x)?))
    }

    /// The position bias `[1, heads, queries, keys]` for a row-major grid of bucket ids.
    pub fn position_bias(&self, buckets: &[u32], queries: usize, keys: usize) -> Result<Tensor> {
        let table = self
            .relative_bias
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("no relative_attention_bias here".into()))?;
        let ids = Tensor::from_slice(buckets, buckets.len(), table.embeddings().device())?;
        table
            .forward(&ids)?
            .reshape((queries, keys, self.heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()
    }

    /// Attention of `queries` over `keys`/`values` plus `bias`, projected back to d_model.
    pub fn attend(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mixed = mix(queries, keys, values, bias)?;
        self.merge(&mixed)
    }

    /// Attention of one query per row (`[rows, heads, 1, d_kv]`) over keys and values that
    /// every row shares (`[1, heads, keys, d_kv]`, the encoder output in cross-attention):
    /// the rows are treated as the queries of one batch, so the shared keys are neither
    /// copied per row nor broadcast.
    pub fn attend_shared(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<Tensor> {
        let as_positions = queries.transpose(0, 2)?.contiguous()?;
        let mixed = mix(&as_positions, keys, values, None)?.transpose(0, 2)?;
        self.merge(&mixed)
    }

    /// `[batch, heads, positions, d_kv]` back to `[batch, positions, d_model]`.
    fn merge(&self, mixed: &Tensor) -> Result<Tensor> {
        let (batch, _, positions, _) = mixed.dims4()?;
        let merged = mixed
            .transpose(1, 2)?
            .reshape((batch, positions, self.heads * self.d_kv))?;
        project(&self.o, &merged)
    }
}

/// Softmax-weighted values: `softmax(q · kᵀ + bias) · v`, the softmax in f32.
fn mix(queries: &Tensor, keys: &Tensor, values: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dtype = queries.dtype();
    let mut scores = queries.matmul(&keys.t()?)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let weights = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
    weights.to_dtype(dtype)?.matmul(values)
}

/// `DenseReluDense` / `DenseGatedActDense`.
pub struct FeedForward {
    wi: Linear,
    /// The linear gate (`wi_1`) of gated variants.
    gate: Option<Linear>,
    wo: Linear,
    activation: Activation,
}

impl FeedForward {
    pub fn load(vb: VarBuilder, config: &T5Config, kind: FeedForwardKind) -> Result<Self> {
        let (d, ff) = (config.d_model, config.d_ff);
        let (wi, gate) = if kind.gated {
            (
                candle_nn::linear_no_bias(d, ff, vb.pp("wi_0"))?,
                Some(candle_nn::linear_no_bias(d, ff, vb.pp("wi_1"))?),
            )
        } else {
            (candle_nn::linear_no_bias(d, ff, vb.pp("wi"))?, None)
        };
        Ok(Self {
            wi,
            gate,
            wo: candle_nn::linear_no_bias(ff, d, vb.pp("wo"))?,
            activation: kind.activation,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = project(&self.wi, x)?;
        let hidden = match self.activation {
            Activation::Relu => hidden.relu()?,
            Activation::GeluTanh => hidden.gelu()?,
            Activation::GeluErf => hidden.gelu_erf()?,
            Activation::Silu => hidden.silu()?,
        };
        let hidden = match &self.gate {
            Some(gate) => (hidden * project(gate, x)?)?,
            None => hidden,
        };
        project(&self.wo, &hidden)
    }
}
