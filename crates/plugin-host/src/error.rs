//! The error of a plugin library that cannot be used.

use model_manager_core::{ErrorCode, ModelError};
use std::path::Path;

/// `PLUGIN_LOAD_ERROR` about the file or folder at `path`.
pub(crate) fn plugin_load_error(path: &Path, message: String) -> ModelError {
    ModelError::new(ErrorCode::PluginLoadError, message).with("path", path.display().to_string())
}
