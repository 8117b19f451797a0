//! A weight matrix in int8, packed in panels for the kernels, and the product of rows
//! with it.

use super::avx2::WORD_STEP;
use super::kernel::Operands;
use super::rows::{quantize_rows, QuantizedRows};
use super::{Int8Kernel, Tile, K_STEP, MAX_ROWS, PANEL};
use crate::encoder::kernels::math::{activation, multiversion, Activation};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows one task multiplies against one panel (a multiple of `MAX_ROWS`).
const ROWS_PER_TASK: usize = 32;
/// Inputs of one block: 256 x 64 bytes of the panel, a third of L1.
const DEPTH_PER_BLOCK: usize = 256;

/// The output matrix, written by tasks at disjoint rows and columns.
struct Output(*mut f32);
// SAFETY: tasks write disjoint parts (see `Int8Matrix::multiply`).
unsafe impl Sync for Output {}

/// The weights as the kernel reads them, in panels of 64 columns.
enum Packed {
    /// Steps of 4 inputs x 64 columns x 4 bytes (`[k / 4][column][k % 4]`), the layout
    /// VNNI's four-byte lanes read.
    Bytes(Vec<i8>),
    /// Steps of 2 inputs x 64 columns x 2 words (`[k / 2][column][k % 2]`), for the AVX2
    /// kernel, which multiplies words.
    Words(Vec<i16>),
}

/// `W` (`[inputs, outputs]`) as int8, a scale per output column, packed for its kernel.
pub struct Int8Matrix {
    packed: Packed,
    inputs: usize,
    padded: usize,
    outputs: usize,
    column_scales: Vec<f32>,
    /// `Σ_k q[k][c]`: times a row's zero point, what its unsigned bytes add to column `c`.
    column_sums: Vec<i32>,
    smooth_inverse: Option<Vec<f32>>,
    kernel: Int8Kernel,
}

impl Int8Matrix {
    /// `weight` (`inputs x outputs`, row-major) with its rows multiplied by `smooth` (one
    /// per input; the rows' inputs are divided by it as they are quantized), quantized per
    /// column, for `kernel`. `None` if the CPU lacks the kernel or the sizes disagree.
    pub fn quantize(
        weight: &[f32],
        inputs: usize,
        outputs: usize,
        smooth: Option<&[f32]>,
        kernel: Int8Kernel,
    ) -> Option<Self> {
        // i32 sums of 255 x 127 products stay exact below this many inputs.
        const MOST_INPUTS: usize = (i32::MAX / (255 * 127)) as usize;
        // A layer without inputs has nothing to quantize (and no panel to split).
        if !kernel.available()
            || inputs == 0
            || inputs > MOST_INPUTS
            || weight.len() != inputs * outputs
            || smooth.is_some_and(|s| s.len() != inputs)
        {
            return None;
        }
        let padded = inputs.next_multiple_of(K_STEP);
        // The kernel's input step: 4 bytes a lane, or 2 words.
        let step = if kernel.reads_words() {
            WORD_STEP
        } else {
            K_STEP
        };
        // One task per panel of PANEL columns, each writing its own part of the packing.
        let mut bytes = vec![0i8; outputs.div_ceil(PANEL) * padded * PANEL];
        let panels: Vec<(Vec<f32>, Vec<i32>)> = bytes
            .par_chunks_mut(padded * PANEL)
            .enumerate()
            .map(|(p, panel)| {
                let columns = p * PANEL..((p + 1) * PANEL).min(outputs);
                quantize_panel(weight, outputs, smooth, columns, step, panel)
            })
            .collect();
        let (scales, sums): (Vec<Vec<f32>>, Vec<Vec<i32>>) = panels.into_iter().unzip();
        let (column_scales, column_sums) = (scales.concat(), sums.concat());
        let packed = match kernel.reads_words() {
            true => Packed::Words(bytes.iter().map(|&q| q as i16).collect()),
            false => Packed::Bytes(bytes),
        };
        Some(Self {
            packed,
            inputs,
            padded,
            outputs,
            column_scales,
            column_sums,
            smooth_inverse: smooth.map(|s| s.iter().map(|s| 1.0 / s).collect()),
            kernel,
        })
    }

