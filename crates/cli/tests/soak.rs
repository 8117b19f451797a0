//! The soak: one `mm serve` under mixed load (embeddings through the shared Redis tier,
//! text generation, calls into a process-isolated plugin) while Redis is killed and
//! restarted and the plugin's child is killed, for `MM_SOAK_SECONDS` (60 by default, as
//! CI runs it; the README's figures come from 3600). It prints the requests, the errors by
//! kind and the server's resident memory after warm-up, in the middle and at the end, and
//! holds when the only errors are the expected ones (a plugin call in flight when its child
//! was killed) and memory drifts less than 5% after warm-up.
//!
//! ```sh
//! MM_SOAK_SECONDS=3600 cargo test --release -p model-manager-cli --test soak -- --nocapture
//! ```

mod common;
#[path = "../../plugin-host/tests/support/mod.rs"]
mod support;

use common::redis_server::RedisServer;
use common::Server;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tiny T5 (random weights, word-level tokenizer), written without any ML library.
mod tiny_t5 {
    use std::path::Path;

    const VOCAB: usize = 64;
    const D_MODEL: usize = 32;
    const INNER: usize = 32;
    const D_FF: usize = 64;
    const BUCKETS: usize = 8;
    const HEADS: usize = 4;
    const LAYERS: usize = 2;

    /// Every tensor of the model, by Hugging Face's names, with its shape.
    fn tensors() -> Vec<(String, Vec<usize>)> {
        let mut out = vec![
            ("shared.weight".to_owned(), vec![VOCAB, D_MODEL]),
            ("lm_head.weight".to_owned(), vec![VOCAB, D_MODEL]),
            ("encoder.final_layer_norm.weight".to_owned(), vec![D_MODEL]),
            ("decoder.final_layer_norm.weight".to_owned(), vec![D_MODEL]),
        ];
        let attention = |out: &mut Vec<(String, Vec<usize>)>, at: &str, first: bool| {
            for w in ["q", "k", "v"] {
                out.push((format!("{at}.{w}.weight"), vec![INNER, D_MODEL]));
            }
            out.push((format!("{at}.o.weight"), vec![D_MODEL, INNER]));
            if first {
                out.push((
                    format!("{at}.relative_attention_bias.weight"),
                    vec![BUCKETS, HEADS],
                ));
            }
        };
        let feed_forward = |out: &mut Vec<(String, Vec<usize>)>, at: &str| {
            out.push((format!("{at}.wi_0.weight"), vec![D_FF, D_MODEL]));
            out.push((format!("{at}.wi_1.weight"), vec![D_FF, D_MODEL]));
            out.push((format!("{at}.wo.weight"), vec![D_MODEL, D_FF]));
        };
        for i in 0..LAYERS {
            let e = format!("encoder.block.{i}.layer");
            out.push((format!("{e}.0.layer_norm.weight"), vec![D_MODEL]));
            attention(&mut out, &format!("{e}.0.SelfAttention"), i == 0);
            out.push((format!("{e}.1.layer_norm.weight"), vec![D_MODEL]));
            feed_forward(&mut out, &format!("{e}.1.DenseReluDense"));
            let d = format!("decoder.block.{i}.layer");
            out.push((format!("{d}.0.layer_norm.weight"), vec![D_MODEL]));
            attention(&mut out, &format!("{d}.0.SelfAttention"), i == 0);
            out.push((format!("{d}.1.layer_norm.weight"), vec![D_MODEL]));
            attention(&mut out, &format!("{d}.1.EncDecAttention"), false);
            out.push((format!("{d}.2.layer_norm.weight"), vec![D_MODEL]));
            feed_forward(&mut out, &format!("{d}.2.DenseReluDense"));
        }
        out
    }

