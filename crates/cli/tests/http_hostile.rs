//! `mm serve` against hostile and heavy clients: stalled and slow connections, too many of
//! them, metric label injection, operator routes while inference is full, malformed bodies,
//! and what errors reveal.
mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Settings through environment overrides, as an operator would set them.
fn env(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    pairs.to_vec()
}

/// A connection that sent `head` (and maybe part of a body) and then stalls.
fn stalled(server: &Server, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// What the server sends on `stream` until it closes it (bounded wait).
fn answer(mut stream: TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

const HALF_BODY: &str = "POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"input\": \"half";

#[test]
fn stalled_bodies_hold_no_inference_slot_and_are_cut_off() {
    let server = Server::start(
        &["--max-concurrent", "2"],
        &env(&[("CORE_MODEL_MANAGER_SERVER_BODY_TIMEOUT_SECONDS", "1.5")]),
    );
    let stalls: Vec<TcpStream> = (0..20).map(|_| stalled(&server, HALF_BODY)).collect();
    // With twenty half-sent bodies open, normal requests still get both slots.
    let started = Instant::now();
    for _ in 0..3 {
        let (status, out) = server.post("/v1/embeddings", r#"{"input": "a normal request"}"#);
        assert_eq!(status, 200, "{out}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Each stalled client is told 408 and its connection closed.
    for stream in stalls {
        let text = answer(stream, Duration::from_secs(10));
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("server.body_timeout_seconds"), "{text}");
    }
}

#[test]
fn stalled_headers_and_idle_connections_are_closed() {
    let server = Server::start(
        &[],
        &env(&[("CORE_MODEL_MANAGER_SERVER_HEADER_TIMEOUT_SECONDS", "1")]),
    );
    let half_head = stalled(
        &server,
        "POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Le",
    );
    let idle = TcpStream::connect(&server.addr).unwrap();
    let started = Instant::now();
    answer(half_head, Duration::from_secs(10));
    answer(idle, Duration::from_secs(10));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[test]
fn connections_over_the_cap_are_refused_with_retry_after_not_queued() {
    let server = Server::start(
        &[],
        &env(&[("CORE_MODEL_MANAGER_SERVER_MAX_CONNECTIONS", "8")]),
    );
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = answer(
        TcpStream::connect(&server.addr).unwrap(),
        Duration::from_secs(5),
    );
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Retry-After: 1"), "{refused}");
    assert!(refused.contains("CAPACITY_EXHAUSTED"), "{refused}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.get("/health").0 != 200 {
        assert!(Instant::now() < deadline, "room came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_ends_even_with_half_sent_requests_open() {
    let mut server = Server::start(
        &[],
        &env(&[("CORE_MODEL_MANAGER_SERVER_SHUTDOWN_GRACE_SECONDS", "1")]),
    );
    let _stalls: Vec<TcpStream> = (0..5).map(|_| stalled(&server, HALF_BODY)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let exit = server.terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// Starts a request that keeps the only inference slot busy, and waits until it does.
fn occupy_the_only_slot(server: &std::sync::Arc<Server>) -> std::thread::JoinHandle<u16> {
    server.post("/v1/embeddings", r#"{"input": "warm up"}"#);
    let texts: Vec<String> = (0..1500)
        .map(|i| format!("a long busy request, text number {i}, with some words"))
        .collect();
    let body = serde_json::json!({ "input": texts }).to_string();
    let busy = {
        let server = server.clone();
        std::thread::spawn(move || server.post("/v1/embeddings", &body).0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/v1/status").1["models"]["embedding"]["engine"]["queued_texts"] == 0 {
        assert!(
            Instant::now() < deadline,
            "the busy request never reached the engine"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    busy
}

/// Operator routes do not wait behind inference, and every 503 says when to retry.
#[test]
fn operator_routes_answer_while_inference_is_full() {
    let server = std::sync::Arc::new(Server::start(&["--max-concurrent", "1"], &[]));
    let busy = occupy_the_only_slot(&server);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    let request = "POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 14\r\n\r\n{\"input\": \"x\"}";
    stream.write_all(request.as_bytes()).unwrap();
    let refused = answer(stream, Duration::from_secs(10));
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(refused.contains("server.max_concurrent"), "{refused}");
    for path in ["/health", "/v1/status", "/v1/models", "/metrics"] {
        assert_eq!(server.request_text("GET", path, "", &[]).0, 200, "{path}");
    }
    assert_eq!(busy.join().unwrap(), 200);
}

#[test]
fn hostile_model_names_never_reach_the_metrics() {
    let server = Server::start(&[], &[]);
    let hostile = [
        "nope\"} 1\n# EOF\nmm_fake 1\n",
        "a\\b",
        "../../etc/passwd",
        "\u{0}\u{1}",
    ];
    for name in hostile {
        let body = serde_json::json!({"input": "x", "model": name}).to_string();
        assert_eq!(server.post("/v1/embeddings", &body).0, 404);
    }
    for i in 0..2000 {
        let body = format!(r#"{{"input": "x", "model": "unknown-{i}"}}"#);
        assert_eq!(server.post("/v1/embeddings", &body).0, 404);
    }
    let (status, text) = server.request_text("GET", "/metrics", "", &[]);
    assert_eq!(status, 200);
    assert!(text.len() < 64 * 1024, "{} bytes of metrics", text.len());
    assert!(
        !text.contains("mm_fake") && !text.contains("unknown-"),
        "{text}"
    );
    assert!(
        text.contains(r#"model="_other",status="404"} 2004"#),
        "{text}"
    );
    let parsed = parse_openmetrics(&text);
    assert!(parsed.contains("mm_http_requests"), "{parsed}");
}

/// Parses an exposition with the Prometheus project's own Python parser; returns the metric
/// family names, one per line.
fn parse_openmetrics(text: &str) -> String {
    let python = common::python_venv::python_in(
        &common::repo().join("target/metrics-venv"),
        &["prometheus-client==0.21.1"],
    );
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n    print(family.name)\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dimensions_and_token_inputs_follow_openai() {
    let server = Server::start(&[], &[]);
    let (status, full) = server.post("/v1/embeddings", r#"{"input": "hello"}"#);
    assert_eq!(status, 200, "{full}");
    let full: Vec<f32> = serde_json::from_value(full["data"][0]["embedding"].clone()).unwrap();
    let (status, short) = server.post("/v1/embeddings", r#"{"input": "hello", "dimensions": 64}"#);
    assert_eq!(status, 200, "{short}");
    let short: Vec<f32> = serde_json::from_value(short["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(short.len(), 64);
    let norm: f32 = full[..64].iter().map(|x| x * x).sum::<f32>().sqrt();
    for (s, f) in short.iter().zip(&full) {
        assert!((s - f / norm).abs() < 1e-6);
    }
    // [CLS] hello [SEP] as token ids is the text "hello".
    let (status, ids) = server.post("/v1/embeddings", r#"{"input": [101, 7592, 102]}"#);
    assert_eq!(status, 200, "{ids}");
    assert_eq!(ids["usage"]["prompt_tokens"], 3);
    let ids: Vec<f32> = serde_json::from_value(ids["data"][0]["embedding"].clone()).unwrap();
    for (a, b) in ids.iter().zip(&full) {
        assert!((a - b).abs() < 1e-5);
    }
    let (status, nested) = server.post(
        "/v1/embeddings",
        r#"{"input": [[101, 7592, 102], [101, 102]]}"#,
    );
    assert_eq!((status, nested["data"].as_array().unwrap().len()), (200, 2));
    for (body, field) in [
        (r#"{"input": "hello", "dimensions": 385}"#, "dimensions"),
        (r#"{"input": "hello", "dimensions": -1}"#, "dimensions"),
        (r#"{"input": [101, 99999999]}"#, "input[0]"),
        (r#"{"input": [["a"]]}"#, "input[0][0]"),
        (r#"{"input": {"text": "x"}}"#, "input"),
        (r#"{"input": "x", "encoding_format": 1}"#, "encoding_format"),
    ] {
        let (status, err) = server.post("/v1/embeddings", body);
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("INVALID_INPUT")),
            "{body}: {err}"
        );
        assert_eq!(err["details"]["field"], field, "{body}: {err}");
    }
}

#[test]
fn a_small_request_cannot_force_a_huge_response() {
    let server = Server::start(&[], &[]);
    let texts: Vec<String> = (0..2048)
        .map(|i| char::from(b'a' + (i % 26) as u8).to_string())
        .collect();
    let floats = serde_json::json!({ "input": texts }).to_string();
    let (status, err) = server.post("/v1/embeddings", &floats);
    assert_eq!(status, 413, "{err}");
    assert!(err["message"].as_str().unwrap().contains("base64"), "{err}");
    let compact = serde_json::json!({ "input": texts, "encoding_format": "base64" }).to_string();
    let (status, out) = server.post("/v1/embeddings", &compact);
    assert_eq!((status, out["data"].as_array().unwrap().len()), (200, 2048));
}

#[test]
fn errors_do_not_reveal_the_server_s_files() {
    let server = Server::start(
        &[],
        &[(
            "CORE_MODEL_MANAGER_MODELS_T5_SUMMARIZER_LOCAL_PATH",
            "/work/models/missing-t5",
        )],
    );
    let (status, text) = server.request_text("POST", "/v1/generate", r#"{"prompt": "hi"}"#, &[]);
    assert!(status >= 400, "{text}");
    assert!(
        !text.contains("/work") && !text.contains("/root") && !text.contains("/models/"),
        "{text}"
    );
    assert!(text.contains("models.t5_summarizer"), "{text}");
}

#[test]
fn an_empty_api_key_is_refused_and_a_key_file_works() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("mm"))
        .current_dir(common::repo())
        .args(["--json", "serve", "--addr", "127.0.0.1:0"])
        .env("MM_API_KEY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let error = common::json_of(&out.stdout);
    assert_eq!(error["code"], "CONFIG_ERROR", "{error}");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "from-a-file\n").unwrap();
    let server = Server::start(&[], &[("MM_API_KEY_FILE", key_file.to_str().unwrap())]);
    assert_eq!(server.get("/v1/models").0, 401);
    let auth = [("Authorization", "Bearer from-a-file")];
    assert_eq!(server.request("GET", "/v1/models", "", &auth).0, 200);
}
