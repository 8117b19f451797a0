//! The remote tier: an embedding cache shared by replicas (Redis), behind the in-process
//! one. Keys carry the model's content fingerprint (files, pooling, normalization,
//! truncation, dimension) and a hash of the text; values carry their key in a seal (an
//! HMAC under the replicas' secret, else a checksum; see [`value`]), and every value found
//! is checked against the model ([`super::bounds`]) before it is served.
//! Look-ups are one round trip per request, bounded by `embedding_cache.redis_timeout_ms`;
//! writes go behind the response. A failing store costs requests nothing: see [`health`].

mod health;
mod store;
mod value;

pub use health::RemoteState;
pub use store::{open_store, OpenStore, RemoteStore, RemoteStoreRegistration, StoreFuture};
pub use value::Seal;

use super::bounds::EntryCheck;
use super::CachedEmbedding;
use crate::blocking::off_runtime;
use crate::error::{ErrorCode, Result};
use crate::fingerprint::{content_fingerprint, model_fingerprint};
use crate::settings::RemoteCacheSettings;
use crate::spec::ModelSpec;
use health::Health;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use value::Refused;

/// Write batches in flight at once; more are dropped (and counted), never queued without bound.
const MAX_WRITES_IN_FLIGHT: u32 = 32;
/// Writes may take this many look-up timeouts.
const WRITE_TIMEOUT_FACTOR: u32 = 4;
/// The probe's first and longest wait between pings.
const PROBE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// A ping may take longer than a look-up: it may have to connect first.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What identifies a model's outputs in the remote tier, the same on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteKeyspace(u128);

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    unauthenticated: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
    writes: AtomicU64,
    write_errors: AtomicU64,
    writes_dropped: AtomicU64,
}

/// The remote tier's state and counts, in status and on `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RemoteCacheStats {
    /// The store's URL, password hidden.
    pub url: String,
    /// Connected, connecting or down.
    pub state: RemoteState,
    /// Whether values are authenticated with the replicas' secret
    /// (`embedding_cache.redis_secret_file` or `MM_REDIS_SECRET`); false: they are only
    /// checksummed, and a value anyone wrote into Redis in the right shape is served.
    pub authenticated: bool,
    /// Texts found there.
    pub hits: u64,
    /// Texts looked up and not found.
    pub misses: u64,
    /// Values found but refused (damaged, another key's, or not what the model makes: a NaN
    /// or infinity, another dimension, more tokens than the model reads from the text):
    /// counted as misses too, never served.
    pub corrupt: u64,
    /// Values found but not sealed with this tier's secret (forged, written with another
    /// secret, or by a replica in the other mode): counted as misses too, never served.
    pub unauthenticated: u64,
    /// Look-ups and writes that failed.
    pub errors: u64,
    /// Look-ups and writes that took longer than `redis_timeout_ms`.
    pub timeouts: u64,
    /// Texts not looked up because the tier was not connected.
    pub skipped: u64,
    /// Entries written.
    pub writes: u64,
    /// Entries whose write failed or timed out.
    pub write_errors: u64,
    /// Entries not written: the tier was not connected, or too many writes were in flight.
    pub writes_dropped: u64,
    /// The latest failure, if any.
    pub last_error: Option<String>,
}

/// The shared tier of one manager.
pub struct RemoteTier {
    store: Arc<dyn RemoteStore>,
    settings: RemoteCacheSettings,
    seal: Seal,
    ttl: Option<Duration>,
    counters: Counters,
    health: Health,
    writes: Arc<Semaphore>,
    keyspaces: Mutex<HashMap<(String, u64), Arc<KeyspaceCell>>>,
    /// Set at shutdown: no new writes start.
    closed: std::sync::atomic::AtomicBool,
}

/// One model's keyspace, computed once (or the time it failed).
type KeyspaceCell = tokio::sync::OnceCell<std::result::Result<RemoteKeyspace, Instant>>;

/// How long a failed keyspace computation stands before it is tried again.
const KEYSPACE_RETRY: Duration = Duration::from_secs(60);

impl RemoteTier {
    /// Opens the store `settings` names and starts probing it; entries live for `ttl`.
    /// Runs inside a Tokio runtime. `CONFIG_ERROR` for an unusable secret or URL.
    pub fn open(settings: &RemoteCacheSettings, ttl: Option<Duration>) -> Result<Arc<Self>> {
        let seal = Seal::new(settings.secret()?);
        let store = open_store(settings)?;
        Ok(Self::with_store(store, settings.clone(), ttl, seal))
    }

    /// A tier over an already open store, sealing values with `seal`; starts probing it.
    pub fn with_store(
        store: Arc<dyn RemoteStore>,
        settings: RemoteCacheSettings,
        ttl: Option<Duration>,
        seal: Seal,
    ) -> Arc<Self> {
        let tier = Arc::new(Self {
            store,
            settings,
            seal,
            ttl,
            counters: Counters::default(),
            health: Health::default(),
            writes: Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT as usize)),
            keyspaces: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        tier.probe();
        tier
    }

