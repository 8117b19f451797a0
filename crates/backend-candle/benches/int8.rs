//! The int8 dense layer against the f32 one it replaces, on all-MiniLM-L6-v2's shapes
//! (QKV 384→1152, up 384→1536, down 1536→384) for a batch of 1,024 tokens and for one short
//! text (16 tokens): the fused f32 `Dense` op (gemm crate) beside `Int8Matrix::forward` on
//! every kernel this CPU runs, medians of the same run, quantization of the rows included.
//!
//! Run: `cargo bench -p model-manager-candle --bench int8` (MM_BENCH_RUNS, default 21).

use candle_core::{Device, Tensor};
use model_manager_candle::encoder::int8::{CpuFeatures, Int8Kernel, Int8Matrix};
use model_manager_candle::encoder::kernels::math::Activation;
use model_manager_candle::encoder::kernels::ops::Dense;
use std::time::Instant;

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
            }
            println!();
        }
    }
}
