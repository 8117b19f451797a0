//! Type `text2text` on ONNX Runtime: encoder-decoder exports decoded by the shared strategies.
//!
//! - `fixtures/tiny-t5`: a tiny seeded T5 exported by optimum with a KV cache
//!   (`reference/make_tiny_t5.py`); its greedy outputs are transformers' own `generate`
//!   (which an onnxruntime loop over the files reproduced, with and without the cache).
//! - the default settings' model (`models/flan-t5-small-title-onnx`, int8, no cache):
//!   greedy outputs of an onnxruntime loop in Python (`reference/title_model_greedy.py`).

use model_manager_core::{ErrorCode, GenerationParams, ModelManager, Settings};
use model_manager_generate::{EarlyStopping, Strategy};
use model_manager_onnx::OnnxGenerator;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn runtime() -> PathBuf {
    let lib = repo().join("models/onnxruntime/capi/libonnxruntime.so.1.32.0");
    assert!(
        lib.is_file(),
        "run scripts/fetch-models.sh first: no {}",
        lib.display()
    );
    lib
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-t5")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A manager with one `text2text` model `t` on the onnx backend at `folder` (one intra-op
/// thread unless `extra` says otherwise).
fn manager(folder: &Path, extra: &str) -> ModelManager {
    let threads = match extra.contains("intra_threads") {
        true => "",
        false => "models.t.intra_threads = 1\n",
    };
    let toml = format!(
        "onnx.runtime_path = \"{}\"\nmodels.t.type = \"text2text\"\nmodels.t.backend = \"onnx\"\n\
         models.t.local_path = \"{}\"\n{threads}{extra}",
        runtime().display(),
        folder.display()
    );
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

/// `fixture()` in the plain layout (`encoder.onnx`, `decoder.onnx`, no cache), without
/// config.json (T5's special tokens are the defaults).
fn plain_layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("encoder_model.onnx", "encoder.onnx"),
        ("decoder_model.onnx", "decoder.onnx"),
        ("tokenizer.json", "tokenizer.json"),
    ] {
        std::fs::copy(fixture().join(from), dir.path().join(to)).unwrap();
    }
    dir
}

