//! `server.*`: the limits of `mm serve` (and of any host that mounts its routes).

use super::value::Reader;
use std::path::PathBuf;
use std::time::Duration;

/// The limits and access of the HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most texts in one embeddings request (413 beyond).
    pub max_inputs: usize,
    /// Inference requests (embeddings, generate, infer) served at once; more get 503.
    pub max_concurrent: usize,
    /// Open connections at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time to send a request's headers, which is also how long an idle keep-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// Time to send a request's whole body once its headers arrived (408 beyond).
    pub body_timeout: Duration,
    /// Largest response body in bytes (413 for a request that would produce more).
    pub max_response_bytes: usize,
    /// Most elements (tensor values, image bytes) in one generic inference request (400).
    pub max_tensor_elements: usize,
    /// After SIGTERM, how long in-flight requests may finish before their connections are
    /// dropped.
    pub shutdown_grace: Duration,
    /// A file holding the API key (`Authorization: Bearer KEY`).
    pub api_key_file: Option<PathBuf>,
}

impl ServerSettings {
    pub(super) fn read(r: &Reader<'_>) -> Self {
        let seconds = |key: &str| Duration::from_secs_f64(r.f64(key));
        Self {
            max_body_bytes: r.u64("server.max_body_bytes") as usize,
            max_inputs: r.u64("server.max_inputs") as usize,
            max_concurrent: r.u64("server.max_concurrent") as usize,
            max_connections: r.u64("server.max_connections") as usize,
            header_timeout: seconds("server.header_timeout_seconds"),
            body_timeout: seconds("server.body_timeout_seconds"),
            max_response_bytes: r.u64("server.max_response_bytes") as usize,
            max_tensor_elements: r.u64("server.max_tensor_elements") as usize,
            shutdown_grace: seconds("server.shutdown_grace_seconds"),
            api_key_file: r.path("server.api_key_file"),
        }
    }
}
