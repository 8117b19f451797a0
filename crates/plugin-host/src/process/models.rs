//! A child-hosted plugin's types as [`ModelLoader`]s and its models as [`Model`]s: the same
//! behaviour as in-process plugin models, with each call sent to the child.

use super::supervisor::ChildPlugin;
use crate::loader::{leak_keys, load_config, probe_local_path};
use model_manager_core::{
    Device, DeviceChoice, Infer, Model, ModelInfo, ModelLoader, ModelSpec, NamedValues, Probe,
    Result,
};
use model_manager_plugin::LoadConfig;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Ids of child-hosted models, unique for this process's lifetime.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// Loads models of one type of a child-hosted plugin.
pub struct ProcessLoader {
    child: Arc<ChildPlugin>,
    model_type: String,
    option_keys: Vec<&'static str>,
}

impl ProcessLoader {
    /// Loaders for every type `child`'s plugin declares.
    pub fn for_types(child: &Arc<ChildPlugin>) -> Vec<Arc<dyn ModelLoader>> {
        child
            .types
            .iter()
            .map(|t| {
                Arc::new(Self {
                    child: child.clone(),
                    model_type: t.model_type.clone(),
                    option_keys: leak_keys(&t.option_keys),
                }) as Arc<dyn ModelLoader>
            })
            .collect()
    }
}

impl ModelLoader for ProcessLoader {
    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn backend(&self) -> &str {
        &self.child.record.name
    }

    fn probe(&self, spec: &ModelSpec) -> Probe {
        probe_local_path(spec)
    }

    fn option_keys(&self) -> &[&str] {
        &self.option_keys
    }

    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        let config = load_config(spec, device);
        let id = NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed);
        let memory_bytes = self.child.load(id, &config)?;
        Ok(Arc::new(ProcessModel {
            child: self.child.clone(),
            id,
            config,
            memory_bytes,
            device: device.device,
        }))
    }
}

/// A model loaded in a plugin child; loaded again in a new child after a restart.
pub struct ProcessModel {
    child: Arc<ChildPlugin>,
    id: u64,
    config: LoadConfig,
    memory_bytes: u64,
    device: Device,
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
