//! The one error type of model-manager, with the Python Model Manager Module's codes and response shape.

use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// Every error code a caller can match on. The first ten are those of the Python Model Manager Module; the rest are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The model id is not in the settings.
    ModelNotConfigured,
    /// The model exists but is not of the kind the call needs (e.g. not an embedder).
    InvalidModelType,
    /// The model's files were not found.
    ModelNotFound,
    /// Loading the model failed.
    ModelLoadError,
    /// Loading a T5 model failed.
    T5ModelLoadError,
    /// A library or runtime the model needs is not available.
    MissingDependency,
    /// Computing embeddings failed.
    GenerateEmbeddingsError,
    /// The requested device could not be set up.
    DeviceSetupError,
    /// The embedding cache failed.
    CacheError,
    /// No loader is registered for the model's type (or backend).
    UnsupportedModelType,
    /// The settings are malformed: unknown key, wrong type, bad environment variable.
    ConfigError,
    /// The caller's input is invalid (empty id, oversized batch, release without a reference…).
    InvalidInput,
    /// Every loaded model is in use and the limits leave no room, even after waiting.
    CapacityExhausted,
    /// The manager is shutting down and refuses new work.
    ShuttingDown,
    /// A plugin library could not be loaded.
    PluginLoadError,
    /// A plugin was built against another version of the plugin interface.
    PluginAbiMismatch,
    /// Generating text failed at run time (not a load failure, not the caller's input).
    GenerationError,
    /// Running a model through generic inference failed at run time (including a plugin
    /// model that panicked).
    InferenceError,
    /// The caller did not prove it may call (a missing or wrong API key).
    Unauthorized,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::ModelNotConfigured,
        ErrorCode::InvalidModelType,
        ErrorCode::ModelNotFound,
        ErrorCode::ModelLoadError,
        ErrorCode::T5ModelLoadError,
        ErrorCode::MissingDependency,
        ErrorCode::GenerateEmbeddingsError,
        ErrorCode::DeviceSetupError,
        ErrorCode::CacheError,
        ErrorCode::UnsupportedModelType,
        ErrorCode::ConfigError,
        ErrorCode::InvalidInput,
        ErrorCode::CapacityExhausted,
        ErrorCode::ShuttingDown,
        ErrorCode::PluginLoadError,
        ErrorCode::PluginAbiMismatch,
        ErrorCode::GenerationError,
        ErrorCode::InferenceError,
        ErrorCode::Unauthorized,
    ];

    /// The code as it appears on the wire, e.g. `MODEL_NOT_CONFIGURED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ModelNotConfigured => "MODEL_NOT_CONFIGURED",
            ErrorCode::InvalidModelType => "INVALID_MODEL_TYPE",
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::ModelLoadError => "MODEL_LOAD_ERROR",
            ErrorCode::T5ModelLoadError => "T5_MODEL_LOAD_ERROR",
            ErrorCode::MissingDependency => "MISSING_DEPENDENCY",
            ErrorCode::GenerateEmbeddingsError => "GENERATE_EMBEDDINGS_ERROR",
            ErrorCode::DeviceSetupError => "DEVICE_SETUP_ERROR",
            ErrorCode::CacheError => "CACHE_ERROR",
            ErrorCode::UnsupportedModelType => "UNSUPPORTED_MODEL_TYPE",
            ErrorCode::ConfigError => "CONFIG_ERROR",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::CapacityExhausted => "CAPACITY_EXHAUSTED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::PluginLoadError => "PLUGIN_LOAD_ERROR",
            ErrorCode::PluginAbiMismatch => "PLUGIN_ABI_MISMATCH",
            ErrorCode::GenerationError => "GENERATION_ERROR",
            ErrorCode::InferenceError => "INFERENCE_ERROR",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a machine-readable code, a message for people and structured details.
///
/// Serializes exactly to the Python module's response shape:
/// `{"success": false, "code": "...", "message": "...", "details": {...}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ModelError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Context such as `model_id`, `error_type`, `error`, `key`.
    pub details: Map<String, Value>,
}

/// Result alias used across model-manager.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// A new error with empty details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one detail; a later value for the same key replaces the earlier one.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Adds `model_id` to the details.
    pub fn for_model(self, model_id: &str) -> Self {
        self.with("model_id", model_id)
    }

    /// Records an underlying cause as `error_type` and `error`, as the Python module does.
    pub fn caused_by(self, error_type: &str, cause: impl fmt::Display) -> Self {
        self.with("error_type", error_type)
            .with("error", cause.to_string())
    }

    /// A `CONFIG_ERROR` about one settings key.
    pub fn config(key: &str, message: impl Into<String>) -> Self {
        let error = Self::new(ErrorCode::ConfigError, message);
        if key.is_empty() {
            error
        } else {
            error.with("key", key)
        }
    }

    /// A `code` error (`MODEL_LOAD_ERROR`, `T5_MODEL_LOAD_ERROR`…) about a file that cannot
    /// be loaded: the message and `file` name it, `error` holds the cause.
    pub fn file_load(code: ErrorCode, file: &std::path::Path, cause: impl fmt::Display) -> Self {
        Self::new(code, format!("cannot load {}: {cause}", file.display()))
            .with("file", file.display().to_string())
            .caused_by("LoadError", cause)
    }

    /// An `INVALID_INPUT` error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    /// The JSON response shape as a value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads an error back from the JSON shape (as [`ModelError::to_json`] writes
    /// it), e.g. the answer of a child process; `None` if `value` is not one.
    pub fn from_json(value: &Value) -> Option<Self> {
        let code = serde_json::from_value(value.get("code")?.clone()).ok()?;
        Some(Self {
            code,
            message: value.get("message")?.as_str()?.to_owned(),
            details: value
                .get("details")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

impl Serialize for ModelError {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ModelError", 4)?;
        s.serialize_field("success", &false)?;
        s.serialize_field("code", self.code.as_str())?;
        s.serialize_field("message", &self.message)?;
        s.serialize_field("details", &self.details)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_to_the_seed_shape() {
        let err = ModelError::new(
            ErrorCode::ModelNotConfigured,
            "Model embedding not found in configuration",
        )
        .for_model("embedding")
        .caused_by("KeyError", "Model configuration missing");
        assert_eq!(
            err.to_json(),
            serde_json::json!({
                "success": false,
                "code": "MODEL_NOT_CONFIGURED",
                "message": "Model embedding not found in configuration",
                "details": {"model_id": "embedding", "error_type": "KeyError", "error": "Model configuration missing"}
            })
        );
    }

    #[test]
    fn wire_names_match_serde_names() {
        for code in ErrorCode::ALL {
            let via_serde = serde_json::to_value(code).unwrap();
            assert_eq!(via_serde, Value::String(code.as_str().to_owned()));
        }
    }
}
