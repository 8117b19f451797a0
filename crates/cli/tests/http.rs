//! The real `mm serve` on a loopback port, driven with plain HTTP/1.1 requests.
mod common;

use common::Server;
use std::process::Command;

fn decode_base64_f32(text: &str) -> Vec<f32> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn embeddings_models_status_and_errors() {
    let server = Server::start(&["--max-inputs", "4", "--max-body-bytes", "4096"], &[]);
    assert_eq!(
        server.get("/health"),
        (200, serde_json::json!({"status": "ok"}))
    );

    let (status, floats) = server.post(
        "/v1/embeddings",
        r#"{"input": ["A man is playing a guitar.", "hi"], "model": "embedding"}"#,
    );
    assert_eq!(status, 200, "{floats}");
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["data"][1]["index"], 1);
    assert!(floats["usage"]["prompt_tokens"].as_u64().unwrap() >= 12);
    let (_, b64) = server.post(
        "/v1/embeddings",
        r#"{"input": ["A man is playing a guitar.", "hi"], "encoding_format": "base64"}"#,
    );
    // Each float is written as the shortest text of its f32 (at most 9 significant digits),
    // not of the f64 it widens to (17); and that text reads back to the same f32.
    let (_, text) = server.request_text("POST", "/v1/embeddings", r#"{"input": "hi"}"#, &[]);
    let array = text.split_once(r#""embedding":["#).unwrap().1;
    let array = array.split_once(']').unwrap().0;
    let vector = &serde_json::from_str::<serde_json::Value>(&text).unwrap()["data"][0]["embedding"];
    for (number, parsed) in array.split(',').zip(vector.as_array().unwrap()) {
        let mantissa = number.split(['e', 'E']).next().unwrap();
        let digits = mantissa
            .trim_start_matches(['-', '0', '.'])
            .replace('.', "");
        assert!(digits.len() <= 9, "{number}");
        assert_eq!(
            number.parse::<f32>().unwrap(),
            parsed.as_f64().unwrap() as f32
        );
    }
    for i in 0..2 {
        let from_float: Vec<f32> = floats["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            decode_base64_f32(b64["data"][i]["embedding"].as_str().unwrap()),
            from_float
        );
    }
    let (_, single) = server.post("/v1/embeddings", r#"{"input": "hi"}"#);
    assert_eq!(single["data"].as_array().unwrap().len(), 1);

    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "embedding" && m["state"] == "loaded"));
    let (_, st) = server.get("/v1/status");
    assert_eq!(st["models"]["embedding"]["load_count"], 1);

    let (status, err) = server.post("/v1/embeddings", "{not json");
    assert_eq!(
        (status, &err["success"], &err["code"]),
        (
            400,
            &serde_json::json!(false),
            &serde_json::json!("INVALID_INPUT")
        )
    );
    let (status, err) = server.post(
        "/v1/embeddings",
        r#"{"input": "x", "model": "/etc/passwd"}"#,
    );
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("MODEL_NOT_CONFIGURED"))
    );
    let (status, _) = server.post("/v1/embeddings", r#"{"input": ["a", "b", "c", "d", "e"]}"#);
    assert_eq!(status, 413);
    let big = format!(r#"{{"input": "{}"}}"#, "x".repeat(5000));
    let (status, _) = server.post("/v1/embeddings", &big);
    assert_eq!(status, 413);
    let (status, err) = server.post("/v1/embeddings", r#"{"input": []}"#);
    assert_eq!((status, err["code"].as_str()), (400, Some("INVALID_INPUT")));
}

#[test]
fn sixty_four_concurrent_requests_on_a_cold_model_load_it_once() {
    let server = std::sync::Arc::new(Server::start(&[], &[]));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let s = server.clone();
            std::thread::spawn(move || {
                s.post("/v1/embeddings", &format!(r#"{{"input": "request {i}"}}"#))
                    .0
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let (_, st) = server.get("/v1/status");
    assert_eq!(st["models"]["embedding"]["load_count"], 1, "{st}");
    assert_eq!(
        st["models"]["embedding"]["references"], 0,
        "every request released its reference"
    );
}

#[test]
fn api_key_load_unload_and_graceful_shutdown() {
    let mut server = Server::start(&[], &[("MM_API_KEY", "s3cret")]);
    let (status, err) = server.get("/v1/models");
    assert_eq!((status, err["success"].as_bool()), (401, Some(false)));
    assert_eq!(server.get("/health").0, 200, "health needs no key");
    let auth = [("Authorization", "Bearer s3cret")];
    let (status, loaded) = server.request(
        "POST",
        "/v1/models/embedding/load",
        r#"{"pin": true}"#,
        &auth,
    );
    assert_eq!((status, loaded["pinned"].as_bool()), (200, Some(true)));
    let (_, st) = server.request("GET", "/v1/status", "", &auth);
    assert_eq!(st["models"]["embedding"]["state"], "loaded");
    assert_eq!(st["models"]["embedding"]["pinned"], true);
    let (status, unloaded) = server.request("POST", "/v1/models/embedding/unload", "", &auth);
    assert_eq!((status, unloaded["unloaded"].as_bool()), (200, Some(true)));
    let (status, err) = server.request("POST", "/v1/models/nope/load", "", &auth);
    assert_eq!(status, 404, "{err}");

    let exit = server.terminate();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}

#[test]
fn metrics_count_requests_by_route_and_model_and_show_the_manager() {
    let server = Server::start(&[], &[]);
    for _ in 0..2 {
        let (status, _) = server.post("/v1/embeddings", r#"{"input": ["metrics a", "metrics b"]}"#);
        assert_eq!(status, 200);
    }
    assert_eq!(server.post("/v1/embeddings", r#"{"input": []}"#).0, 400);
    let (status, text) = server.request_text("GET", "/metrics", "", &[]);
    assert_eq!(status, 200, "{text}");
    for expected in [
        r#"mm_http_requests_total{route="/v1/embeddings",model="embedding",status="200"} 2"#,
        r#"mm_http_requests_total{route="/v1/embeddings",model="embedding",status="400"} 1"#,
        r#"mm_http_request_duration_seconds_count{route="/v1/embeddings",model="embedding"} 3"#,
        "mm_loaded_models 1",
        "mm_embedding_cache_hits_total 2",
        "mm_embedding_cache_misses_total 2",
        r#"mm_model_loads_total{model="embedding"} 1"#,
        r#"mm_model_last_load_seconds{model="embedding"}"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}

#[test]
fn a_client_that_disconnects_frees_its_slot_and_leaves_the_model_state_correct() {
    use std::io::Write;
    let server = Server::start(&["--max-concurrent", "1"], &[]);
    let texts: Vec<String> = (0..600)
        .map(|i| format!("disconnecting client sentence number {i} about refunds"))
        .collect();
    let body = serde_json::json!({ "input": texts }).to_string();
    {
        let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
        let head = format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    } // The client goes away mid-request.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (status, st) = server.get("/v1/status");
    assert_eq!(status, 200, "the only slot was freed: {st}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, st) = server.get("/v1/status");
        let model = &st["models"]["embedding"];
        if model["references"] == 0 && model["state"] == "loaded" {
            assert_eq!(model["load_count"], 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reference never released: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (status, _) = server.post("/v1/embeddings", r#"{"input": "after the disconnect"}"#);
    assert_eq!(status, 200);
}

/// A virtualenv under `target/` with the official OpenAI Python client (created once).
fn openai_python() -> std::path::PathBuf {
    // httpx 0.28 dropped an argument this openai release passes; pin the pair.
    common::python_venv::python_in(
        &common::repo().join("target/openai-venv"),
        &["openai==1.54.4", "httpx==0.27.2"],
    )
}

#[test]
fn the_official_openai_client_embeds_unchanged() {
    let python = openai_python();
    let server = Server::start(&[], &[("MM_API_KEY", "sk-test")]);
    let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test")
texts = ["A man is playing a guitar.", "The new movie is awesome."]
default = client.embeddings.create(model="embedding", input=texts)
floats = client.embeddings.create(model="embedding", input=texts, encoding_format="float")
print(json.dumps({
    "default": [d.embedding for d in default.data],
    "floats": [d.embedding for d in floats.data],
    "indexes": [d.index for d in default.data],
    "model": default.model,
    "prompt_tokens": default.usage.prompt_tokens,
}))
"#;
    let out = Command::new(&python)
        .args(["-c", script, &server.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["indexes"], serde_json::json!([0, 1]));
    assert_eq!(value["model"], "embedding");
    assert!(value["prompt_tokens"].as_u64().unwrap() > 0);
    let (_, raw) = server.request(
        "POST",
        "/v1/embeddings",
        r#"{"input": ["A man is playing a guitar.", "The new movie is awesome."]}"#,
        &[("Authorization", "Bearer sk-test")],
    );
    for key in ["default", "floats"] {
        let vectors: Vec<Vec<f32>> = serde_json::from_value(value[key].clone()).unwrap();
        assert_eq!(vectors.len(), 2);
        for (i, vector) in vectors.iter().enumerate() {
            let expected: Vec<f32> =
                serde_json::from_value(raw["data"][i]["embedding"].clone()).unwrap();
            assert_eq!(vector, &expected, "{key} vector {i}");
        }
    }
}

/// What the API answers is the server's state, and a mistake in a request is named.
#[test]
fn answers_tell_the_state_and_name_the_mistake() {
    let server = Server::start(&[], &[]);
    // `created` is a time before anything loads.
    let (_, models) = server.get("/v1/models");
    let t5 = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "t5_summarizer")
        .unwrap();
    assert_eq!(t5["state"], "unloaded", "{models}");
    assert!(t5["created"].as_u64().unwrap() > 1_700_000_000, "{models}");

    // A load without `pin` of a pinned model says it is pinned.
    let (status, first) = server.post("/v1/models/embedding/load", r#"{"pin": true}"#);
    assert_eq!(
        (status, first["pinned"].as_bool()),
        (200, Some(true)),
        "{first}"
    );
    let (status, again) = server.post("/v1/models/embedding/load", "{}");
    assert_eq!(
        (status, again["pinned"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    server.post("/v1/models/embedding/unload", "");
    let (_, plain) = server.post("/v1/models/embedding/load", "");
    assert_eq!(plain["pinned"].as_bool(), Some(false), "{plain}");

    // An unknown field is named, with the nearest known one.
    let (status, err) = server.post("/v1/embeddings", r#"{"inputs": ["a", "b"]}"#);
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["details"]["field"], "inputs", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `input`?"),
        "{err}"
    );
    let (status, _) = server.post("/v1/embeddings", r#"{"input": "a", "dimension": 8}"#);
    assert_eq!(status, 400, "a typo of `dimensions` is not ignored");

    // A model id typo gets the nearest configured id.
    let (status, err) = server.post("/v1/embeddings", r#"{"model": "embeding", "input": "a"}"#);
    assert_eq!(status, 404, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `embedding`?"),
        "{err}"
    );
}

#[test]
fn load_with_keep_alive_holds_the_model_then_idle_rules_apply_again() {
    let server = Server::start(&[], &[]);
    let (status, body) = server.post("/v1/models/embedding/load", r#"{"keep_alive": 1}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keep_alive"], 1.0);
    let (_, st) = server.get("/v1/status");
    assert_eq!(
        st["models"]["embedding"]["pinned"], true,
        "held while the keep-alive runs"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.get("/v1/status").1["models"]["embedding"]["pinned"] != false {
        assert!(
            std::time::Instant::now() < deadline,
            "keep-alive never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, _) = server.post("/v1/models/embedding/load", r#"{"keep_alive": -1}"#);
    assert_eq!(status, 400);
    let (status, _) = server.post("/v1/models/embedding/load", r#"{"keep_alve": 1}"#);
    assert_eq!(status, 400, "unknown fields are refused");
}
