//! The server's trust boundaries, tried as an attacker or a careless client would: tensors
//! and images whose stated shape lies about their data, a request still running when the
//! shutdown grace ends, the bearer scheme in any case, and a huge model id.

use model_manager_core::backend::{ModelLoader, Probe};
use model_manager_core::{
    Device, DeviceChoice, Infer, InferValue, Model, ModelInfo, ModelManager, ModelSpec,
    NamedValues, Registry, Result, Settings,
};
use model_manager_server::{router, serve, ServerConfig};
use serde_json::{json, Value};
use std::any::Any;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts its calls and answers its inputs' kinds; `sleep_ms` makes each call take that long.
struct Recorder {
    calls: Arc<AtomicUsize>,
    sleep_ms: u64,
}

impl Model for Recorder {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "recorder".into(),
            backend: "test".into(),
            device: Device::Cpu,
            dimension: None,
            bytes: None,
        }
    }
    fn as_infer(&self) -> Option<&dyn Infer> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Infer for Recorder {
    fn infer(&self, inputs: &NamedValues) -> Result<NamedValues> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.sleep_ms));
        Ok(inputs
            .iter()
            .map(|(k, v)| (k.clone(), InferValue::Text(v.kind().into())))
            .collect())
    }
}

struct RecorderLoader {
    calls: Arc<AtomicUsize>,
    sleep_ms: u64,
}

impl ModelLoader for RecorderLoader {
    fn model_type(&self) -> &str {
        "recorder"
    }
    fn backend(&self) -> &str {
        "test"
    }
    fn probe(&self, _: &ModelSpec) -> Probe {
        Probe::Accept
    }
    fn load(&self, _: &ModelSpec, _: &DeviceChoice) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(Recorder {
            calls: self.calls.clone(),
            sleep_ms: self.sleep_ms,
        }))
    }
}

/// A running server: its address, the model's call count, and what stops it.
struct Running {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

/// `serve` (what `mm serve` runs) over a `recorder` model, with `extra` settings.
fn start(extra: &str, sleep_ms: u64, api_key: Option<&str>) -> Running {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let text = format!("models.rec.type = \"recorder\"\n{extra}");
    let settings = Settings::from_toml_str(&text, ".").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new();
    registry
        .register(Arc::new(RecorderLoader {
            calls: calls.clone(),
            sleep_ms,
        }))
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServerConfig::from_settings(&settings, addr).unwrap();
    config.api_key = api_key.map(str::to_owned);
    let manager = ModelManager::with_registry(settings, Arc::new(registry));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = runtime.spawn(async move {
        serve(listener, manager, config, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        addr,
        calls,
        stop: Some(stop),
        served: Some(served),
        runtime,
    }
}

/// The raw answer to one request on its own connection ("" when the server closed the
/// connection without answering).
fn raw(addr: SocketAddr, method: &str, path: &str, body: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: test\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Status and JSON body of an answer.
fn parsed(answer: &str) -> (u16, Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split_once("\r\n\r\n")?.0;
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn infer(addr: SocketAddr, inputs: Value) -> (u16, Value) {
    let body = json!({ "inputs": inputs }).to_string();
    let headers = "connection: close\r\n";
    parsed(&raw(addr, "POST", "/v1/models/rec/infer", &body, headers))
}

#[test]
fn tensors_and_images_whose_shape_lies_about_their_data_never_reach_the_model() {
    let server = start("server.max_tensor_elements = 64", 0, None);
    let ok = json!({"t": {"shape": [2, 2], "dtype": "f32", "data": [1, 2, 3, 4]}});
    assert_eq!(infer(server.addr, ok).0, 200);
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);

    let three_pixels = "AAAAAAAAAAAA"; // 9 bytes of base64-encoded zeros
    let lies = [
        (
            json!({"t": {"shape": [2, 2], "dtype": "f32", "data": [1, 2, 3]}}),
            "inputs.t",
        ),
        (
            json!({"big": {"shape": [4294967296u64, 4294967296u64], "dtype": "i64", "data": [1]}}),
            "inputs.big",
        ),
        (
            json!({"img": {"base64": three_pixels, "format": "raw", "width": 1000, "height": 1000, "channels": 3}}),
            "inputs.img",
        ),
        (
            json!({"many": {"shape": [65], "dtype": "i32", "data": vec![0; 65]}}),
            "inputs.many",
        ),
        // Raw in another case is raw, and checked.
        (
            json!({"img": {"base64": three_pixels, "format": "RAW", "width": 1000, "height": 1000, "channels": 3}}),
            "inputs.img",
        ),
        // Dimensions on an image that is not raw: a plugin might treat it as raw.
        (
            json!({"img": {"base64": three_pixels, "format": "", "width": 1000, "height": 1000, "channels": 3}}),
            "inputs.img",
        ),
        // No element, but a dimension ONNX Runtime would take as negative.
        (
            json!({"t": {"shape": [0, 9223372036854775808u64], "dtype": "f32", "data": []}}),
            "inputs.t",
        ),
        (
            json!({"t": {"shape": vec![1; 33], "dtype": "f32", "data": [1]}}),
            "inputs.t",
        ),
    ];
    for (inputs, field) in lies {
        let (status, out) = infer(server.addr, inputs.clone());
        assert_eq!(status, 400, "{inputs}: {out}");
        assert_eq!(out["code"], "INVALID_INPUT", "{out}");
        assert_eq!(out["details"]["field"], field, "{out}");
    }
    assert_eq!(
        server.calls.load(Ordering::SeqCst),
        1,
        "no lying input reached the model"
    );
}

#[test]
fn a_request_still_running_when_the_grace_ends_gets_a_503_not_a_closed_socket() {
    let mut server = start("server.shutdown_grace_seconds = 1", 6000, None);
    let addr = server.addr;
    let client = std::thread::spawn(move || {
        let body = json!({"inputs": {"x": "slow"}}).to_string();
        let started = Instant::now();
        let answer = raw(addr, "POST", "/v1/models/rec/infer", &body, "");
        (answer, started.elapsed())
    });
    while server.calls.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = server.stop.take().unwrap().send(());
    let (answer, took) = client.join().unwrap();
    let (status, out) = parsed(&answer);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(out["code"], "SHUTTING_DOWN", "{out}");
    assert!(header(&answer, "retry-after").is_some(), "{answer}");
    assert_eq!(header(&answer, "connection"), Some("close"), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    let served = server.served.take().unwrap();
    server
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), served).await })
        .expect("serve returns soon after the grace")
        .unwrap();
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_a_refusal_says_unauthorized() {
    let server = start("", 0, Some("s3cret"));
    let get = |headers: &str| {
        let headers = format!("{headers}connection: close\r\n");
        parsed(&raw(server.addr, "GET", "/v1/models", "", &headers))
    };
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, out) = get(&format!("authorization: {scheme} s3cret\r\n"));
        assert_eq!(status, 200, "{scheme}: {out}");
    }
    for wrong in [
        "authorization: Bearer nope\r\n",
        "authorization: Basic s3cret\r\n",
        "",
    ] {
        let (status, out) = get(wrong);
        assert_eq!(status, 401, "{wrong:?}: {out}");
        assert_eq!(out["code"], "UNAUTHORIZED", "{out}");
        // RFC 7235 §3.1: the refusal names the scheme it takes.
        let answer = raw(
            server.addr,
            "GET",
            "/v1/models",
            "",
            &format!("{wrong}connection: close\r\n"),
        );
        assert_eq!(
            header(&answer, "www-authenticate"),
            Some("Bearer"),
            "{answer}"
        );
    }
}

