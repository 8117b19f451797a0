//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` would load it lazily on first use and panic on a bad `ORT_DYLIB_PATH`; loading it
//! here first turns every failure into `MISSING_DEPENDENCY`.

use model_manager_core::{ErrorCode, ModelError, ModelSpec, Result};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};

/// The loaded runtime.
#[derive(Clone)]
pub struct RuntimeInfo {
    /// The library file.
    pub path: PathBuf,
    /// How it was found (setting, environment, well-known place).
    pub source: String,
    /// The process's one ONNX Runtime environment; sessions are built from it.
    pub environment: ort::environment::Environment,
}

static RUNTIME: Mutex<Option<RuntimeInfo>> = Mutex::new(None);

const INSTALL_HINT: &str = "install it with `pip install onnxruntime` (the library is onnxruntime/capi/libonnxruntime.so.*), \
     run scripts/fetch-models.sh (puts it under models/onnxruntime/), or point onnx.runtime_path / ORT_DYLIB_PATH at it";

/// Loads the runtime for `spec` unless one is loaded already: `onnx.runtime_path` from the
/// settings, else `ORT_DYLIB_PATH`, else well-known places. The first library that loads
/// stays for the life of the process.
pub fn ensure_runtime(spec: &ModelSpec) -> Result<RuntimeInfo> {
    let mut loaded = RUNTIME.lock();
    if let Some(info) = loaded.as_ref() {
        return Ok(info.clone());
    }
    let mut tried = Vec::new();
    for (path, source) in candidates(spec) {
        match try_load(&path) {
            Ok(environment) => {
                let info = RuntimeInfo {
                    path,
                    source,
                    environment,
                };
                tracing::info!(path = %info.path.display(), source = %info.source, "ONNX Runtime loaded");
                *loaded = Some(info.clone());
                return Ok(info);
            }
            Err(why) => tried.push(format!("{} ({source}): {why}", path.display())),
        }
    }
    if tried.is_empty() {
        tried.push(
            "no onnx.runtime_path, no ORT_DYLIB_PATH, nothing in the well-known places".into(),
        );
    }
    Err(ModelError::new(
        ErrorCode::MissingDependency,
        format!(
            "the ONNX Runtime library (>= 1.{} for this build) could not be loaded; tried: {}. To fix: {INSTALL_HINT}",
            ort::MINOR_VERSION,
            tried.join("; ")
        ),
    )
    .for_model(&spec.id)
    .with("tried", tried)
    .with("required_version", format!(">= 1.{}", ort::MINOR_VERSION)))
}

fn try_load(path: &Path) -> std::result::Result<ort::environment::Environment, String> {
    if !path.is_file() {
        return Err("no such file".into());
    }
    // ort checks the library's version against the API level it was built for.
    let builder = std::panic::catch_unwind(|| ort::init_from(path))
        .map_err(|_| "loading it panicked".to_string())?
        .map_err(|e| e.to_string())?;
    builder
        .with_name("model-manager")
        .build()
        .map_err(|e| e.to_string())
}

/// Where to look, in order. An explicit setting or variable is the only candidate: a wrong
/// explicit path is an error to report, not a cue to load some other library.
fn candidates(spec: &ModelSpec) -> Vec<(PathBuf, String)> {
    if let Some(path) = spec
        .backend_setting("onnx.runtime_path")
        .and_then(|v| v.as_str())
    {
        return vec![(PathBuf::from(path), "setting onnx.runtime_path".into())];
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return vec![(PathBuf::from(path), "ORT_DYLIB_PATH".into())];
    }
    well_known_places()
        .into_iter()
        .map(|p| (p, "well-known place".into()))
        .collect()
}

/// Python `onnxruntime` installs and system library folders.
fn well_known_places() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut python_roots: Vec<PathBuf> = vec!["/usr/lib".into(), "/usr/local/lib".into()];
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        python_roots.push(PathBuf::from(venv).join("lib"));
    }
    if let Some(home) = &home {
        python_roots.push(home.join(".local/lib"));
        for version in subdirs(&home.join(".pyenv/versions")) {
            python_roots.push(version.join("lib"));
        }
    }
    for root in python_roots {
        for python in subdirs(&root)
            .into_iter()
            .filter(|d| name_starts(d, "python3"))
        {
            for packages in ["site-packages", "dist-packages"] {
                dirs.push(python.join(packages).join("onnxruntime/capi"));
            }
        }
    }
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.extend(
        [
            "/usr/local/lib",
            "/usr/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/opt/onnxruntime/lib",
        ]
        .map(PathBuf::from),
    );
    dirs.iter()
        .flat_map(|d| {
            let mut libs: Vec<PathBuf> = std::fs::read_dir(d)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            libs.retain(|p| name_starts(p, "libonnxruntime.so"));
            libs.sort();
            libs
        })
        .collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn name_starts(path: &Path, prefix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix))
}
