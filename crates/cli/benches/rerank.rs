//! `/rerank` of one query × 100 documents against one `/v1/embeddings` call of the same 100
//! documents, on the same `mm serve`, in the same run: tokens/s and the median time of each.
//!
//! ```sh
//! cargo bench -p model-manager-cli --bench rerank
//! ```
//!
//! The cross-encoder is all-MiniLM-L6-v2's own BERT body with a one-label head (the shape of
//! `cross-encoder/ms-marco-MiniLM-L6-v2`; the head's weights are arbitrary: speed does not
//! depend on them), so both routes run the same body and the figures compare the routes, not
//! two models. Needs `scripts/fetch-models.sh`. `MM_BENCH_ROUNDS` sets the rounds (default 9).

#[path = "../../../benches/corpus.rs"]
mod corpus;
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::Client;

/// A safetensors file of f32 tensors.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            (*name).into(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// The tensor names of a safetensors file.
fn tensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

/// A cross-encoder folder in `dir`: MiniLM's body (its shard linked, not copied) and a
/// one-label head in a second shard.
fn cross_encoder(minilm: &Path, dir: &Path) -> PathBuf {
    let folder = dir.join("rerank-minilm");
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(minilm.join(file), folder.join(file)).unwrap();
    }
    // Shards named by an index: a folder's `model.safetensors` would be read alone.
    std::fs::hard_link(
        minilm.join("model.safetensors"),
        folder.join("body.safetensors"),
    )
    .unwrap();
    let hidden = 384;
    let weights: Vec<f32> = (0..hidden)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect();
    write_safetensors(
        &folder.join("head.safetensors"),
        &[
            ("classifier.weight", vec![1, hidden], weights),
            ("classifier.bias", vec![1], vec![0.1]),
        ],
    );
    let mut map = serde_json::Map::new();
    for name in tensor_names(&folder.join("body.safetensors")) {
        map.insert(name, json!("body.safetensors"));
    }
    for name in ["classifier.weight", "classifier.bias"] {
        map.insert(name.into(), json!("head.safetensors"));
    }
    std::fs::write(
        folder.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(minilm.join("config.json")).unwrap())
            .unwrap();
    config["architectures"] = json!(["BertForSequenceClassification"]);
    config["id2label"] = json!({"0": "LABEL_0"});
    config["label2id"] = json!({"LABEL_0": 0});
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    folder
}

/// `rounds` calls of `body` to `path` (after one warm-up); the median time and the tokens
/// of one call, read by `tokens` from the answer.
fn measure(
    client: &mut Client,
    path: &str,
    body: &Value,
    rounds: usize,
    tokens: fn(&Value) -> u64,
) -> (Duration, u64) {
    let body = body.to_string();
    let mut times = Vec::with_capacity(rounds);
    let mut counted = 0;
    for round in 0..=rounds {
        let started = Instant::now();
        let (status, answer) = client.request("POST", path, &body);
        let took = started.elapsed();
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&answer));
        counted = tokens(&serde_json::from_slice(&answer).unwrap());
        if round > 0 {
            times.push(took);
        }
    }
    (corpus::median(times), counted)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let minilm = repo.join("models/all-MiniLM-L6-v2");
    assert!(
        minilm.join("model.safetensors").is_file(),
        "run scripts/fetch-models.sh"
    );
    let rounds: usize = std::env::var("MM_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9);
    let dir = tempfile::tempdir().unwrap();
    let folder = cross_encoder(&minilm, dir.path());
    let config = dir.path().join("settings.toml");
    // No cache: every round computes its vectors, as every rerank round computes its scores.
    let settings = format!(
        "embedding_cache.enabled = false\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.local_path = \"{}\"\n\
         models.rerank.type = \"rerank\"\nmodels.rerank.local_path = \"{}\"\n",
        minilm.display(),
        folder.display()
    );
    std::fs::write(&config, settings).unwrap();
    let (mut server, addr) = support::start_server(&config);
    let mut client = Client::connect(&addr);

    let documents: Vec<String> = corpus::corpora()
        .into_iter()
        .find(|(name, _)| name.contains("mixed"))
        .map(|(_, texts)| texts)
        .unwrap()
        .into_iter()
        .take(100)
        .collect();
    let query = "how do shared models unload after an idle timeout";
    let rerank = json!({"query": query, "texts": documents});
    let (rerank_time, _) = measure(&mut client, "/rerank", &rerank, rounds, |_| 0);
    let cohere = json!({"model": "rerank", "query": query, "documents": documents});
    let (_, pair_tokens) = measure(&mut client, "/v1/rerank", &cohere, 1, |a| {
        a["usage"]["total_tokens"].as_u64().unwrap()
    });
    let embed = json!({"input": documents});
    let (embed_time, doc_tokens) = measure(&mut client, "/v1/embeddings", &embed, rounds, |a| {
        a["usage"]["total_tokens"].as_u64().unwrap()
    });

    let rate = |tokens: u64, time: Duration| tokens as f64 / time.as_secs_f64();
    println!("1 query × 100 documents (mixed lengths), MiniLM-L6 body, median of {rounds}:");
    println!(
        "  /rerank          {:>8.1} ms  {:>6} tokens (query + document pairs)  {:>9.0} tokens/s",
        rerank_time.as_secs_f64() * 1e3,
        pair_tokens,
        rate(pair_tokens, rerank_time)
    );
    println!(
        "  /v1/embeddings   {:>8.1} ms  {:>6} tokens (documents alone)         {:>9.0} tokens/s  (baseline)",
        embed_time.as_secs_f64() * 1e3,
        doc_tokens,
        rate(doc_tokens, embed_time)
    );
    println!(
        "  rerank / embeddings: {:.2}× the time, {:.2}× the tokens/s",
        rerank_time.as_secs_f64() / embed_time.as_secs_f64(),
        rate(pair_tokens, rerank_time) / rate(doc_tokens, embed_time)
    );
    let _ = server.kill();
    let _ = server.wait();
}
