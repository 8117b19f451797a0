//! A cheap fingerprint of a model's files and config, part of every cache key.
//!
//! Files are identified by path, size and modification time rather than content: hashing a
//! multi-gigabyte weights file on every load would cost more than the cache saves.

use crate::spec::ModelSpec;
use std::path::Path;
use std::time::UNIX_EPOCH;
use xxhash_rust::xxh3::Xxh3;

/// How deep the model folder is walked (snapshots keep configs in `1_Pooling/` and the like).
const MAX_DEPTH: usize = 3;

/// Fingerprint of the settings that change a model's output and of the files it loads.
pub fn model_fingerprint(spec: &ModelSpec) -> u64 {
    let mut hasher = Xxh3::new();
    let config = serde_json::json!({
        "type": spec.model_type,
        "backend": spec.backend,
        "name": spec.name,
        "local_path": spec.local_path,
        "dimension": spec.dimension,
        "options": spec.options,
    });
    hasher.update(config.to_string().as_bytes());
    if let Some(dir) = &spec.local_path {
        let mut files = Vec::new();
        collect_files(dir, dir, 0, &mut files);
        files.sort();
        for (path, len, mtime) in files {
            hasher.update(path.as_bytes());
            hasher.update(&len.to_le_bytes());
            hasher.update(&mtime.to_le_bytes());
        }
    }
    hasher.digest()
}

fn collect_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, u64, u128)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                collect_files(root, &path, depth + 1, out);
            }
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let rel = path.strip_prefix(root).unwrap_or(&path);
        out.push((rel.to_string_lossy().into_owned(), meta.len(), mtime));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_with_files_and_options() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("weights.bin"), b"abc").unwrap();
        let mut spec = ModelSpec::new("m", "embedding");
        spec.local_path = Some(dir.path().to_path_buf());
        let first = model_fingerprint(&spec);
        assert_eq!(first, model_fingerprint(&spec));

        std::fs::write(dir.path().join("weights.bin"), b"abcd").unwrap();
        let second = model_fingerprint(&spec);
        assert_ne!(first, second);

        spec.options.insert("pooling".into(), "cls".into());
        assert_ne!(second, model_fingerprint(&spec));

        spec.batch_size = 7;
        let third = model_fingerprint(&spec);
        spec.batch_size = 8;
        assert_eq!(
            third,
            model_fingerprint(&spec),
            "batch size does not change outputs"
        );
    }
}
