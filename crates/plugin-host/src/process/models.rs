//! A model of a child-hosted plugin: the same behaviour as an in-process plugin model, with
//! each call sent to the child.

use super::supervisor::ChildPlugin;
use model_manager_core::{Device, Infer, Model, ModelInfo, NamedValues, Result};
use model_manager_plugin::LoadConfig;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Ids of child-hosted models, unique for this process's lifetime.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A model loaded in a plugin child; loaded again in a new child after a restart.
pub struct ProcessModel {
    child: Arc<ChildPlugin>,
    id: u64,
    config: LoadConfig,
    memory_bytes: u64,
    device: Device,
}

impl ProcessModel {
    /// Loads a model in `child`'s process.
    pub fn load(child: Arc<ChildPlugin>, config: LoadConfig, device: Device) -> Result<Self> {
        let id = NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed);
        let memory_bytes = child.load(id, &config)?;
        Ok(Self {
            child,
            id,
            config,
            memory_bytes,
            device,
        })
    }
}

impl Model for ProcessModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: self.config.model_type.clone(),
            backend: self.child.record.name.clone(),
            device: self.device,
            dimension: None,
            bytes: Some(self.memory_bytes).filter(|b| *b > 0),
        }
    }

    fn as_infer(&self) -> Option<&dyn Infer> {
        Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Infer for ProcessModel {
    fn infer(&self, inputs: &NamedValues) -> Result<NamedValues> {
        self.child.infer(self.id, &self.config, inputs)
    }
}

impl Drop for ProcessModel {
    fn drop(&mut self) {
        self.child.release(self.id);
    }
}
