//! Layer norm (with or without a bias) and RMS norm, alone or after a residual add.

use super::kernels::ops::{AddLayerNorm, Norm as NormOp};
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Layer,
    Rms,
}

/// A norm over the hidden size.
pub struct Norm {
    kind: Kind,
    weight: Tensor,
    /// Zeros for RMS norm and bias-free layer norm.
    bias: Tensor,
    /// What the fused kernel reads: `[2, hidden]` (weight, bias) or `[hidden]`.
    params: Tensor,
    eps: f64,
}

impl Norm {
    /// A layer norm, `weight` and `bias` (or the old `gamma` and `beta`) under `vb`; without
    /// `bias` the shift is zero (ModernBERT's `norm_bias = false`).
    pub fn layer(vb: VarBuilder, hidden: usize, eps: f64, bias: bool) -> Result<Self> {
        let named = |new: &str, old: &str| match vb.contains_tensor(old) && !vb.contains_tensor(new)
        {
            true => vb.get(hidden, old),
            false => vb.get(hidden, new),
        };
        let weight = named("weight", "gamma")?;
        let bias = match bias {
            true => named("bias", "beta")?,
            false => weight.zeros_like()?,
        };
        let params = Tensor::stack(&[&weight, &bias], 0)?;
        Ok(Self {
            kind: Kind::Layer,
            weight,
            bias,
            params,
            eps,
        })
    }

    /// An RMS norm (`x / sqrt(mean(x^2) + eps) * weight`), `weight` under `vb`.
    pub fn rms(vb: VarBuilder, hidden: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(hidden, "weight")?;
        Ok(Self {
            kind: Kind::Rms,
            bias: weight.zeros_like()?,
            params: weight.clone(),
            weight,
            eps,
        })
    }

    /// The weight (RMS norm's whole parameter), for kernels that apply it themselves.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `norm(x)`.
    pub fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        if fused {
            let op = match self.kind {
                Kind::Layer => NormOp::Layer(self.eps as f32),
                Kind::Rms => NormOp::Rms(self.eps as f32),
            };
            return x.apply_op2_no_bwd(&self.params, &op);
        }
        let eps = self.eps as f32;
        match self.kind {
            Kind::Layer => {
                candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, eps)
            }
            Kind::Rms => rms_norm_ops(x, &self.weight, eps),
        }
    }

    /// `norm(y + residual)`, in place on `y` where the kernel allows (a fresh layer output).
    pub fn add_forward(&self, y: Tensor, residual: &Tensor, fused: bool) -> Result<Tensor> {
        if fused && self.kind == Kind::Layer {
            let op = AddLayerNorm {
                eps: self.eps as f32,
            };
            y.inplace_op3(residual, &self.params, &op)?;
            return Ok(y);
        }
        self.forward(&(y + residual)?, fused)
    }
}

/// RMS norm in f32 whatever the dtype (as HF's `Qwen3RMSNorm`), with candle ops.
pub fn rms_norm_ops(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let mean = x32.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
    let normed = x32.broadcast_div(&(mean + f64::from(eps))?.sqrt()?)?;
    normed.to_dtype(dtype)?.broadcast_mul(weight)
}
