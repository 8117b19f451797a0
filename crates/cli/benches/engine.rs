//! The embedding engine end to end, each figure beside a baseline from the same run
//! (medians; these machines are noisy, read the ratios):
//!
//! 1. Bulk: `mm embed --input CORPUS --output x.npy` (whole process) against
//!    benches/bulk_python.py, a plain onnxruntime + tokenizers pipeline that sorts by length
//!    once, on the same fp32 ONNX export of all-MiniLM-L6-v2; wall time and peak RSS of
//!    both, for mm on ONNX fp32, candle fp32, candle int8 (the kernel this CPU picks) and
//!    candle int8 on the AVX2 kernel (`int8_kernel = "avx2"`; and on AVX-VNNI where the CPU
//!    has it), each with its fidelity to
//!    Python's vectors: mean and lowest cosine, 10-nearest-neighbour agreement over the
//!    corpus (the gate int8 loads under: 0.999, 0.995, 0.95).
//! 2. AVX2-only CPU (`avx2cpu`): the bulk comparison of candle int8 and fp32 again, with
//!    `mm` and Python both on an emulated CPU without AVX-512, VNNI or AMX
//!    (`engine/avx2_cpu.rs`, tools/cpu-mask): the figure of an AVX2-only machine.
//! 3. Server: 32 and 128 concurrent clients sending one text per request to `mm serve`
//!    (throughput, and p50 / p99 latency of a request), against the same texts as one
//!    request, on the ONNX backend (two engine workers, one intra-op thread each:
//!    `engine_workers = 2`), on candle fp32 and on candle int8.
//!
//! ```sh
//! cargo bench -p model-manager-cli --bench engine
//! ```
//!
//! Needs scripts/fetch-models.sh, and Python with PyPI for the baseline (a virtualenv under
//! target/). Inputs, each overridable: `MM_BENCH_CORPUS` (default
//! `../shared/bench/corpus_mixed_public.txt`), `MM_BENCH_FP32_ONNX` (default: exported once
//! into target/bench-fp32/ with `MM_EXPORT_TOOL`, default
//! `../shared/tools/export_bert_onnx.py`), `MM_BENCH_RUNS` (3), `MM_BENCH_SERVE_RUNS` (7: the
//! server runs are short), `MM_BENCH_PARTS` (`bulk,avx2cpu,serve`: which parts to run), `MM_BENCH_SERVE`
//! (`onnx,candle,int8`: the servers measured).

#[path = "engine/avx2_cpu.rs"]
mod avx2_cpu;
#[path = "../../../benches/python_venv.rs"]
mod python_venv;
#[path = "support/mod.rs"]
mod support;

use support::Client;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Concurrent single-text clients of the server measurement.
const CLIENT_COUNTS: [usize; 2] = [32, 128];
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

