//! The fused CPU kernels as candle ops. The elementwise steps run in place on the fresh
//! output of the matmul before them (one pass over memory, no new tensor) and split their
//! rows across the rayon pool, which candle's own unary ops do not.

use super::attention::{attention_f32, Heads};
use super::kernels::{add_layer_norm, bias_activation, Activation, NormParams};
use candle_core::{bail, CpuStorage, CustomOp1, InplaceOp2, InplaceOp3, Layout, Result, Shape};
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

/// In place on `[rows, width]`: `x = act(x + bias)`, the epilogue of a dense layer.
pub struct BiasActivation(pub Activation);

impl InplaceOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "packed-bias-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let bias = f32_slice(s2, l2, "bias")?;
        let rows = f32_slice_mut(s1, l1)?;
        if bias.is_empty() || l1.dims().last() != Some(&bias.len()) {
            bail!(
                "fused bias: {:?} rows for a bias of {}",
                l1.dims(),
                bias.len()
            );
        }
        rows.par_chunks_mut(bias.len() * ROWS_PER_TASK)
            .for_each(|chunk| bias_activation(chunk, bias, self.0));
        Ok(())
    }
}

/// In place on `[rows, hidden]`: `x = layer_norm(x + bias + residual)`, the end of each
/// half of a layer. Its parameters come as one `[3, hidden]` tensor: bias, gamma, beta.
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
        let width = params.len() / 3;
        if width == 0
            || params.len() != 3 * width
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
            bias: &params[..width],
            gamma: &params[width..2 * width],
            beta: &params[2 * width..],
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
