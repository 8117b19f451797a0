//! Getting a handle: the fast path, single-flight loads, room and capacity waits.

use super::handle::ModelHandle;
use super::instance::Instance;
use super::load::{plan, run_loader, spawn_load, LoadPlan};
use super::slot::{Limits, LoadOutcome, NoRoom, Phase, Slot};
use super::{release_instances, shutting_down_error, Inner};
use crate::error::{ErrorCode, ModelError, Result};
use crate::spec::ModelSpec;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant as StdInstant, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

impl Inner {
    fn limits(&self) -> Limits {
        Limits {
            max_models: self.settings.sharing.max_shared_models,
            max_bytes: self.settings.memory_max_bytes,
            reference_counting: self.settings.sharing.reference_counting,
        }
    }
}

/// A caller's place among a slot's waiters: counted from the moment it waits for a load
/// until it takes its reference or gives up, so the loaded model stays for it.
struct Waiter<'a> {
    inner: &'a Inner,
    model_id: &'a str,
    counted: bool,
}

impl Waiter<'_> {
    fn count(&mut self, slot: &mut Slot) {
        if !self.counted {
            slot.waiters += 1;
            self.counted = true;
        }
    }

    fn uncount(&mut self, slot: &mut Slot) {
        if self.counted {
            slot.waiters -= 1;
            self.counted = false;
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.counted {
            if let Some(slot) = self.inner.state.lock().slots.get_mut(self.model_id) {
                slot.waiters -= 1;
            }
            self.inner.bump();
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
    if let Some(fault) = inner.model_faults.lock().get(model_id) {
        return Err(fault.clone());
    }
    if !spec.shared || !inner.settings.sharing.enabled {
        return acquire_exclusive(inner, spec).await;
    }
    let mut waiter = Waiter {
        inner,
        model_id,
        counted: false,
    };
    let mut room_deadline: Option<Instant> = None;
    loop {
        inner.check_accepting()?;
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
                    waiter.uncount(slot);
                    slot.touch();
                    drop(state);
                    if inner.log_usage() {
                        tracing::debug!(model_id, "model reference taken");
                    }
                    return Ok(ModelHandle::shared(inner.clone(), model_id, instance));
                }
                Phase::Loading(rx) => {
                    let rx = rx.clone();
                    waiter.count(slot);
                    Step::Wait(rx)
                }
                Phase::Unloaded => Step::NeedPlan,
            }
        };
        match step {
            Step::Wait(rx) => wait_for_load(rx).await?,
            Step::NeedPlan => {
                let plan = plan(inner, spec).await?;
                start_load(inner, spec, plan, &mut waiter, &mut room_deadline).await?;
            }
        }
    }
}

/// Starts a load unless another caller did first, evicting idle models to make room, or
/// waits for room. Returning means "look at the slot again".
async fn start_load(
    inner: &Arc<Inner>,
    spec: &ModelSpec,
    plan: LoadPlan,
    waiter: &mut Waiter<'_>,
    room_deadline: &mut Option<Instant>,
) -> Result<()> {
    let mut changed = inner.changed.subscribe();
    let in_use = {
        let mut state = inner.state.lock();
        if !matches!(state.slots[&spec.id].phase, Phase::Unloaded) {
            return Ok(());
        }
        let needed = plan.estimated_bytes.unwrap_or(0);
        match state.make_room(&spec.id, needed, inner.limits()) {
            Ok(evicted) => {
                let (tx, rx) = watch::channel(None);
                let slot = state.slots.get_mut(&spec.id).expect("slot exists");
                slot.load_id += 1;
                let load_id = slot.load_id;
                slot.begin_load(rx, &plan);
                waiter.count(slot);
                drop(state);
                log_evictions(inner, &spec.id, &evicted);
                let evicted = evicted.into_iter().map(|(_, instance)| instance).collect();
                spawn_load(inner.clone(), spec.clone(), plan, load_id, tx, evicted);
                return Ok(());
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
    let wait = inner.settings.sharing.capacity_wait;
    let deadline = *room_deadline.get_or_insert_with(|| Instant::now() + wait);
    let woken = {
        let _counted = CapacityWaiter::new(inner);
        tokio::time::timeout_at(deadline, changed.changed()).await
    };
    if woken.is_err() {
        return Err(capacity_error(
            &spec.id,
            format!(
                "no room to load model `{}`: every loaded model is in use ({}); waited {wait:?} (sharing.capacity_wait_seconds)",
                spec.id,
                in_use.join(", "),
            ),
        )
        .with("in_use", in_use));
    }
    Ok(())
}

/// Counts a caller waiting for room, for status, however its wait ends.
struct CapacityWaiter<'a>(&'a Inner);

impl<'a> CapacityWaiter<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.capacity_waiters.fetch_add(1, Ordering::Relaxed);
        Self(inner)
    }
}

