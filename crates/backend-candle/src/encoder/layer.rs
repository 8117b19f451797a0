//! One encoder layer: attention and feed-forward, each with its residual and norm, the
//! norm after the residual add (BERT and its descendants) or before the block (ModernBERT,
//! decoders).

use super::attention::SelfAttention;
use super::batch::Batch;
use super::feed_forward::FeedForward;
use super::kernels::layout::RelativeBias;
use super::linear::Linear;
use super::norm::Norm;
use candle_core::{Result, Tensor};

/// Where a layer's norms sit.
pub enum Norms {
    /// `x = norm(x + block(x))` after each block.
    Post {
        /// After attention.
        attention: Norm,
        /// After the feed-forward.
        feed_forward: Norm,
    },
    /// `x = x + block(norm(x))` before each block; ModernBERT's first layer has no norm
    /// before attention (its embeddings end with one).
    Pre {
        /// Before attention, if any.
        attention: Option<Norm>,
        /// Before the feed-forward.
        feed_forward: Norm,
    },
}

/// An encoder (or decoder) layer.
pub struct Layer {
    /// Self-attention.
    pub attention: SelfAttention,
    /// The feed-forward block.
    pub feed_forward: FeedForward,
    /// Its norms.
    pub norms: Norms,
}

/// The dense layers of a layer by role, as [`Layer::linears`] lists them.
pub const LINEAR_ROLES: [&str; 4] = [
    "attention.qkv",
    "attention.output",
    "feed_forward.up",
    "feed_forward.down",
];

impl Layer {
    /// Its dense layers, in the order of [`LINEAR_ROLES`].
    pub fn linears(&self) -> [&Linear; 4] {
        let [qkv, output] = self.attention.linears();
        let [up, down] = self.feed_forward.linears();
        [qkv, output, up, down]
    }

    /// Its dense layers, in the order of [`LINEAR_ROLES`].
    pub fn linears_mut(&mut self) -> [&mut Linear; 4] {
        let [qkv, output] = self.attention.linears_mut();
        let [up, down] = self.feed_forward.linears_mut();
        [qkv, output, up, down]
    }

    /// The layer's output for `x` (`[tokens, hidden]`).
    pub fn forward(
        &self,
        x: &Tensor,
        batch: &Batch,
        bias: Option<&RelativeBias>,
        fused: bool,
    ) -> Result<Tensor> {
        match &self.norms {
            Norms::Post {
                attention,
                feed_forward,
            } => {
                let a = self.attention.forward(x, batch, bias, fused)?;
                let x = attention.add_forward(a, x, fused)?;
                let f = self.feed_forward.forward(&x, fused)?;
                feed_forward.add_forward(f, &x, fused)
            }
            Norms::Pre {
                attention,
                feed_forward,
            } => {
                let normed = match attention {
                    Some(norm) => norm.forward(x, fused)?,
                    None => x.clone(),
                };
                let x = (x + self.attention.forward(&normed, batch, bias, fused)?)?;
                let f = self
                    .feed_forward
                    .forward(&feed_forward.forward(&x, fused)?, fused)?;
                x + f
            }
        }
    }
}
