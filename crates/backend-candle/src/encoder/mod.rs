//! The packed encoder every family runs on: the tokens of all sequences of a batch are one
//! `[tokens, hidden]` matrix for every dense step (embeddings, one fused QKV matmul, the
//! output projection, the feed-forward, the norms), and only attention looks at sequence
//! boundaries. No padding is computed, so a batch costs the sum of its lengths (plus
//! attention's per-sequence `len^2`) instead of `rows x longest`.
//!
//! The blocks here are shared; a family (`crate::families`) is the wiring of them its
//! checkpoints need: which embeddings, where the norms sit, rotary or learned positions,
//! plain or gated feed-forward, full, windowed or causal attention. On the CPU in f32 the
//! dense layers carry their bias and activation, residual + norm is one in-place pass and
//! attention one kernel over the QKV matrix ([`kernels::ops`]); on other devices and dtypes
//! the same computation runs on stock candle ops.

pub mod attention;
pub mod batch;
pub mod embeddings;
pub mod feed_forward;
pub mod int8;
pub mod kernels;
pub mod layer;
pub mod linear;
pub mod norm;
pub mod rotary;

use crate::t5::relative_position_bucket;
use batch::Batch;
use candle_core::{bail, DType, Device, Result, Tensor};
use embeddings::Embeddings;
use int8::Int8Kernel;
use kernels::layout::{Heads, RelativeBias};
use layer::Layer;
use linear::Linear;
use norm::Norm;

/// A relative position bias shared by every layer (MPNet): `[buckets][heads]` values, read
/// through T5's two-way buckets.
pub struct BucketBias {
    /// `values[bucket * heads + head]`.
    pub values: Vec<f32>,
    /// Attention heads.
    pub heads: usize,
    /// Buckets.
    pub buckets: usize,
    /// Distances from which buckets grow logarithmically up to this.
    pub max_distance: usize,
}

impl BucketBias {
    /// The bias of every distance of sequences up to `longest` tokens.
    fn for_length(&self, longest: usize) -> RelativeBias {
        RelativeBias::new(self.heads, longest, |head, distance| {
            let bucket = relative_position_bucket(distance, true, self.buckets, self.max_distance);
            self.values[bucket * self.heads + head]
        })
    }
}

/// What a family builds.
pub struct EncoderParts {
    /// The embedding block.
    pub embeddings: Embeddings,
    /// The layers, in order.
    pub layers: Vec<Layer>,
    /// A norm after the last layer (pre-norm stacks).
    pub final_norm: Option<Norm>,
    /// A relative position bias shared by the layers.
    pub relative_bias: Option<BucketBias>,
    /// The longest sequence the model is made for, when its embeddings do not bound it
    /// (rotary families: `max_position_embeddings`).
    pub max_tokens: Option<usize>,
    /// Width of the hidden states.
    pub hidden: usize,
}

/// An encoder over packed batches (see the module docs).
pub struct PackedEncoder {
    parts: EncoderParts,
    heads: Heads,
    fused: bool,
    device: Device,
    dtype: DType,
}

impl PackedEncoder {
    /// The encoder of `parts`, whose tensors live on `device` in `dtype`. The fused kernels
    /// are used where they apply: CPU and f32.
    pub fn new(parts: EncoderParts, device: &Device, dtype: DType) -> Result<Self> {
        let Some(first) = parts.layers.first() else {
            bail!("an encoder needs at least one layer");
        };
        let heads = first.attention.heads();
        Ok(Self {
            parts,
            heads,
            fused: device.is_cpu() && dtype == DType::F32,
            device: device.clone(),
            dtype,
        })
    }

    /// Uses the fused CPU kernels (`true`, only possible on the CPU in f32) or stock candle
    /// ops (`false`); returns whether the fused kernels are now in use.
    pub fn set_fused(&mut self, fused: bool) -> bool {
        self.fused = fused && self.device.is_cpu() && self.dtype == DType::F32;
        self.fused
    }

    /// Whether the fused CPU kernels run.
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// Starts (`true`) or stops recording each dense layer's input maxima, which
    /// [`Self::quantize`] smooths with.
    pub fn observe(&self, on: bool) {
        for layer in &self.parts.layers {
            layer.linears().iter().for_each(|l| l.observe(on));
        }
    }