impl Drop for CapacityWaiter<'_> {
    fn drop(&mut self) {
        self.0.capacity_waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slot {
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

fn log_evictions(inner: &Inner, for_id: &str, evicted: &super::slot::Unloaded) {
    if inner.log_usage() {
        for (id, _) in evicted {
            tracing::info!(model_id = %id, to_make_room_for = for_id, "model evicted (least recently used)");
        }
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

/// Counts a private load in progress, so shutdown waits for it.
struct PrivateLoad<'a> {
    inner: &'a Inner,
    model_id: &'a str,
}

impl Drop for PrivateLoad<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.inner.state.lock().slots.get_mut(self.model_id) {
            slot.private_loads -= 1;
        }
        self.inner.bump();
    }
}

/// A private instance for a `shared = false` model (or with sharing disabled).
async fn acquire_exclusive(inner: &Arc<Inner>, spec: &ModelSpec) -> Result<ModelHandle> {
    inner.check_accepting()?;
    let plan = plan(inner, spec).await?;
    {
        let mut state = inner.state.lock();
        inner.check_accepting()?;
        let slot = state.slots.get_mut(&spec.id).expect("slot exists");
        slot.private_loads += 1;
        slot.backend = Some(plan.loader.backend().to_owned());
        slot.device = Some(plan.device.clone());
        slot.estimated_bytes = plan.estimated_bytes;
        slot.fingerprint = Some(plan.fingerprint);
    }
    let counted = PrivateLoad {
        inner,
        model_id: &spec.id,
    };
    let started = StdInstant::now();
    let outcome = run_loader(inner, spec, &plan, Vec::new()).await;
    let installed = install_private(inner, spec, &plan, outcome, started.elapsed());
    drop(counted);
    let instance = match installed {
        Ok(instance) => instance,
        Err((error, unused)) => {
            release_instances(unused.into_iter().collect()).await;
            return Err(error);
        }
    };
    Ok(ModelHandle::exclusive(inner.clone(), &spec.id, instance))
}

type Refused = (ModelError, Option<Arc<Instance>>);

/// Records a private load's outcome; after shutdown began the instance is refused (and
/// returned to be released).
fn install_private(
    inner: &Inner,
    spec: &ModelSpec,
    plan: &LoadPlan,
    outcome: Result<Arc<dyn crate::model::Model>>,
    elapsed: std::time::Duration,
) -> std::result::Result<Arc<Instance>, Refused> {
    let mut state = inner.state.lock();
    let slot = state.slots.get_mut(&spec.id).expect("slot exists");
    slot.last_load_duration = Some(elapsed);
    let model = outcome.map_err(|e| {
        slot.last_error = Some(e.clone());
        (e, None)
    })?;
    let instance = Instance::new(model, spec, plan.fingerprint, slot.engine_stats.clone());
    if inner.is_shutting_down() {
        return Err((shutting_down_error(), Some(instance)));
    }
    slot.exclusive_instances += 1;
    slot.learn_bounds(&instance);
    slot.load_count += 1;
    slot.loaded_at = Some(SystemTime::now());
    slot.last_error = None;
    slot.touch();
    Ok(instance)
}
