//! The embedding engine end to end, each figure beside a baseline from the same run
//! (medians; these machines are noisy, read the ratios):
//!
//! 1. Bulk: `mm embed --input CORPUS --output x.npy` (whole process) against
//!    benches/bulk_python.py, a plain onnxruntime + tokenizers pipeline that sorts by length
//!    once, on the same fp32 ONNX export of all-MiniLM-L6-v2; wall time and peak RSS of both.
//! 2. Server: 32 concurrent clients sending one text per request to `mm serve`, against the
//!    same texts as one request, on the ONNX backend (two engine workers, one intra-op thread
//!    each: `engine_workers = 2`) and on candle.
//!
//! ```sh
//! cargo bench -p model-manager-cli --bench engine
//! ```
//!
//! Needs scripts/fetch-models.sh, and Python with PyPI for the baseline (a virtualenv under
//! target/). Inputs, each overridable: `MM_BENCH_CORPUS` (default
//! `../shared/bench/corpus_mixed_public.txt`), `MM_BENCH_FP32_ONNX` (default: exported once
//! into target/bench-fp32/ with `MM_EXPORT_TOOL`, default
//! `../shared/tools/export_bert_onnx.py`), `MM_BENCH_RUNS` (3).

#[path = "../../../benches/python_venv.rs"]
mod python_venv;
#[path = "support/mod.rs"]
mod support;

use support::Client;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const CLIENTS: usize = 32;
const SERVER_TEXTS: usize = 640;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_path(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name).map_or(default, PathBuf::from)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Wall seconds and peak resident bytes of one run of `command`.
// The child is reaped by wait4, which also gives its resource usage.
#[allow(clippy::zombie_processes)]
fn measure(command: &mut Command) -> (f64, u64) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .spawn()
        .expect("command starts");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid for writes.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed"
    );
    (seconds, usage.ru_maxrss as u64 * 1024)
}

/// The fp32 export of all-MiniLM-L6-v2, made once.
fn fp32_graph(repo: &Path, python: &Path) -> PathBuf {
    let graph = env_path(
        "MM_BENCH_FP32_ONNX",
        repo.join("target/bench-fp32/model.onnx"),
    );
    if graph.is_file() {
        return graph;
    }
    let tool = env_path(
        "MM_EXPORT_TOOL",
        repo.join("../shared/tools/export_bert_onnx.py"),
    );
    std::fs::create_dir_all(graph.parent().unwrap()).unwrap();
    let ok = Command::new(python)
        .arg(&tool)
        .arg(repo.join("models/all-MiniLM-L6-v2"))
        .arg(&graph)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "exporting with {} failed", tool.display());
    graph
}

/// The same model on the candle backend (safetensors), cache off.
fn candle_settings(repo: &Path, dir: &Path) -> PathBuf {
    let toml = format!(
        "embedding_cache.enabled = false\nlog_model_usage = false\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.backend = \"candle\"\n\
         models.embedding.local_path = \"{}\"\n",
        repo.join("models/all-MiniLM-L6-v2").display()
    );
    let path = dir.join("candle.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn settings(repo: &Path, graph: &Path, dir: &Path) -> PathBuf {
    let models = repo.join("models");
    let toml =
        format!(
        "embedding_cache.enabled = false\nlog_model_usage = false\nonnx.runtime_path = \"{}\"\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.backend = \"onnx\"\n\
         models.embedding.local_path = \"{}\"\nmodels.embedding.tokenizer_path = \"{}\"\n\
         models.embedding.max_seq_length = 256\nmodels.embedding.engine_workers = 2\n",
        models.join("onnxruntime/capi/libonnxruntime.so.1.32.0").display(),
        graph.parent().unwrap().display(),
        models.join("all-MiniLM-L6-v2/tokenizer.json").display(),
    );
    let path = dir.join("settings.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn read_npy(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    npyz::NpyFile::new(bytes.as_slice())
        .unwrap()
        .into_vec()
        .unwrap()
}

fn bulk(runs: usize, mm: &mut dyn FnMut() -> Command, py: &mut dyn FnMut() -> Command) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(measure(&mut mm()));
        theirs.push(measure(&mut py()));
    }
    let secs = |v: &[(f64, u64)]| median(v.iter().map(|r| r.0).collect());
    let rss = |v: &[(f64, u64)]| v.iter().map(|r| r.1).max().unwrap() as f64 / 1048576.0;
    let (a, b) = (secs(&ours), secs(&theirs));
    println!("bulk, whole process, median of {runs}:");
    println!(
        "  mm embed                 {a:>7.2} s   peak RSS {:>6.0} MiB",
        rss(&ours)
    );
    println!(
        "  python onnxruntime       {b:>7.2} s   peak RSS {:>6.0} MiB",
        rss(&theirs)
    );
    println!("  mm / python throughput   {:>7.2}x", b / a);
}

