//! The classifier's `config.json`: input geometry, normalization and labels.

use model_manager_plugin::Error;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How images become the classifier's input, and what its outputs mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Input width in pixels; images are resized to it.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Subtracted from each grayscale pixel scaled to 0..1.
    pub mean: f32,
    /// Divides each pixel after the mean is subtracted.
    pub std: f32,
    /// Size of the hidden layer, which is also the embedding size.
    pub hidden: usize,
    /// Class names, in output order.
    pub labels: Vec<String>,
}

impl ClassifierConfig {
    /// Pixels per image.
    pub fn inputs(&self) -> usize {
        (self.width * self.height) as usize
    }

    /// One 8-bit grayscale pixel as the classifier reads it.
    pub fn normalize(&self, pixel: u8) -> f32 {
        (pixel as f32 / 255.0 - self.mean) / self.std
    }

    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::not_found(format!(
                "cannot read classifier config {}: {e}",
                path.display()
            ))
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| {
            Error::load(format!(
                "{} is not a classifier config: {e}",
                path.display()
            ))
        })?;
        if config.width == 0 || config.height == 0 || config.labels.is_empty() || config.std <= 0.0
        {
            return Err(Error::load(format!(
                "{}: width, height, std and labels must be positive/non-empty",
                path.display()
            )));
        }
        Ok(config)
    }
}
