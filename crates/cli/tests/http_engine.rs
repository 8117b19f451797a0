//! `mm serve` through the embedding engine: exact usage, huge inputs at bounded cost, the
//! engine's metrics.
mod common;

use common::Server;

#[test]
fn usage_counts_the_tokens_the_model_reads_cached_or_not() {
    let server = Server::start(&[], &[]);
    let body = r#"{"input": ["A man is playing a guitar.", "hi"]}"#;
    // [CLS] a man is playing a guitar . [SEP] and [CLS] hi [SEP]
    for round in ["computed", "cached"] {
        let (status, out) = server.post("/v1/embeddings", body);
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["usage"]["prompt_tokens"], 12, "{round}");
        assert_eq!(out["usage"]["total_tokens"], 12, "{round}");
    }
}

fn resident_bytes(server: &Server) -> u64 {
    let (_, status) = server.get("/v1/status");
    status["process_resident_bytes"].as_u64().unwrap()
}

#[test]
fn a_two_mib_text_costs_what_its_first_tokens_cost() {
    let server = Server::start(&["--max-body-bytes", "3000000"], &[]);
    let words = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let huge: String = (0..2 * 1024 * 1024 / 6)
        .map(|i| words[i % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let head: String = huge.chars().take(4096).collect();
    let embed = |text: &str| {
        let body = serde_json::json!({"input": text}).to_string();
        let (status, out) = server.post("/v1/embeddings", &body);
        assert_eq!(status, 200, "{out}");
        out
    };
    let head_out = embed(&head);
    let huge_out = embed(&huge);
    assert_eq!(
        huge_out["data"][0]["embedding"],
        head_out["data"][0]["embedding"]
    );
    assert_eq!(
        huge_out["usage"]["prompt_tokens"], 256,
        "truncated at max_seq_length"
    );

    // Sixteen at once: the tokenizer sees a few KB of each, so memory stays near the
    // model's own (the whole-string tokenization took the server to 2.6 GB).
    let before = resident_bytes(&server);
    std::thread::scope(|s| {
        for i in 0..16 {
            let text = format!("{i} {huge}");
            s.spawn(move || embed(&text));
        }
    });
    let after = resident_bytes(&server);
    assert!(
        after < before + 400 * 1024 * 1024,
        "resident memory grew from {before} to {after} bytes"
    );
}

#[test]
fn metrics_show_the_engine_queue_and_batches() {
    let server = Server::start(&[], &[]);
    let (status, _) = server.post(
        "/v1/embeddings",
        r#"{"input": ["one text", "and another"]}"#,
    );
    assert_eq!(status, 200);
    let (status, text) = server.request_text("GET", "/metrics", "", &[]);
    assert_eq!(status, 200);
    for line in [
        "mm_engine_batches_total{model=\"embedding\"} 1",
        "mm_engine_texts_total{model=\"embedding\"} 2",
        "mm_engine_queued_texts{model=\"embedding\"} 0",
        "mm_engine_batch_rows_bucket{le=\"2.0\",model=\"embedding\"} 1",
        "mm_engine_padding_ratio_count{model=\"embedding\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let (_, status) = server.get("/v1/status");
    let engine = &status["models"]["embedding"]["engine"];
    assert_eq!(engine["texts_computed"], 2);
    assert_eq!(engine["queue_seconds"]["count"], 2);
}
