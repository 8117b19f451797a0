//! `get_model_status` and `get_status`.

use super::slot::{Phase, Slot};
use super::ModelManager;
use crate::cache::{CacheStats, RestoreReport};
use crate::engine::EngineStatus;
use crate::error::{ModelError, Result};
use crate::model::Architecture;
use crate::spec::ModelSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// One model's state, as the Python module's `models[model_id]`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// Registry key of its kind.
    #[serde(rename = "type")]
    pub model_type: String,
    /// Backend that serves it (once resolved).
    pub backend: Option<String>,
    /// Device it runs (or last ran) on.
    pub device: Option<String>,
    /// Why that device was chosen.
    pub device_reason: Option<String>,
    /// `unloaded`, `loading` or `loaded`.
    pub state: &'static str,
    /// Live references on the shared instance.
    pub references: usize,
    /// Callers waiting for its load to hand them a reference.
    pub waiting: usize,
    /// Private instances alive (`shared = false`).
    pub exclusive_instances: usize,
    /// Never unloaded or evicted.
    pub pinned: bool,
    /// Seconds since last use, while loaded.
    pub idle_time: Option<f64>,
    /// When it was last loaded (Unix seconds).
    pub loaded_at: Option<f64>,
    /// When it was last used (Unix seconds).
    pub last_accessed: Option<f64>,
    /// How many times it has been loaded.
    pub load_count: u64,
    /// Duration of the last load, in milliseconds.
    pub last_load_ms: Option<f64>,
    /// The loader's memory estimate.
    pub estimated_bytes: Option<u64>,
    /// Embedding size, for loaded embedders.
    pub dimension: Option<usize>,
    /// Family, pooling and packing of a loaded text model.
    pub architecture: Option<Architecture>,
    /// The last load's error, until a load succeeds.
    pub last_error: Option<ModelError>,
    /// The embedding engine's queue, batches and timings, for models that embed (kept
    /// across reloads).
    pub engine: Option<EngineStatus>,
}

/// The data of the Python module's `get_model_status`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatusReport {
    /// Models loaded now.
    pub loaded_models: usize,
    /// Embeddings in the cache.
    pub cache_size: u64,
    /// Every configured model.
    pub models: BTreeMap<String, ModelStatus>,
}

/// The data of the Python module's `get_status`: the service as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// `enabled` from settings.
    pub enabled: bool,
    /// The CPU's SIMD features (which kernels models can use).
    pub cpu: crate::cpu::CpuFeatures,
    /// Whether initialize has run.
    pub initialized: bool,
    /// Whether shutdown has begun.
    pub shutting_down: bool,
    /// Models in the settings.
    pub configured_models: usize,
    /// Models loaded now.
    pub loaded_models: usize,
    /// Loads in progress.
    pub loading_models: usize,
    /// Callers waiting for room to load a model.
    pub capacity_waiters: usize,
    /// Live references across all models.
    pub total_references: usize,
    /// Sum of the loaders' estimates for loaded models.
    pub estimated_bytes_loaded: u64,
    /// `memory.max_bytes`, if set.
    pub memory_budget_bytes: Option<u64>,
    /// `sharing.max_shared_models`.
    pub max_shared_models: usize,
    /// Embeddings in the cache.
    pub cache_size: u64,
    /// Cache counters.
    pub cache: CacheStats,
    /// What was restored from the persisted cache at initialize (entries, and entries left
    /// out because their lifetime had passed).
    pub cache_restored: Option<RestoreReport>,
    /// Why the persisted cache could not be restored, if it could not (then nothing of it
    /// was).
    pub cache_restore_error: Option<ModelError>,
    /// Model types with a registered loader.
    pub registered_types: Vec<String>,
    /// Plugins loaded at initialize.
    pub plugins: Vec<crate::PluginRecord>,
    /// Plugin libraries that failed to load (their models fail with the error).
    pub plugin_failures: Vec<crate::PluginFailure>,
    /// Resident memory of this process, with `memory_monitoring = true` on Linux.
    pub process_resident_bytes: Option<u64>,
    /// Every configured model.
    pub models: BTreeMap<String, ModelStatus>,
}

