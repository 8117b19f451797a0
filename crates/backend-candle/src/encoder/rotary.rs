//! A layer's rotary position embeddings: the frequencies its family computes, turned into
//! a table of angles for each batch.

use super::kernels::rotary::{RotaryStyle, RotaryTable};

/// Rotary embeddings of one attention layer.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
    style: RotaryStyle,
}

impl Rotary {
    /// The frequencies of the original RoPE: `theta ^ (-2i / dims)` for the first `dims`
    /// values of each head, in f32 as transformers computes them
    /// (`1 / base ** (arange(0, dims, 2).float() / dims)`).
    pub fn new(theta: f64, dims: usize, style: RotaryStyle) -> Self {
        let base = theta as f32;
        let inv_freq = (0..dims / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / dims as f32))
            .collect();
        Self { inv_freq, style }
    }

    /// Given frequencies (a family's own scaling), one per pair of rotated values.
    pub fn from_inv_freq(inv_freq: Vec<f32>, style: RotaryStyle) -> Self {
        Self { inv_freq, style }
    }

    /// The frequencies.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// How values pair up.
    pub fn style(&self) -> RotaryStyle {
        self.style
    }

    /// Values rotated in each head.
    pub fn rotated(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// The angles of positions `0..positions`.
    pub fn table(&self, positions: usize) -> RotaryTable {
        RotaryTable::new(&self.inv_freq, positions)
    }
}