    /// `model.safetensors`: the header (JSON), then f32 little-endian data; norms are 1,
    /// the rest seeded uniform values in [-0.5, 0.5).
    fn safetensors() -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        let mut seed: u64 = 7;
        for (name, shape) in tensors() {
            let count: usize = shape.iter().product();
            let start = data.len();
            for _ in 0..count {
                let value = if name.contains("layer_norm") {
                    1.0f32
                } else {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                };
                data.extend_from_slice(&value.to_le_bytes());
            }
            header.insert(
                name,
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let header = serde_json::Value::Object(header).to_string().into_bytes();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    }

    /// `tokenizer.json`: `<pad>` 0, `</s>` 1, `<unk>` 2, then `w3`.. split on whitespace,
    /// `</s>` appended as T5's tokenizer does.
    fn tokenizer() -> serde_json::Value {
        let mut vocab = serde_json::Map::new();
        for (i, special) in ["<pad>", "</s>", "<unk>"].iter().enumerate() {
            vocab.insert((*special).to_owned(), i.into());
        }
        for i in 3..VOCAB {
            vocab.insert(format!("w{i}"), i.into());
        }
        let special = |id: usize, content: &str| {
            serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        };
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}
            },
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        })
    }

    /// Writes the model's folder.
    pub fn write(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let config = serde_json::json!({
            "vocab_size": VOCAB, "d_model": D_MODEL, "d_kv": INNER / HEADS, "d_ff": D_FF,
            "num_layers": LAYERS, "num_decoder_layers": LAYERS, "num_heads": HEADS,
            "relative_attention_num_buckets": BUCKETS, "relative_attention_max_distance": 16,
            "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
            "is_encoder_decoder": true, "use_cache": true, "pad_token_id": 0,
            "eos_token_id": 1, "decoder_start_token_id": 0
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(dir.join("model.safetensors"), safetensors()).unwrap();
        std::fs::write(dir.join("tokenizer.json"), tokenizer().to_string()).unwrap();
    }
}

/// `MM_SOAK_SECONDS`, else 60.
fn soak_seconds() -> u64 {
    std::env::var("MM_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

fn repo_file(path: &str) -> PathBuf {
    common::repo().join(path)
}

/// The soak's settings: ONNX embeddings (int8 MiniLM) with the Redis tier authenticated,
/// the tiny T5, and the echo plugin in a child process.
fn settings(dir: &Path, redis: &RedisServer, plugins: &Path) -> PathBuf {
    let secret = dir.join("redis-secret");
    std::fs::write(&secret, "the soak's replicas share this secret\n").unwrap();
    tiny_t5::write(&dir.join("t5"));
    let toml = format!(
        "embedding_cache.redis_url = \"{redis}\"\n\
         embedding_cache.redis_secret_file = \"{secret}\"\n\
         embedding_cache.redis_timeout_ms = 200\n\
         embedding_cache.max_cache_size = 500\n\
         onnx.runtime_path = \"{runtime}\"\n\
         plugins.enabled = true\nplugins.dirs = [\"{plugins}\"]\n\
         plugins.isolation = \"process\"\nplugins.timeout_seconds = 20\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.backend = \"onnx\"\n\
         models.embedding.local_path = \"{onnx}\"\n\
         models.embedding.tokenizer_path = \"{tokenizer}\"\n\
         models.t5.type = \"text2text\"\nmodels.t5.local_path = \"{t5}\"\n\
         models.t5.max_output_length = 8\n\
         models.echo.type = \"echo\"\n",
        redis = redis.url(),
        secret = secret.display(),
        runtime = repo_file("models/onnxruntime/capi/libonnxruntime.so.1.32.0").display(),
        plugins = plugins.display(),
        onnx = repo_file("models/all-MiniLM-L6-v2-int8-onnx").display(),
        tokenizer = repo_file("models/all-MiniLM-L6-v2/tokenizer.json").display(),
        t5 = dir.join("t5").display(),
    );
    let path = dir.join("settings.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The outcome of every request: counts by "route status code".
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn record(&self, route: &str, status: u16, body: &Value) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status != 200 {
            let code = body["code"].as_str().unwrap_or("?");
            let kind = format!("{route} {status} {code}");
            *self.errors.lock().unwrap().entry(kind).or_default() += 1;
        }
    }

    /// Errors other than a plugin call in flight when its child was killed.
    fn unexpected(&self) -> Vec<(String, u64)> {
        let expected = ["infer 500 INFERENCE_ERROR"];
        self.errors
            .lock()
            .unwrap()
            .iter()
            .filter(|(kind, _)| !expected.contains(&kind.as_str()))
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }
}

/// One client's loop until `until`: embeddings (a pool of repeated texts, and new ones),
/// generation and plugin calls in turn.
fn client(server: &Server, tally: &Tally, id: usize, until: Instant) {
    let pool: Vec<String> = (0..300)
        .map(|i| format!("a text the clients share, number {i}"))
        .collect();
    let mut i = 0usize;
    while Instant::now() < until {
        i += 1;
        let (route, status, body) = match i % 4 {
            0 | 1 => {
                let texts = [
                    pool[(i * 7 + id) % pool.len()].clone(),
                    pool[(i * 13 + id * 3) % pool.len()].clone(),
                    format!("a text only client {id} sends, request {i}"),
                ];
                let body = json!({"input": texts}).to_string();
                let (status, out) = server.post("/v1/embeddings", &body);
                ("embeddings", status, out)
            }
            2 => {
                let body =
                    json!({"model": "t5", "prompt": format!("w{} w{} w9", 3 + i % 50, 3 + id)});
                let (status, out) = server.post("/v1/generate", &body.to_string());
                ("generate", status, out)
            }
            _ => {
                let body = json!({"inputs": {"text": format!("call {i} of client {id}")}});
                let (status, out) = server.post("/v1/models/echo/infer", &body.to_string());
                ("infer", status, out)
            }
        };
        tally.record(route, status, &body);
    }
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Kills Redis (restarting it a second later) and the plugin's child in turn, every
/// `period`, until `until`; how many of each.
fn chaos(redis: &mut RedisServer, server_pid: u32, period: Duration, until: Instant) -> (u32, u32) {
    let (mut redis_restarts, mut child_kills) = (0, 0);
    let mut turn = 0;
    while Instant::now() + period < until {
        std::thread::sleep(period);
        turn += 1;
        if turn % 2 == 1 {
            let port = redis.port;
            redis.kill();
            std::thread::sleep(Duration::from_secs(1));
            *redis = RedisServer::start_on(port);
            redis_restarts += 1;
        } else if let Some(pid) = support::plugin_child_of(server_pid, None) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            child_kills += 1;
        }
    }
    (redis_restarts, child_kills)
}

#[test]
fn soak_mixed_load_with_redis_restarts_and_plugin_child_kills() {
    let seconds = soak_seconds();
    let dir = tempfile::tempdir().unwrap();
    let (_plugin_dir, library) = support::install(
        &support::workspace_plugin("mm-plugin-echo"),
        "libmm_plugin_echo.so",
    );
    let mut redis = RedisServer::start();
    let config = settings(dir.path(), &redis, library.parent().unwrap());
    let server = Server::start(&[], &[("MM_CONFIG", config.to_str().unwrap())]);
    let pid = server.child.id();
    let tally = Tally::default();
    // Every kind of request once, so every model loads before the clock starts.
    for warm in [
        ("/v1/embeddings", json!({"input": "warm up"})),
        ("/v1/generate", json!({"model": "t5", "prompt": "w3 w4"})),
        (
            "/v1/models/echo/infer",
            json!({"inputs": {"text": "warm up"}}),
        ),
    ] {
        let (status, out) = server.post(warm.0, &warm.1.to_string());
        assert_eq!(status, 200, "{}: {out}", warm.0);
    }

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let warmed = started + Duration::from_secs(seconds / 5);
    let middle = started + Duration::from_secs(seconds * 3 / 5);
    let period = Duration::from_secs((seconds / 10).clamp(6, 120));
    let mut samples = Vec::new();
    let (restarts, kills) = std::thread::scope(|s| {
        for id in 0..3 {
            let (server, tally) = (&server, &tally);
            s.spawn(move || client(server, tally, id, until));
        }
        let chaos = s.spawn(|| chaos(&mut redis, pid, period, until));
        for at in [warmed, middle, until] {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            samples.push(rss_kib(pid));
        }
        chaos.join().unwrap()
    });
    let requests = tally.requests.load(Ordering::Relaxed);
    println!(
        "soak: {seconds} s, {requests} requests ({:.1}/s), {restarts} Redis restarts, {kills} plugin-child kills",
        requests as f64 / seconds as f64
    );
    println!("errors by kind: {:?}", tally.errors.lock().unwrap());
    println!(
        "server RSS after warm-up / middle / end: {} / {} / {} KiB",
        samples[0], samples[1], samples[2]
    );
    // After the last restart, the tier comes back by itself (the probe backs off to 5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let remote = loop {
        let remote = server.get("/v1/status").1["cache"]["remote"].clone();
        if remote["state"] == "connected" || Instant::now() > deadline {
            break remote;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("shared tier: {remote}");
    assert_eq!(remote["state"], "connected", "{remote}");
    let (status, out) = server.post(
        "/v1/models/echo/infer",
        &json!({"inputs": {"text": "after the soak"}}).to_string(),
    );
    assert_eq!(status, 200, "the plugin answers after the kills: {out}");
    assert!(requests > seconds, "the load ran: {requests} requests");
    assert!(
        restarts >= 1 && kills >= 1,
        "the chaos ran: {restarts} / {kills}"
    );
    assert!(
        tally.unexpected().is_empty(),
        "unexpected errors: {:?}",
        tally.unexpected()
    );
    let drift = samples[2] as f64 / samples[0] as f64 - 1.0;
    assert!(
        drift.abs() < 0.05,
        "resident memory drifted {:.1}% after warm-up: {samples:?}",
        drift * 100.0
    );
    assert_eq!(remote["authenticated"], true, "{remote}");
}
