//! A cheap fingerprint of a model's files and config, part of every cache key.
//!
//! Files are identified by path, size and modification time rather than content: hashing a
//! multi-gigabyte weights file on every load would cost more than the cache saves.

use crate::spec::ModelSpec;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;
use xxhash_rust::xxh3::Xxh3;

/// How deep the model folder is walked (snapshots keep configs in `1_Pooling/` and the like).
const MAX_DEPTH: usize = 3;

/// Fingerprint of the settings that change a model's output and of the files it loads.
pub fn model_fingerprint(spec: &ModelSpec) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(output_config(spec).as_bytes());
    for file in model_files(spec) {
        hasher.update(file.relative.as_bytes());
        hasher.update(&file.len.to_le_bytes());
        hasher.update(&file.mtime_ns.to_le_bytes());
    }
    hasher.digest()
}

/// Fingerprint of what a model computes, the same on every machine that holds the same
/// files: the output-changing settings (sorted, without where files are or how many threads
/// run) and the content of every file the model may read: its folder (`local_path`, else
/// its Hugging Face snapshot; hidden files and folders skipped) and a `tokenizer_path`
/// outside it. Reads every file once, so it is for keys shared between processes (the
/// remote cache tier), not for every load. Blocking.
pub fn content_fingerprint(spec: &ModelSpec) -> std::io::Result<u128> {
    let mut hasher = Xxh3::new();
    hasher.update(canonical_config(spec).as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let hidden = |f: &ModelFile| f.relative.split('/').any(|part| part.starts_with('.'));
    for file in model_files(spec).iter().filter(|f| !hidden(f)) {
        hasher.update(file.relative.as_bytes());
        hasher.update(&file.len.to_le_bytes());
        hasher.update(&hash_content(&file.path, &mut buf)?.to_le_bytes());
    }
    if let Some(tokenizer) = spec.options.get("tokenizer_path").and_then(|v| v.as_str()) {
        hasher.update(b"tokenizer_path");
        hasher.update(&hash_content(Path::new(tokenizer), &mut buf)?.to_le_bytes());
    }
    Ok(hasher.digest128())
}

fn hash_content(path: &Path, buf: &mut [u8]) -> std::io::Result<u128> {
    let mut content = Xxh3::new();
    let mut reader = std::fs::File::open(path)?;
    loop {
        let n = std::io::Read::read(&mut reader, buf)?;
        if n == 0 {
            return Ok(content.digest128());
        }
        content.update(&buf[..n]);
    }
}

/// Options that do not change a model's output, or name places rather than content.
const NOT_OUTPUT_OPTIONS: &[&str] = &["intra_threads", "intra_op_spinning", "tokenizer_path"];

/// The output-changing settings as canonical JSON (keys sorted).
fn canonical_config(spec: &ModelSpec) -> String {
    let options: std::collections::BTreeMap<&String, &serde_json::Value> = spec
        .options
        .iter()
        .filter(|(k, _)| !NOT_OUTPUT_OPTIONS.contains(&k.as_str()))
        .collect();
    serde_json::json!({
        "type": spec.model_type,
        "backend": spec.backend,
        "name": spec.name,
        "dimension": spec.dimension,
        "options": options,
    })
    .to_string()
}

/// The settings that change a model's output, as JSON, with where its files are.
fn output_config(spec: &ModelSpec) -> String {
    serde_json::json!({
        "type": spec.model_type,
        "backend": spec.backend,
        "name": spec.name,
        "local_path": spec.local_path,
        "dimension": spec.dimension,
        "options": spec.options,
    })
    .to_string()
}

/// One file of a model folder.
struct ModelFile {
    path: PathBuf,
    relative: String,
    len: u64,
    mtime_ns: u128,
}

/// The files of the model's folder (`local_path`, else its Hugging Face snapshot), sorted
/// by relative path.
fn model_files(spec: &ModelSpec) -> Vec<ModelFile> {
    let mut files = Vec::new();
    let snapshot = || {
        let name = spec.name.as_ref()?;
        crate::files::RepoCache::of(name)
            .snapshot_dirs()
            .into_iter()
            .next()
    };
    if let Some(dir) = spec.local_path.clone().or_else(snapshot) {
        collect_files(&dir, &dir, 0, &mut files);
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    files
}

fn collect_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<ModelFile>) {
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
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        out.push(ModelFile {
            path,
            relative,
            len: meta.len(),
            mtime_ns,
        });
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

    #[test]
    fn content_fingerprint_follows_content_not_location() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for dir in [&a, &b] {
            std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
            std::fs::write(dir.path().join("1_Pooling/config.json"), b"{}").unwrap();
            std::fs::write(dir.path().join("weights.bin"), b"abc").unwrap();
        }
        let spec_in = |dir: &tempfile::TempDir| {
            let mut spec = ModelSpec::new("m", "embedding");
            spec.local_path = Some(dir.path().to_path_buf());
            spec
        };
        let first = content_fingerprint(&spec_in(&a)).unwrap();
        assert_eq!(
            first,
            content_fingerprint(&spec_in(&b)).unwrap(),
            "same files elsewhere"
        );
        assert_ne!(
            model_fingerprint(&spec_in(&a)),
            model_fingerprint(&spec_in(&b))
        );

        // Same length, other bytes: only a content hash sees it.
        std::fs::write(b.path().join("weights.bin"), b"abd").unwrap();
        assert_ne!(first, content_fingerprint(&spec_in(&b)).unwrap());
        std::fs::write(b.path().join("1_Pooling/config.json"), b"[]").unwrap();
        std::fs::write(b.path().join("weights.bin"), b"abc").unwrap();
        assert_ne!(
            first,
            content_fingerprint(&spec_in(&b)).unwrap(),
            "nested files count"
        );

        let mut cls = spec_in(&a);
        cls.options.insert("pooling".into(), "cls".into());
        assert_ne!(first, content_fingerprint(&cls).unwrap());
    }
}
