//! The embedding engine through `generate_embeddings`: batches under the row cap and token
//! budget, exact results across callers, cancellation, admission, usage, failure scope.

mod support;

use model_manager_core::{Admission, EngineStatus, ErrorCode, ModelManager};
use std::sync::Arc;
use support::{manager, test_tokens, token_vector, Probes, MAX_TOKENS};

/// A manager with one tokenizing test model `e`, plus `extra` settings for it.
fn engine_manager(extra: &str) -> (ModelManager, Arc<Probes>) {
    let settings =
        format!("embedding_cache.enabled = false\nmodels.e.flavour = \"tokens\"\n{extra}");
    manager(&settings, &["e"])
}

/// Waits until model `e`'s engine status satisfies `condition`, re-checking on every yield.
async fn wait_for_engine(manager: &ModelManager, condition: impl Fn(&EngineStatus) -> bool) {
    loop {
        let status = manager.get_status().await.unwrap();
        if condition(status.models["e"].engine.as_ref().unwrap()) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Holds the engine's worker in a forward pass of one text until the gate opens.
async fn hold_a_pass(
    manager: &ModelManager,
    probes: &Arc<Probes>,
) -> tokio::task::JoinHandle<model_manager_core::Result<model_manager_core::EmbeddingsOutput>> {
    probes.gate.close();
    let m = manager.clone();
    let running = tokio::spawn(async move { m.generate_embeddings("e", &["first pass"]).await });
    probes.passes_entered(1).await;
    running
}

/// A text of `words` words (so `words + 2` tokens, up to the limit), distinct per `tag`.
fn text(tag: usize, words: usize) -> String {
    (0..words)
        .map(|w| format!("w{tag}x{w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_get_exact_vectors_in_batches_within_the_cap_and_budget() {
    let (manager, probes) =
        engine_manager("models.e.batch_size = 5\nmodels.e.max_batch_tokens = 40");
    // Hold the first pass so that every caller's texts queue up and mix in batches.
    let warm = hold_a_pass(&manager, &probes).await;
    let callers: Vec<_> = (0..12)
        .map(|c| {
            let m = manager.clone();
            let texts: Vec<String> = (0..7)
                .map(|i| text(c * 10 + i, (c * 3 + i * 5) % 14))
                .collect();
            tokio::spawn(async move {
                let out = m.generate_embeddings("e", &texts).await.unwrap();
                (texts, out)
            })
        })
        .collect();
    // Every caller's texts are queued once status says so; then let the engine run.
    wait_for_engine(&manager, |e| e.queued_texts == 84).await;
    probes.gate.open();
    warm.await.unwrap().unwrap();
    for caller in callers {
        let (texts, out) = caller.await.unwrap();
        for (t, v) in texts.iter().zip(&out.embeddings) {
            assert_eq!(
                v,
                &token_vector(t, 8),
                "the vector of {t:?} in its request's order"
            );
        }
        let tokens: usize = texts.iter().map(|t| test_tokens(t).len()).sum();
        assert_eq!(out.tokens, tokens, "usage counts every text's tokens");
    }
    let batches = probes.batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().map(Vec::len).sum::<usize>(),
        85,
        "84 texts and the first pass"
    );
    for batch in &batches {
        let padded = batch.iter().max().unwrap() * batch.len();
        assert!(batch.len() <= 5, "row cap: {batch:?}");
        assert!(padded <= 40 || batch.len() == 1, "token budget: {batch:?}");
    }
    assert!(
        batches.iter().any(|b| b.len() > 1),
        "texts of several callers share passes"
    );
    let engine = manager.get_status().await.unwrap().models["e"]
        .engine
        .clone()
        .unwrap();
    assert_eq!(engine.texts_computed, 85);
    assert_eq!(engine.batches as usize, batches.len());
    assert_eq!((engine.queued_texts, engine.queued_tokens), (0, 0));
    assert_eq!(engine.batch_rows.count as usize, batches.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_caller_s_waiting_texts_are_never_computed() {
    let (manager, probes) = engine_manager("");
    let running = hold_a_pass(&manager, &probes).await;
    let abandoned: Vec<String> = (0..6).map(|i| text(100 + i, 3)).collect();
    let waiting = {
        let m = manager.clone();
        let texts = abandoned.clone();
        tokio::spawn(async move { m.generate_embeddings("e", &texts).await })
    };
    wait_for_engine(&manager, |e| e.queued_texts == 6).await;
    // The caller goes away (a client disconnecting drops its request future the same way).
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    let engine = manager.get_status().await.unwrap().models["e"]
        .engine
        .clone()
        .unwrap();
    assert_eq!(engine.texts_cancelled, 6);
    assert_eq!(engine.queued_texts, 0);
    probes.gate.open();
    running.await.unwrap().unwrap();
    let engine = manager.get_status().await.unwrap().models["e"]
        .engine
        .clone()
        .unwrap();
    assert_eq!(
        engine.texts_computed, 1,
        "only the running pass's text was computed"
    );
    let seen: Vec<usize> = probes
        .batches
        .lock()
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(seen, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_refuses_at_once_and_bulk_callers_wait_for_room() {
    let (manager, probes) = engine_manager("models.e.max_queued_tokens = 20");
    let running = hold_a_pass(&manager, &probes).await;
    // 3 texts of 5 tokens wait; 2 more texts (10 tokens) would pass the bound of 20.
    let queued = {
        let m = manager.clone();
        let texts: Vec<String> = (0..3).map(|i| text(200 + i, 3)).collect();
        tokio::spawn(async move { m.generate_embeddings("e", &texts).await })
    };
    wait_for_engine(&manager, |e| e.queued_tokens == 15).await;
    let over: Vec<String> = (0..2).map(|i| text(300 + i, 3)).collect();
    let err = manager.generate_embeddings("e", &over).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::CapacityExhausted);
    assert!(err.message.contains("max_queued_tokens"), "{}", err.message);
    assert!(err.details["retry_after_seconds"].as_u64().unwrap() >= 1);
    // A bulk caller waits instead, and gets its vectors once the queue drains.
    let bulk = {
        let m = manager.clone();
        let texts = over.clone();
        tokio::spawn(async move {
            m.generate_embeddings_with("e", &texts, Admission::Wait)
                .await
        })
    };
    probes.gate.open();
    running.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    let out = bulk.await.unwrap().unwrap();
    assert_eq!(out.embeddings[1], token_vector(&over[1], 8));
    let engine = manager.get_status().await.unwrap().models["e"]
        .engine
        .clone()
        .unwrap();
    assert_eq!(engine.requests_rejected, 1);
    // One request larger than the whole bound still runs when the queue is empty.
    let big: Vec<String> = (0..10).map(|i| text(400 + i, 3)).collect();
    assert_eq!(
        manager
            .generate_embeddings("e", &big)
            .await
            .unwrap()
            .embeddings
            .len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_text_fails_only_its_own_request() {
    let (manager, probes) = engine_manager("");
    let running = hold_a_pass(&manager, &probes).await;
    let submit = |texts: Vec<String>| {
        let m = manager.clone();
        tokio::spawn(async move { m.generate_embeddings("e", &texts).await })
    };
    let good = submit(vec![text(1, 2), text(2, 2)]);
    let poisoned = submit(vec![text(3, 2), "a poison text".into()]);
    let panicking = submit(vec!["please panic now".into()]);
    wait_for_engine(&manager, |e| e.queued_texts == 5).await;
    probes.gate.open();
    running.await.unwrap().unwrap();
    let out = good.await.unwrap().unwrap();
    assert_eq!(out.embeddings[0], token_vector(&text(1, 2), 8));
    let err = poisoned.await.unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::GenerateEmbeddingsError);
    assert!(err.message.contains("poisoned"), "{}", err.message);
    let err = panicking.await.unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::GenerateEmbeddingsError);
    assert!(
        err.to_json().to_string().contains("panic"),
        "{}",
        err.to_json()
    );
    // The engine survives its embedder's panic.
    let again = manager
        .generate_embeddings("e", &[text(5, 4)])
        .await
        .unwrap();
    assert_eq!(again.embeddings[0], token_vector(&text(5, 4), 8));
    let engine = manager.get_status().await.unwrap().models["e"]
        .engine
        .clone()
        .unwrap();
    assert!(engine.batch_failures >= 1);
}

/// A short request tokenizes on the async thread, a long one on the blocking pool: a panic
/// in the tokenizer fails only its request either way, and the runtime carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokenizer_panic_fails_its_request_on_either_thread() {
    let (manager, _probes) = engine_manager("");
    let short = vec!["please break the tokenizer".to_owned()];
    let mut long: Vec<String> = (0..12).map(|i| text(i, 200)).collect();
    long.push("break the tokenizer".into());
    for texts in [short, long] {
        let err = manager.generate_embeddings("e", &texts).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::GenerateEmbeddingsError);
        let json = err.to_json().to_string();
        assert!(
            json.contains("tokenizer") && json.contains("Panic"),
            "{json}"
        );
        assert!(json.contains("asked the test tokenizer to panic"), "{json}");
    }
    let again = manager
        .generate_embeddings("e", &[text(5, 4)])
        .await
        .unwrap();
    assert_eq!(again.embeddings[0], token_vector(&text(5, 4), 8));
}

#[tokio::test]
async fn long_texts_are_truncated_and_cached_texts_still_count_tokens() {
    let (manager, _) = manager("models.e.flavour = \"tokens\"", &["e"]);
    let long = text(9, 100);
    let out = manager
        .generate_embeddings("e", &[long.as_str(), "hi"])
        .await
        .unwrap();
    assert_eq!(out.tokens, MAX_TOKENS + 3);
    let cached = manager
        .generate_embeddings("e", &[long.as_str(), "hi"])
        .await
        .unwrap();
    assert!(cached.cached);
    assert_eq!(cached.tokens, out.tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_run_two_passes_at_once_with_the_same_results() {
    let (manager, probes) = engine_manager("models.e.batch_size = 2\nmodels.e.engine_workers = 2");
    // One request of many texts: both workers take a batch of it and are held in their
    // passes together, which one worker could never be.
    probes.gate.close();
    let texts: Vec<String> = (0..9).map(|i| text(i, 1 + i % 5)).collect();
    let m = manager.clone();
    let request = texts.clone();
    let running = tokio::spawn(async move { m.generate_embeddings("e", &request).await });
    let both = tokio::time::timeout(std::time::Duration::from_secs(20), probes.passes_entered(2));
    assert!(both.await.is_ok(), "the second worker never started a pass");
    probes.gate.open();
    let out = running.await.unwrap().unwrap();
    for (t, v) in texts.iter().zip(&out.embeddings) {
        assert_eq!(v, &token_vector(t, 8), "the vector of {t:?}");
    }
    let engine = manager.get_status().await.unwrap().models["e"]
        .engine
        .clone()
        .unwrap();
    assert_eq!(engine.texts_computed, 9);
}
