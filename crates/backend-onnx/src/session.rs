//! Building an ONNX Runtime session from a model file and the model's settings.

use crate::runtime::ensure_runtime;
use model_manager_core::{Device, DeviceChoice, ErrorCode, ModelError, ModelSpec, Result};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use std::path::Path;

/// Option keys every ONNX model reads.
pub const SESSION_OPTION_KEYS: &[&str] = &[
    "intra_threads",
    "intra_op_spinning",
    "graph_optimization_level",
    "model_file",
];

fn ort_error(code: ErrorCode, what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::new(code, format!("{what}: {e}")).caused_by("OrtError", e)
}

fn intra_threads(spec: &ModelSpec) -> Result<usize> {
    let global = spec
        .backend_setting("onnx.intra_threads")
        .and_then(|v| v.as_u64());
    let threads = spec.option_u64("intra_threads")?.or(global).unwrap_or(0) as usize;
    Ok(match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    })
}

/// Whether idle intra-op threads spin before sleeping: ONNX Runtime's default, worth ~15% on
/// bulk runs here; off gives the cores back at once to whatever shares the machine.
fn intra_op_spinning(spec: &ModelSpec) -> Result<bool> {
    Ok(spec.option_bool("intra_op_spinning")?.unwrap_or(true))
}

fn optimization_level(spec: &ModelSpec) -> Result<GraphOptimizationLevel> {
    Ok(match spec.option_str("graph_optimization_level")? {
        None | Some("all") | Some("level3") => GraphOptimizationLevel::Level3,
        Some("extended") | Some("level2") => GraphOptimizationLevel::Level2,
        Some("basic") | Some("level1") => GraphOptimizationLevel::Level1,
        Some("disable") | Some("none") => GraphOptimizationLevel::Disable,
        Some(other) => {
            let key = format!("models.{}.graph_optimization_level", spec.id);
            return Err(ModelError::config(
                &key,
                format!("settings key `{key}` expects one of disable, basic, extended, all, found \"{other}\""),
            ));
        }
    })
}

/// Checks the session options' values of `spec` as [`build_session`] reads them.
pub fn check_session_options(spec: &ModelSpec) -> Result<()> {
    intra_threads(spec)?;
    intra_op_spinning(spec)?;
    optimization_level(spec).map(drop)
}

/// A session for `file`, on the runtime found for `spec`, with its threads, optimization
/// level and execution provider. A CUDA device whose provider cannot register is an error:
/// never a silent CPU run.
pub fn build_session(spec: &ModelSpec, file: &Path, device: &DeviceChoice) -> Result<Session> {
    let runtime = ensure_runtime(spec)?;
    let cannot_load = |e: ort::Error| {
        ort_error(
            ErrorCode::ModelLoadError,
            &format!("cannot load {}", file.display()),
            e,
        )
        .with("file", file.display().to_string())
        .for_model(&spec.id)
    };
    let builder_error =
        |e: ort::Error<ort::session::builder::SessionBuilder>| cannot_load(e.into());
    let mut builder = Session::builder(&runtime.environment)
        .map_err(cannot_load)?
        .with_intra_threads(intra_threads(spec)?)
        .map_err(builder_error)?
        .with_intra_op_spinning(intra_op_spinning(spec)?)
        .map_err(builder_error)?
        .with_optimization_level(optimization_level(spec)?)
        .map_err(builder_error)?;
    if let Device::Cuda(ordinal) = device.device {
        builder = with_cuda(builder, ordinal, spec)?;
    }
    builder.commit_from_file(file).map_err(cannot_load)
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    ordinal: usize,
    spec: &ModelSpec,
) -> Result<ort::session::builder::SessionBuilder> {
    let provider = ort::ep::CUDA::default()
        .with_device_id(ordinal as i32)
        .build()
        .error_on_failure();
    builder.with_execution_providers([provider]).map_err(|e| {
        ort_error(
            ErrorCode::DeviceSetupError,
            &format!("the CUDA execution provider failed on cuda:{ordinal}"),
            e,
        )
        .for_model(&spec.id)
    })
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    ordinal: usize,
    spec: &ModelSpec,
) -> Result<ort::session::builder::SessionBuilder> {
    Err(ModelError::new(
        ErrorCode::DeviceSetupError,
        format!(
            "cuda:{ordinal} was chosen, but the onnx backend was built without the `cuda` feature"
        ),
    )
    .for_model(&spec.id))
}

/// The names the graph of `spec` may have in its folder: `model_file` if set, else
/// `model.onnx`, else `onnx/model.onnx`.
fn graph_names(spec: &ModelSpec) -> Result<Vec<String>> {
    Ok(match spec.option_str("model_file")? {
        Some(name) => vec![name.to_owned()],
        None => vec!["model.onnx".into(), "onnx/model.onnx".into()],
    })
}

/// The graph as a required file of [`model_manager_core::backend::ModelFiles`] (`a|b`).
pub fn graph_entry(spec: &ModelSpec) -> Result<String> {
    Ok(graph_names(spec)?.join("|"))
}

/// Whether a model of `spec` whose files are not here may be downloaded by its `name`
/// (with a build that can): only when `backend = "onnx"` is explicit, or `auto` picks
/// among no other backend, since the hub's repositories hold ONNX graphs only sometimes.
pub fn downloadable(spec: &ModelSpec, only_backend_of_its_type: bool) -> bool {
    (spec.backend == crate::BACKEND_NAME || only_backend_of_its_type)
        && model_manager_core::can_download(spec)
}

/// Downloads `files` by `spec`'s name when they are not here and [`downloadable`] allows
/// it; otherwise leaves finding them (and saying what is missing) to the loader.
pub fn fetch_if_named(
    spec: &ModelSpec,
    files: &model_manager_core::backend::ModelFiles,
    only_backend_of_its_type: bool,
) -> Result<()> {
    if downloadable(spec, only_backend_of_its_type) {
        let (required, optional) = files.names();
        model_manager_core::backend::locate_or_download(spec, &required, &optional)?;
    }
    Ok(())
}

/// The `.onnx` file of a folder: `model_file` if set, else `model.onnx`, else `onnx/model.onnx`.
pub fn onnx_file(spec: &ModelSpec, folder: &Path) -> Result<std::path::PathBuf> {
    let names = graph_names(spec)?;
    names
        .iter()
        .map(|n| folder.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ModelError::new(
                ErrorCode::ModelNotFound,
                format!("no {} in {}", names.join(" or "), folder.display()),
            )
            .for_model(&spec.id)
        })
}
