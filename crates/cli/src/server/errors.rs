//! `ModelError` as an HTTP response: the seed's JSON with a fitting status. What a client
//! sees names the model and the setting to fix, never the server's files; the whole error
//! goes to the server log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use model_manager::{ErrorCode, ModelError};

/// An error answer.
pub struct ApiError(pub ModelError);

impl ApiError {
    /// An error with an explicit HTTP status (the code's usual one otherwise).
    pub fn with_status(error: ModelError, status: u16) -> Self {
        Self(error.with("status", status))
    }

    /// 401 for a missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::with_status(
            ModelError::invalid_input(
                "missing or wrong API key: send `Authorization: Bearer <key>`",
            ),
            401,
        )
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        Self(e)
    }
}

fn status_of(error: &ModelError) -> StatusCode {
    if let Some(status) = error.details.get("status").and_then(|s| s.as_u64()) {
        return StatusCode::from_u16(status as u16).unwrap_or(StatusCode::BAD_REQUEST);
    }
    match error.code {
        ErrorCode::ModelNotConfigured => StatusCode::NOT_FOUND,
        ErrorCode::InvalidInput | ErrorCode::InvalidModelType | ErrorCode::UnsupportedModelType => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::CapacityExhausted | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Detail keys a client may see; the rest (files, paths, reports, causes) stays in the log.
const PUBLIC_DETAILS: &[&str] = &[
    "model_id",
    "key",
    "expected",
    "found",
    "in_use",
    "configured_models",
    "queued_tokens",
    "retry_after_seconds",
    "line",
    "field",
];

/// The setting an operator changes for an error that concerns the server's own setup.
fn setting_to_fix(code: ErrorCode, model: &str) -> Option<String> {
    Some(match code {
        ErrorCode::ModelNotFound | ErrorCode::ModelLoadError | ErrorCode::T5ModelLoadError => {
            format!("the files at models.{model}.local_path (or models.{model}.name)")
        }
        ErrorCode::MissingDependency => "onnx.runtime_path".into(),
        ErrorCode::DeviceSetupError => format!("models.{model}.device"),
        ErrorCode::PluginLoadError | ErrorCode::PluginAbiMismatch => "plugins.*".into(),
        ErrorCode::CacheError => "embedding_cache.path".into(),
        ErrorCode::ConfigError => "the server's settings file".into(),
        _ => return None,
    })
}

/// Replaces anything that looks like a filesystem path with `<path>`.
fn without_paths(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let bare = word.trim_start_matches(['(', '[', '"', '\'', '`']);
            let looks_like_path =
                bare.starts_with('/') || bare.starts_with("~/") || bare.starts_with("./");
            if looks_like_path && bare.len() > 1 {
                "<path>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a client is told about `error`.
pub fn public(error: &ModelError) -> ModelError {
    let model = error.details.get("model_id").and_then(|m| m.as_str());
    let message = match (setting_to_fix(error.code, model.unwrap_or("<id>")), model) {
        (Some(setting), Some(model)) => format!(
            "model `{model}` is not available on this server ({}); the operator should check {setting} (details in the server log)",
            error.code
        ),
        (Some(setting), None) => format!(
            "the server could not do this ({}); the operator should check {setting} (details in the server log)",
            error.code
        ),
        (None, _) => without_paths(&error.message),
    };
    let mut public = ModelError::new(error.code, message);
    for (key, value) in &error.details {
        if PUBLIC_DETAILS.contains(&key.as_str()) {
            public.details.insert(key.clone(), value.clone());
        }
    }
    public
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::warn!(code = %self.0.code, status = status.as_u16(), "request failed: {}", self.0.to_json());
        }
        let mut response = (status, Json(public(&self.0).to_json())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 says when to come back: the engine's estimate, else a second.
            let seconds = self
                .0
                .details
                .get("retry_after_seconds")
                .and_then(|s| s.as_u64())
                .unwrap_or(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_the_server_s_files_name_the_setting_not_the_path() {
        let error = ModelError::new(
            ErrorCode::ModelNotFound,
            "no model files for `t5`: /srv/models/t5 has no config.json; searched /root/.cache/huggingface/hub",
        )
        .for_model("t5")
        .with("file", "/srv/models/t5/config.json")
        .with("searched", serde_json::json!(["/srv/models/t5"]));
        let public = public(&error).to_json().to_string();
        assert!(
            !public.contains("/srv") && !public.contains("/root"),
            "{public}"
        );
        assert!(public.contains("models.t5.local_path"), "{public}");
        assert!(public.contains("\"model_id\":\"t5\""), "{public}");
    }

    #[test]
    fn other_messages_keep_their_words_but_lose_paths() {
        let error =
            ModelError::invalid_input("cannot read /etc/passwd (denied)").with("field", "input");
        let public = public(&error);
        assert_eq!(public.message, "cannot read <path> (denied)");
        assert_eq!(public.details["field"], "input");
    }
}
