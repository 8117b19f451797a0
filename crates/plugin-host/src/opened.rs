//! A plugin's declared types as [`ModelLoader`]s, wherever the plugin runs: in this process
//! or in its child process.

use crate::library::LoadedPlugin;
use crate::loader::PluginModel;
use crate::process::{ChildPlugin, ProcessModel};
use model_manager_core::backend::{ModelLoader, Probe};
use model_manager_core::{Device, DeviceChoice, ErrorCode, Model, ModelSpec, PluginRecord, Result};
use model_manager_plugin::LoadConfig;
use std::sync::Arc;

/// A plugin library, opened in this process or hosted by a child process.
#[derive(Clone)]
pub enum Opened {
    /// Called directly.
    InProcess(Arc<LoadedPlugin>),
    /// Called through its child process.
    Child(Arc<ChildPlugin>),
}

impl Opened {
    /// What the library is, for status and listings.
    pub fn record(&self) -> &PluginRecord {
        match self {
            Opened::InProcess(p) => &p.record,
            Opened::Child(c) => &c.record,
        }
    }

    /// Its types with the option keys each reads.
    fn types(&self) -> Vec<(String, Vec<String>)> {
        match self {
            Opened::InProcess(p) => p
                .types
                .iter()
                .map(|t| (t.model_type.clone(), t.option_keys.clone()))
                .collect(),
            Opened::Child(c) => c
                .types
                .iter()
                .map(|t| (t.model_type.clone(), t.option_keys.clone()))
                .collect(),
        }
    }

    /// The names of its types.
    pub fn type_names(&self) -> Vec<String> {
        self.types().into_iter().map(|(name, _)| name).collect()
    }

    /// A loader for each of its types.
    pub fn loaders(&self) -> Vec<Arc<dyn ModelLoader>> {
        self.types()
            .into_iter()
            .map(|(model_type, keys)| {
                Arc::new(PluginLoader {
                    plugin: self.clone(),
                    model_type,
                    option_keys: leak_keys(&keys),
                }) as Arc<dyn ModelLoader>
            })
            .collect()
    }
}

/// Loads models of one type a plugin declares, wherever the plugin runs.
pub struct PluginLoader {
    plugin: Opened,
    model_type: String,
    option_keys: Vec<&'static str>,
}

/// What the plugin is told about a model to load.
fn load_config(spec: &ModelSpec, device: &DeviceChoice) -> LoadConfig {
    LoadConfig {
        model_id: spec.id.clone(),
        model_type: spec.model_type.clone(),
        local_path: spec.local_path.clone(),
        device: match device.device {
            Device::Cpu => "cpu".into(),
            Device::Cuda(n) => format!("cuda:{n}"),
        },
        options: spec.options.clone(),
    }
}

/// The probe of plugin types: the model's folder, when it names one, exists.
fn probe_local_path(spec: &ModelSpec) -> Probe {
    match &spec.local_path {
        Some(path) if !path.exists() => Probe::reject(
            ErrorCode::ModelNotFound,
            format!("{} does not exist", path.display()),
        ),
        _ => Probe::Accept,
    }
}

/// `option_keys` as `&'static str`s: leaked once per type per registry, since plugins are
/// never unloaded and `ModelLoader::option_keys` hands out `&str`s.
fn leak_keys(keys: &[String]) -> Vec<&'static str> {
    keys.iter()
        .map(|k| &*Box::leak(k.clone().into_boxed_str()))
        .collect()
}

impl ModelLoader for PluginLoader {
    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn backend(&self) -> &str {
        &self.plugin.record().name
    }

    fn probe(&self, spec: &ModelSpec) -> Probe {
        probe_local_path(spec)
    }

    fn option_keys(&self) -> &[&str] {
        &self.option_keys
    }

    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        let config = load_config(spec, device);
        Ok(match &self.plugin {
            Opened::InProcess(p) => Arc::new(PluginModel::load(p.clone(), &config, device.device)?),
            Opened::Child(c) => Arc::new(ProcessModel::load(c.clone(), config, device.device)?),
        })
    }
}
