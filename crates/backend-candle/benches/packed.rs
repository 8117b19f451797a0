//! Candle's packed BERT encoder against candle-transformers' padded `BertModel` (the
//! previous path, `packed = false`) and ONNX Runtime on an fp32 export of the same
//! all-MiniLM-L6-v2 weights: all three end to end through the manager (same tokenizer,
//! engine batching, pooling), in one run, on the same texts, passes interleaved. Prints the
//! median of the passes, the ratio to ORT and the share of the CPU's sgemm peak each
//! reaches (peak: a candle f32 GEMM [2048x384]x[384x1536] timed between the passes; work:
//! 2 x dense parameters x tokens plus 4 x layers x len^2 x hidden of attention per text,
//! the same useful FLOPs for all three, padding not counted).
//!
//! Run: `cargo bench -p model-manager-candle --bench packed`
//!
//! - MM_BENCH_CORPUS: the mixed corpus, one text a line (default
//!   `../shared/bench/corpus_mixed_public.txt` beside the repository);
//! - MM_BENCH_FP32_ONNX: an fp32 ONNX graph of the model; when unset the bench builds
//!   `target/bench-onnx/all-MiniLM-L6-v2-fp32.onnx` with `../shared/tools/export_bert_onnx.py`
//!   in a virtualenv `target/bench-export-venv` (numpy, safetensors, onnx from PyPI), or
//!   with MM_BENCH_PYTHON, an interpreter that has them;
//! - MM_BENCH_PASSES: timed passes per engine and corpus (default 5);
//! - MM_BENCH_ENGINES: a comma-separated subset of `packed,padded,ort` (e.g. to profile one).

#[allow(dead_code)]
#[path = "../../../benches/corpus.rs"]
mod corpus;

use candle_core::{Device, Tensor};
use model_manager_candle as _;
use model_manager_core::{ModelManager, Settings};
use model_manager_onnx as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BATCH: usize = 32;
const MAX_TOKENS: usize = 256;
const ENGINES: [(&str, &str); 3] = [
    ("packed", "candle packed"),
    ("padded", "candle padded"),
    ("ort", "onnxruntime fp32"),
];

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key).map(PathBuf::from)
}

/// The interpreter for the export: MM_BENCH_PYTHON, or a venv under target/.
fn export_python(repo: &Path) -> PathBuf {
    if let Some(p) = env_path("MM_BENCH_PYTHON") {
        return p;
    }
    let venv = repo.join("target/bench-export-venv");
    let bin = venv.join("bin/python");
    if !bin.is_file() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "cannot create {}",
            venv.display()
        );
    }
    let pip = Command::new(&bin)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "numpy",
            "safetensors",
            "onnx",
        ])
        .status();
    assert!(
        pip.is_ok_and(|s| s.success()),
        "pip could not install numpy safetensors onnx"
    );
    bin
}

/// MM_BENCH_FP32_ONNX, or the graph exported once into target/.
fn fp32_graph(repo: &Path, model: &Path) -> PathBuf {
    if let Some(p) = env_path("MM_BENCH_FP32_ONNX") {
        assert!(
            p.is_file(),
            "MM_BENCH_FP32_ONNX={} is not a file",
            p.display()
        );
        return p;
    }
    let out = repo.join("target/bench-onnx/all-MiniLM-L6-v2-fp32.onnx");
    if out.is_file() {
        return out;
    }
    let script = repo.join("../shared/tools/export_bert_onnx.py");
    assert!(
        script.is_file(),
        "{} not found: set MM_BENCH_FP32_ONNX",
        script.display()
    );
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let ok = Command::new(export_python(repo))
        .arg(&script)
        .arg(model)
        .arg(&out)
        .status();
    assert!(ok.is_ok_and(|s| s.success()), "the fp32 export failed");
    out
}

