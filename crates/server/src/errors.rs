//! `ModelError` as an HTTP response: the error's JSON (`code`, `message`, `details`) with a
//! fitting status. What a client
//! sees names the model and the setting to fix, never the server's files; the whole error
//! goes to the server log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use model_manager_core::{ErrorCode, ModelError};

/// An error answer: the error and the HTTP status it is sent with (by default the usual
/// one for its code, see [`ApiError::status`]).
#[derive(Debug)]
pub struct ApiError {
    error: ModelError,
    status: Option<StatusCode>,
}

impl ApiError {
    /// An error with an explicit HTTP status instead of its code's usual one.
    pub fn with_status(error: ModelError, status: StatusCode) -> Self {
        Self {
            error,
            status: Some(status),
        }
    }

    /// 401 `UNAUTHORIZED` for a missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::from(ModelError::new(
            ErrorCode::Unauthorized,
            "missing or wrong API key: send `Authorization: Bearer <key>`",
        ))
    }

    /// The error, with every detail (the client sees only [`public`] ones).
    pub fn error(&self) -> &ModelError {
        &self.error
    }

    /// The status sent: the explicit one, else 404 for an unknown model, 400 for bad
    /// input, 401 for a missing or wrong key, 503 when out of capacity or shutting down,
    /// 500 otherwise.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(match self.error.code {
            ErrorCode::ModelNotConfigured => StatusCode::NOT_FOUND,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidInput
            | ErrorCode::InvalidModelType
            | ErrorCode::UnsupportedModelType => StatusCode::BAD_REQUEST,
            ErrorCode::CapacityExhausted | ErrorCode::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        })
    }
}

impl From<ModelError> for ApiError {
    fn from(error: ModelError) -> Self {
        Self {
            error,
            status: None,
        }
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
    let message = match (
        error.code,
        error.details.get("hint").and_then(|h| h.as_str()),
    ) {
        // The configured ids are the operator's public vocabulary: a typo gets its nearest.
        (ErrorCode::ModelNotConfigured, Some(hint)) => format!("{message}; {hint}"),
        _ => message,
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
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = %self.error.code, status = status.as_u16(), "request failed: {}", self.error.to_json());
        }
        let mut response = (status, Json(public(&self.error).to_json())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 7235 §3.1: a 401 names the scheme that would be accepted.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 says when to come back: the engine's estimate, else a second.
            let seconds = self
                .error
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
    fn an_unknown_model_id_gets_its_nearest() {
        let error = ModelError::new(
            ErrorCode::ModelNotConfigured,
            "Model not found in configuration",
        )
        .with(
            "hint",
            "did you mean `embedding`? configured models: embedding",
        );
        let public = public(&error);
        assert!(
            public.message.contains("did you mean `embedding`?"),
            "{}",
            public.message
        );
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
