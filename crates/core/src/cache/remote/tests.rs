use super::*;
use crate::error::{ErrorCode, ModelError};
use std::sync::atomic::AtomicBool;

/// An in-memory store that can be made to fail or hang.
#[derive(Default)]
struct MemoryStore {
    values: Mutex<HashMap<String, Vec<u8>>>,
    failing: AtomicBool,
    hanging: AtomicBool,
    round_trips: AtomicU64,
    /// The `most_bytes` of the latest look-up.
    most_bytes: AtomicU64,
}

impl MemoryStore {
    async fn answer(&self) -> Result<()> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if self.hanging.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        match self.failing.load(Ordering::Relaxed) {
            true => Err(ModelError::new(ErrorCode::CacheError, "connection refused")),
            false => Ok(()),
        }
    }
}

impl RemoteStore for MemoryStore {
    fn get_many(
        &self,
        keys: Vec<String>,
        most_bytes: usize,
    ) -> StoreFuture<'_, Vec<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.answer().await?;
            self.most_bytes.store(most_bytes as u64, Ordering::Relaxed);
            let values = self.values.lock();
            let cut = |v: &Vec<u8>| v[..v.len().min(most_bytes + 1)].to_vec();
            Ok(keys.iter().map(|k| values.get(k).map(cut)).collect())
        })
    }
    fn set_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        _ttl: Option<Duration>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.answer().await?;
            self.values.lock().extend(entries);
            Ok(())
        })
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.answer())
    }
}

fn settings() -> RemoteCacheSettings {
    RemoteCacheSettings {
        url: "memory://test".into(),
        password_file: None,
        secret_file: None,
        key_prefix: "t:".into(),
        timeout: Duration::from_millis(50),
    }
}

async fn connected_tier() -> (Arc<MemoryStore>, Arc<RemoteTier>) {
    let store = Arc::new(MemoryStore::default());
    let tier = RemoteTier::with_store(store.clone(), settings(), None, Seal::new(None));
    wait_for(&tier, RemoteState::Connected).await;
    (store, tier)
}

async fn wait_for(tier: &RemoteTier, state: RemoteState) {
    for _ in 0..200 {
        if tier.stats().state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("tier never became {state:?}: {:?}", tier.stats());
}

fn entry(v: f32) -> CachedEmbedding {
    CachedEmbedding {
        vector: vec![v, -v].into(),
        tokens: 3,
    }
}

const KS: RemoteKeyspace = RemoteKeyspace(42);

/// Checks against a model of dimension `d` (when given) not loaded in this process.
fn check(d: Option<usize>) -> EntryCheck {
    EntryCheck::new(crate::cache::bounds::EntryBounds {
        dimension: d,
        tokens: crate::cache::bounds::TokenLimit::Unknown,
    })
}

async fn written(tier: &RemoteTier, n: u64) {
    for _ in 0..200 {
        if tier.stats().writes >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("writes never landed: {:?}", tier.stats());
}

#[tokio::test]
async fn stores_then_serves_in_one_round_trip() {
    let (store, tier) = connected_tier().await;
    tier.store(KS, &[("a", &entry(1.0)), ("b", &entry(2.0))]);
    written(&tier, 2).await;
    let before = store.round_trips.load(Ordering::Relaxed);
    let found = tier.lookup(KS, &["a", "x", "b"], &mut check(Some(2))).await;
    assert_eq!(store.round_trips.load(Ordering::Relaxed), before + 1);
    assert_eq!(found[0], Some(entry(1.0)));
    assert_eq!(found[1], None);
    assert_eq!(found[2], Some(entry(2.0)));
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.misses, stats.corrupt), (2, 1, 0));
    let other = RemoteKeyspace(43);
    assert_eq!(
        tier.lookup(other, &["a"], &mut check(None)).await,
        vec![None]
    );
    assert_ne!(tier.key(KS, "a"), tier.key(other, "a"));
    assert!(tier.key(KS, "a").starts_with("t:"));
}

#[tokio::test]
async fn refused_values_are_counted_misses() {
    let (store, tier) = connected_tier().await;
    tier.store(KS, &[("a", &entry(1.0)), ("b", &entry(2.0))]);
    written(&tier, 2).await;
    store
        .values
        .lock()
        .insert(tier.key(KS, "a"), b"garbage".to_vec());
    let b_bytes = store.values.lock()[&tier.key(KS, "b")].clone();
    store.values.lock().insert(tier.key(KS, "c"), b_bytes);
    let found = tier.lookup(KS, &["a", "c", "b"], &mut check(Some(2))).await;
    assert_eq!(found, vec![None, None, Some(entry(2.0))]);
    assert_eq!(
        tier.lookup(KS, &["b"], &mut check(Some(3))).await,
        vec![None]
    );
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.misses, stats.corrupt), (1, 3, 3));
}

