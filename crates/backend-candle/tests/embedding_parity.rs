//! The real all-MiniLM-L6-v2 through the manager, against reference embeddings computed by
//! an independent float64 forward pass (tests/fixtures/minilm_reference.json).

#[path = "../../../tests/support/reference.rs"]
mod support;
use model_manager_candle as _;
use model_manager_core::{ErrorCode, ModelManager, Settings};
use std::path::PathBuf;
use support::reference;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn minilm() -> PathBuf {
    let dir = repo().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-models.sh first",
        dir.display()
    );
    dir
}

fn manager(extra: &str, dir: &std::path::Path) -> ModelManager {
    let toml = format!(
        "embedding_cache.enabled = false\nmodels.embedding.type = \"embedding\"\n\
         models.embedding.backend = \"candle\"\nmodels.embedding.local_path = \"{}\"\n{extra}",
        dir.display()
    );
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

fn assert_close(text: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{text}");
    let dot: f64 = got.iter().zip(want).map(|(a, b)| *a as f64 * b).sum();
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let cos = dot / (norm(&mut got.iter().map(|x| *x as f64)) * norm(&mut want.iter().copied()));
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(cos >= 0.99999, "{text}: cosine {cos}");
    assert!(max_abs <= 1e-4, "{text}: max abs difference {max_abs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_the_reference_alone_and_in_mixed_batches() {
    let manager = manager(
        "models.embedding.dimension = 384\nmodels.embedding.batch_size = 3",
        &minilm(),
    );
    let items = reference();
    for (text, want) in &items {
        let out = manager
            .generate_embeddings("embedding", &[text.as_str()])
            .await
            .unwrap();
        assert_close(text, &out.embeddings[0], want);
    }
    // Mixed lengths, shuffled, with a repeat: batches of 3 sorted by length, answers in order.
    let order = [7, 0, 4, 9, 1, 7, 3, 8, 2, 6, 5];
    let texts: Vec<&str> = order.iter().map(|&i| items[i].0.as_str()).collect();
    let out = manager
        .generate_embeddings("embedding", &texts)
        .await
        .unwrap();
    assert_eq!(out.dimension, 384);
    for (&i, got) in order.iter().zip(&out.embeddings) {
        assert_close(&items[i].0, got, &items[i].1);
    }
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(
        status.models["embedding"].backend.as_deref(),
        Some("candle")
    );
    assert_eq!(status.models["embedding"].device.as_deref(), Some("cpu"));
    assert!(status.models["embedding"].estimated_bytes.unwrap() > 80_000_000);
}

#[tokio::test]
async fn empty_text_embeds_and_long_text_is_truncated_not_refused() {
    let manager = manager("", &minilm());
    let none: [&str; 0] = [];
    assert!(manager
        .generate_embeddings("embedding", &none)
        .await
        .unwrap()
        .embeddings
        .is_empty());

    let out = manager
        .generate_embeddings("embedding", &[""])
        .await
        .unwrap();
    let norm: f32 = out.embeddings[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "normalized: {norm}");

    let long = "token ".repeat(400);
    let longer = format!("{long} and a tail that lies past the 256-token limit");
    let out = manager
        .generate_embeddings("embedding", &[long.as_str(), longer.as_str()])
        .await
        .unwrap();
    assert_eq!(
        out.embeddings[0], out.embeddings[1],
        "text past max_seq_length is cut"
    );
}

#[tokio::test]
async fn configured_dimension_must_match_the_model() {
    let manager = manager("models.embedding.dimension = 768", &minilm());
    let err = manager
        .generate_embeddings("embedding", &["x"])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError);
    assert!(err.message.contains("384"), "{}", err.message);
}

#[tokio::test]
async fn missing_and_corrupt_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let manager_missing = manager("", &dir.path().join("nowhere"));
    let err = manager_missing.get_model("embedding").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelNotFound);
    assert!(err.message.contains("nowhere"), "{}", err.message);

    for name in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(minilm().join(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
    )
    .unwrap();
    let err = manager("", dir.path())
        .get_model("embedding")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadError);
    assert!(err.message.contains("model.safetensors"), "{}", err.message);

    std::fs::copy(
        minilm().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        "{\"not\": \"a tokenizer\"}",
    )
    .unwrap();
    let err = manager("", dir.path())
        .get_model("embedding")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadError);
    assert!(err.message.contains("tokenizer.json"), "{}", err.message);
}
