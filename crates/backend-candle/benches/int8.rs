//! The int8 dense layer against the f32 one it replaces, on all-MiniLM-L6-v2's shapes
//! (QKV 384→1152, up 384→1536, down 1536→384) for a batch of 1,024 tokens and for one short
//! text (16 tokens): the fused f32 `Dense` op (gemm crate) beside `Int8Matrix::forward` on
//! every kernel this CPU runs, medians of the same run, quantization of the rows included.
//!
//! Beside them, `f32 avx2`: an f32 layer on AVX2 + FMA with the int8 AVX2 kernel's blocking
//! (4 rows x 16 columns a pass over 64-column panels, tasks of 32 rows), what an f32 GEMM
//! reaches on a CPU without AVX-512. On such a CPU the AVX2 int8 kernel's peer is that
//! layer, not the AVX-512 gemm: `vpmaddwd` does 16 multiply-adds per instruction, an AVX2
//! FMA 8, an AVX-512 FMA 16.
//!
//! Run: `cargo bench -p model-manager-candle --bench int8` (MM_BENCH_RUNS, default 21).

use candle_core::{Device, Tensor};
use model_manager_candle::encoder::int8::{CpuFeatures, Int8Kernel, Int8Matrix};
use model_manager_candle::encoder::kernels::math::Activation;
use model_manager_candle::encoder::kernels::ops::Dense;
use std::time::Instant;

mod f32_avx2 {
    //! The f32 AVX2 + FMA dense layer of the comparison (no bias, no activation).

    use rayon::prelude::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    const PANEL: usize = 64;
    const TASK_ROWS: usize = 32;

    /// Weights packed `[panel][input][64 columns]`.
    pub struct Layer {
        panels: Vec<f32>,
        inputs: usize,
        outputs: usize,
    }

    impl Layer {
        /// `w` is `[inputs][outputs]`, `outputs` a multiple of 64.
        pub fn pack(w: &[f32], inputs: usize, outputs: usize) -> Self {
            let mut panels = Vec::with_capacity(w.len());
            for p in 0..outputs / PANEL {
                for k in 0..inputs {
                    panels.extend_from_slice(&w[k * outputs + p * PANEL..][..PANEL]);
                }
            }
            Self {
                panels,
                inputs,
                outputs,
            }
        }

        pub fn available() -> bool {
            cfg!(target_arch = "x86_64")
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
        }

        pub fn forward(&self, x: &[f32]) -> Vec<f32> {
            let rows = x.len() / self.inputs;
            let mut out = vec![0f32; rows * self.outputs];
            let tasks: Vec<(usize, usize)> = (0..rows.div_ceil(TASK_ROWS))
                .flat_map(|t| (0..self.outputs / PANEL).map(move |p| (t, p)))
                .collect();
            let tiles: Vec<(usize, usize, Vec<f32>)> = tasks
                .into_par_iter()
                .map(|(t, p)| {
                    let first = t * TASK_ROWS;
                    let n = TASK_ROWS.min(rows - first);
                    let mut tile = vec![0f32; n * PANEL];
                    let panel = &self.panels[p * self.inputs * PANEL..][..self.inputs * PANEL];
                    for r in (0..n).step_by(4) {
                        let a = &x[(first + r) * self.inputs..];
                        // SAFETY: AVX2 and FMA checked by `available`; `a` holds
                        // min(4, n - r) rows, `panel` inputs x 64 values.
                        unsafe {
                            rows4(a, self.inputs, 4.min(n - r), panel, &mut tile[r * PANEL..])
                        };
                    }
                    (first, p, tile)
                })
                .collect();
            for (first, p, tile) in tiles {
                for (r, row) in tile.chunks(PANEL).enumerate() {
                    out[(first + r) * self.outputs + p * PANEL..][..PANEL].copy_from_slice(row);
                }
            }
            out
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows4(a: &[f32], depth: usize, rows: usize, panel: &[f32], tile: &mut [f32]) {
        for quarter in 0..PANEL / 16 {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for k in 0..depth {
                let w = &panel[k * PANEL + quarter * 16..];
                // SAFETY: 16 values of the panel's row `k`.
                let b = unsafe {
                    [
                        _mm256_loadu_ps(w.as_ptr()),
                        _mm256_loadu_ps(w.as_ptr().add(8)),
                    ]
                };
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let x = _mm256_set1_ps(a[r * depth + k]);
                    for (acc, b) in acc.iter_mut().zip(b) {
                        *acc = _mm256_fmadd_ps(x, b, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                for (j, acc) in acc.iter().enumerate() {
                    let at = &mut tile[r * PANEL + quarter * 16 + j * 8..][..8];
                    // SAFETY: 8 values of the tile's row `r`.
                    unsafe { _mm256_storeu_ps(at.as_mut_ptr(), *acc) };
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn rows4(_: &[f32], _: usize, _: usize, _: &[f32], _: &mut [f32]) {
        unreachable!()
    }
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1 << 24) as f32)
                - 0.5
        })
        .collect()
}

fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let runs: usize = std::env::var("MM_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(21);
    println!("CPU: {:?}", CpuFeatures::detect());
    for tokens in [1024, 16] {
        for (name, inputs, outputs) in [("qkv", 384, 1152), ("up", 384, 1536), ("down", 1536, 384)]
        {
            let (w, x, bias) = (
                values(inputs * outputs, 1),
                values(tokens * inputs, 2),
                values(outputs, 3),
            );
            let device = Device::Cpu;
            let xt = Tensor::from_slice(&x, (tokens, inputs), &device).unwrap();
            let wt = Tensor::from_slice(&w, (inputs, outputs), &device).unwrap();
            let bt = Tensor::from_slice(&bias, outputs, &device).unwrap();
            let f32_time = median(runs, || {
                xt.apply_op3_no_bwd(&wt, &bt, &Dense(Activation::Identity))
                    .unwrap();
            });
            let macs = (tokens * inputs * outputs) as f64;
            print!(
                "{tokens:>5} tokens {name:<5} f32 {:>7.1} µs ({:>5.1} GMAC/s)",
                f32_time * 1e6,
                macs / f32_time / 1e9
            );
            let f32_avx2 = f32_avx2::Layer::available().then(|| {
                let layer = f32_avx2::Layer::pack(&w, inputs, outputs);
                let reference = xt
                    .apply_op3_no_bwd(&wt, &bt, &Dense(Activation::Identity))
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let ours = layer.forward(&x);
                let worst = ours
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v + bias[i % outputs] - reference[i]).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-3, "the f32 AVX2 layer is off by {worst}");
                let t = median(runs, || {
                    std::hint::black_box(layer.forward(&x));
                });
                print!("  f32 avx2 {:>7.1} µs ({:.2}x)", t * 1e6, f32_time / t);
                t
            });
            for kernel in Int8Kernel::ALL.into_iter().filter(|k| k.available()) {
                let matrix = Int8Matrix::quantize(&w, inputs, outputs, None, kernel).unwrap();
                let t = median(runs, || {
                    std::hint::black_box(matrix.forward(&x, &bias, Activation::Identity));
                });
                print!(
                    "  {} {:>7.1} µs ({:.2}x)",
                    kernel.name(),
                    t * 1e6,
                    f32_time / t
                );
                if let (Int8Kernel::Avx2, Some(base)) = (kernel, f32_avx2) {
                    print!(" [{:.2}x f32 avx2]", base / t);
                }
            }
            println!();
        }
    }
}
