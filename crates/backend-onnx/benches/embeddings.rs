//! End-to-end sentences/s of `generate_embeddings` on the int8 all-MiniLM-L6-v2 ONNX graph
//! for 1,000 sentences, beside benches/python_baseline.py doing the same work with Python
//! onnxruntime and HF tokenizers, on the same machine in the same run. Medians; cache off.
//!
//! Targets: at least 1.0x Python on uniform sentences, faster on a mixed-length corpus.
//! The Python side runs in a virtualenv under target/ with onnxruntime==1.32.0, tokenizers
//! and numpy from PyPI (set MM_BENCH_PYTHON to use another interpreter that has them).

#[path = "../../../benches/corpus.rs"]
mod corpus;
#[path = "../../../benches/python_venv.rs"]
mod python_venv;

use corpus::{corpora, median, SENTENCES};
use model_manager_core::{ModelManager, Settings};
use model_manager_onnx as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const BATCH: usize = 32;
const PASSES: usize = 3;

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let models = repo.join("models");
    let graph = models.join("all-MiniLM-L6-v2-int8-onnx/model.onnx");
    let tokenizer = models.join("all-MiniLM-L6-v2/tokenizer.json");
    assert!(graph.is_file(), "run scripts/fetch-models.sh first");
    let toml = format!(
        "embedding_cache.enabled = false\nonnx.runtime_path = \"{}\"\n\
         models.e.type = \"embedding\"\nmodels.e.backend = \"onnx\"\nmodels.e.local_path = \"{}\"\n\
         models.e.tokenizer_path = \"{}\"\nmodels.e.max_seq_length = 256\nmodels.e.batch_size = {BATCH}\n",
        models.join("onnxruntime/capi/libonnxruntime.so.1.32.0").display(),
        graph.parent().unwrap().display(),
        tokenizer.display()
    );
    let manager = ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();

    let corpora = corpora();
    let corpus_file = repo.join("target/bench-corpus.jsonl");
    let lines: Vec<String> = corpora
        .iter()
        .flat_map(|(name, texts)| {
            texts
                .iter()
                .map(move |t| serde_json::json!({"corpus": name, "text": t}).to_string())
        })
        .collect();
    std::fs::write(&corpus_file, lines.join("\n")).unwrap();
    let packages = ["onnxruntime==1.32.0", "tokenizers", "numpy"];
    let out = Command::new(python_venv::python(&repo, &packages))
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python_baseline.py"))
        .args([&graph, &tokenizer, &corpus_file])
        .args([BATCH.to_string(), PASSES.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let baseline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    println!("int8 all-MiniLM-L6-v2 ONNX, {SENTENCES} sentences, batch {BATCH}, median of {PASSES} passes, CPU");
    println!(
        "{:<10} {:>16} {:>16} {:>8}",
        "corpus", "model-manager/s", "python/s", "ratio"
    );
    for (name, texts) in &corpora {
        rt.block_on(manager.generate_embeddings("e", &texts[..BATCH]))
            .unwrap();
        let mut times = Vec::new();
        for _ in 0..PASSES {
            let start = Instant::now();
            let out = rt
                .block_on(manager.generate_embeddings("e", texts))
                .unwrap();
            times.push(start.elapsed());
            assert_eq!(out.embeddings.len(), SENTENCES);
        }
        let ours = median(times).as_secs_f64();
        let theirs = baseline[name].as_f64().unwrap();
        let n = SENTENCES as f64;
        println!(
            "{name:<10} {:>16.1} {:>16.1} {:>7.2}x",
            n / ours,
            n / theirs,
            theirs / ours
        );
    }
}
