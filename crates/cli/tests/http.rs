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

    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}
