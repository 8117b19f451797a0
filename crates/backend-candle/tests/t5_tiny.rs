//! T5 generation on a tiny T5 with seeded random weights, built at test time: a real
//! config, safetensors written with candle and a tokenizer built with `tokenizers`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use model_manager_candle::{Strategy, T5Config, T5Generator, T5Model, MAX_BEAMS, MAX_NEW_TOKENS};
use model_manager_core::{ErrorCode, GenerationParams, ModelManager, Settings};
use rand::{Rng, SeedableRng};
use std::path::Path;

const VOCAB: usize = 64;

fn write_tiny_t5(dir: &Path) {
    let config = serde_json::json!({
        "vocab_size": VOCAB, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
        "num_decoder_layers": 2, "num_heads": 4, "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 16, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
        "initializer_factor": 1.0, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
        "is_encoder_decoder": true, "use_cache": true, "pad_token_id": 0, "eos_token_id": 1,
        "decoder_start_token_id": 0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg: T5Config = serde_json::from_value(config).unwrap();
    // Loading through a VarMap creates every tensor the model reads, under its real name.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    T5Model::load(vb, &cfg).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut vars: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, var) in vars {
        let n = var.elem_count();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    varmap.save(dir.join("model.safetensors")).unwrap();
    common::write_word_tokenizer(dir, VOCAB);
}

fn manager(dir: &Path, extra: &str) -> ModelManager {
    let toml = format!(
        "models.t5.type = \"text2text\"\nmodels.t5.local_path = \"{}\"\nmodels.t5.max_output_length = 12\n{extra}",
        dir.display()
    );
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

const PROMPT: &str = "w5 w9 w17 w33 w40 w41";

#[tokio::test]
async fn greedy_beam_and_sampling_are_deterministic_and_beam_one_is_greedy() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_t5(dir.path());
    let manager = manager(dir.path(), "");
    let handle = manager.get_text_generation_model("t5").await.unwrap();
    let t5 = handle
        .downcast_ref::<T5Generator>()
        .expect("raw access to the candle model");
    assert_eq!(t5.config().vocab_size, VOCAB);
    assert!(t5.tokenizer().get_vocab_size(true) >= VOCAB);
    assert!(t5.device().is_cpu());

    let greedy = t5
        .generate_ids(PROMPT, &GenerationParams::default())
        .unwrap();
    assert!(
        !greedy.is_empty(),
        "these seeded weights generate something"
    );
    assert_eq!(
        greedy,
        t5.generate_ids(PROMPT, &GenerationParams::default())
            .unwrap()
    );
    let one_beam = Strategy::Beam {
        num_beams: 1,
        early_stopping: model_manager_candle::EarlyStopping::Heuristic,
        length_penalty: 1.0,
    };
    assert_eq!(
        t5.generate_ids_with(PROMPT, one_beam, None).unwrap(),
        greedy
    );

    let beams = GenerationParams {
        num_beams: Some(4),
        ..Default::default()
    };
    let beam = t5.generate_ids(PROMPT, &beams).unwrap();
    assert_eq!(beam, t5.generate_ids(PROMPT, &beams).unwrap());
    let early = GenerationParams {
        num_beams: Some(3),
        early_stopping: Some(true),
        length_penalty: Some(0.5),
        ..Default::default()
    };
    assert_eq!(
        t5.generate_ids(PROMPT, &early).unwrap(),
        t5.generate_ids(PROMPT, &early).unwrap()
    );

    let sampled = |seed| {
        let p = GenerationParams {
            temperature: Some(1.5),
            top_p: Some(0.95),
            seed: Some(seed),
            ..Default::default()
        };
        t5.generate_ids(PROMPT, &p).unwrap()
    };
    assert_eq!(sampled(11), sampled(11));
    let distinct: std::collections::HashSet<Vec<u32>> = (0..8).map(sampled).collect();
    assert!(distinct.len() > 1, "different seeds sample differently");

    let text = handle
        .text_generator()
        .unwrap()
        .generate(PROMPT, &GenerationParams::default())
        .unwrap();
    assert_eq!(text.split_whitespace().count(), greedy.len());
}

#[tokio::test]
async fn length_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_t5(dir.path());
    let manager = manager(dir.path(), "models.t5.max_input_length = 5");
    let handle = manager.get_text_generation_model("t5").await.unwrap();
    let t5 = handle.downcast_ref::<T5Generator>().unwrap();
    for max in [1, 3, 7] {
        for params in [
            GenerationParams {
                max_length: Some(max),
                ..Default::default()
            },
            GenerationParams {
                max_length: Some(max),
                num_beams: Some(3),
                ..Default::default()
            },
            GenerationParams {
                max_length: Some(max),
                temperature: Some(1.0),
                seed: Some(1),
                ..Default::default()
            },
        ] {
            assert!(
                t5.generate_ids(PROMPT, &params).unwrap().len() <= max,
                "{params:?}"
            );
        }
    }
    assert!(
        t5.generate_ids(PROMPT, &GenerationParams::default())
            .unwrap()
            .len()
            <= 12,
        "max_output_length"
    );
    // Input is cut at 5 tokens (4 words and </s>), so later words change nothing.
    let p = GenerationParams::default();
    assert_eq!(
        t5.generate_ids("w5 w9 w17 w33 w40 w41 w50", &p).unwrap(),
        t5.generate_ids("w5 w9 w17 w33", &p).unwrap()
    );
    assert!(t5.generate_ids("", &p).is_ok(), "an empty prompt is fine");

    // A request cannot make one generation take unbounded memory.
    let beams = |n| GenerationParams {
        num_beams: Some(n),
        max_length: Some(3),
        ..Default::default()
    };
    assert!(t5.generate_ids(PROMPT, &beams(MAX_BEAMS)).is_ok());
    let err = t5.generate_ids(PROMPT, &beams(MAX_BEAMS + 1)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(err.message.contains("num_beams"), "{}", err.message);
    let long = GenerationParams {
        max_length: Some(MAX_NEW_TOKENS + 1),
        ..Default::default()
    };
    let err = t5.generate_ids(PROMPT, &long).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(err.message.contains("max_length"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generations_on_one_shared_model_match_running_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_t5(dir.path());
    let manager = manager(dir.path(), "");
    let prompts = ["w5 w9 w17 w33 w40 w41", "w60 w3 w3 w12"];
    let beams = GenerationParams {
        num_beams: Some(3),
        ..Default::default()
    };
    let alone: Vec<String> = {
        let h = manager.get_text_generation_model("t5").await.unwrap();
        prompts
            .iter()
            .map(|p| h.text_generator().unwrap().generate(p, &beams).unwrap())
            .collect()
    };
    let mut tasks = Vec::new();
    for round in 0..4 {
        for (i, prompt) in prompts.iter().enumerate() {
            let m = manager.clone();
            let (prompt, params) = (prompt.to_string(), beams.clone());
            tasks.push((
                i,
                round,
                tokio::spawn(async move {
                    let h = m.get_text_generation_model("t5").await.unwrap();
                    tokio::task::spawn_blocking(move || {
                        h.text_generator()
                            .unwrap()
                            .generate(&prompt, &params)
                            .unwrap()
                    })
                    .await
                    .unwrap()
                }),
            ));
        }
    }
    for (i, _, task) in tasks {
        assert_eq!(task.await.unwrap(), alone[i]);
    }
    assert_eq!(
        manager.get_model_status().await.unwrap().models["t5"].load_count,
        1
    );
}

#[tokio::test]
async fn corrupt_t5_files_are_t5_load_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_t5(dir.path());
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let err = manager(dir.path(), "").get_model("t5").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::T5ModelLoadError);
    assert!(err.message.contains("model.safetensors"), "{}", err.message);

    // Settings the model cannot honour are configuration errors at load, not per request.
    write_tiny_t5(dir.path());
    for (extra, needle) in [
        ("models.t5.dtype = \"f16\"", "f16"),
        ("models.t5.num_beams = 99", "num_beams"),
        (
            "models.t5.num_beams = 2\nmodels.t5.length_penalty = nan",
            "length_penalty",
        ),
    ] {
        let err = manager(dir.path(), extra)
            .get_model("t5")
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ConfigError, "{extra}: {err}");
        assert!(err.message.contains(needle), "{}", err.message);
    }
    // A tokenizer with ids past the model's vocabulary would index out of its embeddings.
    common::write_word_tokenizer(dir.path(), VOCAB + 5);
    let err = manager(dir.path(), "").get_model("t5").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::T5ModelLoadError);
    assert!(err.message.contains("vocab_size"), "{}", err.message);

    write_tiny_t5(dir.path());
    std::fs::write(dir.path().join("config.json"), "{\"vocab_size\": 1}").unwrap();
    let err = manager(dir.path(), "").get_model("t5").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::T5ModelLoadError);
    assert!(err.message.contains("config.json"), "{}", err.message);
}
