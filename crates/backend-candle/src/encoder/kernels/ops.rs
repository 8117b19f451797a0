//! The fused CPU kernels as candle ops: a dense layer with its bias and activation, the
//! residual + layer norm (in place on the fresh output of the dense layer before it), a
//! norm alone, the gated feed-forward's middle, rotary embeddings and per-head norms on the
//! QKV matrix, and attention. Their elementwise work is split across the rayon pool, which
//! candle's own unary ops do not.

use super::attention::attention_f32;
use super::layout::{Heads, ScoreRules};
use super::math::{
    activation, add_layer_norm, gated, layer_norm, rms_norm, Activation, NormParams,
};
use super::rotary::{rotate_f32, RotaryStyle, RotaryTable};
use crate::encoder::int8::Int8Matrix;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, InplaceOp1, InplaceOp3, Layout, Result,
    Shape,
};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Rows per rayon task: enough work (a few thousand values) to pay for the hand-off.
const ROWS_PER_TASK: usize = 8;

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => bail!("fused op: {what} must be a contiguous f32 tensor"),
    }
}

fn f32_slice_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&mut data[start..end]),
        _ => bail!("fused op: the output must be a contiguous f32 tensor"),
    }
}

/// `act(x W + b)` for `x` `[rows, in]` and `W` `[in, out]`: the gemm crate accumulates onto
/// rows that start as `b`, so the bias costs no pass of its own and no output is zeroed
/// first (candle's matmul zeroes its output, on one thread, before the product); the
/// activation then runs in place across the pool.
pub struct Dense(pub Activation);

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "packed-dense"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(s1, l1, "input")?, f32_slice(s2, l2, "weight")?);
        let bias = f32_slice(s3, l3, "bias")?;
        let (&[m, k], &[k2, n]) = (l1.dims(), l2.dims()) else {
            bail!("fused dense: {:?} x {:?}", l1.dims(), l2.dims());
        };
        if k != k2 || bias.len() != n || n == 0 {
            bail!(
                "fused dense: {:?} x {:?} + {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let mut out = Vec::with_capacity(m * n);
        out.spare_capacity_mut()[..m * n]
            .par_chunks_mut(n * ROWS_PER_TASK)
            .for_each(|rows| {
                for row in rows.chunks_exact_mut(n) {
                    row.iter_mut().zip(bias).for_each(|(o, b)| {
                        o.write(*b);
                    });
                }
            });
        // SAFETY: the loop above wrote all `m * n` values.
        unsafe { out.set_len(m * n) };
        if m > 0 && k > 0 {
            let threads = rayon::current_num_threads();
            let parallelism = if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            // SAFETY: `x` holds `m x k` values, `w` `k x n` and `out` `m x n` (checked
            // above), all row-major and contiguous as the steps say.
            unsafe {
                gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
        if self.0 != Activation::Identity {
            out.par_chunks_mut(n * ROWS_PER_TASK)
                .for_each(|chunk| activation(chunk, self.0));
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `act(x W + b)` with `W` in int8 ([`Int8Matrix`]): `x` `[rows, in]`, `b` `[out]`.
pub struct Int8Dense<'a> {
    /// The quantized weights.
    pub matrix: &'a Int8Matrix,
    /// The activation.
    pub act: Activation,
}

impl CustomOp2 for Int8Dense<'_> {
    fn name(&self) -> &'static str {
        "packed-int8-dense"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, bias) = (f32_slice(s1, l1, "input")?, f32_slice(s2, l2, "bias")?);
        let (&[m, k], n) = (l1.dims(), self.matrix.outputs()) else {
            bail!("int8 dense: input of {:?}", l1.dims());
        };
        if k != self.matrix.inputs() || bias.len() != n {
            bail!(
                "int8 dense: {:?} x [{}, {n}] + {:?}",
                l1.dims(),
                self.matrix.inputs(),
                l2.dims()
            );
        }
        let out = self.matrix.forward(x, bias, self.act);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// In place on `[rows, hidden]`: `x = layer_norm(x + residual)`, the end of each half of a
/// layer. Its parameters come as one `[2, hidden]` tensor: gamma, beta.
pub struct AddLayerNorm {
    /// Layer-norm epsilon.
    pub eps: f32,
}

impl InplaceOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "packed-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let residual = f32_slice(s2, l2, "residual")?;
        let params = f32_slice(s3, l3, "norm parameters")?;
        let rows = f32_slice_mut(s1, l1)?;
        let width = params.len() / 2;
        if width == 0
            || params.len() != 2 * width
            || residual.len() != rows.len()
            || rows.len() % width != 0
        {
            bail!(
                "fused layer norm: {:?} rows, {:?} residual, {:?} parameters",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let p = NormParams {
            gamma: &params[..width],
            beta: &params[width..],
            eps: self.eps,
        };
        rows.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(residual.par_chunks(width * ROWS_PER_TASK))
            .for_each(|(chunk, res)| add_layer_norm(chunk, res, &p));
        Ok(())
    }
}

/// `[tokens, heads.row()]` QKV to the `[tokens, hidden]` attention context, per sequence.
pub struct PackedAttention<'a> {
    /// Tokens of each sequence, in row order.
    pub lengths: &'a [usize],
    /// Head layout.
    pub heads: Heads,
    /// Masks and biases of the scores.
    pub rules: ScoreRules<'a>,
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(storage, layout, "qkv")?;
        let tokens: usize = self.lengths.iter().sum();
        let mut context = vec![0f32; tokens * self.heads.hidden()];
        attention_f32(qkv, self.lengths, self.heads, &self.rules, &mut context)?;
        Ok((
            CpuStorage::F32(context),
            Shape::from((tokens, self.heads.hidden())),
        ))
    }
}

/// A norm of each row, out of place: layer norm with `[2, hidden]` parameters (gamma, beta)
/// or RMS norm with a `[hidden]` weight.
pub enum Norm {
    /// Layer norm with this epsilon.
    Layer(f32),
    /// RMS norm with this epsilon.
    Rms(f32),
}

impl CustomOp2 for Norm {
    fn name(&self) -> &'static str {
        "packed-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let rows = f32_slice(s1, l1, "input")?;
        let params = f32_slice(s2, l2, "norm parameters")?;
        let width = match self {
            Norm::Layer(_) => params.len() / 2,
            Norm::Rms(_) => params.len(),
        };
        if width == 0 || rows.len() % width != 0 || l1.dims().last() != Some(&width) {
            bail!(
                "fused norm: {:?} rows, {:?} parameters",
                l1.dims(),
                l2.dims()
            );
        }
        let mut out = vec![0f32; rows.len()];
        let chunk = width * ROWS_PER_TASK;
        let pairs = rows.par_chunks(chunk).zip(out.par_chunks_mut(chunk));
        match *self {
            Norm::Layer(eps) => {
                let p = NormParams {
                    gamma: &params[..width],
                    beta: &params[width..],
                    eps,
                };
                pairs.for_each(|(rows, out)| layer_norm(rows, out, &p));
            }
            Norm::Rms(eps) => pairs.for_each(|(rows, out)| rms_norm(rows, out, params, eps)),
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `[tokens, 2 * width]` rows `[a | b]` to `act(a) * b`, `[tokens, width]`.
pub struct Gated(pub Activation);

impl CustomOp1 for Gated {
    fn name(&self) -> &'static str {
        "packed-gated"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let rows = f32_slice(storage, layout, "input")?;
        let &[tokens, double] = layout.dims() else {
            bail!("fused gate: {:?}", layout.dims());
        };
        if double % 2 != 0 {
            bail!("fused gate: odd width {double}");
        }
        let width = double / 2;
        let mut out = vec![0f32; tokens * width];
        if width > 0 {
            rows.par_chunks(double * ROWS_PER_TASK)
                .zip(out.par_chunks_mut(width * ROWS_PER_TASK))
                .for_each(|(rows, out)| gated(rows, out, width, self.0));
        }
        Ok((CpuStorage::F32(out), Shape::from((tokens, width))))
    }
}

/// Rotary embeddings on the query and key heads of a QKV matrix, in place.
pub struct Rotary<'a> {
    /// Each token's position in its sequence.
    pub positions: &'a [u32],
    /// Head layout of the matrix.
    pub heads: Heads,
    /// The angles.
    pub table: &'a RotaryTable,
    /// How values pair up.
    pub style: RotaryStyle,
}

impl InplaceOp1 for Rotary<'_> {
    fn name(&self) -> &'static str {
        "packed-rotary"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let qkv = f32_slice_mut(storage, layout)?;
        rotate_f32(qkv, self.positions, self.heads, self.table, self.style)
    }
}

