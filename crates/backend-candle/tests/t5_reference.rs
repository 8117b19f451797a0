//! T5 generation against an independent float64 numpy implementation of Hugging Face's T5
//! and beam search (`tests/reference/t5_numpy.py`): tiny seeded T5 folders written by the
//! reference at test time (Hugging Face tensor names), the same prompts, the same token ids.

mod common;
#[path = "../../../benches/python_venv.rs"]
mod python_venv;

use model_manager_candle::{EarlyStopping, Strategy, T5Generator};
use model_manager_core::{ModelManager, Settings};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const VOCAB: usize = 64;
const MAX_NEW: usize = 12;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The reference's interpreter, set up once per test binary (tests run in parallel and
/// would race on creating the virtualenv).
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            python_venv::python_in(&repo().join("target/numpy-venv"), &["numpy==2.4.6"])
        })
        .clone()
}

fn reference(args: &[&str], stdin: Option<&Value>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/t5_numpy.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(value) = stdin {
        input.write_all(value.to_string().as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference {args:?} failed");
    if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).expect("the reference prints JSON")
    }
}

/// A tiny T5 folder written by the reference (`make-model` flags), with a tokenizer.
fn model_folder(flags: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    reference(&[&["make-model", path], flags].concat(), None);
    common::write_word_tokenizer(dir.path(), VOCAB);
    dir
}

const PROMPTS: &[&str] = &[
    "w5 w9 w33",
    "",
    "w30",
    "w50 w4 w19",
    "w12 w40 w7 w7 w21",
    "w63 w10 w11 w45 w57",
    "w17 w28 w44",
    "w8 w16 w24 w32 w40 w48",
    "w3 w60 w3 w60 w3 w60 w3 w60 w3 w60",
];

fn strategies() -> Vec<(Strategy, Value)> {
    let mut all = vec![(Strategy::Greedy, json!({"num_beams": 1}))];
    for (num_beams, early_stopping, name, length_penalty) in [
        (2, EarlyStopping::Heuristic, json!(false), 1.0),
        (3, EarlyStopping::Heuristic, json!(false), 1.0),
        (4, EarlyStopping::Heuristic, json!(false), 1.0),
        (3, EarlyStopping::Stop, json!(true), 1.0),
        (4, EarlyStopping::Stop, json!(true), 1.0),
        (2, EarlyStopping::Never, json!("never"), 1.0),
        (4, EarlyStopping::Never, json!("never"), 1.0),
        (3, EarlyStopping::Heuristic, json!(false), 0.5),
        (3, EarlyStopping::Stop, json!(true), 2.0),
        (3, EarlyStopping::Never, json!("never"), -0.5),
    ] {
        let strategy = Strategy::Beam {
            num_beams,
            early_stopping,
            length_penalty,
        };
        let fields = json!({"num_beams": num_beams, "early_stopping": name,
                            "length_penalty": length_penalty});
        all.push((strategy, fields));
    }
    all
}

