//! The fixtures of the `rerank`, `classifier` and `sparse` types (tests/fixtures/heads, made by
//! scripts/fixtures/heads.py: tiny checkpoints, their ONNX exports, and what
//! sentence-transformers' CrossEncoder and SparseEncoder and transformers' text-classification
//! pipeline compute for them), checked through a manager, for the backends' tests (included
//! with `#[path]`).

#![allow(dead_code)]

use model_manager_core::{ClassifyInput, ModelManager, ScoreOptions, Settings};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The fixtures' folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/heads")
}

/// A fixture's folder and its expected outputs.
pub fn fixture(name: &str) -> (PathBuf, Value) {
    let dir = root().join(name);
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    (dir, serde_json::from_str(&text).unwrap())
}

/// A manager serving `dir` as model `m` of `model_type` on `backend`.
pub fn manager(dir: &Path, model_type: &str, backend: &str) -> ModelManager {
    let runtime = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/onnxruntime/capi/libonnxruntime.so.1.32.0");
    let toml = format!(
        "embedding_cache.enabled = false\nonnx.runtime_path = \"{}\"\n\
         models.m.type = \"{model_type}\"\nmodels.m.backend = \"{backend}\"\n\
         models.m.local_path = \"{}\"\nmodels.m.batch_size = 4\n",
        runtime.display(),
        dir.display()
    );
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn worst(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max)
}

fn pairs(expected: &Value) -> Vec<(String, String)> {
    expected["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A cross-encoder's scores and raw logits against `CrossEncoder.predict`, one query at a
/// time; returns the worst difference.
pub async fn check_rerank(manager: &ModelManager, expected: &Value) -> f64 {
    let pairs = pairs(expected);
    let mut worst_seen = 0f64;
    for (raw, key) in [(false, "scores"), (true, "raw")] {
        let want = numbers(&expected[key]);
        let options = ScoreOptions {
            raw_scores: raw,
            ..ScoreOptions::default()
        };
        let mut got = Vec::new();
        let mut start = 0;
        while start < pairs.len() {
            let query = &pairs[start].0;
            let documents: Vec<&str> = pairs[start..]
                .iter()
                .take_while(|(q, _)| q == query)
                .map(|(_, d)| d.as_str())
                .collect();
            let out = manager
                .rerank("m", query, &documents, &options)
                .await
                .unwrap();
            start += documents.len();
            got.extend(out.scores);
        }
        worst_seen = worst_seen.max(worst(&got, &want));
    }
    worst_seen
}

/// A classifier's label scores against transformers' pipeline, texts and pairs.
pub async fn check_classify(manager: &ModelManager, expected: &Value) -> f64 {
    let texts: Vec<ClassifyInput> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ClassifyInput::Text(t.as_str().unwrap().to_owned()))
        .collect();
    let paired: Vec<ClassifyInput> = pairs(expected)
        .into_iter()
        .map(|(a, b)| ClassifyInput::Pair(a, b))
        .collect();
    let mut worst_seen = 0f64;
    for (inputs, key) in [(texts, "predictions"), (paired, "pair_predictions")] {
        let out = manager
            .classify("m", &inputs, &ScoreOptions::default())
            .await
            .unwrap();
        let want = expected[key].as_array().unwrap();
        assert_eq!(out.predictions.len(), want.len());
        for (row, want) in out.predictions.iter().zip(want) {
            assert!(
                row.windows(2).all(|w| w[0].score >= w[1].score),
                "not sorted: {row:?}"
            );
            for label in row {
                let w = want[&label.label].as_f64().unwrap();
                worst_seen = worst_seen.max((f64::from(label.score) - w).abs());
            }
        }
        println!("  {key}: worst so far {worst_seen:.1e}");
    }
    worst_seen
}

/// Sparse vectors against `SparseEncoder.encode`: the same indices, values within the
/// worst difference returned; the token counts too.
pub async fn check_sparse(manager: &ModelManager, expected: &Value) -> f64 {
    let texts: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let out = manager
        .embed_sparse("m", &texts, &ScoreOptions::default())
        .await
        .unwrap();
    let tokens: Vec<usize> = expected["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(out.token_counts, tokens);
    let mut worst_seen = 0f64;
    for (got, want) in out
        .vectors
        .iter()
        .zip(expected["vectors"].as_array().unwrap())
    {
        let indices: Vec<u32> = want["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        // A value at the edge of zero may be kept by one side and not the other.
        let values = numbers(&want["values"]);
        for (i, v) in indices.iter().zip(&values) {
            let g = got
                .indices
                .iter()
                .position(|x| x == i)
                .map_or(0.0, |p| got.values[p]);
            worst_seen = worst_seen.max((f64::from(g) - v).abs());
        }
        for (i, g) in got.indices.iter().zip(&got.values) {
            if !indices.contains(i) {
                worst_seen = worst_seen.max(f64::from(*g).abs());
            }
        }
    }
    worst_seen
}
