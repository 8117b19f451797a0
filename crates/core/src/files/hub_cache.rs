//! The Hugging Face hub cache as the Python tools lay it out, so both share one cache:
//! `models--org--name/blobs/<etag>`, `refs/<revision>` (a commit), and
//! `snapshots/<commit>/<file>` links into `blobs/`.

use std::path::{Path, PathBuf};

/// The cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (the
/// same place for reading and for downloading).
pub fn hub_cache() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Whether `HF_HUB_OFFLINE` forbids network access.
pub fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("True") | Ok("yes") | Ok("ON") | Ok("on")
    )
}

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    /// `.../models--org--name`.
    pub dir: PathBuf,
}

impl RepoCache {
    /// The folder of model repository `name` (`org/name`) in the cache.
    pub fn of(name: &str) -> Self {
        Self {
            dir: hub_cache()
                .unwrap_or_default()
                .join(format!("models--{}", name.replace('/', "--"))),
        }
    }

    /// `snapshots/`.
    pub fn snapshots(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// The commit `refs/<revision>` names, if any.
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join("refs").join(revision))
            .ok()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
    }

    /// Snapshot folders, the one `refs/main` names first.
    pub fn snapshot_dirs(&self) -> Vec<PathBuf> {
        let main = self.commit_of("main");
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.snapshots())
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()) != main.as_deref());
        found
    }

    /// Where the content with `etag` lives.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// Downloads of this repository cut short (`blobs/*.part`).
    pub fn partial_blobs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("blobs"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "part"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The relative link from `snapshots/<commit>/<file>` to `blobs/<etag>`.
#[cfg(any(feature = "hub", test))]
pub fn blob_link(file: &str, etag: &str) -> PathBuf {
    let mut link = PathBuf::new();
    for _ in 0..file.split('/').count() + 1 {
        link.push("..");
    }
    link.join("blobs").join(etag)
}

/// Whether `dir` is a folder with every file of `required`. An entry `a|b` is satisfied by
/// either file; a `*.index.json` that is present also needs every file its `weight_map`
/// names (sharded weights).
pub fn lacking(dir: &Path, required: &[&str]) -> Vec<String> {
    required
        .iter()
        .filter(|entry| !entry.split('|').any(|file| complete(dir, file)))
        .map(|entry| entry.replace('|', " or "))
        .collect()
}

fn complete(dir: &Path, file: &str) -> bool {
    let path = dir.join(file);
    if !path.is_file() {
        return false;
    }
    if !file.ends_with(".index.json") {
        return true;
    }
    shards(&path).is_some_and(|shards| shards.iter().all(|s| dir.join(s).is_file()))
}

/// The files a safetensors index's `weight_map` names, sorted and distinct; `None` when
/// it cannot be read.
pub fn shards(index: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(index).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut files: Vec<String> = json["weight_map"]
        .as_object()?
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    files.sort();
    files.dedup();
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_climb_out_of_the_snapshot() {
        assert_eq!(blob_link("config.json", "e"), Path::new("../../blobs/e"));
        assert_eq!(
            blob_link("1_Pooling/config.json", "e"),
            Path::new("../../../blobs/e")
        );
    }

    #[test]
    fn alternatives_and_shards() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), "{}").unwrap();
        let weights = "model.safetensors|model.safetensors.index.json";
        assert_eq!(
            lacking(d, &["config.json", weights]),
            vec!["model.safetensors or model.safetensors.index.json"]
        );
        let index = r#"{"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}"#;
        std::fs::write(d.join("model.safetensors.index.json"), index).unwrap();
        std::fs::write(d.join("m-1.safetensors"), "").unwrap();
        assert_eq!(lacking(d, &[weights]).len(), 1, "a shard is missing");
        std::fs::write(d.join("m-2.safetensors"), "").unwrap();
        assert!(lacking(d, &["config.json", weights]).is_empty());
    }
}
