//! `mm init`: a commented settings file for the packaged models, to start from.

use crate::output::{print_json, status};
use model_manager::{ModelError, Settings};
use serde_json::json;
use std::path::Path;

/// The repository's own default settings: every key commented, the packaged models
/// (fetched by scripts/fetch-models.sh under ./models, else downloaded by name).
const TEMPLATE: &str = include_str!("../../../../settings.toml");

/// Writes the template to `path` (refusing to replace a file unless `force`).
pub fn init(path: &Path, force: bool, json_out: bool) -> Result<(), ModelError> {
    if path.exists() && !force {
        return Err(ModelError::invalid_input(format!(
            "{} exists; pass --force to replace it",
            path.display()
        ))
        .with("path", path.display().to_string()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| write_error(path, e))?;
    }
    std::fs::write(path, TEMPLATE).map_err(|e| write_error(path, e))?;
    // What was written must load, or the template itself is broken.
    let base = path.parent().unwrap_or(Path::new("."));
    Settings::from_toml_str(TEMPLATE, base)?;
    if json_out {
        print_json(&json!({"success": true, "path": path}))?;
    } else {
        status(format_args!(
            "wrote {}: all-MiniLM-L6-v2 as `embedding` (from ./models when scripts/fetch-models.sh \
             put it there, else downloaded by name on first use) and a FLAN-T5-small titler as \
             `t5_summarizer` (from ./models only: scripts/fetch-models.sh); edit it, then `mm check`",
            path.display()
        ));
    }
    Ok(())
}

fn write_error(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::invalid_input(format!("cannot write {}: {e}", path.display()))
        .caused_by("IoError", e)
}
