//! The portable kernel, and the reference of the others.

use super::kernel::Step;
use super::{Tile, K_STEP, PANEL};

/// See [`super::Int8Kernel::panel`].
pub fn panel(a: &[u8], panel: &[i8], step: Step, tile: &mut Tile) {
    for (r, sums) in tile.iter_mut().enumerate().take(step.rows) {
        let row = &a[r * step.stride..r * step.stride + step.depth];
        if !step.accumulate {
            sums.fill(0);
        }
        let steps = panel.chunks_exact(PANEL * K_STEP).take(step.depth / K_STEP);
        for (x, w) in row.chunks_exact(K_STEP).zip(steps) {
            for (sum, w) in sums.iter_mut().zip(w.chunks_exact(K_STEP)) {
                *sum += x
                    .iter()
                    .zip(w)
                    .map(|(&x, &w)| x as i32 * w as i32)
                    .sum::<i32>();
            }
        }
    }
}
