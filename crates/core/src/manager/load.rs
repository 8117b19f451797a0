//! Running a load: the plan worked out off the async threads, the loader on a blocking
//! thread (after the models evicted for it are gone), and the hand-off of the result to
//! the slot, under a guard that resets the slot if the load task dies.

use super::instance::Instance;
use super::slot::{LoadOutcome, Phase};
use super::{release_instances, shutting_down_error, Inner};
use crate::blocking::off_runtime;
use crate::device::{choose_device, cuda_device_count, DeviceChoice};
use crate::error::{ErrorCode, ModelError, Result};
use crate::fingerprint::model_fingerprint;
use crate::loader::ModelLoader;
use crate::model::Model;
use crate::spec::ModelSpec;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::watch;

/// Everything a load needs, worked out before taking the lock.
pub(crate) struct LoadPlan {
    pub loader: Arc<dyn ModelLoader>,
    pub device: DeviceChoice,
    pub estimated_bytes: Option<u64>,
    pub fingerprint: u64,
}

/// The plan of `spec`'s load. Probing files (and, for ONNX, the runtime library), the size
/// estimate and the fingerprint's folder walk all block, so they run on a blocking thread.
pub(crate) async fn plan(inner: &Arc<Inner>, spec: &ModelSpec) -> Result<LoadPlan> {
    let (inner, spec) = (inner.clone(), spec.clone());
    let id = spec.id.clone();
    let panicked = || format!("planning the load of model `{id}` panicked");
    off_runtime(ErrorCode::ModelLoadError, panicked, move || {
        let loader = inner.registry.resolve(&spec)?;
        let device = choose_device(
            &spec.id,
            spec.device,
            inner.settings.device_policy(),
            cuda_device_count().0,
        )?;
        Ok(LoadPlan {
            estimated_bytes: loader.estimate_bytes(&spec),
            fingerprint: model_fingerprint(&spec),
            loader,
            device,
        })
    })
    .await
    .map_err(|e| e.for_model(&id))?
}

/// Drops `evicted` (waiting until they are gone), then calls the loader and checks the
/// model, all on one blocking thread; a panic anywhere is `MODEL_LOAD_ERROR`, and a load
/// past `sharing.load_timeout_seconds` fails while the loader is left to finish alone.
pub(crate) async fn run_loader(
    inner: &Inner,
    spec: &ModelSpec,
    plan: &LoadPlan,
    evicted: Vec<Arc<Instance>>,
) -> Result<Arc<dyn Model>> {
    let (loader, s, device) = (plan.loader.clone(), spec.clone(), plan.device.clone());
    let panicked = || {
        format!(
            "the `{}` loader panicked while loading model `{}`",
            plan.loader.backend(),
            spec.id
        )
    };
    let work = off_runtime(ErrorCode::ModelLoadError, panicked, move || {
        evicted.into_iter().for_each(Instance::release);
        let model = loader.load(&s, &device).map_err(|e| e.for_model(&s.id))?;
        check_dimension(&s, model.as_ref())?;
        Ok(model)
    });
    let joined = match inner.settings.sharing.load_timeout {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| {
            ModelError::new(
                ErrorCode::ModelLoadError,
                format!(
                    "loading model `{}` took longer than {limit:?} (sharing.load_timeout_seconds)",
                    spec.id
                ),
            )
            .for_model(&spec.id)
        })?,
    };
    joined.map_err(|e| e.for_model(&spec.id))?
}

fn check_dimension(spec: &ModelSpec, model: &dyn Model) -> Result<()> {
    let (Some(want), Some(embedder)) = (spec.dimension, model.as_embedder()) else {
        return Ok(());
    };
    let got = embedder.dimension();
    if got == want {
        return Ok(());
    }
    let key = format!("models.{}.dimension", spec.id);
    Err(ModelError::config(
        &key,
        format!(
            "settings say `{key}` = {want}, but the model produces {got}-dimensional embeddings"
        ),
    )
    .for_model(&spec.id)
    .with("expected", want)
    .with("found", got))
}

