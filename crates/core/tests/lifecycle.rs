//! Lifecycle rules (README, "Lifecycle"), proven with a real loader on blocking threads.

mod support;

use model_manager_core::ErrorCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::{manager, settle, state_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_first_calls_share_one_load() {
    let (manager, probes) = manager("", &["embedding"]);
    probes.delay_ms.store(100, Ordering::SeqCst);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let m = manager.clone();
        tasks.spawn(async move { m.get_model("embedding").await.unwrap() });
    }
    let mut handles = Vec::new();
    while let Some(h) = tasks.join_next().await {
        handles.push(h.unwrap());
    }
    assert_eq!(probes.loads_started.load(Ordering::SeqCst), 1);
    let first = handles[0].model().clone();
    assert!(handles.iter().all(|h| Arc::ptr_eq(h.model(), &first)));
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(status.models["embedding"].references, 64);
    assert_eq!(status.models["embedding"].load_count, 1);
    drop(handles);
    assert_eq!(
        manager.get_model_status().await.unwrap().models["embedding"].references,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn idle_unload_after_timeout_and_not_before_nor_while_referenced() {
    let (manager, probes) = manager("sharing.unload_after_seconds = 60", &["embedding"]);
    let handle = manager.get_model("embedding").await.unwrap();
    tokio::time::advance(Duration::from_secs(600)).await;
    settle().await;
    assert_eq!(
        state_of(&manager, "embedding").await,
        "loaded",
        "referenced models stay"
    );

    drop(handle);
    tokio::time::advance(Duration::from_secs(59)).await;
    settle().await;
    assert_eq!(
        state_of(&manager, "embedding").await,
        "loaded",
        "not before the timeout"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        state_of(&manager, "embedding").await,
        "unloaded",
        "after the timeout"
    );

    manager.get_model("embedding").await.unwrap();
    assert_eq!(
        probes.loads_started.load(Ordering::SeqCst),
        2,
        "reloads on next use"
    );
}

#[tokio::test(start_paused = true)]
async fn pinned_models_are_never_unloaded() {
    let (manager, _) = manager("sharing.unload_after_seconds = 10", &["a"]);
    manager.pin("a", true).unwrap();
    manager.preload("a").await.unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    settle().await;
    assert_eq!(state_of(&manager, "a").await, "loaded");
    manager.pin("a", false).unwrap();
    settle().await;
    assert_eq!(
        state_of(&manager, "a").await,
        "unloaded",
        "unpinned and long idle"
    );
}

#[tokio::test]
async fn least_recently_used_idle_model_is_evicted_at_the_limit() {
    let (manager, _) = manager("sharing.max_shared_models = 2", &["a", "b", "c"]);
    manager.preload("a").await.unwrap();
    manager.preload("b").await.unwrap();
    manager.preload("a").await.unwrap(); // a is now more recent than b
    manager.preload("c").await.unwrap();
    assert_eq!(state_of(&manager, "b").await, "unloaded");
    assert_eq!(state_of(&manager, "a").await, "loaded");
    assert_eq!(state_of(&manager, "c").await, "loaded");
}

#[tokio::test]
async fn referenced_models_are_not_evicted_and_capacity_is_exhausted() {
    let (manager, _) = manager(
        "sharing.max_shared_models = 1\nsharing.capacity_wait_seconds = 0.2",
        &["a", "b"],
    );
    let a = manager.get_model("a").await.unwrap();
    let err = manager.get_model("b").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::CapacityExhausted);
    assert!(err.message.contains("a (1 refs)"), "{}", err.message);
    assert_eq!(state_of(&manager, "a").await, "loaded");
    drop(a);
    manager.get_model("b").await.unwrap();
    assert_eq!(state_of(&manager, "a").await, "unloaded");
}

#[tokio::test]
async fn a_waiter_gets_room_when_a_reference_is_dropped() {
    let (manager, _) = manager(
        "sharing.max_shared_models = 1\nsharing.capacity_wait_seconds = 10",
        &["a", "b"],
    );
    let a = manager.get_model("a").await.unwrap();
    let m = manager.clone();
    let waiter =
        tokio::spawn(async move { m.get_model("b").await.map(|h| h.model_id().to_owned()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    drop(a);
    assert_eq!(waiter.await.unwrap().unwrap(), "b");
}

#[tokio::test]
async fn memory_budget_evicts_and_refuses_what_can_never_fit() {
    let (manager, probes) = manager("memory.max_bytes = 100", &["a", "b", "huge"]);
    {
        let mut est = probes.estimate.lock().unwrap();
        est.insert("a".into(), 60);
        est.insert("b".into(), 60);
        est.insert("huge".into(), 500);
    }
    manager.preload("a").await.unwrap();
    manager.preload("b").await.unwrap();
    assert_eq!(
        state_of(&manager, "a").await,
        "unloaded",
        "a + b exceed the budget"
    );
    let status = manager.get_status().await.unwrap();
    assert_eq!(status.estimated_bytes_loaded, 60);
    let err = manager.get_model("huge").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::CapacityExhausted);
    assert!(
        err.message.contains("memory.max_bytes = 100"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_load_reaches_every_waiter_and_the_next_call_retries() {
    let (manager, probes) = manager("", &["embedding"]);
    probes.fail.store(true, Ordering::SeqCst);
    probes.delay_ms.store(100, Ordering::SeqCst);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let m = manager.clone();
        tasks.spawn(async move { m.get_model("embedding").await.unwrap_err() });
    }
    while let Some(err) = tasks.join_next().await {
        let err = err.unwrap();
        assert_eq!(err.code, ErrorCode::ModelLoadError);
        assert_eq!(err.details["model_id"], "embedding");
        assert_eq!(err.details["file"], "weights.bin");
    }
    assert_eq!(probes.loads_started.load(Ordering::SeqCst), 1);
    let status = manager.get_model_status().await.unwrap();
    assert!(status.models["embedding"].last_error.is_some());

    probes.fail.store(false, Ordering::SeqCst);
    manager.get_model("embedding").await.unwrap();
    assert_eq!(
        probes.loads_started.load(Ordering::SeqCst),
        2,
        "failures are not cached"
    );
    let status = manager.get_model_status().await.unwrap();
    assert!(status.models["embedding"].last_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_first_caller_does_not_cancel_the_load() {
    let (manager, probes) = manager("", &["embedding"]);
    probes.delay_ms.store(200, Ordering::SeqCst);
    let m = manager.clone();
    let first = tokio::spawn(async move { m.get_model("embedding").await });
    while probes.loads_started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let handle = manager.get_model("embedding").await.unwrap();
    assert_eq!(
        probes.loads_started.load(Ordering::SeqCst),
        1,
        "joined the running load"
    );
    assert_eq!(handle.model_id(), "embedding");
    assert_eq!(
        manager.get_model_status().await.unwrap().models["embedding"].references,
        1
    );
}

#[tokio::test]
async fn unshared_models_give_each_caller_its_own_instance() {
    let (manager, probes) = manager("models.solo.shared = false", &["solo"]);
    let a = manager.get_model("solo").await.unwrap();
    let b = manager.get_model("solo").await.unwrap();
    assert!(!Arc::ptr_eq(a.model(), b.model()));
    assert!(a.is_exclusive());
    assert_eq!(probes.loads_started.load(Ordering::SeqCst), 2);
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(status.models["solo"].exclusive_instances, 2);
    drop((a, b));
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(status.models["solo"].exclusive_instances, 0);
}

#[tokio::test]
async fn shutdown_refuses_new_work_waits_for_in_flight_then_unloads() {
    let (manager, _) = manager("shutdown_timeout_seconds = 10", &["a", "b"]);
    manager.preload("b").await.unwrap();
    let held = manager.get_model("a").await.unwrap();
    let m = manager.clone();
    let shutdown = tokio::spawn(async move { m.shutdown().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = manager.get_model("b").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ShuttingDown);
    let err = manager.generate_embeddings("b", &["x"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ShuttingDown);
    assert!(!shutdown.is_finished(), "waits for the live handle");
    drop(held);
    let report = shutdown.await.unwrap();
    assert_eq!(report.unloaded, vec!["a".to_string(), "b".to_string()]);
    assert!(!report.timed_out);
    assert_eq!(manager.get_status().await.unwrap().loaded_models, 0);
}

#[tokio::test]
async fn shutdown_gives_up_waiting_after_its_bound() {
    let (manager, _) = manager("shutdown_timeout_seconds = 0.1", &["a"]);
    let held = manager.get_model("a").await.unwrap();
    let report = manager.shutdown().await.unwrap();
    assert!(report.timed_out);
    assert_eq!(report.still_referenced, vec!["a".to_string()]);
    assert_eq!(report.unloaded, vec!["a".to_string()]);
    drop(held);
}

#[tokio::test]
async fn detached_references_are_returned_with_release_model() {
    let (manager, _) = manager("", &["a"]);
    let model = manager.get_model("a").await.unwrap().detach();
    assert_eq!(
        manager.get_model_status().await.unwrap().models["a"].references,
        1
    );
    assert_eq!(manager.release_model("a").await.unwrap(), 0);
    let err = manager.release_model("a").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "no double release");
    drop(model);
}

#[tokio::test]
async fn explicit_unload_waits_for_references() {
    let (manager, _) = manager("", &["a"]);
    let held = manager.get_model("a").await.unwrap();
    let m = manager.clone();
    let unload = tokio::spawn(async move { m.unload_model("a").await.unwrap() });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!unload.is_finished());
    drop(held);
    assert!(unload.await.unwrap(), "it was loaded");
    assert_eq!(state_of(&manager, "a").await, "unloaded");
}

/// Fetching a model's files (`mm pull`) does not initialize: no cache tier is opened (so an
/// unreadable secret file, which would fail initialize, does not matter), nothing is restored
/// and no `preload = true` model loads.
#[tokio::test]
async fn fetching_files_does_not_initialize() {
    let extra = "embedding_cache.redis_url = \"redis://127.0.0.1:1/0\"\n\
                 embedding_cache.redis_secret_file = \"/nonexistent/secret\"\n\
                 models.embedding.preload = true\n";
    let (manager, probes) = support::manager(extra, &["embedding"]);
    let fetched = manager.fetch_files("embedding").await.unwrap();
    assert!(fetched.is_none(), "the test loader lists no files");
    assert_eq!(
        probes.loads_started.load(Ordering::SeqCst),
        0,
        "nothing preloaded"
    );
    let err = manager.initialize().await.unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::ConfigError,
        "initialize does read the secret: {err}"
    );
}
