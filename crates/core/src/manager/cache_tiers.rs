//! The cache tiers in front of a model's engine: the in-process cache, then the shared
//! (remote) one for what the first misses. Remote hits are copied into the local tier;
//! computed vectors go into both.

use super::Inner;
use crate::blocking::off_runtime;
use crate::cache::{CacheNamespace, CachedEmbedding};
use crate::error::{ErrorCode, Result};
use crate::fingerprint::model_fingerprint;
use crate::spec::ModelSpec;
use std::collections::HashMap;
use std::sync::Arc;

/// The texts a request must compute: each distinct miss once.
pub(super) struct Misses {
    /// Distinct texts to compute.
    pub distinct: Vec<String>,
    /// For each input position that missed, its index in `distinct`.
    pub at: Vec<(usize, usize)>,
}

impl Misses {
    pub fn of<S: AsRef<str>>(texts: &[S], found: &[Option<CachedEmbedding>]) -> Self {
        let mut distinct = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        let at = (0..texts.len())
            .filter(|&i| found[i].is_none())
            .map(|i| {
                let text = texts[i].as_ref();
                let j = *position.entry(text).or_insert_with(|| {
                    distinct.push(text.to_owned());
                    distinct.len() - 1
                });
                (i, j)
            })
            .collect();
        Self { distinct, at }
    }

    /// Puts each distinct text's entry at every position it missed.
    pub fn fill(&self, found: &mut [Option<CachedEmbedding>], entries: &[Option<CachedEmbedding>]) {
        for &(i, j) in &self.at {
            if let Some(entry) = &entries[j] {
                found[i] = Some(entry.clone());
            }
        }
    }
}

/// The cached entry of each text (`None` for every text when `fingerprint` is `None`,
/// that is, when the model's embeddings are not cached).
pub(super) async fn lookup<S: AsRef<str>>(
    inner: &Inner,
    spec: &ModelSpec,
    fingerprint: Option<u64>,
    texts: &[S],
) -> Vec<Option<CachedEmbedding>> {
    let Some(fingerprint) = fingerprint else {
        return vec![None; texts.len()];
    };
    let namespace = CacheNamespace::new(&spec.id, fingerprint);
    let mut found: Vec<_> = texts
        .iter()
        .map(|t| inner.cache.get(namespace.key(t.as_ref())))
        .collect();
    let Some(tier) = inner.remote.get() else {
        return found;
    };
    let missing = Misses::of(texts, &found);
    if missing.distinct.is_empty() {
        return found;
    }
    let Some(keyspace) = tier.keyspace(spec, fingerprint).await else {
        tier.skip(missing.distinct.len());
        return found;
    };
    let refs: Vec<&str> = missing.distinct.iter().map(String::as_str).collect();
    let remote = tier.lookup(keyspace, &refs, spec.dimension).await;
    for (text, entry) in missing.distinct.iter().zip(&remote) {
        if let Some(entry) = entry {
            inner
                .cache
                .insert(namespace, namespace.key(text), entry.clone());
        }
    }
    missing.fill(&mut found, &remote);
    found
}

/// Caches computed entries in both tiers (the remote write goes on behind the caller).
pub(super) async fn store(
    inner: &Inner,
    spec: &ModelSpec,
    fingerprint: Option<u64>,
    texts: &[String],
    computed: &[CachedEmbedding],
) {
    let Some(fingerprint) = fingerprint else {
        return;
    };
    let namespace = CacheNamespace::new(&spec.id, fingerprint);
    for (text, entry) in texts.iter().zip(computed) {
        inner
            .cache
            .insert(namespace, namespace.key(text), entry.clone());
    }
    let Some(tier) = inner.remote.get() else {
        return;
    };
    if let Some(keyspace) = tier.keyspace(spec, fingerprint).await {
        let entries: Vec<(&str, &CachedEmbedding)> =
            texts.iter().map(String::as_str).zip(computed).collect();
        tier.store(keyspace, &entries);
    }
}

impl Inner {
    /// Whether `spec`'s embeddings are cached at all (in either tier).
    pub(super) fn caches(&self, spec: &ModelSpec) -> bool {
        spec.cache_embeddings && (self.cache.is_enabled() || self.remote.get().is_some())
    }

    /// The fingerprint that keys a model's cache entries: from its last load, else computed
    /// once (a folder walk, so on a blocking thread).
    pub(super) async fn cache_fingerprint(self: &Arc<Self>, spec: &ModelSpec) -> Result<u64> {
        let known = self
            .state
            .lock()
            .slots
            .get(&spec.id)
            .and_then(|s| s.fingerprint);
        if let Some(known) = known {
            return Ok(known);
        }
        let s = spec.clone();
        let panicked = || "fingerprinting the model panicked".to_owned();
        let computed = off_runtime(ErrorCode::CacheError, panicked, move || {
            model_fingerprint(&s)
        })
        .await
        .map_err(|e| e.for_model(&spec.id))?;
        Ok(match self.state.lock().slots.get_mut(&spec.id) {
            Some(slot) => *slot.fingerprint.get_or_insert(computed),
            None => computed,
        })
    }
}
