//! A plugin's declared type as a [`ModelLoader`], and its loaded models as [`Model`]s.

use crate::library::LoadedPlugin;
use abi_stable::std_types::RStr;
use model_manager_core::{
    Device, DeviceChoice, ErrorCode, Infer, Model, ModelError, ModelInfo, ModelLoader, ModelSpec,
    NamedValues, Probe, Result,
};
use model_manager_plugin::abi::{AbiError, AbiModelBox};
use model_manager_plugin::{values_from_abi, values_to_abi, LoadConfig, TypeDeclaration};
use std::any::Any;
use std::sync::Arc;

/// Loads models of one type a plugin declares.
pub struct PluginLoader {
    plugin: Arc<LoadedPlugin>,
    model_type: String,
    option_keys: Vec<&'static str>,
}

impl PluginLoader {
    /// The loader for `decl` of `plugin`.
    pub fn new(plugin: Arc<LoadedPlugin>, decl: &TypeDeclaration) -> Self {
        Self {
            plugin,
            model_type: decl.model_type.clone(),
            option_keys: leak_keys(&decl.option_keys),
        }
    }
}

/// What the plugin is told about a model to load.
pub fn load_config(spec: &ModelSpec, device: &DeviceChoice) -> LoadConfig {
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
pub fn probe_local_path(spec: &ModelSpec) -> Probe {
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
pub fn leak_keys(keys: &[String]) -> Vec<&'static str> {
    keys.iter()
        .map(|k| &*Box::leak(k.clone().into_boxed_str()))
        .collect()
}

/// The plugin's error with our code: the plugin's code if it is one of ours, else
/// `fallback`.
fn plugin_error(plugin: &str, e: AbiError, fallback: ErrorCode) -> ModelError {
    let code = serde_json::from_value::<ErrorCode>(serde_json::Value::String(e.code.to_string()))
        .unwrap_or(fallback);
    ModelError::new(code, e.message.to_string())
        .with("plugin", plugin)
        .with("plugin_code", e.code.as_str())
}

impl ModelLoader for PluginLoader {
    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn backend(&self) -> &str {
        &self.plugin.record.name
    }

    fn probe(&self, spec: &ModelSpec) -> Probe {
        probe_local_path(spec)
    }

    fn option_keys(&self) -> &[&str] {
        &self.option_keys
    }

    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        let config = load_config(spec, device);
        Ok(Arc::new(PluginModel::load(
            self.plugin.clone(),
            &config,
            device.device,
        )?))
    }
}

/// A model loaded by a plugin.
pub struct PluginModel {
    model: AbiModelBox,
    plugin: Arc<LoadedPlugin>,
    model_type: String,
    device: Device,
}

impl PluginModel {
    /// Loads a model of `plugin` in this process.
    pub fn load(plugin: Arc<LoadedPlugin>, config: &LoadConfig, device: Device) -> Result<Self> {
        let text = serde_json::to_string(config).map_err(|e| {
            ModelError::new(
                ErrorCode::ModelLoadError,
                format!("cannot encode the load request: {e}"),
            )
        })?;
        let model = (plugin.module.load())(RStr::from(text.as_str()))
            .into_result()
            .map_err(|e| {
                plugin_error(&plugin.record.name, e, ErrorCode::ModelLoadError)
                    .for_model(&config.model_id)
            })?;
        Ok(Self {
            model,
            plugin,
            model_type: config.model_type.clone(),
            device,
        })
    }
}

impl Model for PluginModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: self.model_type.clone(),
            backend: self.plugin.record.name.clone(),
            device: self.device,
            dimension: None,
            bytes: Some(self.model.memory_bytes()).filter(|b| *b > 0),
        }
    }

    fn as_infer(&self) -> Option<&dyn Infer> {
        Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Infer for PluginModel {
    fn infer(&self, inputs: &NamedValues) -> Result<NamedValues> {
        let name = &self.plugin.record.name;
        let outputs = self
            .model
            .infer(values_to_abi(inputs.clone()))
            .into_result()
            .map_err(|e| plugin_error(name, e, ErrorCode::InferenceError))?;
        let outputs = values_from_abi(outputs).map_err(|e| {
            ModelError::new(
                ErrorCode::InferenceError,
                format!(
                    "plugin `{name}` returned outputs the host cannot read: {}",
                    e.message
                ),
            )
        })?;
        Ok(outputs)
    }
}