/// A value anyone made huge is read only as far as the model's values go (and one byte),
/// then refused; a hit refused by a later check counts as a refused miss.
#[tokio::test]
async fn a_huge_value_is_read_only_to_the_model_s_length_and_a_late_refusal_is_a_miss() {
    let (store, tier) = connected_tier().await;
    tier.store(KS, &[("b", &entry(2.0))]);
    written(&tier, 1).await;
    store
        .values
        .lock()
        .insert(tier.key(KS, "a"), vec![7u8; 1 << 20]);
    let found = tier.lookup(KS, &["a", "b"], &mut check(Some(2))).await;
    assert_eq!(found, vec![None, Some(entry(2.0))]);
    let most = store.most_bytes.load(Ordering::Relaxed) as usize;
    assert_eq!(most, Seal::new(None).max_stored_len(Some(2)));
    assert_eq!(most, 12 + 2 * 4 + 8);
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.misses, stats.corrupt), (1, 1, 1));
    tier.refused_hit();
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.misses, stats.corrupt), (0, 2, 2));
}

#[tokio::test]
async fn a_failing_store_is_skipped_then_probed_back() {
    let (store, tier) = connected_tier().await;
    store.failing.store(true, Ordering::Relaxed);
    for _ in 0..3 {
        assert_eq!(tier.lookup(KS, &["a"], &mut check(None)).await, vec![None]);
    }
    assert_eq!(tier.stats().state, RemoteState::Down);
    assert_eq!(tier.stats().errors, 3);
    let trips = store.round_trips.load(Ordering::Relaxed);
    assert_eq!(
        tier.lookup(KS, &["a", "b"], &mut check(None)).await,
        vec![None, None]
    );
    tier.store(KS, &[("a", &entry(1.0))]);
    let stats = tier.stats();
    assert_eq!((stats.skipped, stats.writes_dropped), (2, 1));
    assert!(stats.last_error.unwrap().contains("refused"));
    // Only the probe talks to a down store.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(store.round_trips.load(Ordering::Relaxed) <= trips + 2);
    store.failing.store(false, Ordering::Relaxed);
    wait_for(&tier, RemoteState::Connected).await;
    tier.store(KS, &[("a", &entry(1.0))]);
    written(&tier, 1).await;
    assert_eq!(
        tier.lookup(KS, &["a"], &mut check(None)).await,
        vec![Some(entry(1.0))]
    );
}

#[tokio::test]
async fn a_hanging_store_costs_at_most_the_timeout() {
    let (store, tier) = connected_tier().await;
    store.hanging.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    assert_eq!(tier.lookup(KS, &["a"], &mut check(None)).await, vec![None]);
    assert!(started.elapsed() < Duration::from_secs(2));
    tier.store(KS, &[("a", &entry(1.0))]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let stats = tier.stats();
    assert_eq!((stats.timeouts, stats.write_errors), (2, 1));
    assert_eq!(
        stats.state,
        RemoteState::Connected,
        "writes do not trip the tier"
    );
}

#[tokio::test]
async fn an_unanswered_first_contact_leaves_the_tier_down() {
    let store = Arc::new(MemoryStore::default());
    store.failing.store(true, Ordering::Relaxed);
    let tier = RemoteTier::with_store(store.clone(), settings(), None, Seal::new(None));
    wait_for(&tier, RemoteState::Down).await;
    assert_eq!(tier.lookup(KS, &["a"], &mut check(None)).await, vec![None]);
    assert_eq!(tier.stats().skipped, 1);
}

#[tokio::test]
async fn intact_values_no_model_makes_are_refused() {
    let (store, tier) = connected_tier().await;
    let nan = CachedEmbedding {
        vector: vec![f32::NAN, 1.0].into(),
        tokens: 3,
    };
    let inflated = CachedEmbedding {
        vector: vec![1.0, 1.0].into(),
        tokens: u32::MAX,
    };
    tier.store(KS, &[("a", &nan), ("b", &inflated), ("c", &entry(1.0))]);
    written(&tier, 3).await;
    let found = tier.lookup(KS, &["a", "b", "c"], &mut check(None)).await;
    assert_eq!(found, vec![None, None, Some(entry(1.0))]);
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.corrupt), (1, 2), "{stats:?}");
    drop(store);
}

#[tokio::test]
async fn with_a_secret_only_sealed_values_are_served() {
    let store = Arc::new(MemoryStore::default());
    let secret = Seal::new(Some(b"0123456789abcdef".to_vec()));
    let sealed = RemoteTier::with_store(store.clone(), settings(), None, secret);
    let open = RemoteTier::with_store(store.clone(), settings(), None, Seal::new(None));
    wait_for(&sealed, RemoteState::Connected).await;
    wait_for(&open, RemoteState::Connected).await;
    assert!(sealed.stats().authenticated && !open.stats().authenticated);
    open.store(KS, &[("a", &entry(1.0))]);
    sealed.store(KS, &[("b", &entry(2.0))]);
    written(&open, 1).await;
    written(&sealed, 1).await;
    let found = sealed.lookup(KS, &["a", "b"], &mut check(Some(2))).await;
    assert_eq!(found, vec![None, Some(entry(2.0))]);
    assert_eq!(sealed.stats().unauthenticated, 1);
    let found = open.lookup(KS, &["a", "b"], &mut check(Some(2))).await;
    assert_eq!(found, vec![Some(entry(1.0)), None]);
    assert_eq!(open.stats().unauthenticated, 1);
}