/// Every prompt under every strategy, ours against the reference's; returns the reference's
/// results for coverage checks.
async fn compare(flags: &[&str], max_new: usize) -> Vec<(Strategy, Value)> {
    let dir = model_folder(flags);
    let toml = format!(
        "models.t5.type = \"text2text\"\nmodels.t5.local_path = \"{}\"\n",
        dir.path().display()
    );
    let manager = ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap());
    let handle = manager.get_text_generation_model("t5").await.unwrap();
    let t5 = handle.downcast_ref::<T5Generator>().unwrap();
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for prompt in PROMPTS {
        let ids = t5
            .tokenizer()
            .encode(*prompt, true)
            .unwrap()
            .get_ids()
            .to_vec();
        for (strategy, fields) in strategies() {
            let mut case = json!({"input_ids": ids, "max_new_tokens": max_new});
            case.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            cases.push(case);
            let tokens = t5
                .generate_ids_with(prompt, strategy, Some(max_new))
                .unwrap();
            ours.push((prompt, strategy, tokens));
        }
    }
    let expected = reference(
        &["generate", dir.path().to_str().unwrap()],
        Some(&json!({"cases": cases})),
    );
    let results = expected["results"].as_array().unwrap();
    assert_eq!(results.len(), ours.len());
    let mut mismatches = Vec::new();
    for ((prompt, strategy, tokens), want) in ours.iter().zip(results) {
        let want: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
        if *tokens != want {
            mismatches.push(format!(
                "{prompt:?} {strategy:?}: ours {tokens:?}, reference {want:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{flags:?}: {} of {} differ:\n{}",
        mismatches.len(),
        ours.len(),
        mismatches.join("\n")
    );
    ours.iter()
        .zip(results)
        .map(|((_, s, _), r)| (*s, r.clone()))
        .collect()
}

fn ended_early(results: &[(Strategy, Value)]) -> (usize, usize) {
    let early = results
        .iter()
        .filter(|(_, r)| r["eos"] == json!(true))
        .count();
    (early, results.len() - early)
}

#[tokio::test]
async fn flan_style_gated_gelu_untied_matches_the_reference() {
    let results = compare(&["--seed", "3"], MAX_NEW).await;
    let (early, full) = ended_early(&results);
    assert!(
        early > 5 && full > 5,
        "outputs both end with eos and run to the limit: {early}/{full}"
    );
    // The test can tell the stopping rules apart: on some prompt they give different outputs.
    let per_prompt = strategies().len();
    let differs = results.chunks(per_prompt).any(|r| {
        let pick = |n, e| {
            r.iter()
                .find(|(s, _)| matches!(s, Strategy::Beam { num_beams, early_stopping, length_penalty } if *num_beams == n && *early_stopping == e && *length_penalty == 1.0))
                .map(|(_, v)| v["tokens"].clone())
        };
        pick(4, EarlyStopping::Stop) != pick(4, EarlyStopping::Heuristic)
    });
    assert!(differs, "early stopping changes some output");
}

#[tokio::test]
async fn original_t5_relu_with_tied_embeddings_matches_the_reference() {
    // Tied embeddings: the decoder output is scaled by d_model^-0.5 before the lm head, which
    // changes beam scores (and so beam results), not greedy argmaxes.
    let results = compare(&["--seed", "3", "--tied", "--ff", "relu"], MAX_NEW).await;
    let (early, full) = ended_early(&results);
    assert!(early > 0 && full > 0, "{early}/{full}");
}

#[tokio::test]
async fn tied_gated_gelu_matches_the_reference() {
    compare(&["--seed", "4", "--tied"], MAX_NEW).await;
}

#[tokio::test]
async fn flan_t5_buckets_over_long_outputs_match_the_reference() {
    // FLAN-T5's 32 buckets / distance 128: decoder positions from distance 9 on fall in other
    // buckets one-way than two-way, so 24 generated tokens cross that boundary.
    compare(
        &[
            "--seed",
            "5",
            "--buckets",
            "32",
            "--max-distance",
            "128",
            "--layers",
            "3",
        ],
        24,
    )
    .await;
}

#[tokio::test]
async fn config_ids_and_unequal_shapes_match_the_reference() {
    // eos and decoder start read from config.json (not 1 and 0), d_model unlike heads x d_kv,
    // more decoder blocks than encoder blocks.
    compare(
        &[
            "--seed",
            "2",
            "--eos",
            "2",
            "--start",
            "3",
            "--d-model",
            "24",
            "--heads",
            "4",
            "--d-kv",
            "8",
            "--decoder-layers",
            "3",
        ],
        MAX_NEW,
    )
    .await;
}

#[test]
fn bucket_function_matches_the_reference_everywhere() {
    let table = reference(
        &["buckets", "--num-buckets", "32", "--max-distance", "128"],
        None,
    );
    let positions = table["relative_position"].as_array().unwrap();
    for (key, bidirectional) in [("bidirectional", true), ("unidirectional", false)] {
        let expected = table[key].as_array().unwrap();
        for (rel, want) in positions.iter().zip(expected) {
            let rel = rel.as_i64().unwrap();
            assert_eq!(
                model_manager_candle::relative_position_bucket(rel, bidirectional, 32, 128) as u64,
                want.as_u64().unwrap(),
                "{key} {rel}"
            );
        }
    }
}
