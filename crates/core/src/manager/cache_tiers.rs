//! The cache tiers in front of a model's engine: the in-process cache, then the shared
//! (remote) one for what the first misses. Every entry found is checked against the model
//! before it is served; remote hits are then copied into the local tier; computed vectors
//! go into both.

use super::instance::Instance;
use super::Inner;
use crate::blocking::off_runtime;
use crate::cache::bounds::{EntryBounds, EntryCheck};
use crate::cache::{CacheNamespace, CachedEmbedding};
use crate::error::{ErrorCode, Result};
use crate::fingerprint::model_fingerprint;
use crate::spec::ModelSpec;
use std::collections::HashMap;
use std::sync::Arc;

/// How one model's cache entries are named and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CacheKey {
    /// The fingerprint of the model's files and settings: the entries' namespace.
    pub fingerprint: u64,
    /// What its entries must be.
    pub bounds: EntryBounds,
}

impl Instance {
    /// The key of this instance's entries.
    pub(super) fn cache_key(&self, spec: &ModelSpec) -> CacheKey {
        CacheKey {
            fingerprint: self.fingerprint,
            bounds: self.bounds.unwrap_or_else(|| EntryBounds::of_spec(spec)),
        }
    }
}

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

/// Which tier served an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Local,
    Remote,
}

/// The entries a look-up found, by input position, and the tier each came from (a refusal
/// found later is counted against that tier).
pub(super) struct Found {
    pub entries: Vec<Option<CachedEmbedding>>,
    tiers: Vec<Option<Tier>>,
}

impl Found {
    fn none(n: usize) -> Self {
        Self {
            entries: vec![None; n],
            tiers: vec![None; n],
        }
    }
}

impl std::ops::Deref for Found {
    type Target = [Option<CachedEmbedding>];
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl std::ops::DerefMut for Found {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

/// The cached entry of each text that the model's bounds admit (`None` for every text when
/// `key` is `None`, that is, when the model's embeddings are not cached).
pub(super) async fn lookup<S: AsRef<str>>(
    inner: &Inner,
    spec: &ModelSpec,
    key: Option<CacheKey>,
    texts: &[S],
) -> Found {
    let Some(key) = key else {
        return Found::none(texts.len());
    };
    let namespace = CacheNamespace::new(&spec.id, key.fingerprint);
    let mut check = EntryCheck::new(key.bounds);
    let entries: Vec<_> = texts
        .iter()
        .map(|t| {
            let text = t.as_ref();
            inner.cache.get_admitted(namespace.key(text), |entry| {
                let admitted = check.admit(text, entry);
                if let Err(flaw) = admitted {
                    tracing::warn!(model_id = %spec.id, "cached entry dropped: it holds {flaw}");
                }
                admitted.is_ok()
            })
        })
        .collect();
    let tiers = entries
        .iter()
        .map(|e| e.as_ref().map(|_| Tier::Local))
        .collect();
    let mut found = Found { entries, tiers };
    let Some(tier) = inner.remote.get() else {
        return found;
    };
    let missing = Misses::of(texts, &found);
    if missing.distinct.is_empty() {
        return found;
    }
    let Some(keyspace) = tier.keyspace(spec, key.fingerprint).await else {
        tier.skip(missing.distinct.len());
        return found;
    };
    let refs: Vec<&str> = missing.distinct.iter().map(String::as_str).collect();
    let remote = tier.lookup(keyspace, &refs, &mut check).await;
    for (text, entry) in missing.distinct.iter().zip(&remote) {
        if let Some(entry) = entry {
            inner
                .cache
                .insert(namespace, namespace.key(text), entry.clone());
        }
    }
    missing.fill(&mut found, &remote);
    for &(i, j) in &missing.at {
        if remote[j].is_some() {
            found.tiers[i] = Some(Tier::Remote);
        }
    }
    found
}

/// Checks entries found under `key`'s fingerprint again, against `key`'s bounds (learned
/// since the look-up, by the load that computes the misses): one that fails becomes a miss
/// of the tier that served it (no longer a hit) and leaves the local tier.
pub(super) fn recheck<S: AsRef<str>>(
    inner: &Inner,
    spec: &ModelSpec,
    key: CacheKey,
    texts: &[S],
    found: &mut Found,
) {
    let namespace = CacheNamespace::new(&spec.id, key.fingerprint);
    let mut check = EntryCheck::new(key.bounds);
    let Found { entries, tiers } = found;
    for ((text, slot), tier) in texts.iter().zip(entries.iter_mut()).zip(tiers.iter_mut()) {
        let text = text.as_ref();
        let Some(flaw) = slot.as_ref().and_then(|e| check.admit(text, e).err()) else {
            continue;
        };
        tracing::warn!(model_id = %spec.id, "cached entry dropped: it holds {flaw}");
        let local = namespace.key(text);
        match tier.take() {
            Some(Tier::Remote) => {
                inner.cache.forget(local);
                if let Some(remote) = inner.remote.get() {
                    remote.refused_hit();
                }
            }
            _ => inner.cache.reject_hit(local),
        }
        *slot = None;
    }
}

/// Caches computed entries in both tiers (the remote write goes on behind the caller),
/// those that `key`'s bounds admit: a model that outputs a NaN for some text has that text
/// computed again each time, not cached, refused on every read and logged each time.
pub(super) async fn store(
    inner: &Inner,
    spec: &ModelSpec,
    key: Option<CacheKey>,
    texts: &[String],
    computed: &[CachedEmbedding],
) {
    let Some(key) = key else {
        return;
    };
    let mut check = EntryCheck::new(key.bounds);
    let admitted: Vec<(&str, &CachedEmbedding)> = texts
        .iter()
        .zip(computed)
        .filter(|(text, entry)| match check.admit(text, entry) {
            Ok(()) => true,
            Err(flaw) => {
                tracing::warn!(model_id = %spec.id, "computed entry not cached: it holds {flaw}");
                false
            }
        })
        .map(|(text, entry)| (text.as_str(), entry))
        .collect();
    let namespace = CacheNamespace::new(&spec.id, key.fingerprint);
    for (text, entry) in &admitted {
        inner
            .cache
            .insert(namespace, namespace.key(text), (*entry).clone());
    }
    let Some(tier) = inner.remote.get() else {
        return;
    };
    if let Some(keyspace) = tier.keyspace(spec, key.fingerprint).await {
        tier.store(keyspace, &admitted);
    }
}

impl Inner {
    /// Whether `spec`'s embeddings are cached at all (in either tier).
    pub(super) fn caches(&self, spec: &ModelSpec) -> bool {
        spec.cache_embeddings && (self.cache.is_enabled() || self.remote.get().is_some())
    }

    /// The key of a model's cache entries: the fingerprint of its last load (else computed
    /// once), and the bounds that load learned (else what the settings say).
    pub(super) async fn cache_key(self: &Arc<Self>, spec: &ModelSpec) -> Result<CacheKey> {
        let fingerprint = self.cache_fingerprint(spec).await?;
        let learned = self.state.lock().slots.get(&spec.id).and_then(|s| s.bounds);
        let bounds = match learned {
            Some((of, bounds)) if of == fingerprint => bounds,
            _ => EntryBounds::of_spec(spec),
        };
        Ok(CacheKey {
            fingerprint,
            bounds,
        })
    }

    /// The fingerprint that keys a model's cache entries: from its last load, else computed
    /// once (a folder walk, so on a blocking thread).
    async fn cache_fingerprint(self: &Arc<Self>, spec: &ModelSpec) -> Result<u64> {
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
