//! A one-hidden-layer perceptron over normalized pixels, run with candle.
//!
//! Weights (`model.safetensors`): `hidden.weight` [hidden, inputs], `hidden.bias` [hidden],
//! `output.weight` [labels, hidden], `output.bias` [labels]. The ReLU hidden activations,
//! L2-normalized, are the image embedding.

use crate::config::ClassifierConfig;
use candle_core::{DType, Device, Tensor, D};
use model_manager_plugin::Error;
use std::collections::HashMap;
use std::path::Path;

/// Names of the four weight tensors.
pub const WEIGHT_NAMES: [&str; 4] = [
    "hidden.weight",
    "hidden.bias",
    "output.weight",
    "output.bias",
];

/// What the classifier says about a batch of images.
pub struct Prediction {
    /// Class probabilities, one row per image.
    pub probabilities: Vec<Vec<f32>>,
    /// Unit-length embeddings, one row per image.
    pub embeddings: Vec<Vec<f32>>,
}

/// The loaded classifier.
pub struct Classifier {
    hidden_w: Tensor,
    hidden_b: Tensor,
    output_w: Tensor,
    output_b: Tensor,
    /// Its config.
    pub config: ClassifierConfig,
}

fn candle_error(e: candle_core::Error) -> Error {
    Error::inference(format!("candle: {e}"))
}

impl Classifier {
    /// Builds a classifier from named weights, checking their shapes against `config`.
    pub fn from_weights(
        mut weights: HashMap<String, Tensor>,
        config: ClassifierConfig,
    ) -> Result<Self, Error> {
        let (inputs, hidden, labels) = (config.inputs(), config.hidden, config.labels.len());
        let shapes: [&[usize]; 4] = [&[hidden, inputs], &[hidden], &[labels, hidden], &[labels]];
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor, Error> {
            let t = weights
                .remove(name)
                .ok_or_else(|| Error::load(format!("the weights have no `{name}`")))?;
            if t.dims() != shape {
                return Err(Error::load(format!(
                    "weight `{name}` has shape {:?}; the config needs {shape:?}",
                    t.dims()
                )));
            }
            t.to_dtype(DType::F32).map_err(candle_error)
        };
        Ok(Self {
            hidden_w: take(WEIGHT_NAMES[0], shapes[0])?,
            hidden_b: take(WEIGHT_NAMES[1], shapes[1])?,
            output_w: take(WEIGHT_NAMES[2], shapes[2])?,
            output_b: take(WEIGHT_NAMES[3], shapes[3])?,
            config,
        })
    }

    /// Loads `weights` (safetensors) and `config` (JSON).
    pub fn load(weights: &Path, config: &Path) -> Result<Self, Error> {
        let config = ClassifierConfig::read(config)?;
        if !weights.is_file() {
            return Err(Error::not_found(format!(
                "weights {} not found",
                weights.display()
            )));
        }
        let tensors = candle_core::safetensors::load(weights, &Device::Cpu)
            .map_err(|e| Error::load(format!("cannot read weights {}: {e}", weights.display())))?;
        Self::from_weights(tensors, config)
    }

    /// Bytes held by the weights.
    pub fn bytes(&self) -> u64 {
        [
            &self.hidden_w,
            &self.hidden_b,
            &self.output_w,
            &self.output_b,
        ]
        .iter()
        .map(|t| (t.elem_count() * 4) as u64)
        .sum()
    }

    /// Logits and hidden activations of a batch `[n, inputs]`.
    pub fn forward(&self, batch: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let hidden = batch
            .matmul(&self.hidden_w.t()?)?
            .broadcast_add(&self.hidden_b)?
            .relu()?;
        let logits = hidden
            .matmul(&self.output_w.t()?)?
            .broadcast_add(&self.output_b)?;
        Ok((logits, hidden))
    }

    /// Probabilities and embeddings for images given as flat normalized pixels.
    pub fn predict(&self, images: &[Vec<f32>]) -> Result<Prediction, Error> {
        let n = self.config.inputs();
        let flat: Vec<f32> = images.iter().flatten().copied().collect();
        let batch =
            Tensor::from_vec(flat, (images.len(), n), &Device::Cpu).map_err(candle_error)?;
        let (logits, hidden) = self.forward(&batch).map_err(candle_error)?;
        let probabilities = candle_nn::ops::softmax(&logits, D::Minus1)
            .and_then(|p| p.to_vec2::<f32>())
            .map_err(candle_error)?;
        let norms = hidden
            .sqr()
            .and_then(|s| s.sum_keepdim(D::Minus1))
            .and_then(|s| s.sqrt())
            .and_then(|s| s.clamp(1e-12, f64::MAX))
            .map_err(candle_error)?;
        let embeddings = hidden
            .broadcast_div(&norms)
            .and_then(|e| e.to_vec2::<f32>())
            .map_err(candle_error)?;
        Ok(Prediction {
            probabilities,
            embeddings,
        })
    }
}