fn unix_seconds(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

fn model_status(spec: &ModelSpec, slot: &Slot, now: Instant) -> ModelStatus {
    let (state, dimension, architecture) = match &slot.phase {
        Phase::Unloaded => ("unloaded", None, None),
        Phase::Loading(_) => ("loading", None, None),
        Phase::Loaded(i) => (
            "loaded",
            i.model.as_embedder().map(|e| e.dimension()),
            i.model.architecture(),
        ),
    };
    let engine = slot.engine_stats.snapshot();
    let engine_used = engine.batches + engine.texts_cancelled + engine.requests_rejected > 0;
    ModelStatus {
        model_type: spec.model_type.clone(),
        backend: slot.backend.clone(),
        device: slot.device.as_ref().map(|d| d.device.to_string()),
        device_reason: slot.device.as_ref().map(|d| d.reason.clone()),
        state,
        references: slot.refs,
        waiting: slot.waiters,
        exclusive_instances: slot.exclusive_instances,
        pinned: slot.pinned,
        idle_time: slot
            .is_loaded()
            .then(|| (now - slot.last_accessed).as_secs_f64()),
        loaded_at: unix_seconds(slot.loaded_at),
        last_accessed: unix_seconds(slot.last_accessed_wall),
        load_count: slot.load_count,
        last_load_ms: slot.last_load_duration.map(|d| d.as_secs_f64() * 1000.0),
        estimated_bytes: slot.estimated_bytes,
        dimension,
        architecture,
        last_error: slot.last_error.clone(),
        engine: (dimension.is_some() || engine_used).then_some(engine),
    }
}

impl ModelManager {
    fn models_status(&self) -> BTreeMap<String, ModelStatus> {
        let now = Instant::now();
        let faults = self.inner.model_faults.lock().clone();
        let state = self.inner.state.lock();
        self.inner
            .settings
            .models
            .iter()
            .filter_map(|(id, spec)| {
                let slot = state.slots.get(id)?;
                let mut status = model_status(spec, slot, now);
                if status.last_error.is_none() {
                    status.last_error = faults.get(id).cloned();
                }
                Some((id.clone(), status))
            })
            .collect()
    }

    /// Per-model state and the cache size.
    pub async fn get_model_status(&self) -> Result<ModelStatusReport> {
        let models = self.models_status();
        Ok(ModelStatusReport {
            loaded_models: models.values().filter(|m| m.state == "loaded").count(),
            cache_size: self.inner.cache.stats().entries,
            models,
        })
    }

    /// The whole service: counts, limits, cache statistics and every model.
    pub async fn get_status(&self) -> Result<ServiceStatus> {
        let inner = &self.inner;
        let models = self.models_status();
        let plugins = inner.plugins.lock().clone().unwrap_or_default();
        let loaded = models.values().filter(|m| m.state == "loaded");
        let mut cache = inner.cache.stats();
        cache.remote = inner.remote.get().map(|tier| tier.stats());
        Ok(ServiceStatus {
            enabled: inner.settings.enabled,
            cpu: crate::cpu::CpuFeatures::detect(),
            initialized: inner.initialized.load(Ordering::Acquire),
            shutting_down: inner.shutting_down.load(Ordering::Acquire),
            configured_models: models.len(),
            loaded_models: loaded.clone().count(),
            loading_models: models.values().filter(|m| m.state == "loading").count(),
            capacity_waiters: inner.capacity_waiters.load(Ordering::Relaxed),
            total_references: models
                .values()
                .map(|m| m.references + m.exclusive_instances)
                .sum(),
            estimated_bytes_loaded: loaded.filter_map(|m| m.estimated_bytes).sum(),
            memory_budget_bytes: inner.settings.memory_max_bytes,
            max_shared_models: inner.settings.sharing.max_shared_models,
            cache_size: cache.entries,
            cache,
            cache_restored: inner.cache_restored.lock().clone(),
            cache_restore_error: inner.cache_load_error.lock().clone(),
            registered_types: inner.registry.types(),
            plugins: plugins.loaded,
            plugin_failures: plugins.failed,
            process_resident_bytes: inner
                .settings
                .memory_monitoring
                .then(resident_bytes)
                .flatten(),
            models,
        })
    }
}

/// Resident set size from `/proc/self/statm` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
