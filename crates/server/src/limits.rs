//! The gates a request passes, in order: the API key (headers only, so an unauthorized
//! client cannot even upload a body), the body read within its deadline and size, and, for
//! inference routes only, a concurrency slot taken once the body is in.

use super::errors::ApiError;
use super::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model_manager_core::{ErrorCode, ModelError};
use subtle::ConstantTimeEq;

/// Routes open without a key: liveness probes.
const OPEN_ROUTES: &[&str] = &["/health"];

/// Whether `given` (an `Authorization` header value) carries `key` with the `Bearer`
/// scheme, written in any case (RFC 7235), compared in constant time. An empty key matches
/// nothing: a configuration that set one by mistake stays shut.
pub fn key_matches(given: Option<&str>, key: &str) -> bool {
    let token = given
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim_start_matches(' '));
    !key.trim().is_empty() && bool::from(token.as_bytes().ct_eq(key.as_bytes()))
}

/// Requires `Authorization: Bearer KEY` when a key is set.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !OPEN_ROUTES.contains(&request.uri().path()) && !key_matches(given, key) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Reads the whole body within `server.body_timeout_seconds` and `server.max_body_bytes`,
/// so a client that stalls mid-body holds no inference slot and is cut off.
pub async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.config.limits;
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    let (status, message) = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(bytes)) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if is_too_large(&e) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes (server.max_body_bytes)",
                limits.max_body_bytes
            ),
        ),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        ),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {:?} (server.body_timeout_seconds)",
                limits.body_timeout
            ),
        ),
    };
    ApiError::with_status(ModelError::invalid_input(message), status).into_response()
}

fn is_too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Takes an inference slot for the request's life; when all are taken the answer is 503 at
/// once. A client that disconnects drops the request future and with it the slot.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_slot) = state.permits.clone().try_acquire_owned() else {
        return ApiError::from(ModelError::new(
            ErrorCode::CapacityExhausted,
            format!(
                "the server is serving its limit of {} inference requests (server.max_concurrent); retry shortly",
                state.config.limits.max_concurrent
            ),
        ))
        .into_response();
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn keys_match_only_exactly_whatever_the_scheme_s_case() {
        for given in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "Bearer  s3cret",
        ] {
            assert!(key_matches(Some(given), "s3cret"), "{given}");
        }
        for wrong in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret "),
            Some("Basic s3cret"),
            Some("Bearers3cret"),
        ] {
            assert!(!key_matches(wrong, "s3cret"), "{wrong:?}");
        }
    }

    #[test]
    fn an_empty_key_lets_nobody_in() {
        for given in [None, Some(""), Some("Bearer "), Some("Bearer  ")] {
            assert!(!key_matches(given, ""), "{given:?}");
            assert!(!key_matches(given, " "), "{given:?}");
        }
    }
}