fn serve(runs: usize, backend: &str, config: &Path, texts: &[String]) {
    let (mut child, addr) = support::start_server(config);
    let one = serde_json::json!({ "input": texts }).to_string();
    let mut baseline = Client::connect(&addr);
    assert_eq!(baseline.post(&one), 200, "warm-up");
    let (mut single, mut concurrent) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        assert_eq!(baseline.post(&one), 200);
        single.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        std::thread::scope(|s| {
            for client in 0..CLIENTS {
                let addr = &addr;
                s.spawn(move || {
                    // Keep-alive, as HTTP clients and SDKs pool their connections.
                    let mut connection = Client::connect(addr);
                    for text in texts.iter().skip(client).step_by(CLIENTS) {
                        let body = serde_json::json!({ "input": text }).to_string();
                        assert_eq!(connection.post(&body), 200);
                    }
                });
            }
        });
        concurrent.push(started.elapsed().as_secs_f64());
    }
    let _ = child.kill();
    let _ = child.wait();
    let (a, b) = (median(single), median(concurrent));
    let n = texts.len() as f64;
    println!(
        "server ({backend}), {} texts, median of {runs}:",
        texts.len()
    );
    println!("  one request of all texts         {:>8.1} texts/s", n / a);
    println!(
        "  {CLIENTS} clients, one text each      {:>8.1} texts/s   ({:.2}x one request)",
        n / b,
        a / b
    );
}

fn main() {
    let repo = repo();
    assert!(
        repo.join("models/onnxruntime").is_dir(),
        "run scripts/fetch-models.sh first"
    );
    let runs: usize = std::env::var("MM_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let corpus = env_path(
        "MM_BENCH_CORPUS",
        repo.join("../shared/bench/corpus_mixed_public.txt"),
    );
    let python = python_venv::python(
        &repo,
        &[
            "onnxruntime==1.32.0",
            "tokenizers",
            "numpy",
            "safetensors",
            "onnx",
        ],
    );
    let graph = fp32_graph(&repo, &python);
    let dir = repo.join("target/bench-engine");
    std::fs::create_dir_all(&dir).unwrap();
    let config = settings(&repo, &graph, &dir);
    let tokenizer = repo.join("models/all-MiniLM-L6-v2/tokenizer.json");
    let (ours_npy, theirs_npy) = (dir.join("mm.npy"), dir.join("python.npy"));
    let mut mm = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mm"));
        c.arg("--config")
            .arg(&config)
            .args(["embed", "--input"])
            .arg(&corpus);
        c.arg("--output").arg(&ours_npy);
        c
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/bulk_python.py");
    let mut py = || {
        let mut c = Command::new(&python);
        c.arg(&script)
            .args([&graph, &tokenizer, &corpus, &theirs_npy]);
        c
    };
    println!(
        "all-MiniLM-L6-v2 fp32 ONNX ({}), corpus {}",
        graph.display(),
        corpus.display()
    );
    bulk(runs, &mut mm, &mut py);
    let (a, b) = (read_npy(&ours_npy), read_npy(&theirs_npy));
    assert_eq!(a.len(), b.len(), "both embed every text");
    let max_abs = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    println!("  max |mm - python| over all values: {max_abs:.2e}");
    // Distinct texts: one request computes a repeated text once, 32 clients (cache off)
    // would compute it each time, and the comparison would be of different work.
    let mut seen = std::collections::HashSet::new();
    let texts: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && seen.insert(l.to_string()))
        .take(SERVER_TEXTS)
        .map(str::to_owned)
        .collect();
    serve(runs, "onnx fp32", &config, &texts);
    serve(runs, "candle", &candle_settings(&repo, &dir), &texts);
}
