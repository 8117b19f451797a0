//! Per-model lifecycle state and the pure decisions on it: room, eviction, idle unload.

use super::instance::Instance;
use crate::device::DeviceChoice;
use crate::engine::EngineStats;
use crate::error::ModelError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// What a finished load hands its waiters.
pub(crate) type LoadOutcome = Result<Arc<Instance>, ModelError>;

/// Models taken out of their slots, to drop outside the lock.
pub(crate) type Unloaded = Vec<(String, Arc<Instance>)>;

/// Where a shared model is in its life.
pub(crate) enum Phase {
    Unloaded,
    /// A load is running; waiters watch for its outcome.
    Loading(watch::Receiver<Option<LoadOutcome>>),
    Loaded(Arc<Instance>),
}

/// Everything the manager tracks for one configured model.
pub(crate) struct Slot {
    pub phase: Phase,
    /// Live handles on the shared instance.
    pub refs: usize,
    /// References taken with `ModelHandle::detach`, returned by `release_model`.
    pub detached: usize,
    /// Instances of a `shared = false` model now alive.
    pub exclusive_instances: usize,
    /// Callers inside `get_model` waiting for this model's load: until each has taken its
    /// reference (or given up), the loaded model is not evicted or unloaded.
    pub waiters: usize,
    /// Loads of private (`shared = false`) instances in progress.
    pub private_loads: usize,
    /// Which load is current, so a late finish of an abandoned one changes nothing.
    pub load_id: u64,
    pub pinned: bool,
    pub last_accessed: Instant,
    pub last_accessed_wall: Option<SystemTime>,
    pub loaded_at: Option<SystemTime>,
    pub load_count: u64,
    pub last_load_duration: Option<Duration>,
    pub last_error: Option<ModelError>,
    pub estimated_bytes: Option<u64>,
    pub device: Option<DeviceChoice>,
    pub backend: Option<String>,
    pub fingerprint: Option<u64>,
    /// The prompts of the last loaded instance and the fingerprint of its files.
    pub prompts: Option<(u64, Arc<crate::model::Prompts>)>,
    /// What the cached embeddings of the instance last loaded with a fingerprint must be.
    pub bounds: Option<(u64, crate::cache::bounds::EntryBounds)>,
    /// The engine's counters, kept across reloads.
    pub engine_stats: Arc<EngineStats>,
}

impl Slot {
    pub fn new(pinned: bool) -> Self {
        Self {
            phase: Phase::Unloaded,
            refs: 0,
            detached: 0,
            exclusive_instances: 0,
            waiters: 0,
            private_loads: 0,
            load_id: 0,
            pinned,
            last_accessed: Instant::now(),
            last_accessed_wall: None,
            loaded_at: None,
            load_count: 0,
            last_load_duration: None,
            last_error: None,
            estimated_bytes: None,
            device: None,
            backend: None,
            fingerprint: None,
            prompts: None,
            bounds: None,
            engine_stats: Arc::default(),
        }
    }

    /// Remembers what `instance`'s cached embeddings must be, for look-ups made before the
    /// next handle on it is taken (and after it unloads).
    pub fn learn_bounds(&mut self, instance: &Instance) {
        if let Some(bounds) = instance.bounds {
            self.bounds = Some((instance.fingerprint, bounds));
        }
    }

    /// Holds room (a loaded or loading instance).
    pub fn occupies_room(&self) -> bool {
        !matches!(self.phase, Phase::Unloaded)
    }

    pub fn is_loaded(&self) -> bool {
        matches!(self.phase, Phase::Loaded(_))
    }

    pub fn touch(&mut self) {
        self.last_accessed = Instant::now();
        self.last_accessed_wall = Some(SystemTime::now());
    }

    /// May be unloaded now: loaded, not pinned, no caller about to take it, and
    /// unreferenced (or references ignored).
    fn is_unloadable(&self, reference_counting: bool) -> bool {
        self.is_loaded()
            && !self.pinned
            && self.waiters == 0
            && (self.refs == 0 || !reference_counting)
    }

    /// Nothing runs on it and nobody is about to: references are only detached ones, no
    /// load, private instance or waiter.
    pub fn is_quiescent(&self) -> bool {
        self.refs == self.detached
            && self.exclusive_instances == 0
            && self.private_loads == 0
            && self.waiters == 0
            && !matches!(self.phase, Phase::Loading(_))
    }

    /// Takes the model out, leaving the slot unloaded. The caller drops it outside the lock.
    pub fn unload(&mut self) -> Option<Arc<Instance>> {
        match std::mem::replace(&mut self.phase, Phase::Unloaded) {
            Phase::Loaded(model) => Some(model),
            other => {
                self.phase = other;
                None
            }
        }
    }
}

/// The limits that decide whether a load fits.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub max_models: usize,
    pub max_bytes: Option<u64>,
    pub reference_counting: bool,
}

/// Why a load cannot start now.
pub(crate) enum NoRoom {
    /// Everything is in use; waiting may help.
    Busy,
    /// The model alone exceeds the memory budget; waiting cannot help.
    Never { needed: u64, budget: u64 },
}

/// All slots, behind the manager's one lock.
pub(crate) struct State {
    pub slots: HashMap<String, Slot>,
}

impl State {
    fn occupied(&self) -> (usize, u64) {
        self.slots
            .values()
            .filter(|s| s.occupies_room())
            .fold((0, 0), |(n, b), s| {
                (n + 1, b + s.estimated_bytes.unwrap_or(0))
            })
    }

    /// Evicts least recently used idle models until a model of `needed` bytes fits, and
    /// returns what was evicted (to drop outside the lock). Evicts nothing if it cannot fit.
    pub fn make_room(
        &mut self,
        for_id: &str,
        needed: u64,
        limits: Limits,
    ) -> Result<Unloaded, NoRoom> {
        if let Some(budget) = limits.max_bytes.filter(|b| needed > *b) {
            return Err(NoRoom::Never { needed, budget });
        }
        let fits = |count: usize, bytes: u64| {
            count < limits.max_models && limits.max_bytes.is_none_or(|b| bytes + needed <= b)
        };
        let (mut count, mut bytes) = self.occupied();
        let mut victims: Vec<(&String, &Slot)> = self
            .slots
            .iter()
            .filter(|(id, s)| id.as_str() != for_id && s.is_unloadable(limits.reference_counting))
            .collect();
        victims.sort_by_key(|(_, s)| s.last_accessed);
        let mut chosen = Vec::new();
        for (id, slot) in victims {
            if fits(count, bytes) {
                break;
            }
            count -= 1;
            bytes -= slot.estimated_bytes.unwrap_or(0);
            chosen.push(id.clone());
        }
        if !fits(count, bytes) {
            return Err(NoRoom::Busy);
        }
        Ok(chosen
            .into_iter()
            .filter_map(|id| {
                let model = self.slots.get_mut(&id)?.unload()?;
                Some((id, model))
            })
            .collect())
    }

    /// Unloads every model idle for `unload_after`; returns them and the next deadline.
    pub fn unload_idle(
        &mut self,
        now: Instant,
        unload_after: Duration,
        reference_counting: bool,
    ) -> (Unloaded, Option<Instant>) {
        let mut unloaded = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, slot) in &mut self.slots {
            if !slot.is_unloadable(reference_counting) {
                continue;
            }
            let deadline = slot.last_accessed + unload_after;
            if deadline <= now {
                if let Some(model) = slot.unload() {
                    unloaded.push((id.clone(), model));
                }
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        (unloaded, next)
    }
}
