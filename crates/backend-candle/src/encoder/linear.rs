//! A dense layer, stored `[in, out]` (the layout the matmul reads fastest), with its bias
//! and activation fused on the CPU; on the CPU in f32 it can also run in int8
//! ([`super::int8`]), smoothed by the input maxima it observed on calibration texts.

use super::int8::{Int8Kernel, Int8Matrix};
use super::kernels::math::Activation;
use super::kernels::ops::{Dense, Int8Dense};
use candle_core::{bail, DType, Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// `act(x W + b)`; several checkpoint matrices may be one layer with their outputs side by
/// side (query, key and value: one matmul instead of three).
pub struct Linear {
    weight: Tensor,
    /// Zeros for layers without a bias, so the fused kernel has one form.
    bias: Tensor,
    /// The weights in int8, when quantized (the f32 ones are then dropped).
    int8: Option<Int8Matrix>,
    /// The largest absolute value of each input seen while observing (calibration).
    observed: Mutex<Observed>,
    /// Whether observing: checked before the lock, so forward passes outside calibration
    /// take no lock.
    observing: AtomicBool,
}

impl Linear {
    /// One layer from `parts`, each `[outputs_i, inputs]` as checkpoints store them, and
    /// their biases (zeros where `biases` is `None`).
    pub fn from_parts(parts: &[Tensor], biases: Option<&[Tensor]>) -> Result<Self> {
        let weight = Tensor::cat(parts, 0)?;
        let bias = match biases {
            Some(biases) => Tensor::cat(biases, 0)?,
            None => Tensor::zeros(weight.dim(0)?, weight.dtype(), weight.device())?,
        };
        if bias.dims() != [weight.dim(0)?] {
            candle_core::bail!(
                "bias of {:?} for a weight of {:?}",
                bias.dims(),
                weight.dims()
            );
        }
        Ok(Self {
            weight: weight.t()?.contiguous()?,
            bias,
            int8: None,
            observed: Mutex::new(Observed::default()),
            observing: AtomicBool::new(false),
        })
    }

    /// The layers `names` under `vb` (`{name}.weight`, `[outputs, inputs]` each, and
    /// `{name}.bias` when `bias`), as one layer.
    pub fn load(
        vb: &VarBuilder,
        names: &[&str],
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Self> {
        let weights = names
            .iter()
            .map(|n| vb.get((outputs, inputs), &format!("{n}.weight")))
            .collect::<Result<Vec<_>>>()?;
        let biases = match bias {
            true => Some(
                names
                    .iter()
                    .map(|n| vb.get(outputs, &format!("{n}.bias")))
                    .collect::<Result<Vec<_>>>()?,
            ),
            false => None,
        };
        Self::from_parts(&weights, biases.as_deref())
    }

    /// Outputs of the layer.
    pub fn outputs(&self) -> usize {
        self.bias.dims()[0]
    }

    /// `act(x W + b)`.
    pub fn forward(&self, x: &Tensor, act: Activation, fused: bool) -> Result<Tensor> {
        if let Some(matrix) = &self.int8 {
            return x.apply_op2_no_bwd(&self.bias, &Int8Dense { matrix, act });
        }
        self.observe_input(x)?;
        if fused {
            return x.apply_op3_no_bwd(&self.weight, &self.bias, &Dense(act));
        }
        activate(&x.matmul(&self.weight)?.broadcast_add(&self.bias)?, act)
    }
}

impl Linear {
    /// Starts (`true`, forgetting what was seen) or stops recording the largest absolute
    /// value of each input.
    pub fn observe(&self, on: bool) {
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            observed.most.clear();
        }
        observed.recording = on;
        self.observing.store(on, Ordering::Release);
    }

    fn observe_input(&self, x: &Tensor) -> Result<()> {
        if !self.observing.load(Ordering::Acquire) || x.dim(0)? == 0 {
            return Ok(());
        }
        // Computed before the lock is taken: the forward pass runs on rayon's pool, and a
        // pool thread waiting inside candle's ops may run another pass's work meanwhile.
        // One pass over the rows: candle's reduction over dimension 0 walks the matrix by
        // columns.
        let inputs = x.dim(1)?;
        if inputs == 0 {
            return Ok(());
        }
        let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut seen = vec![0f32; inputs];
        for row in values.chunks_exact(inputs) {
            seen.iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m = m.max(v.abs()));
        }
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        if !observed.recording {
            return Ok(());
        }
        let most = &mut observed.most;
        if most.is_empty() {
            *most = seen;
        } else {
            most.iter_mut().zip(seen).for_each(|(m, s)| *m = m.max(s));
        }
        Ok(())
    }

    /// How many inputs it takes.
    pub fn inputs(&self) -> usize {
        match &self.int8 {
            Some(matrix) if self.weight.elem_count() == 0 => matrix.inputs(),
            _ => self.weight.dims().first().copied().unwrap_or(0),
        }
    }

    /// The largest absolute value of each input recorded so far (empty before any).
    pub fn input_maxima(&self) -> Vec<f32> {
        let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        observed.most.clone()
    }

    /// Takes `most` as the recorded input maxima (a calibration kept from an earlier load):
    /// one finite, non-negative value per input.
    pub fn set_input_maxima(&self, most: Vec<f32>) -> Result<()> {
        let inputs = self.inputs();
        if most.len() != inputs || most.iter().any(|m| !(m.is_finite() && *m >= 0.0)) {
            bail!(
                "{} input maxima for a layer of {inputs} inputs, or a negative or non-finite one",
                most.len()
            );
        }
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        observed.most = most;
        Ok(())
    }

    /// Runs the layer in int8 on `kernel` from now on, smoothed with `alpha` (SmoothQuant's
    /// migration strength: each input's scale is `max|x|^alpha / max|W|^(1 - alpha)`) when
    /// inputs were observed. The f32 weights are kept until [`Self::drop_f32`].
    pub fn quantize(&mut self, alpha: f32, kernel: Int8Kernel) -> Result<()> {
        if self.weight.elem_count() == 0 && self.int8.is_some() {
            bail!("the layer's f32 weights were dropped after quantization; load the model again");
        }
        let (inputs, outputs) = self.weight.dims2()?;
        let weight = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let smooth = Some(&observed.most)
            .filter(|most| most.len() == inputs)
            .map(|most| smoothing(most, &weight, outputs, alpha));
        match Int8Matrix::quantize(&weight, inputs, outputs, smooth.as_deref(), kernel) {
            Some(matrix) => {
                self.int8 = Some(matrix);
                Ok(())
            }
            None => bail!("the {} int8 kernel does not run on this CPU", kernel.name()),
        }
    }

    /// Back to the f32 weights; after [`Self::drop_f32`] there are none, and the layer
    /// stays in int8.
    pub fn dequantize(&mut self) {
        if self.weight.elem_count() > 0 {
            self.int8 = None;
        }
    }

    /// Frees the f32 weights of a quantized layer; returns the bytes freed less those the
    /// int8 weights hold.
    pub fn drop_f32(&mut self) -> Result<i64> {
        let Some(matrix) = &self.int8 else {
            return Ok(0);
        };
        let freed = (self.weight.elem_count() * self.weight.dtype().size_in_bytes()) as i64;
        self.weight = Tensor::zeros((0, 0), self.weight.dtype(), self.weight.device())?;
        Ok(freed - matrix.bytes() as i64)
    }

    /// The int8 kernel it runs, if quantized.
    pub fn int8_kernel(&self) -> Option<Int8Kernel> {
        self.int8.as_ref().map(Int8Matrix::kernel)
    }
}

