//! The embedding cache: one entry per (model, model files and config, text).

use crate::error::{ErrorCode, ModelError, Result};
use crate::settings::CacheSettings;
use moka::notification::RemovalCause;
use serde::Serialize;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
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
}

/// Per-text embedding cache with a size bound and TTL, backed by moka.
pub struct EmbeddingCache {
    entries: Option<moka::sync::Cache<u128, CachedEmbedding>>,
    max_entries: u64,
    counters: Arc<Counters>,
}

const FILE_MAGIC: &[u8; 8] = b"MMCACHE2";

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
                builder = builder.time_to_live(ttl);
            }
            builder.build()
        });
        Self {
            entries,
            max_entries: settings.max_cache_size,
            counters,
        }
    }

    /// Whether the cache is on.
    pub fn is_enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The entry cached under `key`, counting a hit or a miss.
    pub fn get(&self, key: u128) -> Option<CachedEmbedding> {
        let found = self.entries.as_ref()?.get(&key);
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `entry` under `key`.
    pub fn insert(&self, key: u128, entry: CachedEmbedding) {
        if let Some(entries) = &self.entries {
            entries.insert(key, entry);
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
        }
    }

    /// Writes every live entry to `path` (entries restart their TTL when loaded back).
    pub fn save(&self, path: &Path) -> Result<u64> {
        let Some(entries) = &self.entries else {
            return Ok(0);
        };
        let io_err = |e: std::io::Error| cache_error(path, "write", e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = path.with_extension("tmp");
        let mut out = BufWriter::new(std::fs::File::create(&tmp).map_err(io_err)?);
        let snapshot: Vec<(u128, CachedEmbedding)> = entries.iter().map(|(k, v)| (*k, v)).collect();
        out.write_all(FILE_MAGIC).map_err(io_err)?;
        out.write_all(&(snapshot.len() as u64).to_le_bytes())
            .map_err(io_err)?;
        for (key, entry) in &snapshot {
            out.write_all(&key.to_le_bytes()).map_err(io_err)?;
            out.write_all(&entry.tokens.to_le_bytes()).map_err(io_err)?;
            out.write_all(&(entry.vector.len() as u32).to_le_bytes())
                .map_err(io_err)?;
            for x in entry.vector.iter() {
                out.write_all(&x.to_le_bytes()).map_err(io_err)?;
            }
        }
        out.into_inner()
            .map_err(|e| io_err(e.into_error()))?
            .sync_all()
            .map_err(io_err)?;
        // Rename last, so a crash mid-write never leaves a truncated cache behind.
        std::fs::rename(&tmp, path).map_err(io_err)?;
        Ok(snapshot.len() as u64)
    }

    /// Loads entries written by [`EmbeddingCache::save`]; a missing file loads nothing.
    pub fn load(&self, path: &Path) -> Result<u64> {
        let Some(entries) = &self.entries else {
            return Ok(0);
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(cache_error(path, "read", e)),
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut input = BufReader::new(file);
        let io_err = |e: std::io::Error| cache_error(path, "read", e);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(io_err)?;
        if &magic != FILE_MAGIC {
            return Err(cache_error(path, "read", "not a model-manager cache file"));
        }
        let count = read_u64(&mut input).map_err(io_err)?;
        let mut loaded = 0;
        for _ in 0..count {
            let mut key = [0u8; 16];
            input.read_exact(&mut key).map_err(io_err)?;
            let mut tokens = [0u8; 4];
            input.read_exact(&mut tokens).map_err(io_err)?;
            let mut dim = [0u8; 4];
            input.read_exact(&mut dim).map_err(io_err)?;
            let dim = u32::from_le_bytes(dim) as u64;
            if dim * 4 > len {
                return Err(cache_error(path, "read", "corrupt entry length"));
            }
            let mut raw = vec![0u8; dim as usize * 4];
            input.read_exact(&mut raw).map_err(io_err)?;
            let vector: Vector = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let tokens = u32::from_le_bytes(tokens);
            entries.insert(u128::from_le_bytes(key), CachedEmbedding { vector, tokens });
            loaded += 1;
        }
        Ok(loaded)
    }
}

fn read_u64(input: &mut impl Read) -> std::io::Result<u64> {
    let mut buf = [0u8; 8];
    input.read_exact(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

fn cache_error(path: &Path, action: &str, cause: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::CacheError,
        format!(
            "cannot {action} the embedding cache file {}: {cause}",
            path.display()
        ),
    )
    .with("path", path.display().to_string())
    .caused_by("IoError", cause)
}

#[cfg(test)]
mod tests;