#[test]
fn a_huge_model_id_is_echoed_once_and_cut() {
    let server = start("", 0, None);
    let id = "x".repeat(1 << 20);
    let body = json!({"model": id, "input": "hello"}).to_string();
    let answer = raw(
        server.addr,
        "POST",
        "/v1/embeddings",
        &body,
        "connection: close\r\n",
    );
    let (status, out) = parsed(&answer);
    assert_eq!(status, 404, "{}", &answer[..answer.len().min(500)]);
    assert_eq!(out["code"], "MODEL_NOT_CONFIGURED");
    assert!(answer.len() < 2048, "a {} byte answer", answer.len());
    let echoed = out.to_string().matches(&"x".repeat(256)).count();
    assert_eq!(echoed, 1, "{out}");
    assert!(!out.to_string().contains(&"x".repeat(257)), "{out}");
    // A short id is repeated once too: in details.model_id, not in the message.
    let body = json!({"model": "no-such-model-xyz", "input": "hello"}).to_string();
    let answer = raw(
        server.addr,
        "POST",
        "/v1/embeddings",
        &body,
        "connection: close\r\n",
    );
    let (status, out) = parsed(&answer);
    assert_eq!(status, 404, "{out}");
    assert_eq!(out["details"]["model_id"], "no-such-model-xyz");
    assert_eq!(
        out.to_string().matches("no-such-model-xyz").count(),
        1,
        "{out}"
    );
}

/// `router` mounted without `serve`: the same checks hold.
#[test]
fn the_mounted_router_checks_inputs_too() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let settings = Settings::from_toml_str("models.rec.type = \"recorder\"", ".").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new();
    registry
        .register(Arc::new(RecorderLoader {
            calls: calls.clone(),
            sleep_ms: 0,
        }))
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig::from_settings(&settings, addr).unwrap();
    let manager = ModelManager::with_registry(settings, Arc::new(registry));
    let app = router(manager, config);
    runtime.spawn(async move { axum::serve(listener, app).await });
    let (status, out) = infer(
        addr,
        json!({"t": {"shape": [3], "dtype": "i64", "data": [1, 2]}}),
    );
    assert_eq!(
        (status, out["details"]["field"].as_str()),
        (400, Some("inputs.t"))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