/// RMS norm of every query head (with the first weight) and key head (with the second) of a
/// QKV matrix, in place (Qwen3's `q_norm` and `k_norm`).
pub struct HeadNorm {
    /// Head layout of the matrix.
    pub heads: Heads,
    /// RMS norm epsilon.
    pub eps: f32,
}

impl InplaceOp3 for HeadNorm {
    fn name(&self) -> &'static str {
        "packed-head-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (q_weight, k_weight) = (f32_slice(s2, l2, "q norm")?, f32_slice(s3, l3, "k norm")?);
        let qkv = f32_slice_mut(s1, l1)?;
        let (row, d, heads) = (self.heads.row(), self.heads.head_dim, self.heads);
        if q_weight.len() != d || k_weight.len() != d || qkv.len() % row != 0 {
            bail!("fused head norm: {:?} for {heads:?}", l1.dims());
        }
        let eps = self.eps;
        qkv.par_chunks_mut(row * ROWS_PER_TASK).for_each(|rows| {
            let mut scratch = vec![0f32; d];
            for values in rows.chunks_exact_mut(row) {
                let (q, rest) = values.split_at_mut(heads.hidden());
                for (heads, weight) in [(q, q_weight), (&mut rest[..heads.kv_heads * d], k_weight)]
                {
                    for head in heads.chunks_exact_mut(d) {
                        rms_norm(head, &mut scratch, weight, eps);
                        head.copy_from_slice(&scratch);
                    }
                }
            }
        });
        Ok(())
    }
}
