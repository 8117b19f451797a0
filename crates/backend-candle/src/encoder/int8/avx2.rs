//! The AVX2 kernel. AVX2 has no byte dot product that cannot saturate (`vpmaddubsw` adds
//! two u8 x i8 products into an i16), so it multiplies 16-bit words with `vpmaddwd`, which
//! sums pairs into 32 bits exactly. Both sides are widened before the kernel (the weights
//! once, when packed: `[k / 2][column][k % 2]` words; the activations once per call), so its
//! loop is loads, broadcasts and `vpmaddwd` + `vpaddd` only: per step of two inputs, two
//! loads of 8 columns x 2 words, and per row one broadcast of its two words into 4 x 2
//! accumulators (16 columns a pass, four passes a panel).

use super::kernel::Step;
use super::{Tile, MAX_ROWS, PANEL};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Inputs of one word step.
pub const WORD_STEP: usize = 2;

/// See [`super::Int8Kernel::panel`]; `a` and `panel` are words.
///
/// # Safety
/// The CPU has AVX2; `a` holds `rows` rows of `depth` words `stride` apart, `panel`
/// `depth * PANEL` words.
#[cfg(target_arch = "x86_64")]
pub unsafe fn panel(a: *const i16, panel: *const i16, step: Step, tile: &mut Tile) {
    // SAFETY (all arms): the caller's contract.
    unsafe {
        match step.rows.min(MAX_ROWS) {
            1 => rows_n::<1>(a, panel, step, tile),
            2 => rows_n::<2>(a, panel, step, tile),
            3 => rows_n::<3>(a, panel, step, tile),
            _ => rows_n::<4>(a, panel, step, tile),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_n<const R: usize>(a: *const i16, panel: *const i16, step: Step, tile: &mut Tile) {
    for quarter in 0..PANEL / 16 {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        if step.accumulate {
            for (acc, sums) in acc.iter_mut().zip(tile.iter()) {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let at = sums[quarter * 16 + j * 8..].as_ptr();
                    // SAFETY: 8 i32 of the row from a column below PANEL.
                    *acc = unsafe { _mm256_loadu_si256(at.cast()) };
                }
            }
        }
        for k2 in 0..step.depth / WORD_STEP {
            // SAFETY: within the caller's bounds: step `k2` of the panel and of each row.
            unsafe {
                let w = panel.add(k2 * PANEL * WORD_STEP + quarter * 16 * WORD_STEP);
                let b = [
                    _mm256_loadu_si256(w.cast()),
                    _mm256_loadu_si256(w.add(16).cast()),
                ];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = a
                        .add(r * step.stride + k2 * WORD_STEP)
                        .cast::<i32>()
                        .read_unaligned();
                    let x = _mm256_set1_epi32(x);
                    for (acc, b) in acc.iter_mut().zip(b) {
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(x, b));
                    }
                }
            }
        }
        for (acc, sums) in acc.iter().zip(tile.iter_mut()) {
            for (j, acc) in acc.iter().enumerate() {
                let at = sums[quarter * 16 + j * 8..].as_mut_ptr();
                // SAFETY: 8 i32 of the row from a column below PANEL.
                unsafe { _mm256_storeu_si256(at.cast(), *acc) };
            }
        }
    }
}

/// Never called: [`super::Int8Kernel::available`] is false off x86-64.
///
/// # Safety
/// None needed.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn panel(_: *const i16, _: *const i16, _: Step, _: &mut Tile) {
    unreachable!("AVX2 kernel on another architecture")
}
