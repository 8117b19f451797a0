//! Safetensors weights: one file or shards listed in `model.safetensors.index.json`.

use crate::device::dtype_option;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use model_manager_core::backend::ModelFolder;
use model_manager_core::backend::{locate_model_folder, Probe};
use model_manager_core::{can_download, ErrorCode, ModelError, ModelSpec, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The files every model of this backend needs. Weights: one safetensors file, or an index
/// and the shards it names.
pub(crate) const REQUIRED: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "model.safetensors|model.safetensors.index.json",
];

/// The weight files of a folder.
pub fn weight_files(folder: &ModelFolder, code: ErrorCode) -> Result<Vec<PathBuf>> {
    let single = folder.file("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = folder.file("model.safetensors.index.json");
    let text =
        std::fs::read_to_string(&index).map_err(|e| ModelError::file_load(code, &index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::file_load(code, &index, e))?;
    let shards: BTreeSet<&str> = json["weight_map"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if shards.is_empty() {
        return Err(ModelError::file_load(code, &index, "no weight_map"));
    }
    Ok(shards.into_iter().map(|s| folder.file(s)).collect())
}

/// Total size of the weight files, scaled to `dtype`, as the memory estimate.
pub fn estimate_bytes(files: &[PathBuf], dtype: DType) -> Option<u64> {
    let on_disk: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()
        .ok()?;
    // Checkpoints are usually f32; f16/bf16 halve the resident size.
    Some(if dtype == DType::F32 {
        on_disk
    } else {
        on_disk / 2
    })
}

/// Memory-maps the weights.
pub fn var_builder(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
    code: ErrorCode,
) -> Result<VarBuilder<'static>> {
    for f in files {
        if !f.is_file() {
            return Err(ModelError::new(
                ErrorCode::ModelNotFound,
                format!("weights file {} not found", f.display()),
            )
            .with("file", f.display().to_string()));
        }
    }
    // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on them
    // not being truncated while the model is loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) }.map_err(|e| {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        ModelError::new(
            code,
            format!("cannot read weights {}: {e}", names.join(", ")),
        )
        .with("file", names.join(", "))
        .caused_by("CandleError", e)
    })
}

/// A loader's probe: the folder with `required` files and safetensors weights is there, or
/// can still be downloaded.
pub fn probe_safetensors_folder(spec: &ModelSpec, required: &[&str]) -> Probe {
    match locate_model_folder(spec, required) {
        Ok(folder) if weight_files(&folder, ErrorCode::ModelNotFound).is_ok() => Probe::Accept,
        Ok(folder) => Probe::reject(
            ErrorCode::ModelNotFound,
            format!("{} has no model.safetensors", folder.path.display()),
        ),
        Err(_) if can_download(spec) => Probe::Accept,
        Err(e) => Probe::reject(e.code, e.message),
    }
}

/// A loader's memory estimate: the weights' size at the configured dtype.
pub fn estimate_spec_bytes(spec: &ModelSpec, required: &[&str]) -> Option<u64> {
    let folder = locate_model_folder(spec, required).ok()?;
    estimate_bytes(
        &weight_files(&folder, ErrorCode::ModelNotFound).ok()?,
        dtype_option(spec).ok()?,
    )
}
