//! Row kernels of the fused CPU path, on plain f32 slices: bias + activation, residual +
//! layer norm, softmax. Each is written as branch-free loops the compiler vectorizes,
//! compiled for baseline x86-64, AVX2+FMA and AVX-512 and picked at run time, because the
//! workspace builds for the generic target; `exp` and `erf` are polynomial forms for the
//! same reason (libm's are scalar calls).

/// The feed-forward activation, as the config's `hidden_act` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu` in HF BERT: `0.5 x (1 + erf(x / sqrt 2))`.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`: `x * sigmoid(x)`.
    Silu,
    /// `tanh` (BERT's pooler, RoBERTa's classification head).
    Tanh,
    /// No activation (bias only).
    Identity,
}

/// Lanes of the manual accumulators: wide enough for two AVX2 registers, so a reduction
/// vectorizes although float addition is not associative to the compiler.
const LANES: usize = 16;

/// Defines `$name` as `$body` compiled for baseline x86-64, for AVX2+FMA and for AVX-512,
/// and picks the widest the CPU has at run time.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
                    // SAFETY: the CPU has the features `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

multiversion! {
    /// `x = act(x)` for every value.
    pub fn activation(values: &mut [f32], act: Activation) => activation_body
}

#[inline(always)]
fn activation_body(values: &mut [f32], act: Activation) {
    match act {
        Activation::GeluErf => values.iter_mut().for_each(|x| *x = gelu_erf(*x)),
        Activation::GeluTanh => values.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
        Activation::Relu => values.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Silu => values.iter_mut().for_each(|x| *x = silu(*x)),
        Activation::Tanh => values.iter_mut().for_each(|x| *x = x.tanh()),
        Activation::Identity => {}
    }
}

multiversion! {
    /// The gated feed-forward's middle: for rows of `2 * width` values `[a | b]`,
    /// `out = act(a) * b` (`width` values a row).
    pub fn gated(rows: &[f32], out: &mut [f32], width: usize, act: Activation) => gated_body
}

#[inline(always)]
fn gated_body(rows: &[f32], out: &mut [f32], width: usize, act: Activation) {
    if width == 0 {
        return;
    }
    for (row, out) in rows
        .chunks_exact(2 * width)
        .zip(out.chunks_exact_mut(width))
    {
        let (a, b) = row.split_at(width);
        match act {
            Activation::GeluErf => out
                .iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, a), b)| *o = gelu_erf(*a) * b),
            Activation::GeluTanh => out
                .iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, a), b)| *o = gelu_tanh(*a) * b),
            Activation::Relu => out
                .iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, a), b)| *o = a.max(0.0) * b),
            Activation::Silu => out
                .iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, a), b)| *o = silu(*a) * b),
            Activation::Tanh => out
                .iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, a), b)| *o = a.tanh() * b),
            Activation::Identity => out
                .iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, a), b)| *o = a * b),
        }
    }
}

/// The parameters of a residual + layer-norm step, each of the hidden width.
pub struct NormParams<'a> {
    /// Layer-norm scale.
    pub gamma: &'a [f32],
    /// Layer-norm shift.
    pub beta: &'a [f32],
    /// Layer-norm epsilon.
    pub eps: f32,
}

multiversion! {
    /// `rows[r] = layer_norm(rows[r] + residual[r])` for every row of the hidden width.
    pub fn add_layer_norm(rows: &mut [f32], residual: &[f32], p: &NormParams) => add_layer_norm_body
}

#[inline(always)]
fn add_layer_norm_body(rows: &mut [f32], residual: &[f32], p: &NormParams) {
    let width = p.gamma.len();
    if width == 0 {
        return;
    }
    for (row, res) in rows
        .chunks_exact_mut(width)
        .zip(residual.chunks_exact(width))
    {
        for (x, r) in row.iter_mut().zip(res) {
            *x += r;
        }
        normalize_row(row, p);
    }
}

/// `row = (row - mean) / sqrt(var + eps) * gamma + beta`.
#[inline(always)]
fn normalize_row(row: &mut [f32], p: &NormParams) {
    let width = row.len();
    // Two passes (mean, then squared deviations) as torch does: the one-pass
    // E[x^2] - E[x]^2 loses digits in f32.
    let mean = sum(row) / width as f32;
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += (x - mean) * (x - mean);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|x| (x - mean) * (x - mean))
        .sum();
    let var = (acc.iter().sum::<f32>() + tail) / width as f32;
    let inv = 1.0 / (var + p.eps).sqrt();
    for ((x, g), b) in row.iter_mut().zip(p.gamma).zip(p.beta) {
        *x = (*x - mean) * inv * g + b;
    }
}

multiversion! {
    /// `out[r] = layer_norm(rows[r])` for every row of the hidden width.
    pub fn layer_norm(rows: &[f32], out: &mut [f32], p: &NormParams) => layer_norm_body
}

#[inline(always)]
fn layer_norm_body(rows: &[f32], out: &mut [f32], p: &NormParams) {
    out.copy_from_slice(rows);
    let width = p.gamma.len();
    if width == 0 {
        return;
    }
    out.chunks_exact_mut(width)
        .for_each(|row| normalize_row(row, p));
}

multiversion! {
    /// `out[r] = rows[r] / sqrt(mean(rows[r]^2) + eps) * weight` (RMS norm) for every row of
    /// the weight's width.
    pub fn rms_norm(rows: &[f32], out: &mut [f32], weight: &[f32], eps: f32) => rms_norm_body
}

