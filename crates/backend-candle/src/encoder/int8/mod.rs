//! int8 dense layers: weights int8 per output column, activations int8 per row (one scale
//! a row, found as the row is quantized), sums in int32, dequantized together with the
//! bias and the activation in one pass over each output tile.
//!
//! Per-tensor activation scales cannot hold the outliers of BERT-like activations (a few
//! channels run 50x hotter than the rest); a scale per row halves that damage, and
//! SmoothQuant's per-input-channel scales `s` remove most of the rest: the input is
//! multiplied by `1/s` as it is quantized and the weight rows by `s`, so `x·W` is
//! unchanged while the outliers move into the weights, which take them per column. Doing
//! the `1/s` in the quantizer instead of folding it into the previous layer's norm works
//! the same for every family, whatever sits before the layer, and costs one multiply per
//! value of a pass that reads every value anyway.
//!
//! The kernel is chosen at run time ([`Int8Kernel::detect`]): AVX-512 VNNI, AVX-VNNI, AVX2,
//! or the portable scalar one. They add the same integers, so their outputs are equal bit for bit.

mod avx2;
mod avx512;
mod avxvnni;
mod kernel;
mod matrix;
mod rows;
mod scalar;

pub use kernel::Int8Kernel;
pub use matrix::Int8Matrix;
pub use model_manager_core::CpuFeatures;

/// Output columns of one packed panel: four 16-lane AVX-512 registers.
pub const PANEL: usize = 64;
/// Input values one VNNI instruction sums per lane; inputs are padded to a multiple.
pub const K_STEP: usize = 4;
/// Activation rows one kernel call takes.
pub const MAX_ROWS: usize = 4;

/// The int32 sums of up to [`MAX_ROWS`] rows against one panel.
pub type Tile = [[i32; PANEL]; MAX_ROWS];

#[cfg(test)]
mod tests;