fn cases() -> Vec<(String, Vec<u32>)> {
    let expected = json(&fixture().join("expected.json"));
    expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["greedy"].as_array().unwrap();
            let ids = ids.iter().map(|i| i.as_u64().unwrap() as u32).collect();
            (c["prompt"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

const MAX_NEW: usize = 12;

#[tokio::test]
async fn optimum_export_with_its_cache_matches_transformers_greedy() {
    let manager = manager(&fixture(), "");
    let handle = manager.get_text_generation_model("t").await.unwrap();
    let model = handle.downcast_ref::<OnnxGenerator>().unwrap();
    assert!(model.uses_cache(), "decoder_with_past_model.onnx is used");
    let cases = cases();
    assert!(
        cases.iter().any(|(_, ids)| ids.len() < MAX_NEW),
        "some end early"
    );
    for (prompt, want) in &cases {
        let got = model
            .generate_ids_with(prompt, Strategy::Greedy, Some(MAX_NEW))
            .unwrap();
        assert_eq!(&got, want, "{prompt:?}");
    }
}

#[tokio::test]
async fn the_plain_layout_without_a_cache_gives_the_same_tokens() {
    let dir = plain_layout();
    let manager = manager(dir.path(), "");
    let handle = manager.get_text_generation_model("t").await.unwrap();
    let model = handle.downcast_ref::<OnnxGenerator>().unwrap();
    assert!(!model.uses_cache());
    for (prompt, want) in cases() {
        let got = model
            .generate_ids_with(&prompt, Strategy::Greedy, Some(MAX_NEW))
            .unwrap();
        assert_eq!(got, want, "{prompt:?}");
    }
}

/// Beams reorder the cache between steps; sampling draws from every step's logits: both
/// must give what the full-prefix decoder gives.
#[tokio::test]
async fn beams_and_sampling_agree_with_and_without_the_cache() {
    let plain = plain_layout();
    let (cached, uncached) = (manager(&fixture(), ""), manager(plain.path(), ""));
    let a = cached.get_text_generation_model("t").await.unwrap();
    let b = uncached.get_text_generation_model("t").await.unwrap();
    let (a, b) = (
        a.downcast_ref::<OnnxGenerator>().unwrap(),
        b.downcast_ref::<OnnxGenerator>().unwrap(),
    );
    let mut strategies = Vec::new();
    for (num_beams, early_stopping, length_penalty) in [
        (2, EarlyStopping::Heuristic, 1.0),
        (3, EarlyStopping::Stop, 2.0),
        (4, EarlyStopping::Never, -0.5),
        (4, EarlyStopping::Heuristic, 0.5),
    ] {
        strategies.push(Strategy::Beam {
            num_beams,
            early_stopping,
            length_penalty,
        });
    }
    for seed in [1, 2, 3] {
        strategies.push(Strategy::Sample {
            temperature: 1.3,
            top_p: Some(0.9),
            seed,
        });
    }
    let mut differs_from_greedy = 0;
    for (prompt, greedy) in cases() {
        for strategy in &strategies {
            let with_cache = a
                .generate_ids_with(&prompt, *strategy, Some(MAX_NEW))
                .unwrap();
            let without = b
                .generate_ids_with(&prompt, *strategy, Some(MAX_NEW))
                .unwrap();
            assert_eq!(with_cache, without, "{prompt:?} {strategy:?}");
            differs_from_greedy += usize::from(with_cache != greedy);
        }
    }
    assert!(differs_from_greedy > 0, "the strategies were exercised");
}

#[tokio::test]
async fn the_default_title_model_matches_onnxruntime_in_python() {
    let folder = repo().join("models/flan-t5-small-title-onnx");
    assert!(
        folder.join("decoder.onnx").is_file(),
        "run scripts/fetch-models.sh first: no {}",
        folder.display()
    );
    let reference = json(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/title-model-greedy.json"),
    );
    let max_new = reference["max_new_tokens"].as_u64().unwrap() as usize;
    let manager = manager(&folder, "models.t.intra_threads = 0\n");
    let handle = manager.get_text_generation_model("t").await.unwrap();
    let model = handle.downcast_ref::<OnnxGenerator>().unwrap();
    assert!(!model.uses_cache());
    for case in reference["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        let got = model
            .generate_ids_with(prompt, Strategy::Greedy, Some(max_new))
            .unwrap();
        assert_eq!(got, want, "{prompt:?}");
        let params = GenerationParams {
            max_length: Some(max_new),
            ..Default::default()
        };
        let text = manager.generate_text("t", prompt, &params).await.unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{prompt:?}");
    }
}

#[tokio::test]
async fn broken_exports_are_load_errors_naming_the_file() {
    // Only a tokenizer: nothing to load.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let err = manager(dir.path(), "")
        .get_text_generation_model("t")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelNotFound, "{err}");
    assert!(err.message.contains("decoder_model.onnx"), "{err}");

    // A truncated decoder.
    let dir = plain_layout();
    let decoder = dir.path().join("decoder.onnx");
    let bytes = std::fs::read(&decoder).unwrap();
    std::fs::write(&decoder, &bytes[..bytes.len() / 2]).unwrap();
    let err = manager(dir.path(), "")
        .get_text_generation_model("t")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::T5ModelLoadError, "{err}");
    assert!(err.message.contains("decoder.onnx"), "{err}");

    // A graph that is no encoder (one of ONNX Runtime's test graphs).
    let dir = plain_layout();
    let other = repo().join("models/onnxruntime/datasets/mul_1.onnx");
    std::fs::copy(other, dir.path().join("encoder.onnx")).unwrap();
    let err = manager(dir.path(), "")
        .get_text_generation_model("t")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::T5ModelLoadError, "{err}");
    assert!(err.message.contains("encoder.onnx"), "{err}");

    // The encoder where the decoder belongs.
    let dir = plain_layout();
    std::fs::copy(
        fixture().join("encoder_model.onnx"),
        dir.path().join("decoder.onnx"),
    )
    .unwrap();
    let err = manager(dir.path(), "")
        .get_text_generation_model("t")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::T5ModelLoadError, "{err}");
    assert!(err.message.contains("decoder.onnx"), "{err}");
}

#[tokio::test]
async fn request_bounds_and_bad_options_are_refused() {
    let manager = manager(&fixture(), "");
    let beams = GenerationParams {
        num_beams: Some(17),
        ..Default::default()
    };
    let long = GenerationParams {
        max_length: Some(5000),
        ..Default::default()
    };
    for params in [beams, long] {
        let err = manager
            .generate_text("t", "w5 w9", &params)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidInput, "{params:?}: {err}");
    }
    let none = GenerationParams {
        max_length: Some(0),
        ..Default::default()
    };
    assert_eq!(
        manager.generate_text("t", "w5 w9", &none).await.unwrap(),
        ""
    );
    // Defaults past the bounds fail the load, naming the model.
    let bad = self::manager(&fixture(), "models.t.num_beams = 99\n");
    let err = bad.get_text_generation_model("t").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError, "{err}");
    // A typo in an option is caught by the loader's option list.
    let typo = self::manager(&fixture(), "models.t.num_beam = 2\n");
    let err = typo.get_text_generation_model("t").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError, "{err}");
}
