//! The embedding cache through `generate_embeddings`: partial hits, order, TTL, bounds.

mod support;

use model_manager_core::ErrorCode;
use std::time::Duration;
use support::{expected_vector, manager};

#[tokio::test]
async fn partial_hits_compute_only_misses_and_keep_input_order() {
    let (manager, probes) = manager("", &["embedding"]);
    let first = manager
        .generate_embeddings("embedding", &["x", "y"])
        .await
        .unwrap();
    assert_eq!(first.cache_hits, 0);
    assert!(!first.cached);
    assert_eq!(first.dimension, 8);

    probes.embedded_texts.lock().unwrap().clear();
    let texts = ["y", "z", "x", "z"];
    let out = manager
        .generate_embeddings("embedding", &texts)
        .await
        .unwrap();
    assert_eq!(out.cache_hits, 2);
    assert!(!out.cached);
    assert_eq!(
        *probes.embedded_texts.lock().unwrap(),
        vec!["z".to_string()],
        "only the miss, once"
    );
    for (text, vector) in texts.iter().zip(&out.embeddings) {
        assert_eq!(vector, &expected_vector(text, 8), "order of {text}");
    }

    let again = manager
        .generate_embeddings("embedding", &texts)
        .await
        .unwrap();
    assert!(again.cached);
    assert_eq!(again.cache_hits, 4);
    assert_eq!(again.embeddings, out.embeddings);

    let stats = manager.get_status().await.unwrap().cache;
    assert_eq!((stats.hits, stats.misses), (6, 4));
    assert_eq!(stats.entries, 3);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let (manager, probes) = manager("embedding_cache.ttl_seconds = 1", &["embedding"]);
    manager
        .generate_embeddings("embedding", &["t"])
        .await
        .unwrap();
    assert!(
        manager
            .generate_embeddings("embedding", &["t"])
            .await
            .unwrap()
            .cached
    );
    // moka keeps its own clock, so this waits in real time.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let out = manager
        .generate_embeddings("embedding", &["t"])
        .await
        .unwrap();
    assert!(!out.cached, "expired");
    assert_eq!(probes.embedded_texts.lock().unwrap().len(), 2);
    assert!(manager.get_status().await.unwrap().cache.expirations >= 1);
}

#[tokio::test]
async fn the_size_bound_evicts_and_counts() {
    let (manager, _) = manager("embedding_cache.max_cache_size = 3", &["embedding"]);
    let texts: Vec<String> = (0..50).map(|i| format!("text {i}")).collect();
    manager
        .generate_embeddings("embedding", &texts)
        .await
        .unwrap();
    let stats = manager.get_status().await.unwrap().cache;
    assert!(stats.entries <= 3, "{stats:?}");
    assert!(stats.evictions >= 47, "{stats:?}");
}

