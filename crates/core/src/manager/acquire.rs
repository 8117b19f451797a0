//! Getting a handle: the fast path, single-flight loads, room and capacity waits.

use super::handle::ModelHandle;
use super::instance::Instance;
use super::slot::{Limits, LoadOutcome, NoRoom, Phase};
use super::Inner;
use crate::device::{choose_device, cuda_device_count, DeviceChoice};
use crate::error::{ErrorCode, ModelError, Result};
use crate::fingerprint::model_fingerprint;
use crate::loader::ModelLoader;
use crate::model::Model;
use crate::spec::ModelSpec;
use std::sync::Arc;
use std::time::{Instant as StdInstant, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Everything a load needs, worked out before taking the lock.
pub(crate) struct LoadPlan {
    pub loader: Arc<dyn ModelLoader>,
    pub device: DeviceChoice,
    pub estimated_bytes: Option<u64>,
    pub fingerprint: u64,
}

impl Inner {
    pub(crate) fn plan(&self, spec: &ModelSpec) -> Result<LoadPlan> {
        let loader = self.registry.resolve(spec)?;
        let device = choose_device(
            &spec.id,
            spec.device,
            self.settings.device_policy(),
            cuda_device_count().0,
        )?;
        Ok(LoadPlan {
            estimated_bytes: loader.estimate_bytes(spec),
            fingerprint: model_fingerprint(spec),
            loader,
            device,
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            max_models: self.settings.sharing.max_shared_models,
            max_bytes: self.settings.memory_max_bytes,
            reference_counting: self.settings.sharing.reference_counting,
        }
    }
}

/// What one look at the slot decided.
enum Step {
    Wait(watch::Receiver<Option<LoadOutcome>>),
    NeedPlan,
}

/// A handle on `model_id`, loading it if needed.
pub(crate) async fn acquire(inner: &Arc<Inner>, model_id: &str) -> Result<ModelHandle> {
    let spec = inner.spec(model_id)?;
    if !spec.shared || !inner.settings.sharing.enabled {
        return acquire_exclusive(inner, spec).await;
    }
    let mut room_deadline: Option<Instant> = None;
    loop {
        let step = {
            let mut state = inner.state.lock();
            let slot = state
                .slots
                .get_mut(model_id)
                .expect("every configured model has a slot");
            match &slot.phase {
                Phase::Loaded(instance) => {
                    let instance = instance.clone();
                    slot.refs += 1;
                    slot.touch();
                    drop(state);
                    if inner.log_usage() {
                        tracing::debug!(model_id, "model reference taken");
                    }
                    return Ok(ModelHandle::shared(inner.clone(), model_id, instance));
                }
                Phase::Loading(rx) => Step::Wait(rx.clone()),
                Phase::Unloaded => Step::NeedPlan,
            }
        };
        let rx = match step {
            Step::Wait(rx) => rx,
            Step::NeedPlan => {
                inner.check_accepting()?;
                let plan = inner.plan(spec)?;
                match start_load(inner, spec, plan, &mut room_deadline).await? {
                    Some(rx) => rx,
                    None => continue,
                }
            }
        };
        wait_for_load(rx).await?;
    }
}

/// Starts a load unless another caller did first. `None` means "look at the slot again".
async fn start_load(
    inner: &Arc<Inner>,
    spec: &ModelSpec,
    plan: LoadPlan,
    room_deadline: &mut Option<Instant>,
) -> Result<Option<watch::Receiver<Option<LoadOutcome>>>> {
    let notified = inner.room_freed.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let in_use = {
        let mut state = inner.state.lock();
        match &state.slots[&spec.id].phase {
            Phase::Unloaded => {}
            Phase::Loading(rx) => return Ok(Some(rx.clone())),
            Phase::Loaded(_) => return Ok(None),
        }
        let needed = plan.estimated_bytes.unwrap_or(0);
        match state.make_room(&spec.id, needed, inner.limits()) {
            Ok(evicted) => {
                let (tx, rx) = watch::channel(None);
                state
                    .slots
                    .get_mut(&spec.id)
                    .expect("slot exists")
                    .begin_load(rx.clone(), &plan);
                drop(state);
                spawn_load(inner.clone(), spec.clone(), plan, tx);
                log_evictions(inner, &spec.id, evicted);
                return Ok(Some(rx));
            }
            Err(NoRoom::Never { needed, budget }) => {
                return Err(capacity_error(&spec.id, format!(
                    "model `{}` needs an estimated {needed} bytes, more than the whole memory budget (memory.max_bytes = {budget})",
                    spec.id
                )));
            }
            Err(NoRoom::Busy) => state.in_use_summary(),
        }
    };
    let deadline =
        *room_deadline.get_or_insert_with(|| Instant::now() + inner.settings.sharing.capacity_wait);
    if tokio::time::timeout_at(deadline, notified).await.is_err() {
        return Err(capacity_error(
            &spec.id,
            format!(
                "no room to load model `{}`: every loaded model is in use ({}); waited {:?} (sharing.capacity_wait_seconds)",
                spec.id,
                in_use.join(", "),
                inner.settings.sharing.capacity_wait
            ),
        )
        .with("in_use", in_use));
    }
    Ok(None)
}

impl super::slot::Slot {
    /// Marks the slot as loading per `plan`; waiters watch `rx`.
    fn begin_load(&mut self, rx: watch::Receiver<Option<LoadOutcome>>, plan: &LoadPlan) {
        self.phase = Phase::Loading(rx);
        self.estimated_bytes = plan.estimated_bytes;
        self.device = Some(plan.device.clone());
        self.backend = Some(plan.loader.backend().to_owned());
        self.fingerprint = Some(plan.fingerprint);
    }
}

impl super::slot::State {
    /// `id (n refs[, pinned])` for every model holding room, for capacity errors.
    fn in_use_summary(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| s.occupies_room())
            .map(|(id, s)| {
                format!(
                    "{id} ({} refs{})",
                    s.refs,
                    if s.pinned { ", pinned" } else { "" }
                )
            })
            .collect()
    }
}

fn capacity_error(model_id: &str, message: String) -> ModelError {
    ModelError::new(ErrorCode::CapacityExhausted, message).for_model(model_id)
}

fn log_evictions(inner: &Inner, for_id: &str, evicted: super::slot::Unloaded) {
    for (id, model) in evicted {
        if inner.log_usage() {
            tracing::info!(model_id = %id, to_make_room_for = for_id, "model evicted (least recently used)");
        }
        drop(model);
    }
}

/// Waits for a load to finish; the loader's error reaches every waiter.
async fn wait_for_load(mut rx: watch::Receiver<Option<LoadOutcome>>) -> Result<()> {
    let outcome = match rx.wait_for(|o| o.is_some()).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    };
    match outcome {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e),
        None => Err(ModelError::new(
            ErrorCode::ModelLoadError,
            "the load task ended without a result",
        )),
    }
}

