//! Opening a plugin library once per process and reading its manifest.

use crate::error::plugin_load_error;
use crate::guard;
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError, RootModule};
use model_manager_core::{ErrorCode, ModelError, PluginRecord, PluginTypeRecord, Result};
use model_manager_plugin::abi::AbiManifest;
use model_manager_plugin::{PluginModuleRef, TypeDeclaration, ABI_MAJOR, ABI_MINOR};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// An opened plugin library (never unloaded).
pub struct LoadedPlugin {
    /// The library's root module.
    pub module: PluginModuleRef,
    /// What it is, for status and listings.
    pub record: PluginRecord,
    /// The types it declares.
    pub types: Vec<TypeDeclaration>,
}

/// Libraries opened by this process, by canonical path: a library is opened once and
/// stays mapped, since its code may still run in loaded models.
fn opened() -> &'static Mutex<HashMap<PathBuf, Arc<LoadedPlugin>>> {
    static OPENED: OnceLock<Mutex<HashMap<PathBuf, Arc<LoadedPlugin>>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// A library file that passed the checks, held open: the dynamic loader is given this
/// descriptor (`/proc/self/fd/N`), not the path, so what runs is the file that was checked
/// even if the path is replaced in between.
pub struct VettedLibrary {
    /// The file as opened and checked.
    file: std::fs::File,
    /// Its canonical path.
    pub canonical: PathBuf,
    /// The sha256 of its bytes, lowercase hex.
    pub sha256: String,
    /// What its dynamic section names (its `$ORIGIN` dependencies are opened first).
    #[cfg(target_os = "linux")]
    pub(crate) dynamic: crate::elf::DynamicNames,
}

impl VettedLibrary {
    /// What to hand the dynamic loader: the checked descriptor where the system names
    /// descriptors as paths, else the canonical path.
    pub(crate) fn loader_path(&self) -> PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        }
        #[cfg(not(target_os = "linux"))]
        self.canonical.clone()
    }

    /// Keeps the descriptor open for the life of the process: the loader knows the library
    /// by `/proc/self/fd/N`, and would take a later library opened as the same N for this
    /// one if the number were reused.
    pub(crate) fn keep_open(self) {
        std::mem::forget(self.file);
    }
}

/// The checks made before a library's code may run (permissions of the file and every
/// folder above it, ELF structure, sha256 pin), made on one open descriptor of it.
pub fn vet_library(path: &Path, pins: &BTreeMap<String, String>) -> Result<VettedLibrary> {
    let canonical = path.canonicalize().map_err(|e| {
        plugin_load_error(
            path,
            format!("plugin {} cannot be found: {e}", path.display()),
        )
        .caused_by("IoError", e)
    })?;
    guard::check_permissions(&canonical)?;
    #[cfg(target_os = "linux")]
    check_descriptor_paths(path, Path::new(DESCRIPTOR_PATHS))?;
    let (file, bytes) = guard::open_library(&canonical)?;
    #[cfg(target_os = "linux")]
    crate::elf::check_shared_library(path, &bytes)?;
    #[cfg(target_os = "linux")]
    let dynamic = crate::elf::dynamic_names(&bytes);
    let sha256 = guard::sha256_hex(&bytes);
    drop(bytes);
    guard::check_pin(path, &canonical, &sha256, pins)?;
    Ok(VettedLibrary {
        file,
        canonical,
        sha256,
        #[cfg(target_os = "linux")]
        dynamic,
    })
}

/// Where this process's descriptors have paths the dynamic loader can open.
#[cfg(target_os = "linux")]
const DESCRIPTOR_PATHS: &str = "/proc/self/fd";

/// `PLUGIN_LOAD_ERROR` naming the cause when `dir` ([`DESCRIPTOR_PATHS`]) is missing (no
/// `/proc` mounted, as in some sandboxes): libraries are opened through it.
#[cfg(target_os = "linux")]
fn check_descriptor_paths(path: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(plugin_load_error(
        path,
        format!(
            "cannot open plugin {}: plugins are opened through the descriptor their checks              read ({}/N), and {} is missing; mount /proc in this process's namespace",
            path.display(),
            dir.display(),
            dir.display()
        ),
    ))
}

/// Checks and opens the plugin at `path` (or returns it if this process opened it already).
/// A library built with `panic = "abort"` is refused unless `allow_panic_abort` (a child
/// process of process isolation, whose death the host survives).
pub fn open_plugin(
    path: &Path,
    pins: &BTreeMap<String, String>,
    allow_panic_abort: bool,
) -> Result<Arc<LoadedPlugin>> {
    open_plugin_with(path, pins, allow_panic_abort, &mut || {})
}

