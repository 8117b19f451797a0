//! The API mounted inside another axum app, as an application embeds it: its routes answer
//! under the prefix beside the app's own, errors keep their codes and statuses, and the
//! manager stays the application's.

use model_manager_core::backend::{ModelLoader, Probe};
use model_manager_core::{
    Device, DeviceChoice, Embedder, Model, ModelInfo, ModelManager, ModelSpec, Registry, Result,
    Settings,
};
use model_manager_server::{router, ServerConfig};
use serde_json::Value;
use std::any::Any;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

/// Vectors made from the text's length: enough to tell answers apart.
struct Lengths;

impl Model for Lengths {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "lengths".into(),
            backend: "test".into(),
            device: Device::Cpu,
            dimension: Some(2),
            bytes: None,
        }
    }
    fn as_embedder(&self) -> Option<&dyn Embedder> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Embedder for Lengths {
    fn dimension(&self) -> usize {
        2
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }
}

impl ModelLoader for Lengths {
    fn model_type(&self) -> &str {
        "lengths"
    }
    fn backend(&self) -> &str {
        "test"
    }
    fn probe(&self, _: &ModelSpec) -> Probe {
        Probe::Accept
    }
    fn load(&self, _: &ModelSpec, _: &DeviceChoice) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(Lengths))
    }
}

/// One request on its own connection; the status and the body as JSON (or as a string).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    request_with(addr, method, path, body, "")
}

/// [`request`] with extra header lines (each ending in `\r\n`).
fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &str,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: test\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, body)
}

/// An application's axum app with the API under `/models`, served on loopback; the
/// manager is the application's.
fn mounted(runtime: &tokio::runtime::Runtime, api_key: Option<&str>) -> (SocketAddr, ModelManager) {
    let settings = Settings::from_toml_str(
        "models.lengths.type = \"lengths\"\nserver.max_inputs = 3",
        ".",
    )
    .unwrap();
    let registry = Registry::new();
    registry.register(Arc::new(Lengths)).unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServerConfig::from_settings(&settings, addr).unwrap();
    config.api_key = api_key.map(str::to_owned);
    let manager = ModelManager::with_registry(settings, Arc::new(registry));
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "my application" }))
        .nest("/models", router(manager.clone(), config));
    runtime.spawn(async move { axum::serve(listener, app).await });
    (addr, manager)
}

#[test]
fn the_api_answers_under_a_prefix_beside_the_application_s_routes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, manager) = mounted(&runtime, None);

    assert_eq!(
        request(addr, "GET", "/", ""),
        (200, Value::String("my application".into()))
    );
    let (status, out) = request(
        addr,
        "POST",
        "/models/v1/embeddings",
        r#"{"model": "lengths", "input": ["abc", "hello"]}"#,
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["data"][1]["embedding"], serde_json::json!([5.0, 1.0]));
    assert_eq!(request(addr, "GET", "/models/health", "").0, 200);

    let (status, out) = request(
        addr,
        "POST",
        "/models/v1/embeddings",
        r#"{"model": "nope", "input": "x"}"#,
    );
    assert_eq!(
        (status, out["code"].as_str()),
        (404, Some("MODEL_NOT_CONFIGURED"))
    );
    // An explicit status is the response's, not a detail of the error.
    let (status, out) = request(
        addr,
        "POST",
        "/models/v1/embeddings",
        r#"{"model": "lengths", "input": ["a", "b", "c", "d"]}"#,
    );
    assert_eq!((status, out["code"].as_str()), (413, Some("INVALID_INPUT")));
    assert!(out["details"].get("status").is_none(), "{out}");
    // The manager is the application's: the model the API loaded is in its status.
    let status = runtime.block_on(manager.get_model_status()).unwrap();
    assert_eq!(status.models["lengths"].state, "loaded");
    runtime.block_on(manager.shutdown()).unwrap();
}

#[test]
fn a_key_guards_the_mounted_api_but_not_its_health_nor_the_app() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for key in ["s3cret", ""] {
        let (addr, _manager) = mounted(&runtime, Some(key));
        assert_eq!(request(addr, "GET", "/", "").0, 200, "key {key:?}");
        assert_eq!(request(addr, "GET", "/models/health", "").0, 200);
        let (status, out) = request(addr, "GET", "/models/v1/models", "");
        assert_eq!(status, 401, "key {key:?}: {out}");
        let bearer = format!("authorization: Bearer {key}\r\n");
        let (status, _) = request_with(addr, "GET", "/models/v1/models", "", &bearer);
        // An empty key is a mistake: it opens nothing, not even to an empty bearer.
        assert_eq!(status, if key.is_empty() { 401 } else { 200 });
    }
}
