//! What requests still running when the shutdown grace ends are told: a 503
//! `SHUTTING_DOWN` with `Retry-After` and `Connection: close`, never a silently closed
//! socket, so a client can tell a drain from a crash and retry elsewhere.

use super::errors::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model_manager_core::{ErrorCode, ModelError};
use tokio::sync::watch;

/// Set once the grace has ended; every request still running then is answered at once.
#[derive(Clone)]
pub struct Drain(watch::Sender<bool>);

impl Default for Drain {
    fn default() -> Self {
        Self(watch::channel(false).0)
    }
}

impl Drain {
    /// Ends the grace: requests still running are answered 503 now.
    pub fn expire(&self) {
        self.0.send_replace(true);
    }

    async fn expired(&self) {
        let mut expired = self.0.subscribe();
        if expired.wait_for(|e| *e).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The answer to a request cut short by the end of the grace.
fn cut_short() -> Response {
    let error = ModelError::new(
        ErrorCode::ShuttingDown,
        "the server shut down before this request finished (server.shutdown_grace_seconds); retry it",
    );
    let mut response = ApiError::from(error).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Runs the request until it answers or the grace ends, whichever comes first; the
/// request's work is dropped (a model call in flight finishes on its own thread).
pub async fn answer_before_close(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let drain = state.drain.clone();
    tokio::select! {
        response = next.run(request) => response,
        () = drain.expired() => cut_short(),
    }
}
