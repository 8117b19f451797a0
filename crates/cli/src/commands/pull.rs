//! `mm pull`: download a configured model's files, or a hub repository's, into the Hugging
//! Face cache, with a progress bar per file.

use crate::output::print_json;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use model_manager::files::download::{observe_downloads, pull_repo, DownloadEvent};
use model_manager::files::RepoCache;
use model_manager::{off_runtime, ErrorCode, ModelError, ModelManager};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;

/// Shows each file's download as a progress bar on stderr (hidden when it is not a terminal).
fn show_progress() {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let open: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    observe_downloads(move |event: &DownloadEvent| {
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("{}/{}", event.repo, event.file);
        match event.finished {
            Some(ok) => {
                if let Some(bar) = open.remove(&key) {
                    match ok {
                        true => bar.finish(),
                        false => bar.abandon_with_message(format!("{} (failed)", event.file)),
                    }
                }
            }
            None => {
                let bar = open.entry(key).or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new(event.total));
                    bar.set_style(style.clone());
                    bar.set_message(event.file.clone());
                    bar
                });
                bar.set_position(event.done);
            }
        }
    });
}

/// The files of a repository pulled without a configured model: configs, tokenizers and
/// safetensors weights at the top and in numbered module folders (`1_Pooling/`), not the
/// other formats a repository may carry (ONNX, OpenVINO, PyTorch, TensorFlow).
fn wanted(file: &str) -> bool {
    let top_or_module = match file.split_once('/') {
        None => true,
        Some((dir, rest)) => dir.starts_with(|c: char| c.is_ascii_digit()) && !rest.contains('/'),
    };
    let kind = [".json", ".txt", ".safetensors", ".model"]
        .iter()
        .any(|ext| file.ends_with(ext));
    top_or_module && kind
}

/// `mm pull TARGET`: a configured model id (the files its loader lists, fetched and
/// verified without loading the model; a loader that lists none, a plugin's, loads it once
/// instead), else a hub repository `org/name`.
pub async fn pull(manager: &ModelManager, target: &str, json_out: bool) -> Result<(), ModelError> {
    show_progress();
    if let Some(spec) = manager.settings().models.get(target).cloned() {
        if let Some(folder) = manager.fetch_files(target).await? {
            return report(json_out, target, &folder.path.display().to_string(), None);
        }
        // Released at once: the model is loaded only to fetch its files.
        drop(manager.get_model(target).await?);
        let place = match (&spec.local_path, &spec.name) {
            (Some(dir), _) if dir.exists() => dir.display().to_string(),
            (_, Some(name)) => RepoCache::of(name)
                .snapshot_dirs()
                .first()
                .map_or_else(String::new, |d| d.display().to_string()),
            _ => String::new(),
        };
        return report(json_out, target, &place, None);
    }
    if !target.contains('/') {
        return Err(ModelError::new(
            ErrorCode::ModelNotConfigured,
            format!(
                "`{target}` is neither a configured model nor a hub repository (org/name); `mm models` lists the configured ones"
            ),
        ));
    }
    let repo = target.to_owned();
    let panicked = || "the download panicked".to_owned();
    let (snapshot, files) = off_runtime(ErrorCode::ModelLoadError, panicked, move || {
        pull_repo(&repo, &wanted)
    })
    .await??;
    report(
        json_out,
        target,
        &snapshot.display().to_string(),
        Some(&files),
    )
}

fn report(
    json_out: bool,
    target: &str,
    place: &str,
    files: Option<&[String]>,
) -> Result<(), ModelError> {
    if json_out {
        print_json(&json!({"success": true, "pulled": target, "path": place, "files": files}))?;
    } else {
        eprintln!("pulled {target}: {place}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn pulls_what_the_loaders_read() {
        for file in [
            "config.json",
            "model.safetensors",
            "vocab.txt",
            "1_Pooling/config.json",
            "spiece.model",
        ] {
            assert!(wanted(file), "{file}");
        }
        for file in [
            "onnx/model.onnx",
            "pytorch_model.bin",
            "tf_model.h5",
            "openvino/x.json",
            "1_Pooling/a/b.json",
        ] {
            assert!(!wanted(file), "{file}");
        }
    }
}