    /// The keyspace of `spec`'s outputs whose local fingerprint is `local`: computed from
    /// the content of its files once per (model, local fingerprint), on a blocking thread;
    /// concurrent first requests wait for that one computation. `None` when the files cannot
    /// be read, or changed since the instance loaded them (retried after a minute).
    pub async fn keyspace(&self, spec: &ModelSpec, local: u64) -> Option<RemoteKeyspace> {
        let memo = (spec.id.clone(), local);
        let cell = {
            let mut memos = self.keyspaces.lock();
            let cell = memos.entry(memo.clone()).or_default();
            if cell
                .get()
                .is_some_and(|k| k.is_err_and(|at| at.elapsed() > KEYSPACE_RETRY))
            {
                *cell = Arc::default();
            }
            cell.clone()
        };
        let owned = spec.clone();
        let computed = cell
            .get_or_init(|| async move {
                let id = owned.id.clone();
                let panicked = || "fingerprinting panicked".to_owned();
                let hashed = off_runtime(ErrorCode::CacheError, panicked, move || {
                    let content = content_fingerprint(&owned);
                    // Files replaced since the load: their content is not what this instance
                    // computes with, so it must not name its vectors.
                    let unchanged = model_fingerprint(&owned) == local;
                    (content, unchanged)
                })
                .await;
                match hashed {
                    Ok((Ok(fingerprint), true)) => Ok(RemoteKeyspace(fingerprint)),
                    Ok((Ok(_), false)) => {
                        tracing::warn!(model_id = %id, "remote cache skipped: the model's files changed since it loaded");
                        Err(Instant::now())
                    }
                    Ok((Err(e), _)) => {
                        tracing::warn!(model_id = %id, "remote cache skipped: cannot read the model's files: {e}");
                        Err(Instant::now())
                    }
                    Err(e) => {
                        tracing::warn!(model_id = %id, "remote cache skipped: {}", e.to_json());
                        Err(Instant::now())
                    }
                }
            })
            .await;
        computed.ok()
    }

    /// Counts texts that went without the tier (no keyspace).
    pub fn skip(&self, texts: usize) {
        self.count(&self.counters.skipped, texts);
    }

    /// The store's key of `text` in `keyspace`: prefix, keyspace, then 128 bits of the
    /// text's sha256 (a cryptographic hash, since texts come from clients and the tier is
    /// shared).
    pub fn key(&self, keyspace: RemoteKeyspace, text: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(keyspace.0.to_le_bytes());
        hasher.update(text.as_bytes());
        let digest = hasher.finalize();
        let mut key = String::with_capacity(self.settings.key_prefix.len() + 65);
        key.push_str(&self.settings.key_prefix);
        let _ = write!(key, "{:032x}:", keyspace.0);
        for byte in &digest[..16] {
            let _ = write!(key, "{byte:02x}");
        }
        key
    }

