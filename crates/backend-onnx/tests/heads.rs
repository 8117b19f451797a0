//! Types `rerank`, `classifier` and `sparse` on ONNX Runtime: the fixtures' exports (a
//! sequence-classification graph's logits) against the same references as candle's, and
//! SPLADE pooled from a masked LM's token logits.

#[path = "../../../tests/support/heads.rs"]
mod heads;

use heads::{check_classify, check_rerank, fixture, manager};
use model_manager_onnx as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_cross_encoders_and_classifiers_equal_the_references() {
    for (name, model_type) in [
        ("rerank_bert", "rerank"),
        ("rerank_xlm_roberta", "rerank"),
        ("rerank_modernbert", "rerank"),
        ("classifier_distilbert", "classifier"),
        ("classifier_bert_multilabel", "classifier"),
    ] {
        let (dir, expected) = fixture(name);
        let manager = manager(&dir, model_type, "onnx");
        let worst = match model_type {
            "rerank" => check_rerank(&manager, &expected).await,
            _ => check_classify(&manager, &expected).await,
        };
        println!("{name} on ONNX Runtime: within {worst:.1e}");
        assert!(worst < 1e-5, "{name}: {worst}");
        let report = manager.get_model_status().await.unwrap();
        assert_eq!(report.models["m"].backend.as_deref(), Some("onnx"));
        manager.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splade_pooled_from_an_exported_masked_lm_equals_the_reference() {
    let (dir, expected) = fixture("sparse_bert");
    let manager = manager(&dir, "sparse", "onnx");
    let worst = heads::check_sparse(&manager, &expected).await;
    println!("sparse_bert on ONNX Runtime: within {worst:.1e}");
    assert!(worst < 1e-5, "{worst}");
    manager.shutdown().await.unwrap();
}