    /// Inputs of a row.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Outputs of a row.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The kernel it runs.
    pub fn kernel(&self) -> Int8Kernel {
        self.kernel
    }

    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        let packed = match &self.packed {
            Packed::Bytes(b) => b.len(),
            Packed::Words(w) => 2 * w.len(),
        };
        packed
            + 4 * (self.column_scales.len() + self.column_sums.len())
            + 4 * self.smooth_inverse.as_ref().map_or(0, Vec::len)
    }

    /// `act(x W + bias)` for the rows of `x` (`inputs` values each): `[rows, outputs]`.
    pub fn forward(&self, x: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
        assert_eq!(bias.len(), self.outputs, "one bias per output");
        assert!(
            x.len().is_multiple_of(self.inputs.max(1)),
            "whole rows of inputs"
        );
        let rows = x.len() / self.inputs.max(1);
        let quantized = quantize_rows(x, self.inputs, self.padded, self.smooth_inverse.as_deref());
        let words: Vec<i16> = match self.kernel.reads_words() {
            true => quantized.values.iter().map(|&v| v as i16).collect(),
            false => Vec::new(),
        };
        let mut out: Vec<f32> = Vec::with_capacity(rows * self.outputs);
        let panels = self.outputs.div_ceil(PANEL);
        let target = Output(out.as_mut_ptr());
        // One task per (32 rows, panel): a single short text still spreads over the cores.
        (0..rows.div_ceil(ROWS_PER_TASK) * panels)
            .into_par_iter()
            .for_each(|task| {
                let (chunk, p) = (task / panels, task % panels);
                let first = chunk * ROWS_PER_TASK;
                let rows = (rows - first).min(ROWS_PER_TASK);
                self.multiply(&quantized, &words, first, rows, p, bias, act, &target);
            });
        // SAFETY: the tasks wrote every row's every column (each row group meets every
        // panel), and f32 needs no drop.
        unsafe { out.set_len(rows * self.outputs) };
        out
    }

    /// Rows `first..first + rows` times panel `p`, into their columns of `target`.
    #[allow(clippy::too_many_arguments)]
    fn multiply(
        &self,
        quantized: &QuantizedRows,
        words: &[i16],
        first: usize,
        rows: usize,
        p: usize,
        bias: &[f32],
        act: Activation,
        target: &Output,
    ) {
        let mut tiles: [Tile; ROWS_PER_TASK / MAX_ROWS] =
            [[[0; PANEL]; MAX_ROWS]; ROWS_PER_TASK / MAX_ROWS];
        let panel = p * self.padded * PANEL..(p + 1) * self.padded * PANEL;
        let columns = p * PANEL..((p + 1) * PANEL).min(self.outputs);
        // Inputs in blocks, so the block of the panel stays in L1 across the row groups.
        for start in (0..self.padded).step_by(DEPTH_PER_BLOCK) {
            let depth = (self.padded - start).min(DEPTH_PER_BLOCK);
            let block = panel.start + start * PANEL..panel.start + (start + depth) * PANEL;
            for (g, tile) in tiles.iter_mut().enumerate() {
                let group = first + g * MAX_ROWS;
                if group >= first + rows {
                    break;
                }
                let n = (first + rows - group).min(MAX_ROWS);
                let at = group * self.padded + start;
                let operands = match &self.packed {
                    Packed::Bytes(b) => Operands::Bytes {
                        a: &quantized.values[at..],
                        panel: &b[block.clone()],
                    },
                    Packed::Words(w) => Operands::Words {
                        a: &words[at..],
                        panel: &w[block.clone()],
                    },
                };
                self.kernel
                    .panel(operands, self.padded, n, depth, tile, start > 0);
            }
        }
        for (g, tile) in tiles.iter().enumerate() {
            let group = first + g * MAX_ROWS;
            if group >= first + rows {
                break;
            }
            let n = (first + rows - group).min(MAX_ROWS);
            for (r, sums) in tile.iter().enumerate().take(n) {
                // SAFETY: row `group + r` < rows of the output, columns of panel `p`: no
                // other task writes them, and the allocation outlives the tasks. They are
                // not read before `dequantize` writes them.
                let out = unsafe {
                    let at = target.0.add((group + r) * self.outputs + columns.start);
                    std::slice::from_raw_parts_mut(at.cast::<MaybeUninit<f32>>(), columns.len())
                };
                let out =
                    self.dequantize(sums, quantized.scales[group + r], columns.start, bias, out);
                activation(out, act);
            }
        }
    }

    /// `out[c] = (sum - zero Σw) * row_scale * column_scale + bias` for the columns from
    /// `start`.
    fn dequantize<'o>(
        &self,
        sums: &[i32; PANEL],
        (row_scale, zero): (f32, i32),
        start: usize,
        bias: &[f32],
        out: &'o mut [MaybeUninit<f32>],
    ) -> &'o mut [f32] {
        let columns = start..start + out.len();
        let scales = &self.column_scales[columns.clone()];
        let column_sums = &self.column_sums[columns.clone()];
        dequantize_row(
            sums,
            zero,
            row_scale,
            scales,
            column_sums,
            &bias[columns],
            out,
        );
        // SAFETY: `dequantize_row` wrote every value.
        unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
    }
}