fn manager(model: &Path, graph: &Path, runtime: &Path) -> ModelManager {
    let mut toml = format!(
        "embedding_cache.enabled = false\nonnx.runtime_path = \"{}\"\n",
        runtime.display()
    );
    for (id, _) in ENGINES {
        let backend = if id == "ort" { "onnx" } else { "candle" };
        toml += &format!(
            "models.{id}.type = \"embedding\"\nmodels.{id}.backend = \"{backend}\"\n\
             models.{id}.local_path = \"{}\"\nmodels.{id}.batch_size = {BATCH}\n",
            model.display()
        );
    }
    toml += "models.padded.packed = false\n";
    toml += &format!("models.ort.model_file = \"{}\"\n", graph.display());
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

/// The model's shape, for counting FLOPs.
struct Shape {
    hidden: f64,
    layers: f64,
    /// Dense weights a token passes through (QKV, output, feed-forward), all layers.
    dense_params: f64,
}

impl Shape {
    fn read(model: &Path) -> Self {
        let text = std::fs::read_to_string(model.join("config.json")).unwrap();
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        let get = |k: &str| config[k].as_f64().unwrap();
        let (h, i, l) = (
            get("hidden_size"),
            get("intermediate_size"),
            get("num_hidden_layers"),
        );
        Self {
            hidden: h,
            layers: l,
            dense_params: l * (4.0 * h * h + 2.0 * h * i),
        }
    }

    fn flops(&self, lengths: &[usize]) -> f64 {
        lengths
            .iter()
            .map(|&n| {
                let n = n as f64;
                2.0 * self.dense_params * n + 4.0 * self.layers * n * n * self.hidden
            })
            .sum()
    }
}

/// The reference peak: candle's f32 matmul on a large GEMM, timed between the passes.
struct Peak {
    a: Tensor,
    b: Tensor,
    times: Vec<Duration>,
}

impl Peak {
    const SHAPE: (usize, usize, usize) = (2048, 384, 1536);

    fn new() -> Self {
        let (m, k, n) = Self::SHAPE;
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).unwrap();
        let mut peak = Self {
            a,
            b,
            times: Vec::new(),
        };
        peak.sample();
        peak.times.clear();
        peak
    }

    /// Five products; keeps the fastest (a sample of what the machine can do right now).
    fn sample(&mut self) {
        let best = (0..5)
            .map(|_| {
                let start = Instant::now();
                let c = self.a.matmul(&self.b).unwrap();
                assert_eq!(c.dim(0).unwrap(), Self::SHAPE.0);
                start.elapsed()
            })
            .min()
            .unwrap();
        self.times.push(best);
    }

    /// FLOP/s at the median sample.
    fn flops(&self) -> f64 {
        let (m, k, n) = Self::SHAPE;
        2.0 * (m * k * n) as f64 / corpus::median(self.times.clone()).as_secs_f64()
    }
}

fn short_texts() -> Vec<String> {
    (0..256).map(|i| corpus::sentence(i, 6 + i % 10)).collect()
}

fn mixed_texts(repo: &Path) -> Vec<String> {
    let path = env_path("MM_BENCH_CORPUS")
        .unwrap_or_else(|| repo.join("../shared/bench/corpus_mixed_public.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set MM_BENCH_CORPUS)", path.display()));
    text.lines().map(str::to_owned).collect()
}

/// Median time of each engine over `passes` interleaved passes on `texts`.
fn time_engines(
    rt: &tokio::runtime::Runtime,
    manager: &ModelManager,
    engines: &[(&str, &str)],
    texts: &[String],
    passes: usize,
    peak: &mut Peak,
) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::new(); engines.len()];
    for (id, _) in engines {
        rt.block_on(manager.generate_embeddings(id, &texts[..BATCH.min(texts.len())]))
            .unwrap();
    }
    for pass in 0..passes {
        peak.sample();
        // Rotate the order so slow drift on a shared machine hits every engine alike.
        for e in (0..engines.len()).map(|i| (i + pass) % engines.len()) {
            let start = Instant::now();
            let out = rt
                .block_on(manager.generate_embeddings(engines[e].0, texts))
                .unwrap();
            times[e].push(start.elapsed());
            assert_eq!(out.embeddings.len(), texts.len());
        }
    }
    times
}

