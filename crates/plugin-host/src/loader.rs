//! Models of a plugin opened in this process, called through its ABI.

use crate::error::plugin_code;
use crate::library::LoadedPlugin;
use abi_stable::std_types::RStr;
use model_manager_core::{
    Device, ErrorCode, Infer, Model, ModelError, ModelInfo, NamedValues, Result,
};
use model_manager_plugin::abi::{AbiError, AbiModelBox};
use model_manager_plugin::{values_from_abi, values_to_abi, LoadConfig};
use std::any::Any;
use std::sync::Arc;

/// The plugin's error with our code: the plugin's code if a plugin may use it (see
/// [`crate::error::PLUGIN_CODES`]), else `fallback`.
fn plugin_error(plugin: &str, e: AbiError, fallback: ErrorCode) -> ModelError {
    let code = plugin_code(e.code.as_str(), fallback);
    ModelError::new(code, e.message.to_string())
        .with("plugin", plugin)
        .with("plugin_code", e.code.as_str())
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
