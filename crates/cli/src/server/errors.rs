//! `ModelError` as an HTTP response: the seed's JSON with a fitting status.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use model_manager::{ErrorCode, ModelError};

/// An error answer.
pub struct ApiError(pub ModelError);

impl ApiError {
    /// 401 for a missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self(
            ModelError::invalid_input(
                "missing or wrong API key: send `Authorization: Bearer <key>`",
            )
            .with("status", 401),
        )
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        Self(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        Self(
            ModelError::invalid_input(format!("bad request body: {}", rejection.body_text()))
                .with("status", status.as_u16()),
        )
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let mut response = (status, Json(self.0.to_json())).into_response();
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
