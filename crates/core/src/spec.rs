//! One configured model, as loaders see it.

use crate::device::DeviceRequest;
use crate::error::{ModelError, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// Default `models.<id>.max_batch_tokens`: tokens one forward pass may pay for.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 16_384;
/// Default `models.<id>.max_queued_tokens`: tokens that may wait for a batch.
pub const DEFAULT_MAX_QUEUED_TOKENS: usize = 262_144;

/// Everything the settings say about one model (`models.<id>.*`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    /// The id under `models.`.
    pub id: String,
    /// Registry key of the model's kind (`type` in settings).
    #[serde(rename = "type")]
    pub model_type: String,
    /// Which loader serves it, or `auto`.
    pub backend: String,
    /// Hub name, when given.
    pub name: Option<String>,
    /// Folder with the model's files, resolved against the settings file's folder.
    pub local_path: Option<PathBuf>,
    /// Expected embedding dimension, when given.
    pub dimension: Option<usize>,
    /// Requested device.
    pub device: DeviceRequest,
    /// Most texts in one forward pass.
    pub batch_size: usize,
    /// Tokens one forward pass may pay for.
    pub max_batch_tokens: usize,
    /// Tokens that may wait in the model's engine before requests are refused.
    pub max_queued_tokens: usize,
    /// Forward passes the engine runs at once.
    pub engine_workers: usize,
    /// Whether callers share one instance.
    pub shared: bool,
    /// Whether embeddings of this model are cached.
    pub cache_embeddings: bool,
    /// Never unloaded or evicted.
    pub pinned: bool,
    /// Loaded during initialize.
    pub preload: bool,
    /// Backend-specific keys (`max_input_length`, `dtype`, …), checked against the keys the
    /// model's loaders declare.
    pub options: Map<String, Value>,
    /// Backend-wide settings outside `models.*` (e.g. `onnx.runtime_path`), paths resolved.
    #[serde(skip)]
    pub backend_settings: Arc<Map<String, Value>>,
}

impl ModelSpec {
    /// A spec with defaults for everything but the id and type; handy for tests and for
    /// hosts that configure models in code.
    pub fn new(id: impl Into<String>, model_type: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model_type: model_type.into(),
            backend: "auto".into(),
            name: None,
            local_path: None,
            dimension: None,
            device: DeviceRequest::Auto,
            batch_size: 32,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_queued_tokens: DEFAULT_MAX_QUEUED_TOKENS,
            engine_workers: 1,
            shared: true,
            cache_embeddings: true,
            pinned: false,
            preload: false,
            options: Map::new(),
            backend_settings: Arc::default(),
        }
    }

    /// A backend-wide setting, e.g. `onnx.runtime_path`.
    pub fn backend_setting(&self, key: &str) -> Option<&Value> {
        self.backend_settings.get(key)
    }

    fn option_error(&self, key: &str, expected: &str, found: &Value) -> ModelError {
        let full = format!("models.{}.{key}", self.id);
        ModelError::config(
            &full,
            format!("settings key `{full}` expects {expected}, found {found}"),
        )
        .for_model(&self.id)
        .with("expected", expected)
        .with("found", found.to_string())
    }

    /// A backend option as a string.
    pub fn option_str(&self, key: &str) -> Result<Option<&str>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.option_error(key, "a string", other)),
        }
    }

    /// A backend option as a non-negative integer.
    pub fn option_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.option_error(key, "a non-negative integer", v)),
        }
    }

    /// A backend option as a number.
    pub fn option_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.option_error(key, "a number", v)),
        }
    }

    /// A backend option as a boolean.
    pub fn option_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.option_error(key, "a boolean", v)),
        }
    }
}