multiversion! {
    /// `out[c] = (sums[c] - zero column_sums[c]) row_scale scales[c] + bias[c]`, every `c`
    /// of `out`.
    fn dequantize_row(sums: &[i32; PANEL], zero: i32, row_scale: f32, scales: &[f32], column_sums: &[i32], bias: &[f32], out: &mut [MaybeUninit<f32>]) => dequantize_row_body
}

#[inline(always)]
fn dequantize_row_body(
    sums: &[i32; PANEL],
    zero: i32,
    row_scale: f32,
    scales: &[f32],
    column_sums: &[i32],
    bias: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    let n = out.len();
    let (sums, scales, column_sums, bias) =
        (&sums[..n], &scales[..n], &column_sums[..n], &bias[..n]);
    for c in 0..n {
        out[c].write((sums[c] - zero * column_sums[c]) as f32 * (row_scale * scales[c]) + bias[c]);
    }
}

/// Quantizes the weight columns `columns` (of `outputs`, rows smoothed by `smooth`) into
/// `panel`, `step` inputs together per column; their scales and sums.
fn quantize_panel(
    weight: &[f32],
    outputs: usize,
    smooth: Option<&[f32]>,
    columns: std::ops::Range<usize>,
    step: usize,
    panel: &mut [i8],
) -> (Vec<f32>, Vec<i32>) {
    let rows = weight
        .chunks_exact(outputs)
        .map(|row| &row[columns.clone()]);
    let factor = |k: usize| smooth.map_or(1.0, |s| s[k]);
    let mut most = vec![0f32; columns.len()];
    for (k, row) in rows.clone().enumerate() {
        let f = factor(k);
        for (m, w) in most.iter_mut().zip(row) {
            *m = m.max((w * f).abs());
        }
    }
    let scales: Vec<f32> = most.into_iter().map(|m| m / 127.0).collect();
    let mut sums = vec![0i32; columns.len()];
    for (k, row) in rows.enumerate() {
        let (base, f) = ((k / step) * PANEL * step + k % step, factor(k));
        for (c, (w, &scale)) in row.iter().zip(&scales).enumerate() {
            let q = match scale > 0.0 {
                true => round_half_away(w * f / scale).clamp(-127.0, 127.0) as i8,
                false => 0,
            };
            panel[base + c * step] = q;
            sums[c] += q as i32;
        }
    }
    (scales, sums)
}

/// `x.round()` (halves away from zero) for `|x| < 2^31`, inline: without SSE4.1 in the
/// baseline target `round` is a libm call per weight. `x - trunc(x)` is exact in f32 below
/// 2^23, and larger values are already whole.
#[inline]
fn round_half_away(x: f32) -> f32 {
    let whole = x as i32 as f32;
    // Without a branch: which way a weight rounds is a coin toss to the predictor.
    let away = ((x - whole).abs() >= 0.5) as i32 as f32;
    // copysign: -0.4 rounds to -0, as `round` gives it.
    (whole + away * x.signum()).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::round_half_away;

    #[test]
    fn rounding_matches_std_round_on_halves_and_neighbours() {
        let mut values = vec![
            0.0f32, -0.0, 0.5, -0.5, 1.5, -2.5, 126.5, -127.49999, 1e9, -2e9,
        ];
        values.extend([0.49999997f32, -0.49999997, 8388607.5, 8388608.0]);
        // Every f32 step around a few halves, and a spread of ordinary values.
        for half in [0.5f32, 2.5, 63.5, -63.5] {
            let mut x = half;
            for _ in 0..8 {
                x = x.next_down();
            }
            for _ in 0..16 {
                values.push(x);
                x = x.next_up();
            }
        }
        values.extend((0..20_000).map(|i| (i as f32 * 0.0137 - 137.0) * 0.93));
        for x in values {
            assert_eq!(round_half_away(x).to_bits(), x.round().to_bits(), "{x}");
        }
    }
}
