//! Activations to unsigned bytes, one scale and zero point a row.

use crate::encoder::kernels::math::multiversion;

/// Rows quantized to bytes, `padded` a row, with their scales and zero points.
pub struct QuantizedRows {
    /// `rows x padded` bytes; the padding is zero.
    pub values: Vec<u8>,
    /// `value ≈ (byte - zero) * scale` for each row: `(scale, zero)`.
    pub scales: Vec<(f32, i32)>,
}

/// Rows of `x` (`inputs` values each) times `smooth_inverse` (per input, if any), mapped
/// onto `0..=255` between the row's own minimum and maximum (zero included, so zero stays
/// exact). Asymmetric: the GELU outputs that feed the down projections hardly go below
/// -0.17, and a symmetric range would waste half the levels on negatives they never take.
pub fn quantize_rows(
    x: &[f32],
    inputs: usize,
    padded: usize,
    smooth_inverse: Option<&[f32]>,
) -> QuantizedRows {
    use rayon::prelude::*;
    let rows = x.len() / inputs.max(1);
    // Every byte is written by `quantize_row` (values and padding).
    let mut values = vec![0u8; rows * padded];
    let mut scales = vec![(0f32, 0i32); rows];
    values
        .par_chunks_mut(padded.max(1))
        .zip(scales.par_iter_mut())
        .zip(x.par_chunks(inputs.max(1)))
        .with_min_len(8)
        .for_each(|((out, scale), row)| {
            *scale = quantize_row(row, smooth_inverse, out);
        });
    QuantizedRows { values, scales }
}

multiversion! {
    /// One row of [`quantize_rows`]; returns its scale and zero point.
    fn quantize_row(row: &[f32], smooth_inverse: Option<&[f32]>, out: &mut [u8]) -> (f32, i32) => quantize_row_body
}

#[inline(always)]
fn quantize_row_body(row: &[f32], smooth_inverse: Option<&[f32]>, out: &mut [u8]) -> (f32, i32) {
    let (out, padding) = out.split_at_mut(row.len());
    padding.fill(0);
    let ones;
    let smooth = match smooth_inverse {
        Some(s) => &s[..row.len()],
        None => {
            ones = vec![1f32; row.len()];
            &ones[..]
        }
    };
    // Fixed-width lanes and compare-selects (`vminps`/`vmaxps`) so the loops vectorize;
    // the sum only carries NaN (and inf - inf) to the end.
    let (mut low, mut high, mut sum) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let mut lanes = |chunk: &[f32], scale: &[f32]| {
        for lane in 0..chunk.len() {
            let v = chunk[lane] * scale[lane];
            low[lane] = if v < low[lane] { v } else { low[lane] };
            high[lane] = if v > high[lane] { v } else { high[lane] };
            sum[lane] += v;
        }
    };
    let (chunks, scales) = (row.chunks_exact(LANES), smooth.chunks_exact(LANES));
    let (rest, rest_scales) = (chunks.remainder(), scales.remainder());
    for (chunk, scale) in chunks.zip(scales) {
        lanes(chunk, scale);
    }
    lanes(rest, rest_scales);
    let low = low.iter().fold(0f32, |m, v| m.min(*v));
    let high = high.iter().fold(0f32, |m, v| m.max(*v));
    let nan = sum.iter().sum::<f32>().is_nan();
    // A NaN row keeps a NaN scale, so its outputs are NaN as in f32; an all-zero row
    // quantizes to zeros with scale 0.
    let scale = if nan { f32::NAN } else { (high - low) / 255.0 };
    // A scale so small that its inverse overflows (values below ~1e-36) quantizes to zeros.
    let inverse = match 1.0 / scale {
        inverse if scale > 0.0 && inverse.is_finite() => inverse,
        _ => 0.0,
    };
    let zero = (-low * inverse).round_ties_even().clamp(0.0, 255.0);
    // `v * inverse + zero` lies in [0, 255] up to rounding; the clamp keeps it there.
    for ((o, v), s) in out.iter_mut().zip(row).zip(smooth) {
        let q = (v * s * inverse + zero).round_ties_even();
        let q = if q > 255.0 { 255.0 } else { q };
        // Also turns NaN (whose comparisons are false) into 0.
        let q = if q > 0.0 { q } else { 0.0 };
        // SAFETY: `q` is an integer in [0, 255] (a plain `as` cast would add NaN and
        // range checks that keep the loop from vectorizing).
        *o = unsafe { q.to_int_unchecked::<i32>() } as u8;
    }
    (scale, zero as i32)
}

/// Lanes of the range's accumulators (see `kernels::math`).
const LANES: usize = 16;
