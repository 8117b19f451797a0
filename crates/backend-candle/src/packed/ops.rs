//! The fused CPU kernels as candle ops: a dense layer with its bias and activation, the
//! residual + layer norm (in place on the fresh output of the dense layer before it), and
//! attention. Their elementwise work is split across the rayon pool, which candle's own
//! unary ops do not.

use super::attention::attention_f32;
use super::kernels::{activation, add_layer_norm, Activation, NormParams};
use super::layout::Heads;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, InplaceOp3, Layout, Result, Shape};
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

/// `[tokens, 3 * hidden]` QKV to the `[tokens, hidden]` attention context, per sequence.
pub struct PackedAttention<'a> {
    /// Tokens of each sequence, in row order.
    pub lengths: &'a [usize],
    /// Head layout.
    pub heads: Heads,
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(storage, layout, "qkv")?;
        let tokens: usize = self.lengths.iter().sum();
        let mut context = vec![0f32; tokens * self.heads.hidden()];
        attention_f32(qkv, self.lengths, self.heads, &mut context)?;
        Ok((
            CpuStorage::F32(context),
            Shape::from((tokens, self.heads.hidden())),
        ))
    }
}