/// The same model on the candle backend (safetensors), cache off, with `extra` settings
/// lines, written as `name`.
fn candle_settings(repo: &Path, dir: &Path, name: &str, extra: &str) -> PathBuf {
    let toml = format!(
        "embedding_cache.enabled = false\nlog_model_usage = false\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.backend = \"candle\"\n\
         models.embedding.local_path = \"{}\"\n{extra}",
        repo.join("models/all-MiniLM-L6-v2").display()
    );
    let path = dir.join(name);
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

/// One way of running `mm embed`: a label and its settings file.
struct Variant {
    label: &'static str,
    config: PathBuf,
}

fn bulk(
    runs: usize,
    variants: &[Variant],
    mm: &dyn Fn(&Path, &Path) -> Command,
    py: &mut dyn FnMut() -> Command,
    dir: &Path,
) {
    let mut ours = vec![Vec::new(); variants.len()];
    let mut theirs = Vec::new();
    for _ in 0..runs {
        for (variant, times) in variants.iter().zip(&mut ours) {
            let out = dir.join(format!("{}.npy", variant.label.replace(' ', "-")));
            times.push(measure(&mut mm(&variant.config, &out)));
        }
        theirs.push(measure(&mut py()));
    }
    let secs = |v: &[(f64, u64)]| median(v.iter().map(|r| r.0).collect());
    let rss = |v: &[(f64, u64)]| v.iter().map(|r| r.1).max().unwrap() as f64 / 1048576.0;
    let (b, b_rss) = (secs(&theirs), rss(&theirs));
    let python = read_npy(&dir.join("python.npy"));
    println!("bulk, whole process, median of {runs}; fidelity to Python's vectors:");
    println!("  python onnxruntime fp32   {b:>6.2} s   peak RSS {b_rss:>5.0} MiB");
    for (variant, times) in variants.iter().zip(&ours) {
        let a = secs(times);
        let vectors = read_npy(&dir.join(format!("{}.npy", variant.label.replace(' ', "-"))));
        let (mean, min, agreement) = fidelity(&vectors, &python, 384);
        println!(
            "  mm {:<22} {a:>6.2} s   peak RSS {:>5.0} MiB ({:.2}x)   {:>5.2}x python   cosine mean {mean:.5} min {min:.5}, 10-NN agreement {agreement:.3}",
            variant.label,
            rss(times),
            rss(times) / b_rss,
            b / a,
        );
    }
}

/// Mean and lowest cosine between the rows of `a` and `b`, and the share of each row's 10
/// nearest neighbours (by cosine, among all rows) that both agree on.
fn fidelity(a: &[f32], b: &[f32], dim: usize) -> (f64, f64, f64) {
    let unit = |v: &[f32]| -> Vec<Vec<f64>> {
        v.chunks(dim)
            .map(|r| {
                let n = r
                    .iter()
                    .map(|x| (*x as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                r.iter().map(|x| *x as f64 / n).collect()
            })
            .collect()
    };
    let (a, b) = (unit(a), unit(b));
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let cosines: Vec<f64> = a.iter().zip(&b).map(|(x, y)| dot(x, y)).collect();
    let nearest = |rows: &[Vec<f64>], i: usize| {
        let mut others: Vec<(f64, usize)> = (0..rows.len())
            .filter(|&j| j != i)
            .map(|j| (dot(&rows[i], &rows[j]), j))
            .collect();
        others.sort_by(|p, q| q.0.total_cmp(&p.0));
        others
            .into_iter()
            .take(10)
            .map(|(_, j)| j)
            .collect::<Vec<_>>()
    };
    let kept: usize = (0..a.len())
        .map(|i| {
            let theirs = nearest(&b, i);
            nearest(&a, i).iter().filter(|j| theirs.contains(j)).count()
        })
        .sum();
    (
        cosines.iter().sum::<f64>() / cosines.len() as f64,
        cosines.iter().copied().fold(1.0, f64::min),
        kept as f64 / (10 * a.len()) as f64,
    )
}

/// Wall seconds for `clients` keep-alive clients to send `texts` one per request between
/// them, and every request's latency.
fn concurrent(addr: &str, clients: usize, texts: &[String]) -> (f64, Vec<f64>) {
    let started = Instant::now();
    let latencies = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                s.spawn(move || {
                    // Keep-alive, as HTTP clients and SDKs pool their connections.
                    let mut connection = Client::connect(addr);
                    let mut latencies = Vec::new();
                    for text in texts.iter().skip(client).step_by(clients) {
                        let body = serde_json::json!({ "input": text }).to_string();
                        let sent = Instant::now();
                        assert_eq!(connection.post(&body), 200);
                        latencies.push(sent.elapsed().as_secs_f64());
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    (started.elapsed().as_secs_f64(), latencies)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// The engine's counters that explain a throughput: forward passes, texts and seconds in
/// forward passes so far, from the server's /metrics.
#[derive(Clone, Copy, Default)]
struct EngineCounters {
    batches: f64,
    texts: f64,
    tokens: f64,
    padded_tokens: f64,
    forward_seconds: f64,
}

impl EngineCounters {
    fn read(addr: &str) -> Self {
        let (status, body) = Client::connect(addr).request("GET", "/metrics", "");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        Self {
            batches: value("mm_engine_batches_total{"),
            texts: value("mm_engine_texts_total{"),
            tokens: value("mm_engine_tokens_total{"),
            padded_tokens: value("mm_engine_padded_tokens_total{"),
            forward_seconds: value("mm_engine_forward_seconds_sum{"),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            batches: self.batches - before.batches,
            texts: self.texts - before.texts,
            tokens: self.tokens - before.tokens,
            padded_tokens: self.padded_tokens - before.padded_tokens,
            forward_seconds: self.forward_seconds - before.forward_seconds,
        }
    }
}

/// Seconds for the server to embed all of `texts` as one request.
fn one_request(client: &mut Client, body: &str) -> f64 {
    let started = Instant::now();
    assert_eq!(client.post(body), 200);
    started.elapsed().as_secs_f64()
}

/// The server measurement; each run times one request of all texts just before and after
/// the concurrent loads, and a load's ratio is taken against that run's mean of the two
/// (paired, so the machine's drift between runs cancels), its median printed.
fn serve(runs: usize, backend: &str, config: &Path, texts: &[String]) {
    let (mut child, addr) = support::start_server(config);
    let one = serde_json::json!({ "input": texts }).to_string();
    let mut baseline = Client::connect(&addr);
    one_request(&mut baseline, &one);
    let before = EngineCounters::read(&addr);
    one_request(&mut baseline, &one);
    let whole = EngineCounters::read(&addr).since(before);
    let mut single = Vec::new();
    let mut loads: Vec<Load> = CLIENT_COUNTS.iter().map(|&c| Load::new(c)).collect();
    for _ in 0..runs {
        let before = one_request(&mut baseline, &one);
        let walls: Vec<f64> = loads
            .iter_mut()
            .map(|load| load.run(&addr, texts))
            .collect();
        let after = one_request(&mut baseline, &one);
        let reference = (before + after) / 2.0;
        single.push(reference);
        for (load, wall) in loads.iter_mut().zip(walls) {
            load.ratios.push(reference / wall);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let n = texts.len() as f64;
    println!(
        "server ({backend}), {} texts, median of {runs}:",
        texts.len()
    );
    println!(
        "  one request of all texts         {:>8.1} texts/s   {:.1} texts a pass, paid/real tokens {:.2}",
        n / median(single),
        whole.texts / whole.batches.max(1.0),
        whole.padded_tokens / whole.tokens.max(1.0),
    );
    for load in loads {
        load.print(n);
    }
}

/// One concurrent load's measurements over the runs.
struct Load {
    clients: usize,
    walls: Vec<f64>,
    ratios: Vec<f64>,
    latencies: Vec<f64>,
    counters: EngineCounters,
}

impl Load {
    fn new(clients: usize) -> Self {
        Self {
            clients,
            walls: Vec::new(),
            ratios: Vec::new(),
            latencies: Vec::new(),
            counters: EngineCounters::default(),
        }
    }

    /// One run; its wall seconds.
    fn run(&mut self, addr: &str, texts: &[String]) -> f64 {
        let before = EngineCounters::read(addr);
        let (wall, each) = concurrent(addr, self.clients, texts);
        let during = EngineCounters::read(addr).since(before);
        self.counters.batches += during.batches;
        self.counters.texts += during.texts;
        self.counters.tokens += during.tokens;
        self.counters.padded_tokens += during.padded_tokens;
        self.counters.forward_seconds += during.forward_seconds;
        self.walls.push(wall);
        self.latencies.extend(each);
        wall
    }

    fn print(self, texts: f64) {
        let busy = self.counters.forward_seconds / self.walls.iter().sum::<f64>();
        println!(
            "  {:>3} clients, one text each     {:>8.1} texts/s   ({:.2}x one request)   latency p50 {:.1} ms, p99 {:.1} ms   {:.1} texts a pass, paid/real tokens {:.2}, in passes {:.0}% of the time",
            self.clients,
            texts / median(self.walls),
            median(self.ratios),
            percentile(self.latencies.clone(), 0.5) * 1e3,
            percentile(self.latencies, 0.99) * 1e3,
            self.counters.texts / self.counters.batches.max(1.0),
            self.counters.padded_tokens / self.counters.tokens.max(1.0),
            busy * 100.0,
        );
    }
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
    let mm_args = |config: &Path, out: &Path| -> Vec<OsString> {
        vec![
            "--config".into(),
            config.as_os_str().to_owned(),
            "embed".into(),
            "--input".into(),
            corpus.as_os_str().to_owned(),
            "--output".into(),
            out.as_os_str().to_owned(),
        ]
    };
    let mm = |config: &Path, out: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mm"));
        c.args(mm_args(config, out));
        c
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/bulk_python.py");
    let python_args = |out: &Path| -> Vec<OsString> {
        [&script, &graph, &tokenizer, &corpus, out]
            .into_iter()
            .map(|p| p.as_os_str().to_owned())
            .collect()
    };
    let theirs_npy = dir.join("python.npy");
    let mut py = || {
        let mut c = Command::new(&python);
        c.args(python_args(&theirs_npy));
        c
    };
    println!(
        "all-MiniLM-L6-v2 fp32 ONNX ({}), corpus {}",
        graph.display(),
        corpus.display()
    );
    let int8 = "models.embedding.quantize = \"int8\"\n";
    let forced = |kernel: &str| format!("{int8}models.embedding.int8_kernel = \"{kernel}\"\n");
    let mut variants = vec![
        Variant {
            label: "onnx fp32",
            config: config.clone(),
        },
        Variant {
            label: "candle fp32",
            config: candle_settings(&repo, &dir, "candle.toml", ""),
        },
        Variant {
            label: "candle int8",
            config: candle_settings(&repo, &dir, "int8.toml", int8),
        },
        Variant {
            label: "candle int8 avx2",
            config: candle_settings(&repo, &dir, "int8-avx2.toml", &forced("avx2")),
        },
    ];
    // The 256-bit VNNI kernel, where the CPU has it (it is the one an AVX2-class CPU with
    // AVX-VNNI and no AVX-512 would pick).
    if model_manager::CpuFeatures::detect().avx_vnni {
        variants.push(Variant {
            label: "candle int8 avx-vnni",
            config: candle_settings(&repo, &dir, "int8-avx-vnni.toml", &forced("avx-vnni")),
        });
    }
    let parts = std::env::var("MM_BENCH_PARTS").unwrap_or_else(|_| "bulk,avx2cpu,serve".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    if part("bulk") {
        bulk(runs, &variants, &mm, &mut py, &dir);
    }
    if part("avx2cpu") {
        avx2_cpu::bulk_on_avx2_cpu(
            runs,
            &repo,
            &dir.join("avx2-cpu"),
            &python,
            &python_args,
            &mm_args,
        );
    }
    if !part("serve") {
        return;
    }
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
    let runs: usize = std::env::var("MM_BENCH_SERVE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let backends = std::env::var("MM_BENCH_SERVE").unwrap_or_else(|_| "onnx,candle,int8".into());
    let servers = [
        ("onnx", "onnx fp32", &config),
        ("candle", "candle", &variants[1].config),
        ("int8", "candle int8", &variants[2].config),
    ];
    for (name, label, config) in servers {
        if backends.split(',').any(|b| b.trim() == name) {
            serve(runs, label, config, &texts);
        }
    }
}