struct Corpus<'a> {
    name: &'a str,
    texts: Vec<String>,
    lengths: Vec<usize>,
}

fn report(
    corpus: &Corpus,
    engines: &[(&str, &str)],
    times: Vec<Vec<Duration>>,
    shape: &Shape,
    peak: f64,
) {
    let tokens: usize = corpus.lengths.iter().sum();
    let flops = shape.flops(&corpus.lengths);
    let medians: Vec<f64> = times
        .iter()
        .map(|t| corpus::median(t.clone()).as_secs_f64())
        .collect();
    let ort = engines.iter().position(|(id, _)| *id == "ort");
    let ort = ort.map(|i| (medians[i], times[i].iter().min().unwrap().as_secs_f64()));
    println!(
        "\n{}: {} texts, {tokens} tokens (longest {}), {:.1} GFLOP; sgemm peak {:.1} GFLOP/s \
         (candle f32 [2048x384]x[384x1536], median between passes)",
        corpus.name,
        corpus.texts.len(),
        corpus.lengths.iter().max().unwrap_or(&0),
        flops / 1e9,
        peak / 1e9
    );
    println!(
        "  {:<18} {:>9} {:>17} {:>9} {:>9} {:>8} {:>7}  vs ORT (median, best)",
        "engine", "median s", "min..max s", "texts/s", "tokens/s", "GFLOP/s", "% peak"
    );
    for (((_, label), t), median) in engines.iter().zip(&times).zip(&medians) {
        let (min, max) = (t.iter().min().unwrap(), t.iter().max().unwrap());
        let ratio = ort
            .map(|(o, best)| format!("{:.2}x, {:.2}x", o / median, best / min.as_secs_f64()))
            .unwrap_or_default();
        println!(
            "  {label:<18} {median:>9.3} {:>8.3}..{:<8.3} {:>9.1} {:>9.0} {:>8.1} {:>6.1}%  {ratio}",
            min.as_secs_f64(),
            max.as_secs_f64(),
            corpus.texts.len() as f64 / median,
            tokens as f64 / median,
            flops / median / 1e9,
            100.0 * flops / median / peak,
        );
    }
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = repo.join("models/all-MiniLM-L6-v2");
    let runtime = repo.join("models/onnxruntime/capi/libonnxruntime.so.1.32.0");
    assert!(
        model.join("model.safetensors").is_file() && runtime.is_file(),
        "run scripts/fetch-models.sh first"
    );
    let passes: usize = std::env::var("MM_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("MM_BENCH_ENGINES").unwrap_or_else(|_| "packed,padded,ort".into());
    let engines: Vec<(&str, &str)> = ENGINES
        .into_iter()
        .filter(|(id, _)| only.split(',').any(|o| o.trim() == *id))
        .collect();
    let graph = fp32_graph(&repo, &model);
    let manager = manager(&model, &graph, &runtime);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: MAX_TOKENS,
            ..Default::default()
        }))
        .unwrap();
    let shape = Shape::read(&model);
    let mut peak = Peak::new();
    // Other work on the machine skews every number: show how busy it was.
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_before = load();
    println!(
        "all-MiniLM-L6-v2, CPU with {} threads, batch {BATCH}, median of {passes} interleaved passes each; ORT on {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        graph.display()
    );
    for (name, texts) in [("mixed", mixed_texts(&repo)), ("short", short_texts())] {
        let lengths = texts
            .iter()
            .map(|t| tokenizer.encode(t.as_str(), true).unwrap().len())
            .collect();
        let corpus = Corpus {
            name,
            texts,
            lengths,
        };
        let times = time_engines(&rt, &manager, &engines, &corpus.texts, passes, &mut peak);
        report(&corpus, &engines, times, &shape, peak.flops());
    }
    println!(
        "\nload average (1, 5, 15 min) before: {}, after: {}",
        load_before.trim(),
        load().trim()
    );
}
