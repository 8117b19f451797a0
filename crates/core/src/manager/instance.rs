//! A loaded instance of a model together with its embedding engine.

use crate::cache::bounds::EntryBounds;
use crate::engine::{Engine, EngineConfig, EngineStats};
use crate::error::Result;
use crate::model::Model;
use crate::spec::ModelSpec;
use std::sync::{Arc, OnceLock};

/// One loaded instance: the model, and the engine that runs its embeddings (started on the
/// first embedding call, stopped when the instance is dropped).
pub(crate) struct Instance {
    pub model: Arc<dyn Model>,
    /// Fingerprint of the files and settings this instance was loaded from: its cache
    /// namespace.
    pub fingerprint: u64,
    /// What its cached embeddings must be (`None`: it does not embed).
    pub bounds: Option<EntryBounds>,
    model_id: String,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    engine: OnceLock<Engine>,
}

impl Instance {
    pub fn new(
        model: Arc<dyn Model>,
        spec: &ModelSpec,
        fingerprint: u64,
        stats: Arc<EngineStats>,
    ) -> Arc<Self> {
        Arc::new(Self {
            bounds: EntryBounds::of_model(model.as_ref()),
            model,
            fingerprint,
            model_id: spec.id.clone(),
            config: EngineConfig::of(spec),
            stats,
            engine: OnceLock::new(),
        })
    }

    /// Drops this reference; when it was the last, stops the engine and drops the model
    /// here, before returning. Blocking.
    pub fn release(self: Arc<Self>) {
        if let Ok(instance) = Arc::try_unwrap(self) {
            if let Some(engine) = instance.engine.into_inner() {
                engine.stop();
            }
            drop(instance.model);
        }
    }

    /// The instance's engine, started on first use.
    pub fn engine(&self) -> Result<&Engine> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        let started = Engine::start(
            self.model.clone(),
            &self.model_id,
            self.config,
            self.stats.clone(),
        )?;
        // A racing caller may have set it first; ours then stops at once.
        let _ = self.engine.set(started);
        Ok(self.engine.get().expect("set above"))
    }
}
