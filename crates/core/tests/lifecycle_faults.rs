//! The nine lifecycle faults found by review (issue 12), each as the scenario that showed
//! it. Signals, not sleeps: loads wait at the test loader's gate, and tests wait for a load
//! to reach it.

mod support;

use model_manager_core::{ErrorCode, ModelManager, ServiceStatus};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::manager;

async fn get_in_task(
    manager: &ModelManager,
    id: &str,
) -> tokio::task::JoinHandle<model_manager_core::Result<model_manager_core::ModelHandle>> {
    let (m, id) = (manager.clone(), id.to_owned());
    tokio::spawn(async move { m.get_model(&id).await })
}

/// 1. A load's waiters get its model even when another model waits for room: here the
/// waiter's runtime is held up until after the load finished and its first caller left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_load_reaches_its_waiters_before_anyone_can_evict_it() {
    let (manager, probes) = manager(
        "sharing.max_shared_models = 1\nsharing.capacity_wait_seconds = 10",
        &["a", "b"],
    );
    probes.load_gate.close();
    let first = get_in_task(&manager, "a").await;
    probes.loads_entered(1).await;

    // A second caller of `a` on a runtime of its own, whose thread we can hold.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let late = {
        let m = manager.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let waiter = tokio::spawn(async move { m.get_model("a").await.map(drop) });
                tokio::task::yield_now().await;
                tokio::spawn(async move {
                    held_tx.send(()).unwrap();
                    hold_rx.recv().unwrap(); // blocks this runtime's only thread
                });
                waiter.await.unwrap()
            })
        })
    };
    wait_for_status(&manager, |s| s.models["a"].waiting == 2).await;
    tokio::task::spawn_blocking(move || held_rx.recv().unwrap())
        .await
        .unwrap();
    probes.load_gate.open();
    drop(first.await.unwrap().unwrap());
    // `b` needs the only place; `a` is unreferenced but its late caller has not taken it.
    let b = get_in_task(&manager, "b").await;
    wait_for_status(&manager, |s| s.capacity_waiters == 1).await;
    assert_eq!(
        manager.get_model_status().await.unwrap().models["a"].state,
        "loaded"
    );
    hold_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || late.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    drop(b.await.unwrap().unwrap());
    assert_eq!(
        probes.loads_started.load(Ordering::SeqCst),
        2,
        "a once, b once"
    );
}

/// 2. A load task that dies (here: the model panics in the dimension check) resets the slot.
#[tokio::test]
async fn a_dying_load_task_fails_its_waiters_and_the_next_call_retries() {
    let (manager, probes) = manager(
        "models.p.flavour = \"panic_dimension\"\nmodels.p.dimension = 8\nshutdown_timeout_seconds = 3",
        &["p"],
    );
    for attempt in 1..=2 {
        let err = manager.get_model("p").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ModelLoadError, "{err}");
        assert_eq!(
            probes.loads_started.load(Ordering::SeqCst),
            attempt,
            "retried"
        );
    }
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(status.models["p"].state, "unloaded");
    assert!(status.models["p"].last_error.is_some());
    let report = manager.shutdown().await.unwrap();
    assert!(!report.timed_out);
}

/// 3. A load still running when shutdown gives up is never handed out, and is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_outlives_shutdown_is_not_handed_out() {
    let (manager, probes) = manager("shutdown_timeout_seconds = 0.05", &["a"]);
    probes.load_gate.close();
    let caller = get_in_task(&manager, "a").await;
    probes.loads_entered(1).await;
    let report = manager.shutdown().await.unwrap();
    assert!(report.timed_out);
    probes.load_gate.open();
    let err = caller.await.unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::ShuttingDown);
    assert_eq!(
        manager.get_model_status().await.unwrap().models["a"].state,
        "unloaded"
    );
    wait_until(|| probes.dropped.load(Ordering::SeqCst) == 1).await;
}

/// 4. Shutdown waits for a private (`shared = false`) load, which is then not handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sees_a_private_load_in_progress() {
    let (manager, probes) = manager(
        "models.a.shared = false\nshutdown_timeout_seconds = 5",
        &["a"],
    );
    probes.load_gate.close();
    let caller = get_in_task(&manager, "a").await;
    probes.loads_entered(1).await;
    let shutdown = {
        let m = manager.clone();
        tokio::spawn(async move { m.shutdown().await })
    };
    // Shutdown has begun, and waits for the load rather than finishing around it.
    wait_for_status(&manager, |s| s.shutting_down).await;
    assert!(!shutdown.is_finished());
    probes.load_gate.open();
    let report = shutdown.await.unwrap().unwrap();
    assert!(!report.timed_out);
    assert_eq!(
        caller.await.unwrap().unwrap_err().code,
        ErrorCode::ShuttingDown
    );
    wait_until(|| probes.dropped.load(Ordering::SeqCst) == 1).await;
}

