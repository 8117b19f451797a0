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
//! (`onnx,candle,int8`: the servers measured), `MM_BENCH_BIN` (another `mm` to measure).

#[path = "engine/avx2_cpu.rs"]
mod avx2_cpu;
#[path = "../../../benches/python_venv.rs"]
mod python_venv;
#[path = "engine/serve.rs"]
mod serve;
#[path = "support/mod.rs"]
mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

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
    println!("bulk, whole process, median of {runs} (int8: calibration kept after the first run); fidelity to Python's vectors:");
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

/// An empty cache folder for `mm` under `dir`: the first int8 run of a bench calibrates
/// and keeps it, the later ones read it (the median is of warm runs, as a user's repeated
/// `mm embed` would be).
fn fresh_cache_home(dir: &Path) -> PathBuf {
    let home = dir.join("cache-home");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    home
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
    let cache_home = fresh_cache_home(&dir);
    let mm = |config: &Path, out: &Path| {
        let mut c = Command::new(support::mm_binary());
        c.args(mm_args(config, out))
            .env("XDG_CACHE_HOME", &cache_home);
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
            serve::serve(runs, label, config, &texts);
        }
    }
}