/// [`open_plugin`] running `after_vetting` between the checks and the opening: for tests
/// that change the file in that window, as an attacker would.
#[doc(hidden)]
pub fn open_plugin_with(
    path: &Path,
    pins: &BTreeMap<String, String>,
    allow_panic_abort: bool,
    after_vetting: &mut dyn FnMut(),
) -> Result<Arc<LoadedPlugin>> {
    let vetted = vet_library(path, pins)?;
    after_vetting();
    let (canonical, sha256) = (vetted.canonical.clone(), vetted.sha256.clone());
    let mut opened = opened().lock();
    if let Some(plugin) = opened.get(&canonical) {
        if plugin.record.sha256 == sha256 {
            check_panic_strategy(path, &plugin.module, allow_panic_abort)?;
            return Ok(plugin.clone());
        }
        return Err(plugin_load_error(
            path,
            format!(
                "plugin {} changed on disk since this process loaded it; restart to load the new build",
                path.display()
            ),
        ));
    }
    #[cfg(target_os = "linux")]
    crate::origin::open_origin_dependencies(path, &vetted)?;
    let header = match lib_header_from_path(&vetted.loader_path()) {
        // The loader did not open it: nothing knows the descriptor's name.
        Err(e @ LibraryError::OpenError { .. }) => return Err(library_error(path, None, e)),
        header => {
            vetted.keep_open();
            header.map_err(|e| library_error(path, None, e))?
        }
    };
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| library_error(path, Some(header), e))?;
    check_panic_strategy(path, &module, allow_panic_abort)?;
    let manifest = std::panic::catch_unwind(|| (module.manifest())()).map_err(|_| {
        plugin_load_error(
            path,
            format!("plugin {} panicked describing itself", path.display()),
        )
    })?;
    let plugin = Arc::new(describe(path, &canonical, sha256, module, manifest)?);
    opened.insert(canonical, plugin.clone());
    Ok(plugin)
}

/// `PLUGIN_LOAD_ERROR` for an abort-built library in this process, unless allowed.
fn check_panic_strategy(path: &Path, module: &PluginModuleRef, allow: bool) -> Result<()> {
    if allow || module.panic_abort() != Some(true) {
        return Ok(());
    }
    Err(plugin_load_error(
        path,
        format!(
            "plugin {} was built with `panic = \"abort\"`: a panic in it would end this whole \
             process, which the host cannot catch; rebuild it with `panic = \"unwind\"` (the \
             default) or run it in a child process with `plugins.isolation = \"process\"`",
            path.display()
        ),
    )
    .with("panic", "abort"))
}

fn describe(
    path: &Path,
    canonical: &Path,
    sha256: String,
    module: PluginModuleRef,
    manifest: AbiManifest,
) -> Result<LoadedPlugin> {
    if manifest.abi_major != ABI_MAJOR || manifest.abi_minor > ABI_MINOR {
        return Err(ModelError::new(
            ErrorCode::PluginAbiMismatch,
            format!(
                "plugin {} speaks plugin interface {}.{}, this host speaks {ABI_MAJOR}.{ABI_MINOR}",
                path.display(),
                manifest.abi_major,
                manifest.abi_minor
            ),
        )
        .with("path", path.display().to_string())
        .with("expected", format!("{ABI_MAJOR}.{ABI_MINOR}"))
        .with(
            "found",
            format!("{}.{}", manifest.abi_major, manifest.abi_minor),
        ));
    }
    if manifest.types.is_empty() {
        return Err(plugin_load_error(
            path,
            format!(
                "plugin `{}` ({}) declares no model types",
                manifest.name,
                path.display()
            ),
        ));
    }
    let types: Vec<TypeDeclaration> = manifest.types.iter().map(TypeDeclaration::from).collect();
    let record = PluginRecord {
        name: manifest.name.to_string(),
        version: manifest.version.to_string(),
        abi: format!("{}.{}", manifest.abi_major, manifest.abi_minor),
        path: canonical.to_path_buf(),
        sha256,
        panic_abort: module.panic_abort() == Some(true),
        types: manifest
            .types
            .iter()
            .map(|t| PluginTypeRecord {
                model_type: t.model_type.to_string(),
                capabilities: t.capabilities.iter().map(|c| c.to_string()).collect(),
                description: t.description.to_string(),
            })
            .collect(),
    };
    Ok(LoadedPlugin {
        module,
        record,
        types,
    })
}

