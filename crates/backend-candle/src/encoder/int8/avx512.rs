//! The AVX-512 VNNI kernel: per step of four inputs, four 64-byte loads of the panel (16
//! columns x 4 inputs each), one broadcast of each row's four activation bytes, and
//! `vpdpbusd` into 4 x 4 accumulators.

use super::kernel::Step;
use super::{Tile, K_STEP, PANEL};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// See [`super::Int8Kernel::panel`].
///
/// # Safety
/// The CPU has AVX-512 F/BW and VNNI; `a` holds `rows` rows of `depth` bytes `stride`
/// apart, `panel` `depth * PANEL` bytes.
#[cfg(target_arch = "x86_64")]
pub unsafe fn panel(a: *const u8, panel: *const i8, step: Step, tile: &mut Tile) {
    // SAFETY (all arms): the caller's contract.
    unsafe {
        match step.rows {
            1 => rows_n::<1>(a, panel, step, tile),
            2 => rows_n::<2>(a, panel, step, tile),
            3 => rows_n::<3>(a, panel, step, tile),
            _ => rows_n::<4>(a, panel, step, tile),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_n<const R: usize>(a: *const u8, panel: *const i8, step: Step, tile: &mut Tile) {
    let stride = step.stride;
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    if step.accumulate {
        for (acc, sums) in acc.iter_mut().zip(tile.iter()) {
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: 16 i32 of `sums` from column 16 j.
                *acc = unsafe { _mm512_loadu_si512(sums[16 * j..].as_ptr().cast()) };
            }
        }
    }
    for k4 in 0..step.depth / K_STEP {
        // SAFETY: within the caller's bounds: step `k4` of the panel and of each row.
        unsafe {
            let w = panel.add(k4 * PANEL * K_STEP);
            let b = [
                _mm512_loadu_si512(w.cast()),
                _mm512_loadu_si512(w.add(64).cast()),
                _mm512_loadu_si512(w.add(128).cast()),
                _mm512_loadu_si512(w.add(192).cast()),
            ];
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = a
                    .add(r * stride + k4 * K_STEP)
                    .cast::<i32>()
                    .read_unaligned();
                let x = _mm512_set1_epi32(x);
                for (acc, b) in acc.iter_mut().zip(b) {
                    *acc = _mm512_dpbusd_epi32(*acc, x, b);
                }
            }
        }
    }
    for (acc, sums) in acc.iter().zip(tile.iter_mut()) {
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: 16 i32 of `sums` from column 16 j.
            unsafe { _mm512_storeu_si512(sums[16 * j..].as_mut_ptr().cast(), *acc) };
        }
    }
}

/// Never called: [`super::Int8Kernel::available`] is false off x86-64.
///
/// # Safety
/// None needed.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn panel(_: *const u8, _: *const i8, _: Step, _: &mut Tile) {
    unreachable!("AVX-512 kernel on another architecture")
}