/// What [`Linear::observe`] records.
#[derive(Default)]
struct Observed {
    recording: bool,
    /// The largest absolute value of each input; empty before the first input.
    most: Vec<f32>,
}

/// SmoothQuant's scale of each input: `max|x_k|^alpha / max|W_k|^(1 - alpha)`, 1 where an
/// input or its weights are all zero.
fn smoothing(most: &[f32], weight: &[f32], outputs: usize, alpha: f32) -> Vec<f32> {
    most.iter()
        .zip(weight.chunks_exact(outputs))
        .map(|(&x, row)| {
            let w = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = x.powf(alpha) / w.powf(1.0 - alpha);
            if s.is_finite() && s > 0.0 {
                s.clamp(1e-5, 1e5)
            } else {
                1.0
            }
        })
        .collect()
}

/// `act(x)` with candle ops.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::GeluErf => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
        Activation::Silu => x.silu(),
        Activation::Tanh => x.tanh(),
        Activation::Identity => Ok(x.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_layer_without_its_f32_weights_stays_int8() {
        let values = (0..128 * 64).map(|v| (v % 17) as f32 / 7.0).collect();
        let weight = Tensor::from_vec(values, (128, 64), &Device::Cpu).unwrap();
        let mut linear = Linear::from_parts(&[weight], None).unwrap();
        linear.quantize(0.5, Int8Kernel::Scalar).unwrap();
        assert!(linear.drop_f32().unwrap() > 0);
        linear.dequantize();
        assert_eq!(
            linear.int8_kernel(),
            Some(Int8Kernel::Scalar),
            "nothing to go back to"
        );
        assert!(linear.quantize(0.5, Int8Kernel::Scalar).is_err());
        let x = Tensor::ones((2, 64), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            linear
                .forward(&x, Activation::Identity, true)
                .unwrap()
                .dims(),
            [2, 128]
        );
    }
}