#[inline(always)]
fn rms_norm_body(rows: &[f32], out: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    if width == 0 {
        return;
    }
    for (row, out) in rows.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (a, x) in acc.iter_mut().zip(chunk) {
                *a += x * x;
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
        let inv = 1.0 / ((acc.iter().sum::<f32>() + tail) / width as f32 + eps).sqrt();
        for ((o, x), w) in out.iter_mut().zip(row).zip(weight) {
            *o = x * inv * w;
        }
    }
}

multiversion! {
    /// Every row of width `width`: `row = exp(row - max(row))`, and `1 / sum(row)` pushed
    /// to `inv_sums`: a softmax whose division the caller applies where it is cheaper
    /// (after the product with V, on `head_dim` values per row instead of `width`).
    pub fn softmax_unnormalized(rows: &mut [f32], width: usize, inv_sums: &mut Vec<f32>) => softmax_unnormalized_body
}

#[inline(always)]
fn softmax_unnormalized_body(rows: &mut [f32], width: usize, inv_sums: &mut Vec<f32>) {
    if width == 0 {
        return;
    }
    for row in rows.chunks_exact_mut(width) {
        inv_sums.push(1.0 / exp_shifted(row));
    }
}

/// `row = exp(row - max(row))`, returning the sum.
#[inline(always)]
fn exp_shifted(row: &mut [f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a = a.max(*x);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    row.iter_mut().for_each(|x| *x = exp(*x - max));
    sum(row)
}

#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `e^x`, relative error about 2e-7, branch-free (Cephes' `expf` polynomial). Inputs
/// below -87 give `e^-87` (1.6e-38): zero to a softmax.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Rounds to the nearest integer by the float-add trick (vectorizes without SSE4.1).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from the bits of `t`, whose mantissa holds n: integer ops only, no float to int
    // conversion (which saturates, and does not vectorize on older targets). n lies in
    // [-126, 127] after the clamp.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// `erf(x)`, absolute error below 5e-7 in f32 (1e-7 in exact arithmetic): Eigen's rational
/// approximation (odd polynomial of degree 13 over even of degree 8), clamped at |x| = 4
/// where erf is 1 to f32 precision.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_473_9e-2;
    x * p / q
}

/// The exact (erf) GELU.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `x * sigmoid(x)`.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The tanh-approximated GELU, as candle and HF `gelu_new` compute it.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-12_000..=12_000).map(|i| i as f32 / 1000.0)
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        // candle's f64 gelu_erf goes through libm's erf: the reference.
        let xs: Vec<f64> = grid().map(f64::from).collect();
        let want = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| t.gelu_erf()?.to_vec1::<f64>())
            .unwrap();
        let mut worst = (0f64, 0f32);
        for (x, want) in grid().zip(want) {
            let err = (gelu_erf(x) as f64 - want).abs() / (1.0 + want.abs());
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 < 2e-6, "gelu error {worst:?}");
    }

    #[test]
    fn the_other_activations_match_candle() {
        let xs: Vec<f32> = grid().collect();
        let t = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let cases = [
            (Activation::GeluTanh, t.gelu().unwrap()),
            (Activation::Relu, t.relu().unwrap()),
            (Activation::Silu, t.silu().unwrap()),
            (Activation::Tanh, t.tanh().unwrap()),
            (Activation::Identity, t.clone()),
        ];
        for (act, want) in cases {
            let mut got = xs.clone();
            activation(&mut got, act);
            for (g, w) in got.iter().zip(want.to_vec1::<f32>().unwrap()) {
                assert!(
                    (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{act:?}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn exp_matches_std() {
        for x in grid().map(|x| x * 7.0).filter(|x| *x > -87.0) {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= 3e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(exp(-1000.0) < 1e-37);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn layer_norm_and_softmax_match_naive_sums() {
        let width = 37;
        let rows: Vec<f32> = (0..width * 3)
            .map(|i| ((i * 7919) % 101) as f32 / 9.0)
            .collect();
        let residual: Vec<f32> = rows.iter().map(|x| x.sin()).collect();
        let gamma: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 / 100.0).collect();
        let beta = vec![0.25f32; width];
        let params = NormParams {
            gamma: &gamma,
            beta: &beta,
            eps: 1e-12,
        };
        let mut got = rows.clone();
        add_layer_norm(&mut got, &residual, &params);
        for r in 0..3 {
            let v: Vec<f64> = (0..width)
                .map(|i| (rows[r * width + i] + residual[r * width + i]) as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / width as f64;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / width as f64;
            for i in 0..width {
                let want = (v[i] - mean) / (var + 1e-12).sqrt() * gamma[i] as f64 + 0.25;
                assert!((got[r * width + i] as f64 - want).abs() < 1e-5);
            }
        }
        let mut soft = rows.clone();
        let mut inv = Vec::new();
        softmax_unnormalized(&mut soft, width, &mut inv);
        for (row, inv) in soft.chunks_exact_mut(width).zip(inv) {
            row.iter_mut().for_each(|x| *x *= inv);
        }
        for r in 0..3 {
            let row = &rows[r * width..(r + 1) * width];
            let max = row.iter().fold(f32::MIN, |m, x| m.max(*x)) as f64;
            let total: f64 = row.iter().map(|x| (*x as f64 - max).exp()).sum();
            for i in 0..width {
                let want = (row[i] as f64 - max).exp() / total;
                assert!((soft[r * width + i] as f64 - want).abs() < 1e-6);
            }
        }
    }
}
