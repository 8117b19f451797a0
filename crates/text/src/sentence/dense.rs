//! sentence-transformers' `Dense` module: a linear layer and an activation applied to the
//! pooled vector (`2_Dense/config.json` and its safetensors weights).

use model_manager_core::{ErrorCode, ModelError, Result};
use safetensors::SafeTensors;
use serde::Deserialize;
use std::path::Path;

/// The activations a `Dense` module may name (`activation_function`, a torch class path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    /// `torch.nn.modules.activation.Tanh` (the module's default).
    Tanh,
    /// `torch.nn.modules.linear.Identity`.
    Identity,
    /// `torch.nn.modules.activation.ReLU`.
    Relu,
    /// `torch.nn.modules.activation.Sigmoid`.
    Sigmoid,
    /// `torch.nn.modules.activation.GELU` (exact).
    Gelu,
    /// `torch.nn.modules.activation.SiLU`.
    Silu,
}

impl DenseActivation {
    fn parse(path: &str) -> Option<Self> {
        Some(match path.rsplit('.').next()? {
            "Tanh" => Self::Tanh,
            "Identity" => Self::Identity,
            "ReLU" => Self::Relu,
            "Sigmoid" => Self::Sigmoid,
            "GELU" => Self::Gelu,
            "SiLU" => Self::Silu,
            _ => return None,
        })
    }

    fn apply(self, x: f32) -> f32 {
        match self {
            Self::Tanh => x.tanh(),
            Self::Identity => x,
            Self::Relu => x.max(0.0),
            Self::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Self::Gelu => {
                let x = f64::from(x);
                (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
            }
            Self::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// `erf` from Numerical Recipes' `erfcc` (fractional error below 1.2e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let y = 1.0 - t * poly.exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

#[derive(Deserialize)]
struct DenseFile {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    activation_function: Option<String>,
    module_input_name: Option<String>,
    #[serde(default)]
    use_residual: bool,
}

fn yes() -> bool {
    true
}

/// A loaded `Dense` module.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    inputs: usize,
    outputs: usize,
    /// `[outputs][inputs]`.
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// `use_residual`: the input added back (projected when the sizes differ).
    residual: Option<Vec<f32>>,
    activation: DenseActivation,
}

fn bad(folder: &Path, message: String) -> ModelError {
    ModelError::file_load(ErrorCode::ModelLoadError, folder, message)
}

impl DenseLayer {
    /// Reads the module in `folder` (`config.json`, `model.safetensors`).
    pub fn load(folder: &Path) -> Result<Self> {
        let config_path = folder.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, &config_path, e))?;
        let config: DenseFile = serde_json::from_str(&text)
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, &config_path, e))?;
        if let Some(name) = config
            .module_input_name
            .filter(|n| n != "sentence_embedding")
        {
            return Err(bad(folder, format!("a Dense module reading `{name}` is not supported (only the sentence embedding)")));
        }
        let activation_name = config
            .activation_function
            .unwrap_or_else(|| "torch.nn.modules.activation.Tanh".into());
        let activation = DenseActivation::parse(&activation_name).ok_or_else(|| {
            bad(folder, format!("activation `{activation_name}` is not supported (Tanh, Identity, ReLU, Sigmoid, GELU, SiLU)"))
        })?;
        let weights_path = folder.join("model.safetensors");
        let bytes = std::fs::read(&weights_path).map_err(|e| {
            let hint = if folder.join("pytorch_model.bin").is_file() {
                " (only pytorch_model.bin is there: convert it to safetensors)"
            } else {
                ""
            };
            bad(
                folder,
                format!("cannot read {}: {e}{hint}", weights_path.display()),
            )
        })?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, &weights_path, e))?;
        let (i, o) = (config.in_features, config.out_features);
        let read = |name: &str, count: usize| -> Result<Vec<f32>> {
            f32_tensor(&tensors, name, count, &weights_path)
        };
        let residual = match (config.use_residual, i == o) {
            (false, _) => None,
            (true, true) => Some(Vec::new()),
            (true, false) => Some(read("residual.weight", o * i)?),
        };
        Ok(Self {
            inputs: i,
            outputs: o,
            weight: read("linear.weight", o * i)?,
            bias: config.bias.then(|| read("linear.bias", o)).transpose()?,
            residual,
            activation,
        })
    }

    /// Size of the vectors it takes.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Size of the vectors it gives.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// `act(W x + b)` (plus the residual), in f64 sums.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let product = |w: &[f32]| -> Vec<f64> {
            w.chunks_exact(self.inputs)
                .map(|row| {
                    row.iter()
                        .zip(x)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum()
                })
                .collect()
        };
        let mut out: Vec<f32> = product(&self.weight)
            .into_iter()
            .enumerate()
            .map(|(r, v)| {
                self.activation
                    .apply((v + self.bias.as_ref().map_or(0.0, |b| f64::from(b[r]))) as f32)
            })
            .collect();
        match &self.residual {
            Some(w) if w.is_empty() => out.iter_mut().zip(x).for_each(|(o, x)| *o += x),
            Some(w) => out
                .iter_mut()
                .zip(product(w))
                .for_each(|(o, r)| *o += r as f32),
            None => {}
        }
        out
    }
}

/// A tensor of `count` f32 (or f16/bf16, widened) values.
fn f32_tensor(tensors: &SafeTensors, name: &str, count: usize, file: &Path) -> Result<Vec<f32>> {
    let view = tensors.tensor(name).map_err(|e| {
        ModelError::file_load(ErrorCode::ModelLoadError, file, format!("{name}: {e}"))
    })?;
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        safetensors::Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        safetensors::Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        other => {
            return Err(ModelError::file_load(
                ErrorCode::ModelLoadError,
                file,
                format!("{name} has dtype {other:?}"),
            ))
        }
    };
    if values.len() != count {
        return Err(ModelError::file_load(
            ErrorCode::ModelLoadError,
            file,
            format!(
                "{name} holds {} values, {count} expected from config.json",
                values.len()
            ),
        ));
    }
    Ok(values)
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let value = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: scale by 2^-24.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_and_half_floats() {
        assert_eq!(
            DenseActivation::parse("torch.nn.modules.activation.Tanh"),
            Some(DenseActivation::Tanh)
        );
        assert_eq!(
            DenseActivation::parse("torch.nn.modules.linear.Identity"),
            Some(DenseActivation::Identity)
        );
        assert_eq!(DenseActivation::parse("my.Custom"), None);
        assert!((DenseActivation::Gelu.apply(1.0) - 0.841_344_7).abs() < 1e-6);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
    }
}
