//! How plugin libraries join a manager's registry without the core knowing their ABI.
//!
//! The plugin host (crate `model-manager-plugin-host`, linked by the facade's `plugins`
//! feature) registers itself with [`inventory::submit!`] of a [`PluginHostRegistration`];
//! with `plugins.enabled = true` the manager asks it at initialize to load the configured
//! libraries and register their types.

use crate::error::{ErrorCode, ModelError, Result};
use crate::registry::Registry;
use crate::settings::PluginSettings;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One model type a loaded plugin provides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginTypeRecord {
    /// Registry key.
    pub model_type: String,
    /// What its models can do (`infer`).
    pub capabilities: Vec<String>,
    /// One line from the plugin.
    pub description: String,
}

/// A loaded plugin library, for status and `mm plugins list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The plugin's name (the backend name of its loaders).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The interface version it was built against, `major.minor`.
    pub abi: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// sha256 of the library file.
    pub sha256: String,
    /// The types it provides.
    pub types: Vec<PluginTypeRecord>,
    /// Built with `panic = "abort"` (then it runs only with process isolation).
    #[serde(default)]
    pub panic_abort: bool,
}

/// A plugin library that could not be loaded; with `plugins.required = false` the rest of
/// the manager starts without it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginFailure {
    /// The library as configured.
    pub path: PathBuf,
    /// Why it could not be loaded.
    pub error: ModelError,
}

/// What loading the configured plugins did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PluginLoadReport {
    /// Libraries loaded, their types registered.
    pub loaded: Vec<PluginRecord>,
    /// Libraries that failed (always empty with `plugins.required = true`, where the first
    /// failure is the error).
    pub failed: Vec<PluginFailure>,
}

/// Loads plugin libraries into a registry.
pub trait PluginHost: Send + Sync + 'static {
    /// Loads every library `settings` names (each once per process) and registers its types
    /// in `registry`. A library that fails is an error with `plugins.required = true`, else
    /// a [`PluginFailure`] in the report.
    fn load_plugins(
        &self,
        settings: &PluginSettings,
        registry: &Registry,
    ) -> Result<PluginLoadReport>;
}

/// A statically registered plugin host.
pub struct PluginHostRegistration {
    /// The host.
    pub host: &'static dyn PluginHost,
}

inventory::collect!(PluginHostRegistration);

/// The linked plugin host, if any.
pub fn plugin_host() -> Option<&'static dyn PluginHost> {
    inventory::iter::<PluginHostRegistration>
        .into_iter()
        .next()
        .map(|r| r.host)
}

/// Loads the plugins `settings` names through the linked host; `MISSING_DEPENDENCY` when
/// the program was built without one.
pub fn load_configured(settings: &PluginSettings, registry: &Registry) -> Result<PluginLoadReport> {
    let host = plugin_host().ok_or_else(|| {
        ModelError::new(
            ErrorCode::MissingDependency,
            "`plugins.enabled = true` but this program was built without plugin support; \
             enable the `plugins` feature of model-manager or set `plugins.enabled = false`",
        )
        .with("key", "plugins.enabled")
    })?;
    host.load_plugins(settings, registry)
}
