//! A dense layer, stored `[in, out]` (the layout the matmul reads fastest), with its bias
//! and activation fused on the CPU.

use super::kernels::math::Activation;
use super::kernels::ops::Dense;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// `act(x W + b)`; several checkpoint matrices may be one layer with their outputs side by
/// side (query, key and value: one matmul instead of three).
pub struct Linear {
    weight: Tensor,
    /// Zeros for layers without a bias, so the fused kernel has one form.
    bias: Tensor,
}

impl Linear {
    /// One layer from `parts`, each `[outputs_i, inputs]` as checkpoints store them, and
    /// their biases (zeros where `biases` is `None`).
    pub fn from_parts(parts: &[Tensor], biases: Option<&[Tensor]>) -> Result<Self> {
        let weight = Tensor::cat(parts, 0)?;
        let bias = match biases {
            Some(biases) => Tensor::cat(biases, 0)?,
            None => Tensor::zeros(weight.dim(0)?, weight.dtype(), weight.device())?,
        };
        if bias.dims() != [weight.dim(0)?] {
            candle_core::bail!(
                "bias of {:?} for a weight of {:?}",
                bias.dims(),
                weight.dims()
            );
        }
        Ok(Self {
            weight: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// The layers `names` under `vb` (`{name}.weight`, `[outputs, inputs]` each, and
    /// `{name}.bias` when `bias`), as one layer.
    pub fn load(
        vb: &VarBuilder,
        names: &[&str],
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Self> {
        let weights = names
            .iter()
            .map(|n| vb.get((outputs, inputs), &format!("{n}.weight")))
            .collect::<Result<Vec<_>>>()?;
        let biases = match bias {
            true => Some(
                names
                    .iter()
                    .map(|n| vb.get(outputs, &format!("{n}.bias")))
                    .collect::<Result<Vec<_>>>()?,
            ),
            false => None,
        };
        Self::from_parts(&weights, biases.as_deref())
    }

    /// Outputs of the layer.
    pub fn outputs(&self) -> usize {
        self.bias.dims()[0]
    }

    /// `act(x W + b)`.
    pub fn forward(&self, x: &Tensor, act: Activation, fused: bool) -> Result<Tensor> {
        if fused {
            return x.apply_op3_no_bwd(&self.weight, &self.bias, &Dense(act));
        }
        activate(&x.matmul(&self.weight)?.broadcast_add(&self.bias)?, act)
    }
}

/// `act(x)` with candle ops.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::GeluErf => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
        Activation::Silu => x.silu(),
        Activation::Tanh => x.tanh(),
        Activation::Identity => Ok(x.clone()),
    }
}
