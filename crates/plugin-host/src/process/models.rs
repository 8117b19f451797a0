//! A child-hosted plugin's types as [`ModelLoader`]s and its models as [`Model`]s: the same
//! behaviour as in-process plugin models, with each call sent to the child.

use super::protocol::{from_wire, to_wire, Reply, Request};
use super::supervisor::ChildPlugin;
use crate::loader::{leak_keys, load_config, probe_local_path};
use model_manager_core::{
    Device, DeviceChoice, ErrorCode, Infer, Model, ModelError, ModelInfo, ModelLoader, ModelSpec,
    NamedValues, Probe, Result,
};
use model_manager_plugin::LoadConfig;
use parking_lot::Mutex;
use std::any::Any;
use std::sync::Arc;

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

/// `code` unless the reply carries the child's own error.
fn unexpected(reply: Reply, code: ErrorCode) -> ModelError {
    match reply {
        Reply::Failed { error } => error.into(),
        other => ModelError::new(code, format!("the plugin child answered {other:?}")),
    }
}

/// Loads `config` in the current child: its handle, generation and reported memory.
fn load_in_child(child: &ChildPlugin, config: &LoadConfig) -> Result<(u64, u64, u64)> {
    let request = Request::Load {
        config: config.clone(),
    };
    match child.call(&request, ErrorCode::ModelLoadError)? {
        (
            Reply::Loaded {
                model,
                memory_bytes,
            },
            generation,
        ) => Ok((model, generation, memory_bytes)),
        (reply, _) => Err(unexpected(reply, ErrorCode::ModelLoadError).for_model(&config.model_id)),
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
        let (handle, generation, memory_bytes) = load_in_child(&self.child, &config)?;
        Ok(Arc::new(ProcessModel {
            child: self.child.clone(),
            config,
            handle: Mutex::new((handle, generation)),
            memory_bytes,
            device: device.device,
        }))
    }
}

/// A model loaded in a plugin child; loaded again in a new child after a restart.
pub struct ProcessModel {
    child: Arc<ChildPlugin>,
    config: LoadConfig,
    /// The child's handle and the generation of the child that holds it.
    handle: Mutex<(u64, u64)>,
    memory_bytes: u64,
    device: Device,
}

impl ProcessModel {
    /// The handle in the current child, loading the model there first when the child that
    /// held it is gone.
    fn current_handle(&self) -> Result<u64> {
        let mut handle = self.handle.lock();
        if handle.1 != self.child.generation() {
            let (model, generation, _) =
                load_in_child(&self.child, &self.config).map_err(|e| ModelError {
                    code: ErrorCode::InferenceError,
                    ..e
                })?;
            *handle = (model, generation);
        }
        Ok(handle.0)
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
        let model = self.current_handle()?;
        let request = Request::Infer {
            model,
            inputs: to_wire(inputs),
        };
        match self.child.call(&request, ErrorCode::InferenceError)? {
            (Reply::Outputs { outputs }, _) => Ok(from_wire(outputs)),
            (reply, _) => Err(unexpected(reply, ErrorCode::InferenceError)),
        }
    }
}

impl Drop for ProcessModel {
    fn drop(&mut self) {
        let (model, generation) = *self.handle.get_mut();
        if generation == self.child.generation() {
            // Best effort: a child that is gone holds nothing any more.
            let _ = self
                .child
                .call(&Request::Unload { model }, ErrorCode::InferenceError);
        }
    }
}
