//! Errors about plugins: a library that cannot be used, and the codes a plugin's own
//! errors may carry.

use model_manager_core::{ErrorCode, ModelError};
use std::path::Path;

/// `PLUGIN_LOAD_ERROR` about the file or folder at `path`.
pub(crate) fn plugin_load_error(path: &Path, message: String) -> ModelError {
    ModelError::new(ErrorCode::PluginLoadError, message).with("path", path.display().to_string())
}

/// The codes a plugin may give its errors: what concerns its own models. The others speak
/// for the host (who may call, which models are configured, capacity, shutdown, the
/// library's vetting, the cache) and a plugin that uses one gets the call's fallback code
/// instead: a plugin answering `UNAUTHORIZED` must not make the server answer 401.
pub(crate) const PLUGIN_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidInput,
    ErrorCode::ModelNotFound,
    ErrorCode::ModelLoadError,
    ErrorCode::T5ModelLoadError,
    ErrorCode::MissingDependency,
    ErrorCode::DeviceSetupError,
    ErrorCode::ConfigError,
    ErrorCode::GenerateEmbeddingsError,
    ErrorCode::GenerationError,
    ErrorCode::InferenceError,
];

/// The code a plugin's error gets: `code` (as the plugin spelled it) when it is one of
/// [`PLUGIN_CODES`], else `fallback`.
pub(crate) fn plugin_code(code: &str, fallback: ErrorCode) -> ErrorCode {
    serde_json::from_value::<ErrorCode>(serde_json::Value::String(code.to_owned()))
        .ok()
        .filter(|c| PLUGIN_CODES.contains(c))
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_cannot_speak_for_the_host() {
        let fallback = ErrorCode::InferenceError;
        assert_eq!(
            plugin_code("INVALID_INPUT", fallback),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            plugin_code("MODEL_NOT_FOUND", fallback),
            ErrorCode::ModelNotFound
        );
        for host_only in [
            "UNAUTHORIZED",
            "MODEL_NOT_CONFIGURED",
            "SHUTTING_DOWN",
            "CAPACITY_EXHAUSTED",
            "PLUGIN_LOAD_ERROR",
            "PLUGIN_ABI_MISMATCH",
            "CACHE_ERROR",
            "nonsense",
        ] {
            assert_eq!(plugin_code(host_only, fallback), fallback, "{host_only}");
        }
    }
}
