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

#[cfg(target_os = "linux")]
mod elf;
mod error;
mod guard;
mod library;
mod loader;
mod opened;
#[cfg(target_os = "linux")]
mod origin;
mod process;

pub use library::{open_plugin, open_plugin_with, LoadedPlugin};
pub use model_manager_core::plugin_host::{PluginHost, PluginHostRegistration};
pub use process::{serve_child_if_asked, ChildPlugin};

use model_manager_core::{
    ErrorCode, ModelError, PluginFailure, PluginIsolation, PluginLoadReport, PluginRecord,
    PluginSettings, Registry, Result,
};
use opened::Opened;
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
    ) -> Result<PluginLoadReport> {
        let files = plugin_files(settings)?;
        guard::check_pins_match(&files, &settings.sha256)?;
        // Check every library before registering any, so a failure leaves the registry as
        // it was.
        let mut opened: Vec<Opened> = Vec::new();
        let mut failed = Vec::new();
        for path in files {
            let attempt = open(&path, settings).and_then(|plugin| {
                check_types(plugin.record(), &plugin.type_names(), registry, &opened)?;
                Ok(plugin)
            });
            match attempt {
                Ok(plugin) => opened.push(plugin),
                Err(error) if settings.required => return Err(error),
                Err(error) => {
                    tracing::warn!(path = %path.display(), "plugin not loaded: {error}");
                    failed.push(PluginFailure { path, error });
                }
            }
        }
        for plugin in &opened {
            for loader in plugin.loaders() {
                registry.register(loader)?;
            }
        }
        Ok(PluginLoadReport {
            loaded: opened.iter().map(|p| p.record().clone()).collect(),
            failed,
        })
    }
}

/// Opens `path` as `plugins.isolation` says.
fn open(path: &Path, settings: &PluginSettings) -> Result<Opened> {
    match settings.isolation {
        PluginIsolation::InProcess => Ok(Opened::InProcess(open_plugin(
            path,
            &settings.sha256,
            false,
        )?)),
        PluginIsolation::Process => {
            // The child vets the file again (with its digest pinned) and opens what it vetted.
            let vetted = library::vet_library(path, &settings.sha256)?;
            let child = ChildPlugin::start(
                &vetted.canonical,
                vetted.sha256,
                host_program(settings)?,
                settings.timeout,
            )?;
            Ok(Opened::Child(Arc::new(child)))
        }
    }
}

/// The program (and arguments) that hosts plugin children: `plugins.host_program`, else
/// this executable when it serves children.
pub fn host_program(settings: &PluginSettings) -> Result<(PathBuf, Vec<String>)> {
    // The program runs plugin code with this process's rights: vetted like a library.
    if let Some(program) = &settings.host_program {
        guard::check_permissions(&program.canonicalize().unwrap_or_else(|_| program.clone()))?;
        return Ok((program.clone(), Vec::new()));
    }
    if process::this_executable_serves_children() {
        if let Ok(exe) = std::env::current_exe() {
            guard::check_permissions(&exe)?;
            return Ok((exe, Vec::new()));
        }
    }
    Err(ModelError::config(
        "plugins.host_program",
        "`plugins.isolation = \"process\"` needs a program to host plugin children: set \
         `plugins.host_program` (e.g. the `mm-plugin-host` binary), or call \
         `model_manager::plugin_host::serve_child_if_asked()` first thing in `main`",
    ))
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
        error::plugin_load_error(
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
/// serves is `PLUGIN_LOAD_ERROR` naming both providers.
pub fn register_types(plugin: &Arc<LoadedPlugin>, registry: &Registry) -> Result<()> {
    let opened = Opened::InProcess(plugin.clone());
    check_types(opened.record(), &opened.type_names(), registry, &[])?;
    for loader in opened.loaders() {
        registry.register(loader)?;
    }
    Ok(())
}

/// `PLUGIN_LOAD_ERROR` naming both providers if a type of `record` is served already
/// (`loaded`: the plugins checked before, to name them).
fn check_types(
    record: &PluginRecord,
    types: &[String],
    registry: &Registry,
    loaded: &[Opened],
) -> Result<()> {
    let entries = registry.entries();
    for model_type in types {
        let earlier = loaded
            .iter()
            .map(Opened::record)
            .find(|r| r.types.iter().any(|t| t.model_type == *model_type));
        let provider = match (earlier, entries.iter().find(|(t, _)| t == model_type)) {
            (Some(r), _) => format!("plugin `{}` ({})", r.name, r.path.display()),
            (None, Some((_, backend))) => format!("the built-in backend `{backend}`"),
            (None, None) => continue,
        };
        return Err(ModelError::new(
            ErrorCode::PluginLoadError,
            format!(
                "plugin `{}` ({}) declares type `{model_type}`, which {provider} already provides",
                record.name,
                record.path.display(),
            ),
        )
        .with("path", record.path.display().to_string())
        .with("model_type", model_type.as_str()));
    }
    Ok(())
}