#[tokio::test]
async fn models_with_caching_off_always_compute() {
    let (manager, probes) = manager("models.embedding.cache_embeddings = false", &["embedding"]);
    manager
        .generate_embeddings("embedding", &["a"])
        .await
        .unwrap();
    let out = manager
        .generate_embeddings("embedding", &["a"])
        .await
        .unwrap();
    assert_eq!(out.cache_hits, 0);
    assert_eq!(probes.embedded_texts.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn cache_entries_are_per_model() {
    let (manager, probes) = manager("", &["one", "two"]);
    manager.generate_embeddings("one", &["same"]).await.unwrap();
    let out = manager.generate_embeddings("two", &["same"]).await.unwrap();
    assert_eq!(out.cache_hits, 0);
    assert_eq!(probes.embedded_texts.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn empty_input_gives_an_empty_result_without_loading() {
    let (manager, probes) = manager("models.embedding.dimension = 8", &["embedding"]);
    let none: [&str; 0] = [];
    let out = manager
        .generate_embeddings("embedding", &none)
        .await
        .unwrap();
    assert!(out.embeddings.is_empty());
    assert_eq!(out.dimension, 8);
    assert_eq!(
        probes
            .loads_started
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn a_configured_dimension_that_differs_from_the_model_is_a_config_error() {
    let (manager, _) = manager("models.embedding.dimension = 384", &["embedding"]);
    let err = manager
        .generate_embeddings("embedding", &["a"])
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError);
    assert!(
        err.message.contains("models.embedding.dimension") && err.message.contains("8-dimensional"),
        "{}",
        err.message
    );
}

/// Settings persisting the cache in `dir`, and a file saved there by a manager that cached
/// one text, `kept`.
async fn saved_with_one_entry(dir: &std::path::Path) -> String {
    let extra = format!(
        "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"",
        dir.join("cache.bin").display()
    );
    let (first, _) = manager(&extra, &["embedding"]);
    first
        .generate_embeddings("embedding", &["kept"])
        .await
        .unwrap();
    assert_eq!(first.shutdown().await.unwrap().cache_entries_saved, 1);
    extra
}

#[tokio::test]
async fn persisted_cache_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let extra = saved_with_one_entry(dir.path()).await;

    let (second, probes) = manager(&extra, &["embedding"]);
    assert_eq!(second.initialize().await.unwrap().cache_entries_restored, 1);
    let out = second
        .generate_embeddings("embedding", &["kept"])
        .await
        .unwrap();
    assert!(out.cached);
    assert_eq!(out.embeddings[0], expected_vector("kept", 8));
    assert!(probes.embedded_texts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_manager_that_never_initialized_leaves_the_cache_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let extra = saved_with_one_entry(dir.path()).await;
    // A status-only user of the same file (`mm status` beside a server): never initialized,
    // so it never restored the file and must not overwrite it with its empty cache.
    let (onlooker, _) = manager(&extra, &["embedding"]);
    onlooker.get_status().await.unwrap();
    assert_eq!(onlooker.shutdown().await.unwrap().cache_entries_saved, 0);

    let (third, _) = manager(&extra, &["embedding"]);
    assert_eq!(third.initialize().await.unwrap().cache_entries_restored, 1);
}

#[tokio::test]
async fn a_corrupt_persisted_cache_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.bin");
    std::fs::write(&path, b"MMCACHE1\xff\xff\xff\xff\xff\xff\xff\x7f garbage").unwrap();
    let extra = format!(
        "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"",
        path.display()
    );
    let (manager, _) = manager(&extra, &["embedding"]);
    manager.initialize().await.unwrap();
    let status = manager.get_status().await.unwrap();
    assert_eq!(
        status.cache_restore_error.unwrap().code,
        ErrorCode::CacheError
    );
    manager
        .generate_embeddings("embedding", &["still works"])
        .await
        .unwrap();
}

/// An entry served before the model loaded (the settings say no dimension) and refused once
/// the load says another one is counted as a miss and a rejection, never as a hit.
#[tokio::test]
async fn an_entry_refused_after_the_load_counts_as_a_miss_not_a_hit() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"\n\
         models.embedding.flavour = \"known_prompts\"",
        dir.path().join("cache.bin").display()
    );
    let (four, _) = support::manager_with_dimension(&extra, &["embedding"], 4);
    four.generate_embeddings("embedding", &["a"]).await.unwrap();
    assert_eq!(four.shutdown().await.unwrap().cache_entries_saved, 1);

    let (eight, probes) = support::manager_with_dimension(&extra, &["embedding"], 8);
    assert_eq!(eight.initialize().await.unwrap().cache_entries_restored, 1);
    let out = eight
        .generate_embeddings("embedding", &["a", "b"])
        .await
        .unwrap();
    assert_eq!(out.embeddings[0], expected_vector("a", 8), "recomputed");
    assert_eq!(out.cache_hits, 0);
    assert_eq!(probes.embedded_texts.lock().unwrap().len(), 2);
    let cache = eight.get_status().await.unwrap().cache;
    assert_eq!(
        (cache.hits, cache.misses, cache.rejected),
        (0, 2, 1),
        "{cache:?}"
    );
}

/// A model that outputs a NaN for a text: the vector is returned, but not cached, so it is
/// neither refused on every later read nor kept in the cache.
#[tokio::test]
async fn a_computed_vector_no_model_should_make_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("value.txt"), "NaN").unwrap();
    let extra = format!(
        "models.embedding.flavour = \"file_value\"\nmodels.embedding.local_path = \"{}\"",
        dir.path().display()
    );
    let (manager, probes) = manager(&extra, &["embedding"]);
    for _ in 0..2 {
        let out = manager
            .generate_embeddings("embedding", &["x"])
            .await
            .unwrap();
        assert!(out.embeddings[0][0].is_nan());
    }
    assert_eq!(
        probes.embedded_texts.lock().unwrap().len(),
        2,
        "computed each time"
    );
    let cache = manager.get_status().await.unwrap().cache;
    assert_eq!((cache.entries, cache.rejected), (0, 0), "{cache:?}");
}
