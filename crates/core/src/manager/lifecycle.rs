//! Initialize, idle unload, explicit unload and shutdown.

use super::slot::Phase;
use super::{Inner, ModelManager};
use crate::error::{ErrorCode, ModelError, Result};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::time::Instant;

/// What [`ModelManager::initialize`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InitReport {
    /// Models loaded because they have `preload = true`.
    pub preloaded: Vec<String>,
    /// Embeddings restored from the persisted cache.
    pub cache_entries_restored: u64,
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

impl ModelManager {
    /// Checks models against the registry, starts idle unloading, restores the persisted
    /// cache and preloads `preload = true` models. Idempotent.
    pub async fn initialize(&self) -> Result<InitReport> {
        let inner = &self.inner;
        inner.check_accepting()?;
        let _guard = inner.init_lock.lock().await;
        if inner.initialized.load(Ordering::Acquire) {
            return Ok(InitReport::default());
        }
        self.load_plugins()?;
        for spec in inner.settings.models.values() {
            inner.registry.validate_spec(spec)?;
        }
        let mut report = InitReport::default();
        let cache = &inner.settings.embedding_cache;
        if cache.persist_to_disk {
            match inner.cache.load(&cache.path) {
                Ok(n) => report.cache_entries_restored = n,
                Err(e) => {
                    tracing::warn!("starting with an empty embedding cache: {e}");
                    *inner.cache_load_error.lock() = Some(e);
                }
            }
        }
        if inner.settings.sharing.unload_after.is_some() {
            tokio::spawn(reaper(Arc::downgrade(inner), inner.idle_changed.clone()));
        }
        inner.initialized.store(true, Ordering::Release);
        for spec in inner.settings.models.values().filter(|s| s.preload) {
            drop(super::acquire::acquire(inner, &spec.id).await?);
            report.preloaded.push(spec.id.clone());
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
            let records =
                crate::plugins::load_configured(&inner.settings.plugins, &inner.registry)?;
            *plugins = Some(records);
        }
        Ok(plugins.clone().unwrap_or_default())
    }

    /// Refuses new work (`SHUTTING_DOWN`), lets in-flight work finish within
    /// `shutdown_timeout_seconds`, then unloads everything and persists the cache.
    pub async fn shutdown(&self) -> Result<ShutdownReport> {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::Release);
        let deadline = Instant::now() + inner.settings.shutdown_timeout;
        let mut report = ShutdownReport::default();
        loop {
            let notified = inner.room_freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if is_quiescent(inner) {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
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
        for (id, model) in unloaded {
            report.unloaded.push(id);
            drop(model);
        }
        report.unloaded.sort();
        report.still_referenced.sort();
        inner.idle_changed.notify_waiters();
        let cache = &inner.settings.embedding_cache;
        if cache.persist_to_disk {
            report.cache_entries_saved = inner.cache.save(&cache.path)?;
        }
        if inner.log_usage() {
            tracing::info!(unloaded = ?report.unloaded, timed_out = report.timed_out, "model manager shut down");
        }
        Ok(report)
    }
}

fn is_quiescent(inner: &Inner) -> bool {
    let state = inner.state.lock();
    state.slots.values().all(|s| {
        s.refs == s.detached && s.exclusive_instances == 0 && !matches!(s.phase, Phase::Loading(_))
    })
}

/// Unloads `model_id` once no handle holds it, waiting up to the shutdown bound.
pub(crate) async fn unload_when_unreferenced(inner: &Inner, model_id: &str) -> Result<bool> {
    let deadline = Instant::now() + inner.settings.shutdown_timeout;
    loop {
        let notified = inner.room_freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let outcome = {
            let mut state = inner.state.lock();
            let slot = state
                .slots
                .get_mut(model_id)
                .expect("configured models have slots");
            match slot.phase {
                Phase::Unloaded => Some(None),
                Phase::Loaded(_) if slot.refs == 0 => Some(slot.unload()),
                _ => None,
            }
        };
        if let Some(model) = outcome {
            let was_loaded = model.is_some();
            drop(model);
            if was_loaded && inner.log_usage() {
                tracing::info!(model_id, "model unloaded on request");
            }
            inner.room_freed.notify_waiters();
            return Ok(was_loaded);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
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
/// deadline or until a model may have become idle. Holds the manager weakly, so dropping
/// the manager ends it.
async fn reaper(manager: Weak<Inner>, idle_changed: Arc<tokio::sync::Notify>) {
    loop {
        let notified = idle_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let Some(inner) = manager.upgrade() else {
                return;
            };
            if inner.shutting_down.load(Ordering::Acquire) {
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
                for (id, model) in unloaded {
                    if inner.log_usage() {
                        tracing::info!(model_id = %id, idle_for = ?after, "idle model unloaded");
                    }
                    drop(model);
                }
                inner.room_freed.notify_waiters();
            }
            next
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => notified.await,
        }
    }
}
