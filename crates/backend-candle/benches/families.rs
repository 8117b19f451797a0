//! Every encoder family: candle's packed encoder against ONNX Runtime on an fp32 export of
//! the same weights, end to end through the manager (same tokenizer, engine batching,
//! pooling), in one run, on the same texts, passes interleaved. Prints each family's median
//! texts/s and tokens/s on both engines and their ratio (Qwen3, a decoder, in tokens/s too).
//!
//! The checkpoints are random weights of each family's real structure at the size of its
//! small published models (fewer layers), made with their ONNX exports by
//! `scripts/fixtures/families.py --bench` (torch, transformers, sentence-transformers: see
//! the script), into `target/bench-families/`:
//!
//! ```sh
//! /tmp/ref/bin/python scripts/fixtures/families.py --bench
//! cargo bench -p model-manager-candle --bench families
//! ```
//!
//! - MM_BENCH_FAMILIES: the checkpoints' folder (default `target/bench-families`);
//! - MM_BENCH_CORPUS: the mixed corpus, one text a line (default
//!   `../shared/bench/corpus_mixed_public.txt` beside the repository);
//! - MM_BENCH_TEXTS: texts of the corpus per pass (default 256);
//! - MM_BENCH_PASSES: timed passes per engine (default 5).

#[allow(dead_code)]
#[path = "../../../benches/corpus.rs"]
mod corpus;

use model_manager_candle as _;
use model_manager_core::{ModelManager, Settings};
use model_manager_onnx as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ENGINES: [(&str, &str); 2] = [("candle", "candle packed"), ("onnx", "onnxruntime fp32")];

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn manager(model: &Path, runtime: &Path) -> ModelManager {
    let mut toml = format!(
        "embedding_cache.enabled = false\nonnx.runtime_path = \"{}\"\n",
        runtime.display()
    );
    for (id, _) in ENGINES {
        toml += &format!(
            "models.{id}.type = \"embedding\"\nmodels.{id}.backend = \"{id}\"\n\
             models.{id}.local_path = \"{}\"\nmodels.{id}.batch_size = 32\n",
            model.display()
        );
    }
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

/// Each engine's pass times and the tokens of one pass, passes interleaved (the order
/// rotates so slow drift on a shared machine hits both engines alike).
fn time_family(
    manager: &ModelManager,
    texts: &[String],
    passes: usize,
) -> (Vec<Vec<Duration>>, usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut tokens = 0;
    for (id, _) in ENGINES {
        tokens = rt
            .block_on(manager.generate_embeddings(id, texts))
            .unwrap()
            .tokens;
    }
    let mut times = vec![Vec::new(); ENGINES.len()];
    for pass in 0..passes {
        for e in (0..ENGINES.len()).map(|i| (i + pass) % ENGINES.len()) {
            let start = Instant::now();
            let out = rt
                .block_on(manager.generate_embeddings(ENGINES[e].0, texts))
                .unwrap();
            times[e].push(start.elapsed());
            assert_eq!(out.embeddings.len(), texts.len());
        }
    }
    rt.block_on(manager.shutdown()).unwrap();
    (times, tokens)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let runtime = repo.join("models/onnxruntime/capi/libonnxruntime.so.1.32.0");
    let root = std::env::var_os("MM_BENCH_FAMILIES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/bench-families"));
    let corpus_path = std::env::var_os("MM_BENCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/bench/corpus_mixed_public.txt"));
    let corpus = std::fs::read_to_string(&corpus_path)
        .unwrap_or_else(|e| panic!("{}: {e} (set MM_BENCH_CORPUS)", corpus_path.display()));
    let texts: Vec<String> = corpus
        .lines()
        .take(env_usize("MM_BENCH_TEXTS", 256))
        .map(str::to_owned)
        .collect();
    let passes = env_usize("MM_BENCH_PASSES", 5);
    let mut families: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: make the checkpoints with scripts/fixtures/families.py --bench",
                root.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("onnx/model.onnx").is_file())
        .collect();
    families.sort();
    println!(
        "{} texts of {}, CPU with {} threads, median of {passes} interleaved passes per engine",
        texts.len(),
        corpus_path.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  {:<12} {:>8} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "family", "tokens", "candle t/s", "ORT t/s", "candle tok/s", "ORT tok/s", "candle vs ORT"
    );
    for dir in families {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (times, tokens) = time_family(&manager(&dir, &runtime), &texts, passes);
        let medians: Vec<f64> = times
            .into_iter()
            .map(|t| corpus::median(t).as_secs_f64())
            .collect();
        let per = |n: usize, s: f64| n as f64 / s;
        println!(
            "  {name:<12} {tokens:>8} {:>12.1} {:>12.1} {:>12.0} {:>12.0} {:>13.2}x",
            per(texts.len(), medians[0]),
            per(texts.len(), medians[1]),
            per(tokens, medians[0]),
            per(tokens, medians[1]),
            medians[1] / medians[0]
        );
    }
}