    /// Every dense layer's recorded input maxima (see [`Self::observe`]), layer by layer in
    /// [`layer::LINEAR_ROLES`] order.
    pub fn input_maxima(&self) -> Vec<Vec<f32>> {
        let linears = self.parts.layers.iter().flat_map(|l| l.linears());
        linears.map(Linear::input_maxima).collect()
    }

    /// The input count of every dense layer, in [`Self::input_maxima`]'s order.
    pub fn input_widths(&self) -> Vec<usize> {
        let linears = self.parts.layers.iter().flat_map(|l| l.linears());
        linears.map(Linear::inputs).collect()
    }

    /// Takes `maxima` (as [`Self::input_maxima`] gives them) as what was observed.
    pub fn set_input_maxima(&self, maxima: Vec<Vec<f32>>) -> Result<()> {
        let linears: Vec<&Linear> = self.parts.layers.iter().flat_map(|l| l.linears()).collect();
        if maxima.len() != linears.len() {
            bail!(
                "{} layers of input maxima for {} dense layers",
                maxima.len(),
                linears.len()
            );
        }
        for (linear, most) in linears.into_iter().zip(maxima) {
            linear.set_input_maxima(most)?;
        }
        Ok(())
    }

    /// Runs the dense layers of every layer in int8 on `kernel` (smoothed with `alpha` by
    /// what [`Self::observe`] saw), except those whose role (see [`layer::LINEAR_ROLES`])
    /// `keep_f32` names. Only on the fused CPU path.
    pub fn quantize(&mut self, alpha: f32, kernel: Int8Kernel, keep_f32: &[&str]) -> Result<()> {
        if !self.fused {
            bail!("int8 runs on the CPU in f32 only");
        }
        for layer in &mut self.parts.layers {
            for (linear, role) in layer.linears_mut().into_iter().zip(layer::LINEAR_ROLES) {
                match keep_f32.contains(&role) {
                    true => linear.dequantize(),
                    false => linear.quantize(alpha, kernel)?,
                }
            }
        }
        Ok(())
    }

    /// Back to f32 everywhere (before [`Self::drop_f32`]).
    pub fn dequantize(&mut self) {
        for layer in &mut self.parts.layers {
            layer.linears_mut().into_iter().for_each(Linear::dequantize);
        }
    }

    /// Frees the f32 weights of the quantized layers; returns the bytes freed less the
    /// bytes the int8 weights hold.
    pub fn drop_f32(&mut self) -> Result<u64> {
        let mut saved = 0i64;
        for layer in &mut self.parts.layers {
            for linear in layer.linears_mut() {
                saved += linear.drop_f32()?;
            }
        }
        Ok(saved.max(0) as u64)
    }

    /// Hidden size of the outputs.
    pub fn hidden_size(&self) -> usize {
        self.parts.hidden
    }

    /// The head layout of the first layer.
    pub fn heads(&self) -> Heads {
        self.heads
    }

    /// The longest sequence the model takes, special tokens included.
    pub fn max_tokens(&self) -> Option<usize> {
        match (self.parts.embeddings.max_tokens(), self.parts.max_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The last hidden state of a packed batch: `[sum(lengths), hidden]` in the model's
    /// dtype, row `t` the `t`-th token of the concatenated sequences.
    pub fn forward(&self, ids: &[u32], type_ids: &[u32], lengths: &[usize]) -> Result<Tensor> {
        let batch = Batch::new(ids, type_ids, lengths, &self.device)?;
        let embeddings = &self.parts.embeddings;
        embeddings.check(&batch)?;
        if let Some(max) = self.parts.max_tokens.filter(|&max| batch.longest > max) {
            bail!(
                "a sequence of {} tokens is longer than the model's {max} positions",
                batch.longest
            );
        }
        if ids.is_empty() {
            return Tensor::zeros((0, self.hidden_size()), self.dtype, &self.device);
        }
        let bias = self
            .parts
            .relative_bias
            .as_ref()
            .map(|b| b.for_length(batch.longest));
        let mut x = embeddings.forward(&batch, self.fused)?;
        for layer in &self.parts.layers {
            x = layer.forward(&x, &batch, bias.as_ref(), self.fused)?;
        }
        match &self.parts.final_norm {
            Some(norm) => norm.forward(&x, self.fused),
            None => Ok(x),
        }
    }
}
