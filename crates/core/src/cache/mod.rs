//! The embedding cache: one entry per (model, model files and config, text), bounded in
//! size, expiring by age, and optionally persisted (see [`file`] for the crash-safe format).
//! Whatever a tier holds is checked against its model when read ([`bounds`]).

pub(crate) mod bounds;
mod file;
pub mod remote;

use crate::error::Result;
use crate::settings::CacheSettings;
use file::FileEntry;
use moka::notification::RemovalCause;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A cached vector.
pub type Vector = Arc<[f32]>;

/// What the cache keeps per text: the vector and the tokens the model read for it, so
/// cached texts still count in usage.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedEmbedding {
    /// The embedding.
    pub vector: Vector,
    /// Tokens of the text after truncation.
    pub tokens: u32,
}

/// Seed of the text hash for one model: covers its id and the fingerprint of its files and
/// config, so a changed model never serves vectors of the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheNamespace(u64);

impl CacheNamespace {
    /// The namespace of `model_id` whose files and config hash to `fingerprint`.
    pub fn new(model_id: &str, fingerprint: u64) -> Self {
        let mut bytes = Vec::with_capacity(model_id.len() + 9);
        bytes.extend_from_slice(model_id.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&fingerprint.to_le_bytes());
        Self(xxhash_rust::xxh3::xxh3_64(&bytes))
    }

    /// The cache key of `text` in this namespace (128-bit, so collisions are not a concern).
    pub fn key(self, text: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128_with_seed(text.as_bytes(), self.0)
    }
}

/// An entry as held: the embedding, its namespace (so a file can check one dimension per
/// model) and when it was first computed (so its lifetime survives restarts).
#[derive(Clone)]
struct Held {
    embedding: CachedEmbedding,
    namespace: u64,
    inserted_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Expires entries `ttl` after they were first computed, before or after a restart.
struct AgeExpiry {
    ttl: Duration,
}

impl AgeExpiry {
    fn remaining(&self, held: &Held) -> Option<Duration> {
        let age = Duration::from_millis(now_ms().saturating_sub(held.inserted_ms));
        Some(self.ttl.saturating_sub(age))
    }
}

impl moka::Expiry<u128, Held> for AgeExpiry {
    fn expire_after_create(
        &self,
        _: &u128,
        held: &Held,
        _: std::time::Instant,
    ) -> Option<Duration> {
        self.remaining(held)
    }
    fn expire_after_update(
        &self,
        _: &u128,
        held: &Held,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(held)
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    rejected: AtomicU64,
    /// Inserts since the last save, so an unchanged cache is not rewritten.
    unsaved: AtomicU64,
}

/// Hit, miss and eviction counts and the current size.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheStats {
    /// Whether the cache is on.
    pub enabled: bool,
    /// Entries now.
    pub entries: u64,
    /// Most entries.
    pub max_entries: u64,
    /// Lookups that found a vector.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries dropped to respect the size bound.
    pub evictions: u64,
    /// Entries dropped because their TTL passed.
    pub expirations: u64,
    /// Entries found but refused and dropped: not what the model makes (a NaN or infinity,
    /// another dimension, more tokens than the model reads from the text). Counted as
    /// misses too.
    pub rejected: u64,
    /// The shared tier behind this cache, when `embedding_cache.redis_url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<remote::RemoteCacheStats>,
}

/// What a restore from disk did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Entries put back in the cache.
    pub restored: u64,
    /// Entries of the file whose lifetime had passed, left out.
    pub expired: u64,
    /// Entries of the file no model could have made (a NaN or infinite value, an
    /// impossible dimension, another dimension than the rest of their model's), left out.
    pub dropped: u64,
}

/// Per-text embedding cache with a size bound and TTL, backed by moka.
pub struct EmbeddingCache {
    entries: Option<moka::sync::Cache<u128, Held>>,
    max_entries: u64,
    counters: Arc<Counters>,
    ttl: Option<Duration>,
}

