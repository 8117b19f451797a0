//! model-manager plugin providing type `custom_vision`: an image classifier written the way
//! a third party would write one, against `model-manager-plugin` only.
//!
//! A model reads `config.json` (input size, normalization, labels) and `model.safetensors`
//! (a one-hidden-layer perceptron) from its `local_path`. Input: an image named `image`
//! (PNG, JPEG or raw pixels), optionally `top_k`. Outputs: `labels`, the top-k
//! `{"label", "score"}` as JSON, and `embedding`, the unit-length hidden activations as a
//! `[1, hidden]` tensor. `train-digits` trains one on scikit-learn's 8x8 digits.

pub mod classifier;
pub mod config;
pub mod digits;
pub mod preprocess;
pub mod train;

use classifier::Classifier;
use model_manager_plugin::{
    export_plugin, Error, LoadConfig, Plugin, PluginInfo, PluginModel, Tensor, TensorData,
    TypeDeclaration, Value, Values,
};

/// The plugin.
#[derive(Default)]
pub struct CustomVisionPlugin;

/// Option keys of `custom_vision` models (`models.<id>.<key>`).
pub const OPTION_KEYS: [&str; 3] = ["top_k", "weights_file", "config_file"];

impl Plugin for CustomVisionPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new("custom-vision", env!("CARGO_PKG_VERSION")).with_type(
            TypeDeclaration::new(
                "custom_vision",
                "Image classifier: PNG/JPEG/raw image in, top-k labels and an embedding out",
            )
            .with_options(&OPTION_KEYS),
        )
    }

    fn load(&self, config: &LoadConfig) -> Result<Box<dyn PluginModel>, Error> {
        let folder = config.require_local_path()?;
        let file = |key: &str, default: &str| match config.option(key) {
            None => Ok(folder.join(default)),
            Some(serde_json::Value::String(name)) => Ok(folder.join(name)),
            Some(other) => Err(Error::config(format!(
                "`models.{}.{key}` must be a file name, found {other}",
                config.model_id
            ))),
        };
        let classifier = Classifier::load(
            &file("weights_file", "model.safetensors")?,
            &file("config_file", "config.json")?,
        )?;
        let top_k = match config.option("top_k") {
            None => 3,
            Some(v) => top_k_from(v).ok_or_else(|| {
                Error::config(format!(
                    "`models.{}.top_k` must be a positive integer, found {v}",
                    config.model_id
                ))
            })?,
        };
        Ok(Box::new(VisionModel { classifier, top_k }))
    }
}

fn top_k_from(value: &serde_json::Value) -> Option<usize> {
    let k = match value {
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        other => other.as_u64()? as usize,
    };
    (k > 0).then_some(k)
}

/// Index of the largest value.
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

struct VisionModel {
    classifier: Classifier,
    top_k: usize,
}

impl VisionModel {
    fn top_k(&self, inputs: &Values) -> Result<usize, Error> {
        match inputs.get("top_k") {
            None => Some(self.top_k),
            Some(Value::Json(v)) => top_k_from(v),
            Some(Value::Text(t)) => top_k_from(&serde_json::Value::String(t.clone())),
            Some(_) => None,
        }
        .ok_or_else(|| Error::invalid_input("`top_k` must be a positive integer"))
    }
}

impl PluginModel for VisionModel {
    fn infer(&self, inputs: Values) -> Result<Values, Error> {
        if let Some(extra) = inputs
            .keys()
            .find(|k| !["image", "top_k"].contains(&k.as_str()))
        {
            return Err(Error::invalid_input(format!(
                "unknown input `{extra}`; custom_vision takes `image` and optionally `top_k`"
            )));
        }
        let image = inputs
            .get("image")
            .ok_or_else(|| Error::invalid_input("custom_vision needs an input named `image`"))?
            .as_image()
            .ok_or_else(|| Error::invalid_input("input `image` must be an image"))?;
        let top_k = self.top_k(&inputs)?;
        let pixels = preprocess::to_input(image, &self.classifier.config)?;
        let prediction = self.classifier.predict(&[pixels])?;
        let probabilities = &prediction.probabilities[0];
        let mut ranked: Vec<usize> = (0..probabilities.len()).collect();
        ranked.sort_by(|a, b| probabilities[*b].total_cmp(&probabilities[*a]));
        let labels: Vec<serde_json::Value> = ranked
            .iter()
            .take(top_k)
            .map(|i| {
                serde_json::json!({
                    "label": self.classifier.config.labels[*i],
                    "score": probabilities[*i],
                })
            })
            .collect();
        let embedding = prediction.embeddings.into_iter().next().unwrap_or_default();
        Ok(Values::from([
            ("labels".to_owned(), Value::Json(labels.into())),
            (
                "embedding".to_owned(),
                Value::Tensor(Tensor {
                    shape: vec![1, embedding.len()],
                    data: TensorData::F32(embedding),
                }),
            ),
        ]))
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(self.classifier.bytes())
    }
}

export_plugin!(CustomVisionPlugin);