/// Runs the load on its own task, so a caller that gives up does not cancel it.
fn spawn_load(
    inner: Arc<Inner>,
    spec: ModelSpec,
    plan: LoadPlan,
    tx: watch::Sender<Option<LoadOutcome>>,
) {
    tokio::spawn(async move {
        let started = StdInstant::now();
        let loaded = run_loader(&spec, &plan).await;
        let elapsed = started.elapsed();
        let outcome = {
            let mut state = inner.state.lock();
            let slot = state.slots.get_mut(&spec.id).expect("slot exists");
            slot.last_load_duration = Some(elapsed);
            let outcome = loaded
                .map(|m| Instance::new(m, &spec, plan.fingerprint, slot.engine_stats.clone()));
            match &outcome {
                Ok(instance) => {
                    slot.phase = Phase::Loaded(instance.clone());
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
            outcome
        };
        match &outcome {
            Ok(_) if inner.log_usage() => {
                tracing::info!(model_id = %spec.id, backend = plan.loader.backend(), device = %plan.device.device, ?elapsed, "model loaded")
            }
            Err(e) => tracing::warn!(model_id = %spec.id, "model load failed: {e}"),
            _ => {}
        }
        let _ = tx.send(Some(outcome));
        inner.room_freed.notify_waiters();
        inner.idle_changed.notify_waiters();
    });
}

/// Calls the blocking loader on a blocking thread, turning a panic into `MODEL_LOAD_ERROR`
/// and checking the configured dimension.
pub(crate) async fn run_loader(spec: &ModelSpec, plan: &LoadPlan) -> Result<Arc<dyn Model>> {
    let (loader, s, device) = (plan.loader.clone(), spec.clone(), plan.device.clone());
    let joined = tokio::task::spawn_blocking(move || loader.load(&s, &device)).await;
    let model = match joined {
        Ok(result) => result.map_err(|e| e.for_model(&spec.id))?,
        Err(join_error) => {
            return Err(ModelError::new(
                ErrorCode::ModelLoadError,
                format!(
                    "the `{}` loader panicked while loading model `{}`",
                    plan.loader.backend(),
                    spec.id
                ),
            )
            .for_model(&spec.id)
            .caused_by("Panic", join_error))
        }
    };
    check_dimension(spec, model.as_ref())?;
    Ok(model)
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

/// A private instance for a `shared = false` model (or with sharing disabled).
async fn acquire_exclusive(inner: &Arc<Inner>, spec: &ModelSpec) -> Result<ModelHandle> {
    inner.check_accepting()?;
    let plan = inner.plan(spec)?;
    let started = StdInstant::now();
    let outcome = run_loader(spec, &plan).await;
    let mut state = inner.state.lock();
    let slot = state.slots.get_mut(&spec.id).expect("slot exists");
    slot.last_load_duration = Some(started.elapsed());
    slot.backend = Some(plan.loader.backend().to_owned());
    slot.device = Some(plan.device.clone());
    slot.estimated_bytes = plan.estimated_bytes;
    slot.fingerprint = Some(plan.fingerprint);
    match outcome {
        Ok(model) => {
            slot.exclusive_instances += 1;
            slot.load_count += 1;
            slot.loaded_at = Some(SystemTime::now());
            slot.last_error = None;
            slot.touch();
            let instance = Instance::new(model, spec, plan.fingerprint, slot.engine_stats.clone());
            drop(state);
            Ok(ModelHandle::exclusive(inner.clone(), &spec.id, instance))
        }
        Err(e) => {
            slot.last_error = Some(e.clone());
            Err(e)
        }
    }
}
