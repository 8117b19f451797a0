//! model-manager's HTTP API as a library: [`router`] gives the routes of `mm serve` as an
//! axum [`Router`] over a [`ModelManager`] the application owns, to serve alone ([`serve`])
//! or to mount inside the application's own axum app. Handlers are plain async functions
//! over an explicit [`AppState`]; errors are [`ApiError`]s, the error's JSON (`code`,
//! `message`, `details`) with a fitting HTTP status. Limits are the `server.*` settings:
//! connections, header and body deadlines, body, input and response sizes, and inference
//! slots (operator routes never wait behind inference).
//!
//! Mounting the API under `/models` beside an application's own routes:
//!
//! ```no_run
//! use axum::routing::get;
//! use axum::Router;
//! use model_manager_core::{ModelManager, Settings};
//! use model_manager_server::{router, ServerConfig};
//!
//! # async fn app() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::from_file("settings.toml")?;
//! let config = ServerConfig::from_settings(&settings, "127.0.0.1:8080".parse()?)?;
//! let manager = ModelManager::new(settings);
//! manager.initialize().await?;
//! let app = Router::new()
//!     .route("/", get(|| async { "my application" }))
//!     .nest("/models", router(manager.clone(), config));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(model_manager_server::shutdown_signal())
//!     .await?;
//! manager.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! `POST /models/v1/embeddings` then answers like `mm serve`'s `/v1/embeddings`. [`serve`]
//! adds what `axum::serve` lacks: a cap on open connections and a header timeout.

mod config;
mod drain;
mod errors;
mod fields;
mod keep_alive;
mod limits;
mod listener;
mod metrics;
mod request;
#[cfg(test)]
mod request_fuzz;
mod routes;
mod scoring;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use model_manager_core::{ModelError, ModelManager};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use config::{api_key, ServerConfig};
pub use errors::{public, ApiError};

/// What every handler sees: one reference-counted value, since axum clones it for every
/// middleware layer and handler of every request (a struct of Arcs cost a dozen contended
/// atomic updates a request between the runtime's threads).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
pub struct Shared {
    /// The models.
    pub manager: ModelManager,
    /// The limits.
    pub config: ServerConfig,
    permits: Arc<Semaphore>,
    metrics: metrics::Metrics,
    keep_alive: Arc<keep_alive::KeepAlive>,
    drain: drain::Drain,
    /// When the router was built, in Unix seconds (`created` in `/v1/models`).
    started_at: u64,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The routes with their middleware.
pub fn router(manager: ModelManager, config: ServerConfig) -> Router {
    app(manager, config, drain::Drain::default())
}

/// [`router`], whose requests still running when `drain` expires are answered 503.
fn app(manager: ModelManager, config: ServerConfig, drain: drain::Drain) -> Router {
    let state = AppState(Arc::new(Shared {
        permits: Arc::new(Semaphore::new(config.limits.max_concurrent)),
        metrics: metrics::Metrics::new(&manager),
        keep_alive: Arc::default(),
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config,
        manager,
        drain,
    }));
    let inference = Router::new()
        .route("/v1/embeddings", post(routes::embeddings))
        .route("/v1/generate", post(routes::generate))
        .route("/v1/models/{id}/infer", post(routes::infer))
        .route("/rerank", post(scoring::rerank))
        .route("/v1/rerank", post(scoring::rerank_v1))
        .route("/embed_sparse", post(scoring::embed_sparse))
        .route("/predict", post(scoring::predict))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::admit));
    let operator = Router::new()
        .route("/v1/models", get(routes::models))
        .route("/v1/models/{id}/load", post(routes::load))
        .route("/v1/models/{id}/unload", post(routes::unload))
        .route("/v1/status", get(routes::status))
        .route("/metrics", get(metrics::render))
        .route("/health", get(routes::health));
    inference
        .merge(operator)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::read_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            drain::answer_before_close,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .with_state(state)
}

/// Binds `config.addr`; a `INVALID_INPUT` that says what to change when the address is
/// taken or needs privileges.
pub async fn bind(config: &ServerConfig) -> Result<TcpListener, ModelError> {
    TcpListener::bind(config.addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process listens there: stop it, or choose another port with --addr"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: choose a port above 1023 with --addr"
            }
            _ => "choose another address with --addr",
        };
        ModelError::invalid_input(format!("cannot listen on {}: {e}", config.addr))
            .with("hint", hint)
            .caused_by("IoError", e)
    })
}

/// Serves [`router`] on `listener` within `config`'s connection limits until `shutdown`
/// completes, then lets in-flight requests finish within `server.shutdown_grace_seconds`;
/// those still running then are answered 503 `SHUTTING_DOWN` (with `Retry-After` and
/// `Connection: close`). The manager is the caller's: initialize it before and shut it
/// down after.
pub async fn serve(
    listener: TcpListener,
    manager: ModelManager,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limits = listener::ListenLimits {
        max_connections: config.limits.max_connections,
        header_timeout: config.limits.header_timeout,
        shutdown_grace: config.limits.shutdown_grace,
    };
    let drain = drain::Drain::default();
    let app = app(manager, config, drain.clone());
    listener::serve(listener, app, limits, shutdown, drain).await;
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: the usual `shutdown` of [`serve`].
pub async fn shutdown_signal() {
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
