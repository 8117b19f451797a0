//! The feed-forward block: plain (`down(act(up(x)))`) or gated (`down(act(a) * b)` with
//! `[a | b]` one projection: GeGLU, SwiGLU).

use super::kernels::math::Activation;
use super::kernels::ops::Gated;
use super::linear::{activate, Linear};
use candle_core::{bail, Result, Tensor};

/// A feed-forward block.
pub enum FeedForward {
    /// `down(act(up(x)))`.
    Plain {
        /// The up projection.
        up: Linear,
        /// Its activation.
        act: Activation,
        /// The down projection.
        down: Linear,
    },
    /// `down(act(a) * b)` where `up(x) = [a | b]`: families load their gate and up
    /// matrices in that order, whatever order their checkpoints keep them in.
    Gated {
        /// Gate and up projections side by side, the activated half first.
        up: Linear,
        /// Activation of the gate.
        act: Activation,
        /// The down projection.
        down: Linear,
    },
}

impl FeedForward {
    /// A gated block; `up`'s outputs must be twice `down`'s inputs.
    pub fn gated(up: Linear, act: Activation, down: Linear) -> Result<Self> {
        if !up.outputs().is_multiple_of(2) {
            bail!(
                "a gated feed-forward needs an even projection, not {}",
                up.outputs()
            );
        }
        Ok(Self::Gated { up, act, down })
    }

    /// The up (with the gate) and down projections.
    pub fn linears_mut(&mut self) -> [&mut Linear; 2] {
        match self {
            FeedForward::Plain { up, down, .. } | FeedForward::Gated { up, down, .. } => [up, down],
        }
    }

    /// The up (with the gate) and down projections.
    pub fn linears(&self) -> [&Linear; 2] {
        match self {
            FeedForward::Plain { up, down, .. } | FeedForward::Gated { up, down, .. } => [up, down],
        }
    }

    /// The block's output for `x`.
    pub fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        match self {
            FeedForward::Plain { up, act, down } => {
                let inner = up.forward(x, *act, fused)?;
                down.forward(&inner, Activation::Identity, fused)
            }
            FeedForward::Gated { up, act, down } => {
                let both = up.forward(x, Activation::Identity, fused)?;
                let inner = if fused {
                    both.apply_op1_no_bwd(&Gated(*act))?
                } else {
                    let width = up.outputs() / 2;
                    (activate(&both.narrow(1, 0, width)?, *act)? * both.narrow(1, width, width)?)?
                };
                down.forward(&inner, Activation::Identity, fused)
            }
        }
    }
}