    /// The stored entry of each text that `check` admits (`None` for misses, refused
    /// values, and for every text when the tier is down or does not answer in time).
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        keyspace: RemoteKeyspace,
        texts: &[&str],
        check: &mut EntryCheck,
    ) -> Vec<Option<CachedEmbedding>> {
        let mut found = vec![None; texts.len()];
        if texts.is_empty() {
            return found;
        }
        if !self.health.usable() {
            self.count(&self.counters.skipped, texts.len());
            return found;
        }
        let keys: Vec<String> = texts.iter().map(|t| self.key(keyspace, t)).collect();
        let most = self.seal.max_stored_len(check.dimension());
        let read = self.store.get_many(keys.clone(), most);
        let answer = tokio::time::timeout(self.settings.timeout, read);
        let values = match answer.await {
            Ok(Ok(values)) if values.len() == keys.len() => values,
            Ok(Ok(values)) => {
                let error = format!("asked {} keys, got {} values", keys.len(), values.len());
                self.failed(&self.counters.errors, error);
                return found;
            }
            Ok(Err(e)) => {
                self.failed(&self.counters.errors, e.to_string());
                return found;
            }
            Err(_) => {
                self.failed(&self.counters.timeouts, self.timeout_message("look-up"));
                return found;
            }
        };
        self.health.succeeded(&self.settings.redacted_url());
        for (((slot, key), value), text) in found.iter_mut().zip(&keys).zip(values).zip(texts) {
            let Some(bytes) = value else {
                self.count(&self.counters.misses, 1);
                continue;
            };
            let decoded = self.seal.decode(key, &bytes, check.dimension());
            let admitted = decoded.and_then(|entry| match check.admit(text, &entry) {
                Ok(()) => Ok(entry),
                Err(flaw) => {
                    tracing::debug!(key, "remote entry refused: it holds {flaw}");
                    Err(Refused::Corrupt)
                }
            });
            match admitted {
                Ok(entry) => {
                    self.count(&self.counters.hits, 1);
                    *slot = Some(entry);
                }
                Err(refused) => {
                    let counter = match refused {
                        Refused::WrongDimension(d) => {
                            tracing::debug!(
                                key,
                                dimension = d,
                                "remote entry of another dimension"
                            );
                            &self.counters.corrupt
                        }
                        Refused::Corrupt => &self.counters.corrupt,
                        Refused::Unauthenticated => &self.counters.unauthenticated,
                    };
                    self.count(counter, 1);
                    self.count(&self.counters.misses, 1);
                }
            }
        }
        found
    }

    /// Counts a value [`Self::lookup`] served (a hit) that a later check refused: a refused
    /// value and a miss instead.
    pub(crate) fn refused_hit(&self) {
        self.counters.hits.fetch_sub(1, Ordering::Relaxed);
        self.count(&self.counters.corrupt, 1);
        self.count(&self.counters.misses, 1);
    }

    /// Writes `entries` behind the caller's back (a refused or damaged value under the same
    /// key is overwritten). Dropped, and counted, when the tier is not connected or too many
    /// writes are in flight.
    pub fn store(self: &Arc<Self>, keyspace: RemoteKeyspace, entries: &[(&str, &CachedEmbedding)]) {
        if entries.is_empty() {
            return;
        }
        let open = !self.closed.load(Ordering::Relaxed);
        let permit = match open && self.health.usable() {
            true => self.writes.clone().try_acquire_owned().ok(),
            false => None,
        };
        let Some(permit) = permit else {
            self.count(&self.counters.writes_dropped, entries.len());
            return;
        };
        let encoded: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(text, entry)| {
                let key = self.key(keyspace, text);
                let bytes = self.seal.encode(&key, entry);
                (key, bytes)
            })
            .collect();
        let tier = self.clone();
        tokio::spawn(async move {
            let count = encoded.len();
            // Writes carry whole vectors, so they get more time than look-ups; and they do
            // not take the tier out of the request path (a Redis that refuses writes, full
            // or read-only, still serves reads), so failures are counted, not tripped on.
            let write = tier.store.set_many(encoded, tier.ttl);
            match tokio::time::timeout(tier.settings.timeout * WRITE_TIMEOUT_FACTOR, write).await {
                Ok(Ok(())) => tier.count(&tier.counters.writes, count),
                Ok(Err(e)) => {
                    tier.count(&tier.counters.write_errors, count);
                    tier.count(&tier.counters.errors, 1);
                    tier.health.note(e.to_string());
                }
                Err(_) => {
                    tier.count(&tier.counters.write_errors, count);
                    tier.count(&tier.counters.timeouts, 1);
                    tier.health.note(tier.timeout_message("write"));
                }
            }
            drop(permit);
        });
    }

    /// Waits until the store first answers or fails (at most [`PROBE_TIMEOUT`] and a bit),
    /// for tools that report on the tier from a fresh process.
    pub async fn first_contact(&self) -> RemoteState {
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT + Duration::from_millis(200);
        while self.health.state() == RemoteState::Connecting
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.health.state()
    }

    /// Stops new writes and waits up to `within` for those in flight (at shutdown).
    pub async fn flush(&self, within: Duration) {
        self.closed.store(true, Ordering::Relaxed);
        let all = self.writes.acquire_many(MAX_WRITES_IN_FLIGHT);
        if let Ok(Ok(permits)) = tokio::time::timeout(within, all).await {
            drop(permits);
        }
    }

    /// State and counts now.
    pub fn stats(&self) -> RemoteCacheStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteCacheStats {
            url: self.settings.redacted_url(),
            state: self.health.state(),
            authenticated: self.seal.authenticated(),
            hits: get(&c.hits),
            misses: get(&c.misses),
            corrupt: get(&c.corrupt),
            unauthenticated: get(&c.unauthenticated),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            skipped: get(&c.skipped),
            writes: get(&c.writes),
            write_errors: get(&c.write_errors),
            writes_dropped: get(&c.writes_dropped),
            last_error: self.health.last_error(),
        }
    }

    fn count(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn timeout_message(&self, what: &str) -> String {
        format!(
            "{what} took longer than embedding_cache.redis_timeout_ms ({} ms)",
            self.settings.timeout.as_millis()
        )
    }

    fn failed(self: &Arc<Self>, counter: &AtomicU64, error: String) {
        self.count(counter, 1);
        if self.health.failed(&self.settings.redacted_url(), error) {
            self.probe();
        }
    }

    /// Pings the store in the background, backing off, until it answers; then requests use
    /// the tier again. Stops when the tier is dropped.
    fn probe(self: &Arc<Self>) {
        if !self.health.start_probe() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = Duration::ZERO;
            loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).clamp(PROBE_BACKOFF.0, PROBE_BACKOFF.1);
                let Some(tier) = weak.upgrade() else {
                    return;
                };
                let url = tier.settings.redacted_url();
                match tokio::time::timeout(PROBE_TIMEOUT, tier.store.ping()).await {
                    Ok(Ok(())) => {
                        tier.health.probe_answered(&url);
                        return;
                    }
                    Ok(Err(e)) => {
                        tier.health.failed(&url, e.to_string());
                    }
                    Err(_) => {
                        tier.health.failed(&url, "ping timed out".into());
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
