//! Many tasks doing random operations on a small, tight manager, then shutdown; the
//! invariants are checked while it runs and after. Short by default (a few seconds in CI);
//! `MM_STRESS_ROUNDS=50` runs longer, `MM_STRESS_SEED=N` repeats one run.

mod support;

use model_manager_core::{ErrorCode, ModelHandle, ModelManager};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{manager, Probes};

const MODELS: [&str; 5] = ["m0", "m1", "m2", "m3", "private"];
const MAX_MODELS: usize = 2;
const BYTES_EACH: u64 = 100;
const BUDGET: u64 = 250;
/// No single operation may take longer: a hang fails the run.
const OP_DEADLINE: Duration = Duration::from_secs(20);

fn settings() -> String {
    format!(
        "sharing.max_shared_models = {MAX_MODELS}\nmemory.max_bytes = {BUDGET}\n\
         sharing.capacity_wait_seconds = 0.05\nsharing.unload_after_seconds = 1\n\
         shutdown_timeout_seconds = 0.5\nembedding_cache.max_cache_size = 50\n\
         models.m0.flavour = \"tokens\"\nmodels.m1.flavour = \"tokens\"\n\
         models.m2.pinned = false\nmodels.private.shared = false\n\
         models.m1.max_queued_tokens = 64\n"
    )
}

/// A small deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Errors an operation may meet under this load; anything else fails the run.
fn expected(error: &model_manager_core::ModelError) -> bool {
    matches!(
        error.code,
        ErrorCode::CapacityExhausted | ErrorCode::InvalidInput
    )
}

async fn operation(manager: &ModelManager, rng: &mut Rng, held: &mut Vec<ModelHandle>) {
    let id = MODELS[rng.below(MODELS.len() as u64) as usize];
    let result = match rng.below(9) {
        0 | 1 => manager.get_model(id).await.map(|h| {
            held.push(h);
            // Callers hold a few handles at most, for a few operations.
            if held.len() > 2 {
                held.remove(0);
            }
        }),
        2 => {
            held.pop();
            Ok(())
        }
        3 | 4 => {
            let texts: Vec<String> = (0..rng.below(6) + 1)
                .map(|i| format!("t{} {i}", rng.below(20)))
                .collect();
            manager.generate_embeddings(id, &texts).await.map(drop)
        }
        5 => match manager.get_model(id).await {
            Ok(h) if !h.is_exclusive() => {
                drop(h.detach());
                manager.release_model(id).await.map(drop)
            }
            other => other.map(drop),
        },
        6 => manager.pin(id, rng.below(2) == 0),
        7 => manager.unload_model(id).await.map(drop),
        _ => {
            // A caller that gives up at once: its place must not leak.
            let _ = tokio::time::timeout(Duration::from_micros(50), manager.get_model(id)).await;
            Ok(())
        }
    };
    if let Err(e) = result {
        assert!(expected(&e), "unexpected error: {e} ({})", e.to_json());
    }
}

/// Checks the limits while the run goes on.
async fn watch_limits(manager: ModelManager, done: Arc<AtomicBool>) {
    while !done.load(Ordering::Acquire) {
        let status = manager.get_status().await.unwrap();
        let holding = status.loaded_models + status.loading_models;
        assert!(
            holding <= MAX_MODELS,
            "{holding} models hold room: {:?}",
            status.models
        );
        assert!(status.estimated_bytes_loaded <= BUDGET);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run(seed: u64, tasks: usize, ops: usize) -> Arc<Probes> {
    let (manager, probes) = manager(&settings(), &MODELS);
    for id in MODELS {
        probes
            .estimate
            .lock()
            .unwrap()
            .insert(id.into(), BYTES_EACH);
    }
    let done = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_limits(manager.clone(), done.clone()));
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let m = manager.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(t as u64 + 1) | 1);
                let mut held = Vec::new();
                for _ in 0..ops {
                    let op = operation(&m, &mut rng, &mut held);
                    tokio::time::timeout(OP_DEADLINE, op)
                        .await
                        .expect("an operation hung");
                    if rng.below(4) == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a worker panicked");
    }
    done.store(true, Ordering::Release);
    watcher.await.expect("the limits held");
    let status = manager.get_status().await.unwrap();
    assert_eq!(
        status.total_references, 0,
        "every reference came back: {:?}",
        status.models
    );
    assert!(status.models.values().all(|m| m.waiting == 0));
    assert_eq!(status.capacity_waiters, 0);
    let report = tokio::time::timeout(OP_DEADLINE, manager.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(!report.timed_out, "{report:?}");
    let status = manager.get_status().await.unwrap();
    assert_eq!(
        (status.loaded_models, status.estimated_bytes_loaded),
        (0, 0)
    );
    probes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_operations_keep_the_invariants() {
    let rounds: u64 = std::env::var("MM_STRESS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let fixed: Option<u64> = std::env::var("MM_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    for round in 0..rounds {
        let seed = fixed.unwrap_or(0x5eed + round);
        eprintln!("stress seed {seed}");
        let probes = run(seed, 16, 60).await;
        // Every model that loaded was dropped again.
        let loaded = probes.loads_finished.load(Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while probes.dropped.load(Ordering::SeqCst) < loaded {
            assert!(
                std::time::Instant::now() < deadline,
                "models not dropped after shutdown"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
