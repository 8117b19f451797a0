//! What a plugin author implements, in plain Rust types.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The values a model takes and returns, shared with the host (no conversion between the
/// two): `Value::Text`, `Value::Image` (an [`Image`]: encoded bytes, or raw pixels with
/// width, height and channels), `Value::Tensor` (a [`Tensor`]: shape and row-major
/// [`TensorData`]) and `Value::Json`.
pub use model_manager_values::{
    ImageValue as Image, InferValue as Value, NamedValues as Values, TensorData,
    TensorValue as Tensor,
};

/// An error a plugin returns: a model-manager error code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// E.g. `INVALID_INPUT`; see the constructors.
    pub code: String,
    /// For people.
    pub message: String,
}

impl Error {
    /// An error with any model-manager error code (the README's exit-code table lists them).
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The caller's input is wrong (`INVALID_INPUT`).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new("INVALID_INPUT", message)
    }

    /// The model's files are missing (`MODEL_NOT_FOUND`).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("MODEL_NOT_FOUND", message)
    }

    /// Loading failed (`MODEL_LOAD_ERROR`).
    pub fn load(message: impl Into<String>) -> Self {
        Self::new("MODEL_LOAD_ERROR", message)
    }

    /// The settings of the model are wrong (`CONFIG_ERROR`).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new("CONFIG_ERROR", message)
    }

    /// Running the model failed (`INFERENCE_ERROR`).
    pub fn inference(message: impl Into<String>) -> Self {
        Self::new("INFERENCE_ERROR", message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// One model type a plugin provides.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeDeclaration {
    /// Registry key, the `type` in settings.
    pub model_type: String,
    /// One line for `mm plugins list`.
    pub description: String,
    /// Keys the type reads under `models.<id>.`; others are reported as typos.
    pub option_keys: Vec<String>,
}

impl TypeDeclaration {
    /// A type with no options.
    pub fn new(model_type: &str, description: &str) -> Self {
        Self {
            model_type: model_type.to_owned(),
            description: description.to_owned(),
            option_keys: Vec::new(),
        }
    }

    /// Declares the keys the type reads under `models.<id>.`.
    pub fn with_options(mut self, keys: &[&str]) -> Self {
        self.option_keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self
    }
}

/// What a plugin is and provides.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Plugin name; must be unique among loaded plugins.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The types it provides.
    pub types: Vec<TypeDeclaration>,
}

impl PluginInfo {
    /// A plugin with no types yet.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            types: Vec::new(),
        }
    }

    /// Adds a type.
    pub fn with_type(mut self, declaration: TypeDeclaration) -> Self {
        self.types.push(declaration);
        self
    }
}

/// What the host tells a plugin about the model to load (crosses the boundary as JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadConfig {
    /// The id under `models.`.
    pub model_id: String,
    /// One of the plugin's declared types.
    pub model_type: String,
    /// `models.<id>.local_path`, resolved by the host.
    pub local_path: Option<PathBuf>,
    /// `cpu` or `cuda:N`, as the host chose.
    pub device: String,
    /// The type's options (`models.<id>.<key>` for its declared keys).
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl LoadConfig {
    /// `local_path`, or a `CONFIG_ERROR` naming the setting.
    pub fn require_local_path(&self) -> Result<&std::path::Path, Error> {
        self.local_path.as_deref().ok_or_else(|| {
            Error::config(format!(
                "model `{}` needs `models.{}.local_path`",
                self.model_id, self.model_id
            ))
        })
    }

    /// An option, or `None` when not set.
    pub fn option(&self, key: &str) -> Option<&serde_json::Value> {
        self.options.get(key)
    }
}

/// A plugin: what it provides and how it loads a model. `Default` builds the one instance
/// the exported library uses.
pub trait Plugin: Default + Send + Sync + 'static {
    /// Name, version and declared types.
    fn info(&self) -> PluginInfo;
    /// Loads a model of one of the declared types.
    fn load(&self, config: &LoadConfig) -> Result<Box<dyn PluginModel>, Error>;
}

/// A loaded model of a plugin.
pub trait PluginModel: Send + Sync + 'static {
    /// Runs the model on named inputs.
    fn infer(&self, inputs: Values) -> Result<Values, Error>;
    /// Memory the model holds, for the host's budget; `None` when unknown.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }
}
