//! One request means the same on both `text2text` backends: the tiny seeded T5 of
//! crates/backend-onnx/tests/fixtures/tiny-t5 holds its safetensors (candle) and its optimum
//! ONNX export with a KV cache (onnx), and both decode through model-manager-generate.
//! Greedy equals transformers' own `generate` (expected.json); beams give the same tokens on
//! both engines.

use model_manager::candle::{EarlyStopping, Strategy, T5Generator};
use model_manager::onnx::OnnxGenerator;
use model_manager::{ModelManager, Settings};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn manager() -> ModelManager {
    let fixture = repo().join("crates/backend-onnx/tests/fixtures/tiny-t5");
    let runtime = repo().join("models/onnxruntime/capi/libonnxruntime.so.1.32.0");
    assert!(runtime.is_file(), "run scripts/fetch-models.sh first");
    let mut toml = format!("onnx.runtime_path = \"{}\"\n", runtime.display());
    for backend in ["candle", "onnx"] {
        toml.push_str(&format!(
            "models.{backend}.type = \"text2text\"\nmodels.{backend}.backend = \"{backend}\"\n\
             models.{backend}.local_path = \"{}\"\n",
            fixture.display()
        ));
    }
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

fn expected() -> Vec<(String, Vec<u32>)> {
    let path = repo().join("crates/backend-onnx/tests/fixtures/tiny-t5/expected.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["greedy"].as_array().unwrap().iter();
            let ids = ids.map(|i| i.as_u64().unwrap() as u32).collect();
            (c["prompt"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

#[tokio::test]
async fn candle_and_onnx_decode_the_same_tokens() {
    let manager = manager();
    let candle = manager.get_text_generation_model("candle").await.unwrap();
    let onnx = manager.get_text_generation_model("onnx").await.unwrap();
    let candle = candle.downcast_ref::<T5Generator>().unwrap();
    let onnx = onnx.downcast_ref::<OnnxGenerator>().unwrap();
    assert!(onnx.uses_cache());
    let beams = |num_beams, early_stopping, length_penalty| Strategy::Beam {
        num_beams,
        early_stopping,
        length_penalty,
    };
    let strategies = [
        beams(2, EarlyStopping::Heuristic, 1.0),
        beams(3, EarlyStopping::Stop, 1.0),
        beams(4, EarlyStopping::Never, 1.0),
        beams(3, EarlyStopping::Heuristic, 0.5),
    ];
    for (prompt, greedy) in expected() {
        let ours = |strategy| {
            (
                candle
                    .generate_ids_with(&prompt, strategy, Some(12))
                    .unwrap(),
                onnx.generate_ids_with(&prompt, strategy, Some(12)).unwrap(),
            )
        };
        let (c, o) = ours(Strategy::Greedy);
        assert_eq!((&c, &o), (&greedy, &greedy), "greedy {prompt:?}");
        for strategy in strategies {
            let (c, o) = ours(strategy);
            assert_eq!(c, o, "{strategy:?} {prompt:?}");
        }
    }
}