impl EmbeddingCache {
    /// A cache per `settings`; disabled when `enabled = false` or the size is 0.
    pub fn new(settings: &CacheSettings) -> Self {
        let counters = Arc::new(Counters::default());
        let entries = (settings.enabled && settings.max_cache_size > 0).then(|| {
            let listener_counters = counters.clone();
            let mut builder = moka::sync::Cache::builder()
                .max_capacity(settings.max_cache_size)
                .eviction_listener(move |_k, _v, cause| {
                    let counter = match cause {
                        RemovalCause::Size => &listener_counters.evictions,
                        RemovalCause::Expired => &listener_counters.expirations,
                        _ => return,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            if let Some(ttl) = settings.ttl {
                builder = builder.expire_after(AgeExpiry { ttl });
            }
            builder.build()
        });
        Self {
            entries,
            max_entries: settings.max_cache_size,
            counters,
            ttl: settings.ttl,
        }
    }

    /// Whether the cache is on.
    pub fn is_enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The entry cached under `key`, counting a hit or a miss.
    #[cfg(test)]
    pub fn get(&self, key: u128) -> Option<CachedEmbedding> {
        self.get_admitted(key, |_| true)
    }

    /// Drops the entry under `key`, found not to be what its model makes, and counts it.
    pub fn reject(&self, key: u128) {
        if let Some(entries) = &self.entries {
            entries.invalidate(&key);
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the entry under `key` that a look-up served (and counted as a hit) but that a
    /// later check found not to be what its model makes: counted as rejected and as a miss
    /// instead.
    pub fn reject_hit(&self, key: u128) {
        if self.entries.is_some() {
            self.reject(key);
            self.counters.hits.fetch_sub(1, Ordering::Relaxed);
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the entry under `key` without counting it (a copy of another tier's entry
    /// that was refused there).
    pub fn forget(&self, key: u128) {
        if let Some(entries) = &self.entries {
            entries.invalidate(&key);
        }
    }

    /// The entry cached under `key` if `admit` takes it, counting a hit or a miss; an
    /// entry `admit` refuses is dropped and counted as rejected (and a miss).
    pub fn get_admitted(
        &self,
        key: u128,
        admit: impl FnOnce(&CachedEmbedding) -> bool,
    ) -> Option<CachedEmbedding> {
        let entries = self.entries.as_ref()?;
        let found = entries.get(&key).map(|held| held.embedding);
        let admitted = match found {
            Some(entry) if admit(&entry) => Some(entry),
            Some(_) => {
                self.reject(key);
                None
            }
            None => None,
        };
        let counter = match admitted {
            Some(_) => &self.counters.hits,
            None => &self.counters.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        admitted
    }

    /// Caches `entry` under `key` of `namespace`.
    pub fn insert(&self, namespace: CacheNamespace, key: u128, embedding: CachedEmbedding) {
        if let Some(entries) = &self.entries {
            let held = Held {
                embedding,
                namespace: namespace.0,
                inserted_ms: now_ms(),
            };
            entries.insert(key, held);
            self.counters.unsaved.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
            entries.run_pending_tasks();
        }
    }

    /// Current counts (after moka's pending maintenance, so evictions are up to date).
    pub fn stats(&self) -> CacheStats {
        let entries = self.entries.as_ref().map_or(0, |e| {
            e.run_pending_tasks();
            e.entry_count()
        });
        CacheStats {
            enabled: self.is_enabled(),
            entries,
            max_entries: self.max_entries,
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            expirations: self.counters.expirations.load(Ordering::Relaxed),
            rejected: self.counters.rejected.load(Ordering::Relaxed),
            remote: None,
        }
    }

    /// Whether entries were added since the last save.
    pub fn has_unsaved(&self) -> bool {
        self.counters.unsaved.load(Ordering::Relaxed) > 0
    }

    /// Writes every live entry to `path` (crash-safe; see [`file`]); returns how many.
    /// Blocking. A file at `path` that is not a cache file is never replaced.
    pub fn save(&self, path: &Path) -> Result<u64> {
        let Some(entries) = &self.entries else {
            return Ok(0);
        };
        let unsaved = self.counters.unsaved.swap(0, Ordering::Relaxed);
        let snapshot: Vec<FileEntry> = entries
            .iter()
            .map(|(key, held)| FileEntry {
                key: *key,
                namespace: held.namespace,
                inserted_ms: held.inserted_ms,
                tokens: held.embedding.tokens,
                vector: held.embedding.vector.to_vec(),
            })
            .collect();
        file::write(path, &snapshot).inspect_err(|_| {
            self.counters.unsaved.fetch_add(unsaved, Ordering::Relaxed);
        })?;
        Ok(snapshot.len() as u64)
    }

    /// Restores the entries of `path`: a file whose header, size or checksum is wrong is a
    /// `CACHE_ERROR` and restores nothing; in a sound file, entries past their lifetime or
    /// that no model could have made are left out (and counted). A missing file restores
    /// nothing. Blocking.
    pub fn load(&self, path: &Path) -> Result<RestoreReport> {
        let Some(entries) = &self.entries else {
            return Ok(RestoreReport::default());
        };
        let Some(stored) = file::read(path)? else {
            return Ok(RestoreReport::default());
        };
        let now = now_ms();
        let mut report = RestoreReport {
            dropped: stored.dropped,
            ..RestoreReport::default()
        };
        if let Some(why) = &stored.first_flaw {
            tracing::warn!(
                path = %path.display(),
                dropped = stored.dropped,
                "left out cache entries no model could have made (first: {why})"
            );
        }
        for entry in stored.entries {
            let age = Duration::from_millis(now.saturating_sub(entry.inserted_ms));
            if self.ttl.is_some_and(|ttl| age >= ttl) {
                report.expired += 1;
                continue;
            }
            let held = Held {
                embedding: CachedEmbedding {
                    vector: entry.vector.into(),
                    tokens: entry.tokens,
                },
                namespace: entry.namespace,
                inserted_ms: entry.inserted_ms,
            };
            entries.insert(entry.key, held);
            report.restored += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
