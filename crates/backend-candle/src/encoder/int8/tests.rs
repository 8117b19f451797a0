use super::{Int8Kernel, Int8Matrix};
use crate::encoder::kernels::math::Activation;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn product(x: &[f32], w: &[f32], bias: &[f32], inputs: usize) -> Vec<f32> {
    let outputs = bias.len();
    x.chunks_exact(inputs)
        .flat_map(|row| {
            (0..outputs).map(move |c| {
                bias[c]
                    + row
                        .iter()
                        .enumerate()
                        .map(|(k, v)| v * w[k * outputs + c])
                        .sum::<f32>()
            })
        })
        .collect()
}

/// Shapes with ragged inputs (not a multiple of 4), outputs (not of 64) and rows (not of 4
/// nor of a task's 32).
const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (3, 5, 70),
    (9, 384, 64),
    (37, 131, 200),
    (70, 64, 129),
];

#[test]
fn every_kernel_adds_the_same_integers_as_the_scalar_one() {
    for (rows, inputs, outputs) in SHAPES {
        let w = values(inputs * outputs, 1);
        let mut x = values(rows * inputs, 2);
        // An outlier channel and an all-zero row, as real activations have.
        x.iter_mut().step_by(inputs).for_each(|v| *v *= 40.0);
        x[..inputs].fill(0.0);
        let bias = values(outputs, 3);
        let smooth: Vec<f32> = values(inputs, 4).iter().map(|v| 0.5 + v.abs()).collect();
        for smooth in [None, Some(&smooth[..])] {
            let reference = Int8Matrix::quantize(&w, inputs, outputs, smooth, Int8Kernel::Scalar)
                .unwrap()
                .forward(&x, &bias, Activation::Identity);
            for kernel in Int8Kernel::ALL.into_iter().filter(|k| k.available()) {
                let matrix = Int8Matrix::quantize(&w, inputs, outputs, smooth, kernel).unwrap();
                let out = matrix.forward(&x, &bias, Activation::Identity);
                // The integers are equal; the dequantization reorders nothing either.
                assert_eq!(out, reference, "{kernel:?} at {rows}x{inputs}x{outputs}");
            }
        }
    }
}

#[test]
fn the_int8_product_stays_within_the_rounding_of_its_scales() {
    for (rows, inputs, outputs) in SHAPES {
        let (w, x, bias) = (
            values(inputs * outputs, 5),
            values(rows * inputs, 6),
            values(outputs, 7),
        );
        let exact = product(&x, &w, &bias, inputs);
        let out = Int8Matrix::quantize(&w, inputs, outputs, None, Int8Kernel::detect())
            .unwrap()
            .forward(&x, &bias, Activation::Identity);
        // Each product is off by at most half a step of either scale; the worst case over
        // `inputs` products, with both sides within [-1, 1]:
        let bound = inputs as f32 * (1.0 / 127.0 + 1.0 / (127.0 * 127.0 * 4.0));
        for (a, b) in out.iter().zip(&exact) {
            assert!(
                (a - b).abs() <= bound,
                "{a} vs {b} at {rows}x{inputs}x{outputs}"
            );
        }
        let error = relative_error(&out, &exact);
        assert!(error <= 1e-3, "relative squared error {error}");
    }
}

fn relative_error(out: &[f32], exact: &[f32]) -> f32 {
    let error = out
        .iter()
        .zip(exact)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>();
    error / exact.iter().map(|b| b.powi(2)).sum::<f32>()
}

#[test]
fn smoothing_takes_the_error_of_outlier_channels_away() {
    let (rows, inputs, outputs) = (16, 96, 80);
    let (w, mut x, bias) = (
        values(inputs * outputs, 8),
        values(rows * inputs, 9),
        vec![0.0; 80],
    );
    // Three hot channels, as BERT's activations have.
    for row in x.chunks_exact_mut(inputs) {
        for k in [5, 40, 77] {
            row[k] *= 60.0;
        }
    }
    let exact = product(&x, &w, &bias, inputs);
    let smooth: Vec<f32> = (0..inputs)
        .map(|k| {
            let most_x = x
                .iter()
                .skip(k)
                .step_by(inputs)
                .fold(0f32, |m, v| m.max(v.abs()));
            let most_w = w[k * outputs..(k + 1) * outputs]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            (most_x / most_w).sqrt()
        })
        .collect();
    let error = |smooth: Option<&[f32]>| {
        let matrix =
            Int8Matrix::quantize(&w, inputs, outputs, smooth, Int8Kernel::detect()).unwrap();
        relative_error(&matrix.forward(&x, &bias, Activation::Identity), &exact)
    };
    let (plain, smoothed) = (error(None), error(Some(&smooth)));
    assert!(
        smoothed * 4.0 < plain,
        "smoothed {smoothed} vs plain {plain}"
    );
}

#[test]
fn activation_and_nan_rows_behave_as_in_f32() {
    let (inputs, outputs) = (8, 3);
    let w = values(inputs * outputs, 11);
    let mut x = values(2 * inputs, 12);
    x[inputs + 2] = f32::NAN;
    let bias = vec![-10.0, 0.0, 10.0];
    let matrix = Int8Matrix::quantize(&w, inputs, outputs, None, Int8Kernel::detect()).unwrap();
    let out = matrix.forward(&x, &bias, Activation::Relu);
    assert_eq!(out[0], 0.0, "relu of a large negative value");
    assert!(out[2] > 0.0);
    let out = matrix.forward(&x, &bias, Activation::Identity);
    assert!(
        out[3..].iter().all(|v| v.is_nan()),
        "a NaN input poisons its row: {out:?}"
    );
}

#[test]
fn a_mismatched_size_or_a_missing_kernel_is_refused() {
    assert!(Int8Matrix::quantize(&[0.0; 6], 2, 4, None, Int8Kernel::Scalar).is_none());
    assert!(Int8Matrix::quantize(&[0.0; 8], 2, 4, Some(&[1.0]), Int8Kernel::Scalar).is_none());
    for kernel in Int8Kernel::ALL {
        assert_eq!(Int8Kernel::parse(kernel.name()), Some(kernel));
        assert_eq!(
            Int8Matrix::quantize(&[1.0; 8], 2, 4, None, kernel).is_some(),
            kernel.available()
        );
    }
}
