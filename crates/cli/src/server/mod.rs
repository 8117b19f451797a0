//! `mm serve`: the models over HTTP (axum on hyper). Handlers are plain async functions over
//! an explicit [`AppState`]; errors are the seed's JSON with a fitting status. Limits are the
//! `server.*` settings: connections, header and body deadlines, body, input and response
//! sizes, and inference slots (operator routes never wait behind inference).

mod errors;
mod keep_alive;
mod limits;
mod listener;
mod metrics;
mod request;
#[cfg(test)]
mod request_fuzz;
mod routes;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use model_manager::settings::ServerSettings;
use model_manager::{ModelError, ModelManager};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Address, access and limits of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Required `Authorization: Bearer` token, if any (never empty).
    pub api_key: Option<String>,
    /// `server.*` from settings, with command-line overrides.
    pub limits: ServerSettings,
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
        permits: Arc::new(Semaphore::new(config.limits.max_concurrent)),
        metrics: Arc::new(metrics::Metrics::new(&manager)),
        keep_alive: Arc::default(),
        config: Arc::new(config),
        manager,
    };
    let inference = Router::new()
        .route("/v1/embeddings", post(routes::embeddings))
        .route("/v1/generate", post(routes::generate))
        .route("/v1/models/{id}/infer", post(routes::infer))
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
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .with_state(state)
}

/// Serves until SIGINT or SIGTERM, then lets in-flight requests finish (within
/// `server.shutdown_grace_seconds`) and unloads the models.
pub async fn serve(manager: ModelManager, config: ServerConfig) -> Result<(), ModelError> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| {
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
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ModelError::invalid_input(e.to_string()))?;
    manager.initialize().await?;
    eprintln!("mm: listening on http://{addr}");
    print_banner(&manager, &config);
    let limits = listener::ListenLimits {
        max_connections: config.limits.max_connections,
        header_timeout: config.limits.header_timeout,
        shutdown_grace: config.limits.shutdown_grace,
    };
    let app = router(manager.clone(), config);
    listener::serve(listener, app, limits, shutdown_signal()).await;
    manager.shutdown().await?;
    eprintln!("mm: stopped");
    Ok(())
}

/// What is served, from where, with which limits: on stderr at start.
fn print_banner(manager: &ModelManager, config: &ServerConfig) {
    let settings = manager.settings();
    let source = settings
        .source
        .as_ref()
        .map_or_else(|| "built-in defaults".into(), |p| p.display().to_string());
    eprintln!(
        "mm: {} {}, settings {source}",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION")
    );
    for spec in settings.models.values() {
        eprintln!("mm:   model {:<16} {}", spec.id, spec.model_type);
    }
    eprintln!(
        "mm: api key {}, at most {} requests at once; requests are logged at info (-v or MM_LOG=mm::request=info)",
        if config.api_key.is_some() { "required" } else { "off" },
        config.limits.max_concurrent
    );
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
