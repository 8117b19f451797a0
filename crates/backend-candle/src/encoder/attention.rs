//! The self-attention block every family shares: one QKV projection, optional per-head
//! norms of queries and keys, optional rotary positions, attention under the layer's mask
//! (and the model's relative bias), the output projection.

use super::batch::Batch;
use super::kernels::attention::attention_ops;
use super::kernels::layout::{Heads, Mask, RelativeBias, ScoreRules};
use super::kernels::math::Activation;
use super::kernels::ops::{HeadNorm, PackedAttention, Rotary as RotaryOp};
use super::kernels::rotary::rotate_ops;
use super::linear::Linear;
use super::norm::{rms_norm_ops, Norm};
use super::rotary::Rotary;
use candle_core::{bail, Result, Tensor};

/// Qwen3's RMS norms of each query head and each key head, before rotary.
pub struct HeadNorms {
    /// Norm of query heads.
    pub q: Norm,
    /// Norm of key heads.
    pub k: Norm,
}

/// Self-attention over packed sequences.
pub struct SelfAttention {
    qkv: Linear,
    output: Linear,
    heads: Heads,
    head_norms: Option<HeadNorms>,
    rotary: Option<Rotary>,
    mask: Mask,
}

impl SelfAttention {
    /// A block whose `qkv` projection outputs `[Q | K | V]` as `heads` lays them out.
    pub fn new(qkv: Linear, output: Linear, heads: Heads, mask: Mask) -> Result<Self> {
        if !heads.is_valid() || qkv.outputs() != heads.row() {
            bail!(
                "a QKV projection of {} outputs does not fit {heads:?}",
                qkv.outputs()
            );
        }
        Ok(Self {
            qkv,
            output,
            heads,
            head_norms: None,
            rotary: None,
            mask,
        })
    }

    /// Rotates queries and keys by position.
    pub fn with_rotary(mut self, rotary: Rotary) -> Result<Self> {
        if rotary.rotated() > self.heads.head_dim || rotary.rotated() == 0 {
            bail!(
                "rotary embeddings of {} values do not fit heads of {}",
                rotary.rotated(),
                self.heads.head_dim
            );
        }
        self.rotary = Some(rotary);
        Ok(self)
    }

    /// Normalizes each query and key head first.
    pub fn with_head_norms(mut self, norms: HeadNorms) -> Self {
        self.head_norms = Some(norms);
        self
    }

    /// The QKV and output projections.
    pub fn linears_mut(&mut self) -> [&mut Linear; 2] {
        [&mut self.qkv, &mut self.output]
    }

    /// The QKV and output projections.
    pub fn linears(&self) -> [&Linear; 2] {
        [&self.qkv, &self.output]
    }

    /// The layout of its heads.
    pub fn heads(&self) -> Heads {
        self.heads
    }

    /// The output projection of attention over `x` (`[tokens, hidden]`).
    pub fn forward(
        &self,
        x: &Tensor,
        batch: &Batch,
        bias: Option<&RelativeBias>,
        fused: bool,
    ) -> Result<Tensor> {
        let mut qkv = self.qkv.forward(x, Activation::Identity, fused)?;
        if let Some(norms) = &self.head_norms {
            qkv = self.norm_heads(qkv, norms, fused)?;
        }
        if let Some(rotary) = &self.rotary {
            let table = rotary.table(batch.longest);
            if fused {
                qkv.inplace_op1(&RotaryOp {
                    positions: &batch.positions,
                    heads: self.heads,
                    table: &table,
                    style: rotary.style(),
                })?;
            } else {
                qkv = rotate_ops(&qkv, &batch.positions, self.heads, &table, rotary.style())?;
            }
        }
        let rules = ScoreRules {
            mask: self.mask,
            bias,
        };
        let context = if fused {
            qkv.apply_op1_no_bwd(&PackedAttention {
                lengths: batch.lengths,
                heads: self.heads,
                rules,
            })?
        } else {
            attention_ops(&qkv, batch.lengths, self.heads, &rules)?
        };
        self.output.forward(&context, Activation::Identity, fused)
    }

    fn norm_heads(&self, qkv: Tensor, norms: &HeadNorms, fused: bool) -> Result<Tensor> {
        let heads = self.heads;
        if fused {
            let op = HeadNorm {
                heads,
                eps: norms.q.eps() as f32,
            };
            qkv.inplace_op3(norms.q.weight(), norms.k.weight(), &op)?;
            return Ok(qkv);
        }
        let (tokens, d) = (qkv.dim(0)?, heads.head_dim);
        let normed = |at: usize, n: usize, norm: &Norm| -> Result<Tensor> {
            let x = qkv.narrow(1, at, n * d)?.reshape((tokens, n, d))?;
            rms_norm_ops(&x, norm.weight(), norm.eps() as f32)?.reshape((tokens, n * d))
        };
        let q = normed(0, heads.heads, &norms.q)?;
        let k = normed(heads.hidden(), heads.kv_heads, &norms.k)?;
        let v = qkv.narrow(1, heads.v_offset(0), heads.kv_heads * d)?;
        Tensor::cat(&[q, k, v], 1)
    }
}