/// Runs a shared load on its own task, so a caller that gives up does not cancel it.
pub(crate) fn spawn_load(
    inner: Arc<Inner>,
    spec: ModelSpec,
    plan: LoadPlan,
    load_id: u64,
    tx: watch::Sender<Option<LoadOutcome>>,
    evicted: Vec<Arc<Instance>>,
) {
    tokio::spawn(async move {
        let mut guard = LoadGuard {
            inner: inner.clone(),
            model_id: spec.id.clone(),
            load_id,
            tx: Some(tx),
        };
        let started = Instant::now();
        let loaded = run_loader(&inner, &spec, &plan, evicted).await;
        let outcome =
            loaded.map(|m| Instance::new(m, &spec, plan.fingerprint, stats(&inner, &spec.id)));
        let discarded = guard.finish(outcome, started.elapsed(), &plan);
        release_instances(discarded.into_iter().collect()).await;
    });
}

fn stats(inner: &Inner, model_id: &str) -> Arc<crate::engine::EngineStats> {
    inner.state.lock().slots[model_id].engine_stats.clone()
}

/// Hands a load's outcome to its slot; if the load task ends without doing so (a panic,
/// the runtime shutting down), resets the slot and tells the waiters.
struct LoadGuard {
    inner: Arc<Inner>,
    model_id: String,
    load_id: u64,
    tx: Option<watch::Sender<Option<LoadOutcome>>>,
}

impl LoadGuard {
    /// Installs the outcome unless shutdown began or this load was abandoned; returns an
    /// instance that was not installed, to release.
    fn finish(
        &mut self,
        outcome: LoadOutcome,
        elapsed: std::time::Duration,
        plan: &LoadPlan,
    ) -> Option<Arc<Instance>> {
        let id = self.model_id.as_str();
        // What the loaded model says it holds (a plugin's `memory_bytes`) replaces the
        // loader's guess in the memory budget; asked before the manager's lock is taken,
        // since it runs model (plugin) code.
        let reported_bytes = outcome
            .as_ref()
            .ok()
            .and_then(|instance| instance.model.info().bytes);
        let prompts = outcome.as_ref().ok().and_then(|instance| {
            let embedder = instance.model.as_embedder()?;
            Some((instance.fingerprint, Arc::new(embedder.prompts())))
        });
        let mut state = self.inner.state.lock();
        let slot = state.slots.get_mut(id).expect("slot exists");
        if slot.load_id != self.load_id {
            // Timed out earlier; the slot has moved on.
            self.tx = None;
            return outcome.ok();
        }
        slot.last_load_duration = Some(elapsed);
        let (outcome, unused) = match outcome {
            Ok(instance) if self.inner.is_shutting_down() => {
                (Err(shutting_down_error()), Some(instance))
            }
            other => (other, None),
        };
        match &outcome {
            Ok(instance) => {
                if let Some(bytes) = reported_bytes {
                    slot.estimated_bytes = Some(bytes);
                }
                slot.phase = Phase::Loaded(instance.clone());
                slot.prompts = prompts;
                slot.learn_bounds(instance);
                slot.load_count += 1;
                slot.loaded_at = Some(SystemTime::now());
                slot.last_error = None;
                slot.touch();
            }
            Err(e) => {
                slot.phase = Phase::Unloaded;
                slot.last_error = Some(e.clone());
            }
        }
        drop(state);
        match &outcome {
            Ok(_) if self.inner.log_usage() => {
                tracing::info!(model_id = id, backend = plan.loader.backend(), device = %plan.device.device, ?elapsed, "model loaded")
            }
            Err(e) => {
                tracing::warn!(target: super::LOAD_FAILURE_LOG_TARGET, model_id = id, "model load failed: {e}")
            }
            _ => {}
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(outcome));
        }
        self.inner.bump();
        unused
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        let error = ModelError::new(
            ErrorCode::ModelLoadError,
            format!(
                "the load of model `{}` stopped without a result",
                self.model_id
            ),
        )
        .for_model(&self.model_id);
        {
            let mut state = self.inner.state.lock();
            if let Some(slot) = state.slots.get_mut(&self.model_id) {
                if slot.load_id == self.load_id && matches!(slot.phase, Phase::Loading(_)) {
                    slot.phase = Phase::Unloaded;
                    slot.last_error = Some(error.clone());
                }
            }
        }
        let _ = tx.send(Some(Err(error)));
        self.inner.bump();
    }
}
