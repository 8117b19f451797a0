//! Initialize, idle unload, explicit unload and shutdown.

use super::slot::Phase;
use super::{release_instances, Inner, ModelManager};
use crate::blocking::off_runtime;
use crate::error::{ErrorCode, ModelError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// What [`ModelManager::initialize`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InitReport {
    /// Models loaded because they have `preload = true`.
    pub preloaded: Vec<String>,
    /// Preloads that failed, by model: those models load on their first use instead (the
    /// error is also in their status).
    pub preload_failures: BTreeMap<String, ModelError>,
    /// Embeddings restored from the persisted cache.
    pub cache_entries_restored: u64,
    /// Entries of the persisted cache left out because their lifetime had passed.
    pub cache_entries_expired: u64,
}

/// What [`ModelManager::shutdown`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShutdownReport {
    /// Models that were loaded and are now unloaded.
    pub unloaded: Vec<String>,
    /// Models whose references outlived the shutdown bound (their memory is freed when the
    /// last handle drops).
    pub still_referenced: Vec<String>,
    /// Whether in-flight work was still running when the bound passed.
    pub timed_out: bool,
    /// Embeddings written to the persisted cache.
    pub cache_entries_saved: u64,
}

/// Checks every model's options against its loaders. With `plugins.required = false`, a
/// model of a plugin's type with a bad option, or of an unknown type while some plugin
/// failed to load, is set aside with its error (status shows it, using it returns it) and
/// the rest start.
fn check_models(inner: &Inner) -> Result<()> {
    let plugins = inner.plugins.lock().clone().unwrap_or_default();
    let tolerant = !inner.settings.plugins.required;
    let from_plugin = |model_type: &str| {
        inner
            .registry
            .for_type(model_type)
            .iter()
            .any(|l| plugins.loaded.iter().any(|p| p.name == l.backend()))
    };
    let mut faults = inner.model_faults.lock();
    for spec in inner.settings.models.values() {
        match inner.registry.validate_spec(spec) {
            Err(e) if tolerant && from_plugin(&spec.model_type) => {
                tracing::warn!(model_id = %spec.id, "model set aside: {e}");
                faults.insert(spec.id.clone(), e);
            }
            Err(e) => return Err(e),
            Ok(()) if tolerant && !plugins.failed.is_empty() => {
                if inner.registry.for_type(&spec.model_type).is_empty() {
                    faults.insert(spec.id.clone(), unserved(spec, &plugins.failed));
                }
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

/// `PLUGIN_LOAD_ERROR` for a model whose type no loader serves while plugins failed: one of
/// them may have been its provider.
fn unserved(spec: &crate::ModelSpec, failed: &[crate::PluginFailure]) -> ModelError {
    let failures: Vec<String> = failed
        .iter()
        .map(|f| format!("{}: {}", f.path.display(), f.error.message))
        .collect();
    ModelError::new(
        ErrorCode::PluginLoadError,
        format!(
            "no loader serves type '{}', and plugin libraries failed to load: {}",
            spec.model_type,
            failures.join("; ")
        ),
    )
    .for_model(&spec.id)
    .with("model_type", spec.model_type.as_str())
}

impl ModelManager {
    /// Checks models against the registry, starts idle unloading and cache snapshots,
    /// restores the persisted cache and preloads `preload = true` models. Idempotent. A
    /// preload that fails does not fail initialize: it is reported, and the model loads on
    /// its first use.
    pub async fn initialize(&self) -> Result<InitReport> {
        let inner = &self.inner;
        inner.check_accepting()?;
        let _guard = inner.init_lock.lock().await;
        if inner.initialized.load(Ordering::Acquire) {
            return Ok(InitReport::default());
        }
        // Opening libraries runs their code and blocks.
        let manager = self.clone();
        let panicked = || "loading the plugins panicked".to_owned();
        off_runtime(ErrorCode::PluginLoadError, panicked, move || {
            manager.load_plugins()
        })
        .await??;
        check_models(inner)?;
        open_remote_tier(inner)?;
        let mut report = InitReport::default();
        restore_cache(inner, &mut report).await;
        if inner.settings.sharing.unload_after.is_some() {
            tokio::spawn(reaper(Arc::downgrade(inner), inner.changed.subscribe()));
        }
        let cache = &inner.settings.embedding_cache;
        if let (true, Some(every)) = (cache.persist_to_disk, cache.save_interval) {
            tokio::spawn(snapshots(Arc::downgrade(inner), every));
        }
        inner.initialized.store(true, Ordering::Release);
        for spec in inner.settings.models.values().filter(|s| s.preload) {
            match super::acquire::acquire(inner, &spec.id).await {
                Ok(handle) => {
                    drop(handle);
                    report.preloaded.push(spec.id.clone());
                }
                Err(e) => {
                    tracing::warn!(model_id = %spec.id, "preload failed; the model loads on first use: {e}");
                    report.preload_failures.insert(spec.id.clone(), e);
                }
            }
        }
        Ok(report)
    }

    /// Loads the plugins of `plugins.*` (with `plugins.enabled = true`) and registers their
    /// types, once per manager: initialize does it, and tools that inspect the registry
    /// without initializing can. Blocking (opens libraries).
    pub fn load_plugins(&self) -> Result<Vec<crate::PluginRecord>> {
        let inner = &self.inner;
        // Held while loading, so concurrent callers load once; a failed attempt registers
        // nothing and may be retried.
        let mut plugins = inner.plugins.lock();
        if plugins.is_none() && inner.settings.plugins.enabled {
            let report = crate::plugins::load_configured(&inner.settings.plugins, &inner.registry)?;
            *plugins = Some(report);
        }
        Ok(plugins
            .as_ref()
            .map(|r| r.loaded.clone())
            .unwrap_or_default())
    }

    /// Plugin libraries that failed to load (`plugins.required = false`), after
    /// [`ModelManager::load_plugins`] or initialize.
    pub fn plugin_failures(&self) -> Vec<crate::PluginFailure> {
        self.inner
            .plugins
            .lock()
            .as_ref()
            .map(|r| r.failed.clone())
            .unwrap_or_default()
    }

    /// Opens the shared cache tier without initializing, and waits for its first answer, so
    /// that status from a fresh process (`mm status`) can say whether it is reachable.
    /// Nothing when `embedding_cache.redis_url` is empty.
    pub async fn connect_remote_cache(&self) -> Result<()> {
        open_remote_tier(&self.inner)?;
        if let Some(tier) = self.inner.remote.get() {
            tier.first_contact().await;
        }
        Ok(())
    }

    /// Refuses new work (`SHUTTING_DOWN`), lets in-flight work (references, loads, private
    /// instances) finish within `shutdown_timeout_seconds`, then unloads everything and
    /// persists the cache (if this manager initialized, and so restored the file first). A
    /// load that finishes after this began is not handed out.
    pub async fn shutdown(&self) -> Result<ShutdownReport> {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::Release);
        inner.bump();
        let deadline = Instant::now() + inner.settings.shutdown_timeout;
        let mut report = ShutdownReport::default();
        loop {
            let mut changed = inner.changed.subscribe();
            if inner.state.lock().slots.values().all(|s| s.is_quiescent()) {
                break;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                report.timed_out = true;
                break;
            }
        }
        let unloaded: Vec<_> = {
            let mut state = inner.state.lock();
            state
                .slots
                .iter_mut()
                .filter_map(|(id, slot)| {
                    if slot.refs > 0 || slot.exclusive_instances > 0 {
                        report.still_referenced.push(id.clone());
                    }
                    slot.unload().map(|m| (id.clone(), m))
                })
                .collect()
        };
        report.unloaded = unloaded.iter().map(|(id, _)| id.clone()).collect();
        report.unloaded.sort();
        report.still_referenced.sort();
        release_instances(unloaded.into_iter().map(|(_, i)| i).collect()).await;
        inner.bump();
        if let Some(remote) = inner.remote.get() {
            remote.flush(REMOTE_FLUSH).await;
        }
        // A manager that never initialized never restored the file: saving its cache would
        // replace the file's entries with none (`mm status` beside a running server).
        let initialized = inner.initialized.load(Ordering::Acquire);
        if inner.settings.embedding_cache.persist_to_disk && initialized {
            report.cache_entries_saved = save_cache(inner).await?;
        }
        if inner.log_usage() {
            tracing::info!(unloaded = ?report.unloaded, timed_out = report.timed_out, "model manager shut down");
        }
        Ok(report)
    }
}

/// How long shutdown waits for the remote tier's writes in flight.
const REMOTE_FLUSH: Duration = Duration::from_secs(2);

/// Opens the shared cache tier (no I/O: it connects in the background, and requests skip it
/// until it answers). A malformed URL or a missing store fails initialize.
fn open_remote_tier(inner: &Inner) -> Result<()> {
    let cache = &inner.settings.embedding_cache;
    let Some(settings) = cache.remote.as_ref().filter(|_| cache.enabled) else {
        return Ok(());
    };
    if inner.remote.get().is_none() {
        let tier = crate::cache::remote::RemoteTier::open(settings, cache.ttl)?;
        let _ = inner.remote.set(tier);
    }
    Ok(())
}

/// Restores the persisted cache on a blocking thread; a damaged file is reported in status
/// and the cache starts empty.
async fn restore_cache(inner: &Arc<Inner>, report: &mut InitReport) {
    if !inner.settings.embedding_cache.persist_to_disk {
        return;
    }
    let restored = on_cache_thread(inner, "restoring", |cache, path| cache.load(path)).await;
    match restored {
        Ok(r) => {
            report.cache_entries_restored = r.restored;
            report.cache_entries_expired = r.expired;
            *inner.cache_restored.lock() = Some(r);
        }
        Err(e) => {
            tracing::warn!("starting with an empty embedding cache: {e}");
            *inner.cache_load_error.lock() = Some(e);
        }
    }
}

/// Saves the cache on a blocking thread.
async fn save_cache(inner: &Arc<Inner>) -> Result<u64> {
    on_cache_thread(inner, "saving", |cache, path| cache.save(path)).await
}

/// Runs cache file I/O on a blocking thread; a panic there is a `CACHE_ERROR`.
async fn on_cache_thread<T: Send + 'static>(
    inner: &Arc<Inner>,
    action: &str,
    work: impl FnOnce(&crate::cache::EmbeddingCache, &std::path::Path) -> Result<T> + Send + 'static,
) -> Result<T> {
    let state = inner.clone();
    let panicked = || format!("{action} the cache panicked");
    off_runtime(ErrorCode::CacheError, panicked, move || {
        work(&state.cache, &state.settings.embedding_cache.path)
    })
    .await?
}

/// Saves the cache every `every` while it changes, so a crash loses at most that window.
async fn snapshots(manager: Weak<Inner>, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = manager.upgrade() else {
            return;
        };
        if inner.is_shutting_down() {
            return;
        }
        if inner.cache.has_unsaved() {
            if let Err(e) = save_cache(&inner).await {
                tracing::warn!("periodic cache save failed: {e}");
            }
        }
    }
}

/// Unloads `model_id` once no handle holds it, waiting up to the shutdown bound.
pub(crate) async fn unload_when_unreferenced(inner: &Inner, model_id: &str) -> Result<bool> {
    let deadline = Instant::now() + inner.settings.shutdown_timeout;
    loop {
        let mut changed = inner.changed.subscribe();
        let outcome = {
            let mut state = inner.state.lock();
            let slot = state
                .slots
                .get_mut(model_id)
                .expect("configured models have slots");
            match slot.phase {
                Phase::Unloaded => Some(None),
                Phase::Loaded(_) if slot.refs == 0 && slot.waiters == 0 => Some(slot.unload()),
                _ => None,
            }
        };
        if let Some(instance) = outcome {
            let was_loaded = instance.is_some();
            release_instances(instance.into_iter().collect()).await;
            if was_loaded && inner.log_usage() {
                tracing::info!(model_id, "model unloaded on request");
            }
            inner.bump();
            return Ok(was_loaded);
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return Err(ModelError::new(
                ErrorCode::CapacityExhausted,
                format!(
                    "model `{model_id}` is still in use after {:?}; not unloaded",
                    inner.settings.shutdown_timeout
                ),
            )
            .for_model(model_id));
        }
    }
}

/// Unloads models idle past `sharing.unload_after_seconds`, sleeping until the next
/// deadline or until the state changes. Holds the manager weakly, so dropping the manager
/// ends it.
async fn reaper(manager: Weak<Inner>, mut changed: tokio::sync::watch::Receiver<u64>) {
    loop {
        let next = {
            let Some(inner) = manager.upgrade() else {
                return;
            };
            if inner.is_shutting_down() {
                return;
            }
            let Some(after) = inner.settings.sharing.unload_after else {
                return;
            };
            let (unloaded, next) = inner.state.lock().unload_idle(
                Instant::now(),
                after,
                inner.settings.sharing.reference_counting,
            );
            if !unloaded.is_empty() {
                if inner.log_usage() {
                    for (id, _) in &unloaded {
                        tracing::info!(model_id = %id, idle_for = ?after, "idle model unloaded");
                    }
                }
                release_instances(unloaded.into_iter().map(|(_, i)| i).collect()).await;
                inner.bump();
            }
            next
        };
        let woken = match next {
            Some(deadline) => tokio::select! {
                woken = changed.changed() => woken,
                _ = tokio::time::sleep_until(deadline) => Ok(()),
            },
            None => changed.changed().await,
        };
        if woken.is_err() {
            return;
        }
    }
}
