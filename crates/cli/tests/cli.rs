//! The built `mm` binary: commands on the default settings and each error path's exit code and JSON.

use assert_cmd::Command;

fn mm() -> Command {
    let mut cmd = Command::cargo_bin("mm").unwrap();
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    cmd.env_remove("MM_CONFIG");
    // Tests never reach the internet.
    cmd.env("HF_HUB_OFFLINE", "1");
    cmd
}

mod common;

use common::json_of;

#[test]
fn models_lists_the_default_settings() {
    let out = mm()
        .arg("models")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("embedding") && text.contains("t5_summarizer"),
        "{text}"
    );

    let out = mm()
        .args(["--json", "models"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let value = json_of(&out);
    assert_eq!(value["success"], true);
    assert_eq!(value["models"]["embedding"]["type"], "embedding");
}

#[test]
fn status_json_has_the_service_fields() {
    let out = mm()
        .args(["--json", "status"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let value = json_of(&out);
    assert_eq!(value["configured_models"], 2);
    assert_eq!(value["models"]["t5_summarizer"]["state"], "unloaded");
}

#[test]
fn a_missing_settings_file_exits_3_with_the_seed_error_json() {
    let out = mm()
        .args(["--json", "--config", "/nonexistent/settings.toml", "status"])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let value = json_of(&out);
    assert_eq!(value["success"], false);
    assert_eq!(value["code"], "CONFIG_ERROR");
    assert!(value["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/settings.toml"));
}

#[test]
fn a_bad_key_is_one_readable_line_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "sharing.max_shared_modles = 2\n").unwrap();
    let assert = mm()
        .arg("--config")
        .arg(&path)
        .arg("check")
        .assert()
        .code(3);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("did you mean `sharing.max_shared_models`"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn an_environment_override_with_a_bad_value_is_named() {
    let assert = mm()
        .env("CORE_MODEL_MANAGER_SHARING_MAX_SHARED_MODELS", "many")
        .args(["--json", "check"])
        .assert()
        .code(3);
    let value = json_of(&assert.get_output().stdout);
    assert_eq!(
        value["details"]["problems"][0]["details"]["variable"],
        "CORE_MODEL_MANAGER_SHARING_MAX_SHARED_MODELS"
    );
}

#[test]
fn search_over_the_bundled_corpus_finds_the_refund_policy() {
    let out = mm()
        .args([
            "--json",
            "search",
            "--corpus",
            "examples/corpus.txt",
            "--top-k",
            "3",
            "How do I get my money back?",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let value = json_of(&out);
    let top = value["matches"][0]["text"].as_str().unwrap();
    assert!(top.starts_with("Refunds are issued"), "{value}");
    assert_eq!(value["matches"].as_array().unwrap().len(), 3);
}

#[test]
fn similarity_and_embed_on_the_default_model() {
    let out = mm()
        .args([
            "--json",
            "similarity",
            "A man is playing a guitar.",
            "Someone plays music.",
            "Paris is in France.",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let m = json_of(&out)["similarity"].clone();
    let at = |i: usize, j: usize| m[i][j].as_f64().unwrap();
    assert!((at(0, 0) - 1.0).abs() < 1e-4);
    assert!(at(0, 1) > at(0, 2), "{m}");

    let out = mm()
        .args(["--json", "embed", "hello world"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let value = json_of(&out);
    assert_eq!(value["dimension"], 384);
    assert_eq!(value["embeddings"][0].as_array().unwrap().len(), 384);
}

#[test]
fn generate_answers_with_the_packaged_model_on_the_default_settings() {
    let out = mm()
        .args([
            "generate",
            "Wrote unit tests for the tokenizer and fixed an off-by-one error in truncation",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(stdout, "Wrote tokenizer unit tests\n");
}

#[test]
fn generate_without_t5_files_names_the_places_tried() {
    let out = mm()
        .env(
            "CORE_MODEL_MANAGER_MODELS_T5_SUMMARIZER_LOCAL_PATH",
            "/nonexistent/t5",
        )
        .args(["--json", "generate", "summarize: text"])
        .assert()
        .code(5)
        .get_output()
        .stdout
        .clone();
    let value = json_of(&out);
    assert_eq!(value["code"], "MODEL_NOT_FOUND");
    assert!(
        value["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/t5"),
        "{value}"
    );
    // No hub name: the hint is the folder and the script that fills it, no placeholder.
    let hint = value["details"]["hint"].as_str().unwrap();
    assert!(
        hint.contains("models.t5_summarizer.local_path") && !hint.contains("<id>"),
        "{value}"
    );
}

/// A one-shot command prints a failed load once: as its error, not also as a log line.
#[test]
fn a_load_failure_is_printed_once() {
    // A T5 folder whose weights are not safetensors: found, then failing to load.
    let dir = tempfile::tempdir().unwrap();
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../backend-onnx/tests/fixtures/tiny-t5");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(tiny.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let out = mm()
        .env(
            "CORE_MODEL_MANAGER_MODELS_T5_SUMMARIZER_LOCAL_PATH",
            dir.path(),
        )
        .args(["generate", "a prompt"])
        .assert()
        .code(6);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.starts_with("error: "), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("model.safetensors"))
        .collect();
    assert_eq!(lines.len(), 1, "printed once: {stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    // With -v the log shows it too, for whoever asked for logs.
    let out = mm()
        .env(
            "CORE_MODEL_MANAGER_MODELS_T5_SUMMARIZER_LOCAL_PATH",
            dir.path(),
        )
        .args(["-v", "generate", "a prompt"])
        .assert()
        .code(6);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("model load failed"), "{stderr}");
}

/// The reference embeddings of `tests/fixtures/minilm_sentences.txt`, in file order.
fn reference() -> Vec<(String, Vec<f32>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/minilm_reference.json"
    ))
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let vector = item["embedding"].as_array().unwrap();
            let vector = vector.iter().map(|x| x.as_f64().unwrap() as f32).collect();
            (item["text"].as_str().unwrap().to_owned(), vector)
        })
        .collect()
}

fn assert_matches_reference(rows: &[Vec<f32>], expected: &[(String, Vec<f32>)]) {
    assert_eq!(rows.len(), expected.len());
    for (row, (text, want)) in rows.iter().zip(expected) {
        let dot: f32 = row.iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(dot > 0.9999, "cosine {dot} for {text:?}");
    }
}

#[test]
fn embed_from_a_file_to_npy_and_from_stdin_jsonl_to_jsonl_match_the_reference() {
    let expected = reference();
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("vectors.npy");
    mm().args([
        "embed",
        "--input",
        "tests/fixtures/minilm_sentences.txt",
        "--output",
    ])
    .arg(&npy)
    .assert()
    .success();
    let bytes = std::fs::read(&npy).unwrap();
    let file = npyz::NpyFile::new(bytes.as_slice()).unwrap();
    assert_eq!(file.shape(), &[expected.len() as u64, 384]);
    let flat: Vec<f32> = file.into_vec().unwrap();
    let rows: Vec<Vec<f32>> = flat.chunks(384).map(<[f32]>::to_vec).collect();
    assert_matches_reference(&rows, &expected);

    let jsonl_in: String = expected
        .iter()
        .map(|(text, _)| format!("{}\n", serde_json::json!({"text": text, "id": 7})))
        .collect();
    let jsonl = dir.path().join("vectors.jsonl");
    mm().args(["embed", "--input", "-", "--output"])
        .arg(&jsonl)
        .write_stdin(jsonl_in)
        .assert()
        .success();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().enumerate().all(|(i, l)| l["index"] == i));
    let rows: Vec<Vec<f32>> = lines
        .iter()
        .map(|l| serde_json::from_value(l["embedding"].clone()).unwrap())
        .collect();
    assert_matches_reference(&rows, &expected);

    // Without --output, --json prints the vectors themselves.
    let out = mm()
        .args([
            "--json",
            "embed",
            "--input",
            "tests/fixtures/minilm_sentences.txt",
        ])
        .assert()
        .success();
    let value = json_of(&out.get_output().stdout);
    let rows: Vec<Vec<f32>> = serde_json::from_value(value["embeddings"].clone()).unwrap();
    assert_matches_reference(&rows, &expected);
}

#[test]
fn embed_file_errors_exit_with_their_class_and_leave_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("vectors.csv");
    let out = mm()
        .args(["--json", "embed", "hello", "--output"])
        .arg(&bad)
        .assert()
        .code(4);
    assert_eq!(json_of(&out.get_output().stdout)["code"], "INVALID_INPUT");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let out = mm()
        .args(["--json", "embed", "--input"])
        .arg(&empty)
        .assert()
        .code(4);
    assert_eq!(json_of(&out.get_output().stdout)["code"], "INVALID_INPUT");
    let npy = dir.path().join("v.npy");
    let out = mm()
        .args(["--json", "embed", "--model", "embeding", "x", "--output"])
        .arg(&npy)
        .assert()
        .code(3);
    let value = json_of(&out.get_output().stdout);
    assert_eq!(value["code"], "MODEL_NOT_CONFIGURED");
    assert!(
        value["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("did you mean `embedding`"),
        "{value}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["empty.txt"], "no output or partial files");
}

#[test]
fn bench_reports_batched_one_per_call_and_cached_throughput() {
    let out = mm()
        .args(["--json", "bench", "--texts", "16", "--runs", "1"])
        .assert()
        .success();
    let value = json_of(&out.get_output().stdout);
    assert_eq!(value["texts"], 16);
    for key in [
        "batched_texts_per_second",
        "one_per_call_texts_per_second",
        "concurrent_texts_per_second",
        "cached_texts_per_second",
    ] {
        assert!(value[key].as_f64().unwrap() > 0.0, "{key}: {value}");
    }
    for zero in [["--texts", "0"], ["--runs", "0"]] {
        let out = mm().args(["--json", "bench"]).args(zero).assert().code(2);
        let value = json_of(&out.get_output().stdout);
        assert_eq!(value["code"], "INVALID_INPUT", "{value}");
        assert!(value["details"]["usage"].is_string(), "{value}");
    }
}
