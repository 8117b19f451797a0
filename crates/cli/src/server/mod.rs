//! `mm serve`: the models over HTTP (axum). Handlers are plain async functions over an
//! explicit [`AppState`]; errors are the seed's JSON with a fitting status.

mod errors;
mod keep_alive;
mod metrics;
mod routes;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use errors::ApiError;
use model_manager::{ErrorCode, ModelError, ModelManager};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Limits and access of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Required `Authorization: Bearer` token, if any.
    pub api_key: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most texts in one embeddings request.
    pub max_inputs: usize,
    /// Requests served at once; more get 503 rather than a queue.
    pub max_concurrent: usize,
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The models.
    pub manager: ModelManager,
    /// The limits.
    pub config: Arc<ServerConfig>,
    permits: Arc<Semaphore>,
    metrics: Arc<metrics::Metrics>,
    keep_alive: Arc<keep_alive::KeepAlive>,
}

/// The routes with their middleware.
pub fn router(manager: ModelManager, config: ServerConfig) -> Router {
    let state = AppState {
        manager,
        permits: Arc::new(Semaphore::new(config.max_concurrent)),
        metrics: Arc::new(metrics::Metrics::new()),
        keep_alive: Arc::default(),
        config: Arc::new(config),
    };
    Router::new()
        .route("/v1/embeddings", post(routes::embeddings))
        .route("/v1/generate", post(routes::generate))
        .route("/v1/models", get(routes::models))
        .route("/v1/models/{id}/load", post(routes::load))
        .route("/v1/models/{id}/infer", post(routes::infer))
        .route("/v1/models/{id}/unload", post(routes::unload))
        .route("/v1/status", get(routes::status))
        .route("/metrics", get(metrics::render))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit))
        .route("/health", get(routes::health))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Checks the API key and takes a concurrency permit for the request's whole life; a
/// client that disconnects drops the request future and with it the permit.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let expected = format!("Bearer {key}");
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return ApiError(ModelError::new(
            ErrorCode::CapacityExhausted,
            format!(
                "the server is at its limit of {} concurrent requests; retry shortly",
                state.config.max_concurrent
            ),
        ))
        .into_response();
    };
    next.run(request).await
}

/// Serves until SIGINT or SIGTERM, then lets in-flight requests finish and unloads the models.
pub async fn serve(manager: ModelManager, config: ServerConfig) -> Result<(), ModelError> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| {
            ModelError::config("", format!("cannot listen on {}: {e}", config.addr))
                .caused_by("IoError", e)
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ModelError::config("", e.to_string()))?;
    manager.initialize().await?;
    eprintln!("mm: listening on http://{addr}");
    axum::serve(listener, router(manager.clone(), config))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| ModelError::config("", format!("server failed: {e}")))?;
    manager.shutdown().await?;
    eprintln!("mm: stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}
