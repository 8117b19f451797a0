//! The per-family fixtures of tests/fixtures/families (made by
//! scripts/fixtures/families.py: tiny random checkpoints, their ONNX exports, and what
//! sentence-transformers itself computes for them), for the backends' tests (included with
//! `#[path]`).

#![allow(dead_code)]

use model_manager_core::{EmbedOptions, ModelManager, Settings};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every checked-in family folder, by name.
pub fn fixtures() -> Vec<Fixture> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families");
    let mut out: Vec<Fixture> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| Fixture::read(&entry.unwrap().path()))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 11, "fixtures missing in {}", root.display());
    out
}

/// One fixture folder and its expected vectors.
pub struct Fixture {
    /// Folder name (`bert`, `qwen3`, `gte_published`…).
    pub name: String,
    /// The sentence-transformers folder.
    pub dir: PathBuf,
    /// The texts encoded.
    pub texts: Vec<String>,
    /// `default`, `prompt:NAME` and `literal:TEXT` runs of `encode`.
    pub vectors: BTreeMap<String, Vec<Vec<f64>>>,
    /// Other pooling configurations of the same weights (the `bert` fixture).
    pub pooling_variants: BTreeMap<String, Vec<Vec<f64>>>,
}

fn matrix(value: &serde_json::Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn matrices(value: &serde_json::Value) -> BTreeMap<String, Vec<Vec<f64>>> {
    value
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), matrix(v))).collect())
        .unwrap_or_default()
}

impl Fixture {
    fn read(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        Self {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir: dir.to_owned(),
            texts: json["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
            vectors: matrices(&json["vectors"]),
            pooling_variants: matrices(&json["pooling_variants"]),
        }
    }

    /// Whether the folder holds an ONNX export.
    pub fn has_onnx(&self) -> bool {
        self.dir.join("onnx/model.onnx").is_file()
    }

    /// The options of an expected run's key: `prompt:NAME` or `literal:TEXT`.
    pub fn options(key: &str) -> EmbedOptions {
        let mut options = EmbedOptions::default();
        if let Some(name) = key.strip_prefix("prompt:") {
            options.prompt_name = Some(name.into());
        } else if let Some(text) = key.strip_prefix("literal:") {
            options.prompt = Some(text.into());
        }
        options
    }
}

/// A manager serving `dir` as model `m` on `backend`, uncached, with extra settings lines.
pub fn manager(dir: &Path, backend: &str, extra: &str) -> ModelManager {
    let runtime = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/onnxruntime/capi/libonnxruntime.so.1.32.0");
    let toml = format!(
        "embedding_cache.enabled = false\nonnx.runtime_path = \"{}\"\n\
         models.m.type = \"embedding\"\nmodels.m.backend = \"{backend}\"\n\
         models.m.local_path = \"{}\"\nmodels.m.batch_size = 4\n{extra}",
        runtime.display(),
        dir.display()
    );
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

/// The worst cosine between `got` and `want`, and the worst relative difference of norms.
pub fn agreement(got: &[Vec<f32>], want: &[Vec<f64>]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let mut worst = (1.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        let dot: f64 = g.iter().zip(w).map(|(a, b)| f64::from(*a) * b).sum();
        let ng = g.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nw = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos = if ng == 0.0 && nw == 0.0 {
            1.0
        } else {
            dot / (ng * nw)
        };
        let norm = if nw == 0.0 { ng } else { (ng - nw).abs() / nw };
        worst = (worst.0.min(cos), worst.1.max(norm));
    }
    worst
}

/// Checks every expected run of `fixture` through `manager`; returns a line per run.
pub async fn check_runs(manager: &ModelManager, fixture: &Fixture, min_cosine: f64) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, want) in &fixture.vectors {
        let out = manager
            .generate_embeddings_with_options("m", &fixture.texts, &Fixture::options(key))
            .await
            .unwrap_or_else(|e| panic!("{} {key}: {e}", fixture.name));
        let (cos, norm) = agreement(&out.embeddings, want);
        lines.push(format!(
            "{:16} {key:24} min cosine 1 - {:.1e}, norm within {norm:.1e}",
            fixture.name,
            1.0 - cos
        ));
        assert!(
            cos >= min_cosine && norm < 1e-4,
            "{} {key}: min cosine {cos}, norm difference {norm}",
            fixture.name
        );
    }
    lines
}
