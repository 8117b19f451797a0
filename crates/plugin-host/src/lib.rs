//! Loads model-manager plugin dylibs and registers their model types.
//!
//! Linking this crate (the facade's `plugins` feature) lets a manager with
//! `plugins.enabled = true` load the libraries in `plugins.dirs` and `plugins.paths` at
//! initialize. Each library is checked before it is opened (neither it nor a folder above it
//! writable by group or others, a complete ELF shared library for this machine, sha256 pin
//! if configured: keyed by file name or path, a pin naming no configured library is a
//! `CONFIG_ERROR`), opened once per process with abi_stable's
//! `lib_header_from_path` + `init_root_module` (which verify the interface version and the
//! layout of every type that crosses the boundary), and never unloaded. Its declared types
//! then load, share, count references and unload like built-in ones.

mod convert;
#[cfg(target_os = "linux")]
mod elf;
mod guard;
mod library;
mod loader;

pub use library::{open_plugin, LoadedPlugin};
pub use loader::{PluginLoader, PluginModel};

use model_manager_core::{
    ErrorCode, ModelError, PluginHost, PluginHostRegistration, PluginRecord, PluginSettings,
    Registry, Result,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The plugin host the core finds through `inventory`.
pub struct DylibPluginHost;

inventory::submit! {
    PluginHostRegistration { host: &DylibPluginHost }
}

impl PluginHost for DylibPluginHost {
    fn load_plugins(
        &self,
        settings: &PluginSettings,
        registry: &Registry,
    ) -> Result<Vec<PluginRecord>> {
        // Check every library before registering any, so a failure leaves the registry as
        // it was.
        let staging = Registry::new();
        let mut opened = Vec::new();
        let files = plugin_files(settings)?;
        guard::check_pins_match(&files, &settings.sha256)?;
        for path in files {
            let plugin = open_plugin(&path, &settings.sha256)?;
            check_types(&plugin, registry, &opened)?;
            register_types(&plugin, &staging, &opened)?;
            opened.push(plugin);
        }
        for plugin in &opened {
            register_types(plugin, registry, &[])?;
        }
        Ok(opened.iter().map(|p| p.record.clone()).collect())
    }
}

/// The files `plugins.paths` names plus the libraries in `plugins.dirs`, in that order,
/// each once.
pub fn plugin_files(settings: &PluginSettings) -> Result<Vec<PathBuf>> {
    let mut files = settings.paths.clone();
    for dir in &settings.dirs {
        files.extend(libraries_in(dir)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|f| seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())));
    Ok(files)
}

fn libraries_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        library::load_error(
            dir,
            format!("cannot read plugin folder {}: {e}", dir.display()),
        )
        .with("key", "plugins.dirs")
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Registers a loader for every type `plugin` declares; a type some other loader already
/// serves is `PLUGIN_LOAD_ERROR` naming both providers (`loaded`: the plugins registered
/// before, to name them).
pub fn register_types(
    plugin: &Arc<LoadedPlugin>,
    registry: &Registry,
    loaded: &[Arc<LoadedPlugin>],
) -> Result<()> {
    check_types(plugin, registry, loaded)?;
    for decl in &plugin.types {
        registry.register(Arc::new(PluginLoader::new(plugin.clone(), decl)))?;
    }
    Ok(())
}

/// `PLUGIN_LOAD_ERROR` naming both providers if a type of `plugin` is served already.
fn check_types(
    plugin: &LoadedPlugin,
    registry: &Registry,
    loaded: &[Arc<LoadedPlugin>],
) -> Result<()> {
    let entries = registry.entries();
    for decl in &plugin.types {
        if let Some((_, backend)) = entries.iter().find(|(t, _)| *t == decl.model_type) {
            let provider = loaded
                .iter()
                .map(|p| &p.record)
                .find(|r| r.name == *backend)
                .map(|r| format!("plugin `{}` ({})", r.name, r.path.display()))
                .unwrap_or_else(|| format!("the built-in backend `{backend}`"));
            return Err(ModelError::new(
                ErrorCode::PluginLoadError,
                format!(
                    "plugin `{}` ({}) declares type `{}`, which {provider} already provides",
                    plugin.record.name,
                    plugin.record.path.display(),
                    decl.model_type
                ),
            )
            .with("path", plugin.record.path.display().to_string())
            .with("model_type", decl.model_type.as_str())
            .with("registered_by", backend.as_str()));
        }
    }
    Ok(())
}