/// Maps abi_stable's error to our codes: an interface mismatch is `PLUGIN_ABI_MISMATCH`
/// with a short summary (the full layout report goes in the details), the rest
/// `PLUGIN_LOAD_ERROR`.
fn library_error(path: &Path, header: Option<&LibHeader>, e: LibraryError) -> ModelError {
    let shown = path.display();
    let host_version = PluginModuleRef::VERSION_STRINGS.version.to_string();
    let found_version = header.map(|h| h.version_strings().version.to_string());
    let mismatch = |message: String| {
        ModelError::new(ErrorCode::PluginAbiMismatch, message)
            .with("path", shown.to_string())
            .with("expected_version", host_version.as_str())
            .with("found_version", found_version.clone().unwrap_or_default())
    };
    match e {
        LibraryError::OpenError { err, .. } => plugin_load_error(
            path,
            format!("{shown} cannot be opened as a shared library: {err}"),
        ),
        LibraryError::GetSymbolError { .. } => plugin_load_error(
            path,
            format!(
                "{shown} is a shared library but not a model-manager plugin: it exports no plugin \
                 root module (a plugin calls `model_manager_plugin::export_plugin!`)"
            ),
        ),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => mismatch(format!(
            "plugin {shown} was built against model-manager-plugin {actual_version}, this host \
             uses {expected_version}; rebuild the plugin against {expected_version}"
        )),
        LibraryError::AbiInstability(report) => {
            let report = report.to_string();
            let first = first_mismatch(&report);
            mismatch(format!(
                "plugin {shown} was built against a different model-manager-plugin interface \
                 (host {host_version}, plugin {}): {first}; rebuild the plugin against this host's interface",
                found_version.as_deref().unwrap_or("unknown"),
            ))
            .with("first_mismatch", first)
            .with("report", report)
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => mismatch(format!(
            "plugin {shown} was built with an incompatible abi_stable or compiler ABI"
        ))
        .with("error", e.to_string()),
        other => plugin_load_error(path, format!("plugin {shown} failed to load: {other}")),
    }
}

/// The first error of abi_stable's layout report in one line: the type, what differs, and
/// the expected and found field, e.g. "type AbiImage: unexpected field (expected `width`,
/// found `height`)".
fn first_mismatch(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let Some(at) = lines.iter().position(|l| l.starts_with("Error:")) else {
        return "the layouts differ".to_owned();
    };
    if let Some(summary) = function_mismatch(&lines[..at]) {
        return summary;
    }
    let what = lines[at].trim_start_matches("Error:").trim();
    let type_name = lines[..at]
        .iter()
        .rposition(|l| *l == "Layout of expected type:")
        .and_then(|start| {
            lines[start..at]
                .iter()
                .find_map(|l| l.strip_prefix("type:"))
        });
    let field_after = |label: &str| {
        let from = at + lines[at..].iter().position(|l| *l == label)?;
        lines[from..]
            .iter()
            .find_map(|l| l.strip_prefix("field_name:"))
    };
    let mut summary = match type_name {
        Some(t) => format!("type {t}: {what}"),
        None => what.to_owned(),
    };
    if let (Some(expected), Some(found)) = (field_after("Expected:"), field_after("Found:")) {
        summary.push_str(&format!(" (expected `{expected}`, found `{found}`)"));
    }
    summary
}

/// For a changed function signature: "function `load` of PluginModule: expected
/// `fn(RStr<'a>)->RResult`, found `fn(RStr<'a>, u32)->RResult`". abi_stable's report walks
/// to the mismatch through `field_name:`/`type:` pairs after "error(s)inside:", then shows
/// both layouts, which for a function pointer are its signatures.
fn function_mismatch(lines: &[&str]) -> Option<String> {
    let expected_at = lines
        .iter()
        .rposition(|l| *l == "Layout of expected type:")?;
    let found_at = lines.iter().rposition(|l| *l == "Layout of found type:")?;
    let expected = lines
        .get(expected_at + 1)
        .filter(|l| l.starts_with("fn("))?;
    let found = lines.get(found_at + 1).filter(|l| l.starts_with("fn("))?;
    let path_start = lines[..expected_at]
        .iter()
        .rposition(|l| l.ends_with("error(s)inside:"))?;
    let path = &lines[path_start..expected_at];
    let names: Vec<&str> = path
        .iter()
        .filter_map(|l| l.strip_prefix("field_name:"))
        .collect();
    let types: Vec<&str> = path
        .iter()
        .filter_map(|l| l.strip_prefix("type:"))
        .collect();
    let function = names.last()?;
    let owner = types.len().checked_sub(2).map(|i| types[i]);
    // abi_stable prints unnamed parameters as `,: T`.
    let tidy = |sig: &str| sig.replace("(,: ", "(").replace(", ,: ", ", ");
    Some(format!(
        "function `{function}`{}: expected `{}`, found `{}`",
        owner.map(|o| format!(" of {o}")).unwrap_or_default(),
        tidy(expected),
        tidy(found)
    ))
}

#[cfg(test)]
mod tests {
    use super::first_mismatch;

    #[cfg(target_os = "linux")]
    #[test]
    fn without_proc_the_error_names_the_cause() {
        use std::path::Path;
        let missing = Path::new("/nonexistent/proc/self/fd");
        let err = super::check_descriptor_paths(Path::new("libx.so"), missing).unwrap_err();
        assert_eq!(err.code, model_manager_core::ErrorCode::PluginLoadError);
        assert!(err.message.contains("mount /proc"), "{}", err.message);
        assert!(
            super::check_descriptor_paths(Path::new("libx.so"), Path::new("/proc/self/fd")).is_ok()
        );
    }

    #[test]
    fn the_summary_names_the_type_the_error_and_both_fields() {
        let report = "Layout of expected type:\n  --- Type Layout ---\n  type:Outer\n\
            Layout of expected type:\n  --- Type Layout ---\n  type:AbiImage\n  data:\n\
            Error:unexpected field\nExpected:\n  field_name:width\n  type:u32\n\
            Found:\n  field_name:height\n  type:u32\n";
        assert_eq!(
            first_mismatch(report),
            "type AbiImage: unexpected field (expected `width`, found `height`)"
        );
        assert_eq!(first_mismatch("nothing useful"), "the layouts differ");
    }
}
