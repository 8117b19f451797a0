//! The AVX-VNNI kernel (`vpdpbusd` on 256-bit registers: Intel's client cores from Alder
//! Lake on and AMD's from Zen 4 have it, some without AVX-512): the bytes layout of the
//! AVX-512 kernel, each 64-column panel in two passes of 32 columns, two rows at a time
//! (8 accumulators, 4 weights and a broadcast in 16 registers).

use super::kernel::Step;
use super::{Tile, K_STEP, MAX_ROWS, PANEL};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// See [`super::Int8Kernel::panel`].
///
/// # Safety
/// The CPU has AVX2 and AVX-VNNI; `a` holds `rows` rows of `depth` bytes `stride` apart,
/// `panel` `depth * PANEL` bytes.
#[cfg(target_arch = "x86_64")]
pub unsafe fn panel(a: *const u8, panel: *const i8, step: Step, tile: &mut Tile) {
    for first in (0..step.rows.min(MAX_ROWS)).step_by(2) {
        // SAFETY: the caller's contract; row `first` (and `first + 1` when it exists).
        unsafe {
            let a = a.add(first * step.stride);
            if step.rows - first >= 2 {
                rows_n::<2>(a, panel, step, tile, first);
            } else {
                rows_n::<1>(a, panel, step, tile, first);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn rows_n<const R: usize>(
    a: *const u8,
    panel: *const i8,
    step: Step,
    tile: &mut Tile,
    first: usize,
) {
    for half in 0..2 {
        let columns = half * PANEL / 2;
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        if step.accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let at = tile[first + r][columns + 8 * j..].as_ptr();
                    // SAFETY: 8 i32 of the row from a column below PANEL.
                    *acc = unsafe { _mm256_loadu_si256(at.cast()) };
                }
            }
        }
        for k4 in 0..step.depth / K_STEP {
            // SAFETY: within the caller's bounds: step `k4` of the panel and of each row.
            unsafe {
                let w = panel.add(k4 * PANEL * K_STEP + columns * K_STEP);
                let b = [0, 32, 64, 96].map(|at| _mm256_loadu_si256(w.add(at).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = a
                        .add(r * step.stride + k4 * K_STEP)
                        .cast::<i32>()
                        .read_unaligned();
                    let x = _mm256_set1_epi32(x);
                    for (acc, b) in acc.iter_mut().zip(b) {
                        *acc = _mm256_dpbusd_avx_epi32(*acc, x, b);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                let at = tile[first + r][columns + 8 * j..].as_mut_ptr();
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
pub unsafe fn panel(_: *const u8, _: *const i8, _: Step, _: &mut Tile) {
    unreachable!("AVX-VNNI kernel on another architecture")
}
