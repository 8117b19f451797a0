//! int8 through `mm` and `mm serve`: `mm quantize-check` prints the load-time fidelity
//! figures beside the gate and fails on bad input, a server's `/v1/status` shows a quantized
//! model's figures and kernel once loaded and the CPU's features, and int8 vectors over HTTP
//! stay next to f32 ones. `mm check` refuses bad quantization values without loading.

mod common;

use common::{json_of, repo, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// MiniLM twice: `embedding` in f32, `int8` quantized.
fn settings(dir: &Path) -> PathBuf {
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    let toml = format!(
        "embedding_cache.enabled = false\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.local_path = \"{0}\"\n\
         models.int8.type = \"embedding\"\nmodels.int8.local_path = \"{0}\"\n\
         models.int8.quantize = \"int8\"\n\
         models.own_texts.type = \"embedding\"\nmodels.own_texts.local_path = \"{0}\"\n\
         models.own_texts.quantize = \"int8\"\nmodels.own_texts.calibration_file = \"texts.txt\"\n\
         models.t5.type = \"text2text\"\nmodels.t5.local_path = \"{1}\"\n",
        minilm.display(),
        repo().join("models/flan-t5-small-title-onnx").display(),
    );
    let path = dir.join("settings.toml");
    std::fs::write(&path, toml).unwrap();
    let texts: Vec<String> = (0..15)
        .map(|i| format!("my own calibration text number {i}"))
        .collect();
    std::fs::write(dir.join("texts.txt"), texts.join("\n")).unwrap();
    path
}

fn mm(config: &Path, args: &[&str]) -> std::process::Output {
    mm_caching_in(
        config,
        args,
        &std::env::temp_dir().join("mm-tests-xdg-cache"),
    )
}

/// `mm` with its caches (the int8 calibration) under `cache_home`.
fn mm_caching_in(config: &Path, args: &[&str], cache_home: &Path) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("mm"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("XDG_CACHE_HOME", cache_home)
        .output()
        .unwrap()
}

#[test]
fn quantize_check_prints_the_gate_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path());
    // `embedding` is not quantized in the file: the check quantizes it anyway.
    let out = mm(&config, &["--json", "quantize-check", "-m", "embedding"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out.stdout);
    let q = &report["quantization"];
    assert_eq!(q["scheme"], "int8");
    assert_eq!(q["fidelity"]["texts"], 72);
    assert_eq!(q["fidelity"]["passed"], true);
    assert!(
        q["fidelity"]["mean_cosine"].as_f64().unwrap() >= 0.999,
        "{q}"
    );
    let text = mm(&config, &["quantize-check", "-m", "int8"]);
    let printed = String::from_utf8_lossy(&text.stdout);
    assert!(
        printed.contains("mean cosine") && printed.contains("gate >= 0.999"),
        "{printed}"
    );
    assert!(printed.contains("passes the gate"), "{printed}");

    let few = dir.path().join("few.txt");
    std::fs::write(&few, "one\ntwo\nthree\n").unwrap();
    let out = mm(
        &config,
        &[
            "--json",
            "quantize-check",
            "-m",
            "int8",
            "-i",
            few.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "CONFIG_ERROR");
    assert_eq!(json_of(&out.stdout)["code"], "CONFIG_ERROR");
    // A relative calibration_file is the settings folder's, wherever mm runs.
    let out = mm(&config, &["--json", "quantize-check", "-m", "own_texts"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        json_of(&out.stdout)["quantization"]["fidelity"]["texts"],
        15
    );
    let models = mm(&config, &["models"]);
    let listed = String::from_utf8_lossy(&models.stdout);
    let line = |id: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("int8").contains(" int8 ("), "{listed}");
    assert!(!line("embedding").contains("int8"), "{listed}");
    let out = mm(&config, &["quantize-check", "-m", "absent"]);
    assert_eq!(out.status.code(), Some(3), "MODEL_NOT_CONFIGURED");
    let out = mm(&config, &["--json", "quantize-check", "-m", "t5"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_kept_calibration_gives_the_same_gate_and_a_damaged_one_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path());
    let home = dir.path().join("cache-home");
    let entries = || -> Vec<PathBuf> {
        match std::fs::read_dir(home.join("model-manager/int8-calibration")) {
            Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    };
    let check = || {
        let out = mm_caching_in(&config, &["--json", "quantize-check", "-m", "int8"], &home);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            json_of(&out.stdout)["quantization"].clone(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (fresh, _) = check();
    let kept = entries();
    assert_eq!(
        kept.len(),
        1,
        "one entry for the model and the built-in texts"
    );
    // From the cache: the f32 pass is skipped, the int8 pass and the gate are not, and the
    // figures are the same to the last digit.
    let (cached, _) = check();
    assert_eq!(cached, fresh);
    assert_eq!(entries(), kept, "the same entry, read");

    let good = std::fs::read(&kept[0]).unwrap();
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    std::fs::write(&kept[0], &damaged).unwrap();
    let (redone, log) = check();
    assert_eq!(redone, fresh);
    assert!(log.contains("damaged int8 calibration"), "{log}");
    assert_eq!(
        std::fs::read(&kept[0]).unwrap(),
        good,
        "written again whole"
    );

    // Turned off, nothing is kept.
    let off = format!(
        "{}models.int8.calibration_cache = false\n",
        std::fs::read_to_string(&config).unwrap()
    );
    std::fs::write(&config, off).unwrap();
    std::fs::remove_file(&kept[0]).unwrap();
    let (uncached, _) = check();
    assert_eq!(uncached, fresh);
    assert!(entries().is_empty());
}

fn cosine(a: &Value, b: &Value) -> f64 {
    let (a, b): (Vec<f64>, Vec<f64>) = (
        a.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect(),
        b.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect(),
    );
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
        * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

#[test]
fn a_server_shows_the_figures_and_serves_int8_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path());
    let server = Server::start(&["--config", config.to_str().unwrap()], &[]);
    let texts = json!([
        "How do I get my money back?",
        "Der Zug hat Verspätung.",
        "ok"
    ]);
    let (status, f32_body) = server.post(
        "/v1/embeddings",
        &json!({"model": "embedding", "input": texts}).to_string(),
    );
    assert_eq!(status, 200);
    let (status, int8_body) = server.post(
        "/v1/embeddings",
        &json!({"model": "int8", "input": texts}).to_string(),
    );
    assert_eq!(status, 200);
    for (a, b) in f32_body["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(int8_body["data"].as_array().unwrap())
    {
        let c = cosine(&a["embedding"], &b["embedding"]);
        assert!(c > 0.995 && c < 1.0, "int8 vs f32 cosine {c}");
    }
    let (status, body) = server.get("/v1/status");
    assert_eq!(status, 200);
    let cpu = &body["cpu"];
    for feature in ["avx2", "avx512", "vnni", "avx_vnni", "amx"] {
        assert!(cpu[feature].is_boolean(), "{body}");
    }
    let q = &body["models"]["int8"]["architecture"]["quantization"];
    assert_eq!(q["fidelity"]["passed"], true, "{body}");
    assert!(q["kernel"].is_string());
    assert!(body["models"]["embedding"]["architecture"]["quantization"].is_null());
}

#[test]
fn mm_check_refuses_bad_quantization_values_without_loading() {
    let dir = tempfile::tempdir().unwrap();
    let config = settings(dir.path());
    let out = mm(&config, &["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    let model = |id: &str, backend: &str, extra: &str| {
        format!(
            "models.{id}.type = \"embedding\"\nmodels.{id}.backend = \"{backend}\"\n\
             models.{id}.local_path = \"{}\"\n{extra}",
            minilm.display()
        )
    };
    let toml = [
        model("scheme", "candle", "models.scheme.quantize = \"int4\"\n"),
        model(
            "policy",
            "candle",
            "models.policy.quantize = \"int8\"\nmodels.policy.fidelity = \"maybe\"\n",
        ),
        model(
            "kernel",
            "candle",
            "models.kernel.quantize = \"int8\"\nmodels.kernel.int8_kernel = \"avx1024\"\n",
        ),
        model(
            "texts",
            "candle",
            "models.texts.quantize = \"int8\"\nmodels.texts.calibration_file = \"absent.txt\"\n",
        ),
        model("onnx", "onnx", "models.onnx.quantize = \"int8\"\n"),
        model("fine", "candle", "models.fine.quantize = \"int8\"\n"),
    ]
    .concat();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("embedding_cache.enabled = false\n{toml}")).unwrap();
    let started = std::time::Instant::now();
    let out = mm(&bad, &["--json", "check"]);
    assert_eq!(out.status.code(), Some(3), "CONFIG_ERROR");
    let report = json_of(&out.stdout);
    assert_eq!(report["code"], "CONFIG_ERROR");
    let problems = report["details"]["problems"].to_string();
    for key in [
        "models.scheme.quantize",
        "models.policy.fidelity",
        "models.kernel.int8_kernel",
        "models.texts.calibration_file",
        "models.onnx.quantize",
    ] {
        assert!(problems.contains(key), "{key} not reported: {problems}");
    }
    assert!(!problems.contains("models.fine"), "{problems}");
    // The check reads settings and files; quantizing (a calibration pass) would take seconds.
    assert!(started.elapsed().as_secs() < 20, "mm check loaded a model?");
}