/// 5. Shutdown wakes when the last live handle goes, detached references aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wakes_when_only_detached_references_are_left() {
    let (manager, _) = manager("shutdown_timeout_seconds = 3", &["a"]);
    let held = manager.get_model("a").await.unwrap();
    let _detached = manager.get_model("a").await.unwrap().detach();
    let mut shutdown = {
        let m = manager.clone();
        tokio::spawn(async move { m.shutdown().await })
    };
    let waiting = tokio::time::timeout(Duration::from_millis(200), &mut shutdown).await;
    assert!(waiting.is_err(), "shutdown waits for the live handle");
    let started = Instant::now();
    drop(held);
    let report = shutdown.await.unwrap().unwrap();
    assert!(!report.timed_out, "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// 6. Unpinning frees room for a waiting load, and shutdown tells capacity waiters so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpin_and_shutdown_wake_capacity_waiters() {
    let (manager, _) = manager(
        "sharing.max_shared_models = 1\nsharing.capacity_wait_seconds = 30\nmodels.a.pinned = true",
        &["a", "b"],
    );
    drop(manager.get_model("a").await.unwrap());
    let waiting = get_in_task(&manager, "b").await;
    wait_for_status(&manager, |s| s.capacity_waiters == 1).await;
    let started = Instant::now();
    manager.pin("a", false).unwrap();
    drop(waiting.await.unwrap().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the unpin"
    );

    manager.pin("b", true).unwrap();
    let waiting = get_in_task(&manager, "a").await;
    wait_for_status(&manager, |s| s.capacity_waiters == 1).await;
    let shutdown = {
        let m = manager.clone();
        tokio::spawn(async move { m.shutdown().await })
    };
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::ShuttingDown, "{err}");
    shutdown.await.unwrap().unwrap();
}

/// 7. One response never mixes vectors of a model and of its changed files.
#[tokio::test]
async fn a_response_never_mixes_an_old_and_a_new_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("value.txt"), "4").unwrap();
    let settings = format!(
        "models.m.flavour = \"file_value\"\nmodels.m.local_path = \"{}\"",
        dir.path().display()
    );
    let (manager, _) = manager(&settings, &["m"]);
    let old = manager.generate_embeddings("m", &["x"]).await.unwrap();
    assert_eq!(old.embeddings[0][0], 4.0);
    manager.unload_model("m").await.unwrap();
    std::fs::write(dir.path().join("value.txt"), "9.0").unwrap();
    let new = manager.generate_embeddings("m", &["x", "y"]).await.unwrap();
    assert_eq!(
        new.embeddings[0][0], 9.0,
        "x is not served from the old model's cache"
    );
    assert_eq!(new.embeddings[1][0], 9.0);
    let again = manager.generate_embeddings("m", &["x"]).await.unwrap();
    assert!(again.cached);
    assert_eq!(
        again.embeddings[0][0], 9.0,
        "the new vector is cached under the new model"
    );
}

/// 8. A truncated cache file restores nothing and says so.
#[tokio::test]
async fn a_truncated_cache_file_restores_nothing_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.mmcache");
    let settings = format!(
        "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"",
        path.display()
    );
    let (first, _) = manager(&settings, &["m"]);
    let texts: Vec<String> = (0..20).map(|i| format!("text {i}")).collect();
    first.generate_embeddings("m", &texts).await.unwrap();
    assert_eq!(first.shutdown().await.unwrap().cache_entries_saved, 20);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();

    let (second, probes) = manager(&settings, &["m"]);
    let report = second.initialize().await.unwrap();
    assert_eq!(report.cache_entries_restored, 0);
    let status = second.get_status().await.unwrap();
    assert_eq!(status.cache.entries, 0);
    let error = status.cache_restore_error.expect("the damage is reported");
    assert_eq!(error.code, ErrorCode::CacheError);
    let out = second.generate_embeddings("m", &texts).await.unwrap();
    assert_eq!(out.cache_hits, 0);
    assert_eq!(probes.embedded_texts.lock().unwrap().len(), 20);
}

/// 9. A failing preload does not fail an unrelated call, and is retried on use.
#[tokio::test]
async fn a_failing_preload_fails_only_its_own_model_and_is_retried() {
    let (manager, probes) = manager("models.b.preload = true", &["a", "b"]);
    probes.fail_ids.lock().unwrap().insert("b".into());
    drop(
        manager
            .get_model("a")
            .await
            .expect("a does not inherit b's failure"),
    );
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(
        status.models["b"].last_error.as_ref().unwrap().code,
        ErrorCode::ModelLoadError
    );
    probes.fail_ids.lock().unwrap().clear();
    drop(
        manager
            .get_model("b")
            .await
            .expect("the next use loads b again"),
    );
    assert_eq!(probes.loads_started.load(Ordering::SeqCst), 3);
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the manager's status satisfies `condition`, re-checking on every yield.
async fn wait_for_status(manager: &ModelManager, condition: impl Fn(&ServiceStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if condition(&manager.get_status().await.unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status condition not met in 10 s"
        );
        tokio::task::yield_now().await;
    }
}
