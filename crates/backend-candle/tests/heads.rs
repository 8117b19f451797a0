//! Types `rerank`, `classifier` and `sparse` on candle against the reference
//! implementations: tiny cross-encoders on three bodies, classifiers (softmax and
//! multi-label sigmoid, texts and pairs), SPLADE on a tiny masked LM and on the real
//! SPLADE-tiny; and what a wrong model or input gets.

#[path = "../../../tests/support/heads.rs"]
mod heads;

use heads::{check_classify, check_rerank, check_sparse, fixture, manager};
use model_manager_candle as _;
use model_manager_core::{ErrorCode, ScoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_encoders_score_as_sentence_transformers_does() {
    for name in ["rerank_bert", "rerank_xlm_roberta", "rerank_modernbert"] {
        let (dir, expected) = fixture(name);
        let manager = manager(&dir, "rerank", "candle");
        let worst = check_rerank(&manager, &expected).await;
        println!("{name}: scores and logits within {worst:.1e}");
        assert!(worst < 1e-5, "{name}: {worst}");
        manager.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifiers_label_as_the_transformers_pipeline_does() {
    for name in ["classifier_distilbert", "classifier_bert_multilabel"] {
        let (dir, expected) = fixture(name);
        let manager = manager(&dir, "classifier", "candle");
        let worst = check_classify(&manager, &expected).await;
        println!("{name}: label scores within {worst:.1e}");
        assert!(worst < 1e-5, "{name}: {worst}");
        manager.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splade_equals_sentence_transformers_sparse_encoder() {
    let (dir, expected) = fixture("sparse_bert");
    let manager = manager(&dir, "sparse", "candle");
    let worst = check_sparse(&manager, &expected).await;
    println!("sparse_bert: within {worst:.1e}");
    assert!(worst < 1e-5, "{worst}");
    manager.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_splade_tiny_equals_sentence_transformers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("models/splade-tiny");
    assert!(
        dir.join("model.safetensors").is_file(),
        "run scripts/fetch-models.sh --tests"
    );
    let text =
        std::fs::read_to_string(root.join("tests/fixtures/splade_tiny_reference.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let manager = manager(&dir, "sparse", "candle");
    let worst = check_sparse(&manager, &expected).await;
    println!("SPLADE-tiny: within {worst:.1e}");
    assert!(worst < 1e-5, "{worst}");
    manager.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_call_or_input_is_a_coded_error() {
    let (dir, _) = fixture("rerank_bert");
    let rerank = manager(&dir, "rerank", "candle");
    // Embedding with a cross-encoder, sparse vectors from it: the model says what it is.
    let err = rerank.generate_embeddings("m", &["x"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidModelType, "{err}");
    assert!(err.message.contains("rerank"), "{}", err.message);
    let err = rerank
        .embed_sparse("m", &["x"], &ScoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidModelType, "{err}");
    // Too long with truncate = false; no documents is an empty answer.
    let long = "word ".repeat(200);
    let strict = ScoreOptions {
        truncate: false,
        ..ScoreOptions::default()
    };
    let err = rerank
        .rerank("m", "q", &[long.as_str()], &strict)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "{err}");
    let cut = rerank
        .rerank("m", "q", &[long.as_str()], &ScoreOptions::default())
        .await
        .unwrap();
    assert_eq!((cut.scores.len(), cut.tokens), (1, 40));
    let none: [&str; 0] = [];
    assert!(rerank
        .rerank("m", "q", &none, &ScoreOptions::default())
        .await
        .unwrap()
        .scores
        .is_empty());
    rerank.shutdown().await.unwrap();
    // A classifier with three labels is no reranker; an embedding folder has no head.
    let (dir, _) = fixture("classifier_distilbert");
    let err = manager(&dir, "rerank", "candle")
        .rerank("m", "q", &["d"], &ScoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadError, "{err}");
    assert!(err.message.contains("one label"), "{}", err.message);
    let embedding =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families/gte");
    let err = manager(&embedding, "rerank", "candle")
        .rerank("m", "q", &["d"], &ScoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadError, "{err}");
    assert!(err.message.contains("no head"), "{}", err.message);
}
