//! Every model family on ONNX Runtime against sentence-transformers itself: the ONNX exports
//! of tests/fixtures/families (the transformer alone, as sentence-transformers' ONNX backend
//! exports it; position ids fed where the graph takes them) pooled as each folder says, with
//! its prompts; and an export whose graph pools itself (`sentence_embedding`).

#[path = "../../../tests/support/families.rs"]
mod families;

use families::{check_runs, fixtures, manager};
use model_manager_onnx as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_export_embeds_as_sentence_transformers_does() {
    let mut checked = 0;
    for fixture in fixtures().into_iter().filter(|f| f.has_onnx()) {
        let manager = manager(&fixture.dir, "onnx", "");
        for line in check_runs(&manager, &fixture, 0.99999).await {
            println!("{line}");
        }
        let report = manager.get_model_status().await.unwrap();
        let architecture = report.models["m"].architecture.clone().unwrap();
        assert!(!architecture.packed);
        manager.shutdown().await.unwrap();
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} exports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_pools_itself_is_finished_as_the_folder_says() {
    // MPNet's folder pools, then a Dense module (64 -> 48) and Normalize. One graph does all
    // of it; the other only pools, so the Dense module and Normalize still apply.
    let mpnet = fixtures().into_iter().find(|f| f.name == "mpnet").unwrap();
    for file in ["onnx/model_pooled.onnx", "onnx/model_pooled_only.onnx"] {
        let manager = manager(
            &mpnet.dir,
            "onnx",
            &format!("models.m.model_file = \"{file}\"\n"),
        );
        for line in check_runs(&manager, &mpnet, 0.99999).await {
            println!("{file}: {line}");
        }
        let report = manager.get_model_status().await.unwrap();
        let architecture = report.models["m"].architecture.clone().unwrap();
        assert!(
            architecture.pooling.contains("sentence_embedding"),
            "{architecture:?}"
        );
        assert_eq!(report.models["m"].dimension, Some(48));
        manager.shutdown().await.unwrap();
    }
}
