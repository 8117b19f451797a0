//! Every model family on candle against sentence-transformers itself: the tiny checkpoints of
//! tests/fixtures/families (scripts/fixtures/families.py) embed as `SentenceTransformer.
//! encode` does, with their prompts and every pooling mode; the fused kernels agree with
//! candle ops for each family; bad checkpoints get coded errors.

#[path = "../../../tests/support/families.rs"]
mod families;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use families::{agreement, check_runs, fixtures, manager};
use model_manager_candle::Family;
use model_manager_core::ErrorCode;
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_embeds_as_sentence_transformers_does() {
    for fixture in fixtures() {
        let manager = manager(&fixture.dir, "candle", "");
        for line in check_runs(&manager, &fixture, 0.99999).await {
            println!("{line}");
        }
        let report = manager.get_model_status().await.unwrap();
        let architecture = report.models["m"]
            .architecture
            .clone()
            .expect("a loaded text model");
        assert!(architecture.packed, "{}", fixture.name);
        println!(
            "{:16} {} pooled {}",
            fixture.name, architecture.family, architecture.pooling
        );
        manager.shutdown().await.unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooling_mode_equals_sentence_transformers() {
    let bert = fixtures().into_iter().find(|f| f.name == "bert").unwrap();
    assert!(bert.pooling_variants.len() >= 7);
    for (variant, want) in &bert.pooling_variants {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&bert.dir, dir.path());
        let (modes, rest) = variant.split_once(',').unwrap_or((variant, ""));
        let modes: Vec<&str> = modes.split('+').collect();
        let include = !rest.contains("include_prompt=false");
        let config = serde_json::json!({"embedding_dimension": 64, "pooling_mode": modes, "include_prompt": include});
        std::fs::write(dir.path().join("1_Pooling/config.json"), config.to_string()).unwrap();
        let mut key = "default";
        if let Some(prompt) = rest.split(',').find_map(|p| p.strip_prefix("prompt:")) {
            let prompts = serde_json::json!({"prompts": {prompt: format!("{prompt}: ")}, "default_prompt_name": null});
            std::fs::write(
                dir.path().join("config_sentence_transformers.json"),
                prompts.to_string(),
            )
            .unwrap();
            key = if prompt == "query" {
                "prompt:query"
            } else {
                "default"
            };
        }
        let manager = manager(dir.path(), "candle", "");
        let out = manager
            .generate_embeddings_with_options("m", &bert.texts, &families::Fixture::options(key))
            .await
            .unwrap();
        let (cos, norm) = agreement(&out.embeddings, want);
        println!(
            "pooling {variant:40} min cosine 1 - {:.1e}, norm within {norm:.1e}",
            1.0 - cos
        );
        assert!(cos >= 0.99999 && norm < 1e-4, "{variant}: {cos} {norm}");
        manager.shutdown().await.unwrap();
    }
}

fn encoder(dir: &Path, dtype: DType) -> model_manager_candle::PackedEncoder {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let family = Family::detect(&config).unwrap();
    // SAFETY: the test's own read-only fixture file.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], dtype, &Device::Cpu)
    }
    .unwrap();
    family.load(&config, vb).unwrap()
}

#[test]
fn fused_kernels_agree_with_candle_ops_for_every_family() {
    // Lengths past ModernBERT's window, past the direct kernel (48), one token, none.
    let lengths = [9, 1, 40, 0, 3, 60, 17];
    let total: usize = lengths.iter().sum();
    let types = vec![0u32; total];
    for fixture in fixtures() {
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture.dir.join("config.json")).unwrap(),
        )
        .unwrap();
        let vocab = config["vocab_size"].as_u64().unwrap() as u32;
        let ids: Vec<u32> = (0..total as u32)
            .map(|i| 5 + (i * 7919) % (vocab - 5))
            .collect();
        let mut model = encoder(&fixture.dir, DType::F32);
        let hidden = model.hidden_size();
        let run = |model: &model_manager_candle::PackedEncoder| -> Vec<f32> {
            let out = model.forward(&ids, &types, &lengths).unwrap();
            assert_eq!(out.dims(), &[total, hidden]);
            out.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert!(model.set_fused(true));
        let fused = run(&model);
        assert!(!model.set_fused(false));
        let ops = run(&model);
        let worst = fused
            .iter()
            .zip(&ops)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{:16} fused vs ops: max difference {worst:.1e}",
            fixture.name
        );
        assert!(worst <= 2e-4, "{}: {worst}", fixture.name);
        // Bad input is an error, not a panic.
        assert!(model.forward(&ids[1..], &types, &lengths).is_err());
        assert!(model.forward(&[1_000_000], &[0], &[1]).is_err());
        assert_eq!(model.forward(&[], &[], &[]).unwrap().dims(), &[0, hidden]);
        let f16 = encoder(&fixture.dir, DType::F16);
        let half: Vec<f32> = f16
            .forward(&ids, &types, &lengths)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            half.iter().all(|x| x.is_finite()),
            "{}: f16 overflowed",
            fixture.name
        );
    }
}

#[tokio::test]
async fn an_unsupported_family_names_itself_and_the_supported_ones() {
    let bert = fixtures().into_iter().find(|f| f.name == "bert").unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&bert.dir, dir.path());
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    config["model_type"] = "llama".into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let manager = manager(dir.path(), "candle", "");
    let err = manager.generate_embeddings("m", &["x"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedModelType, "{err}");
    for name in [
        "llama",
        "xlm-roberta",
        "modernbert",
        "qwen3",
        "mpnet",
        "distilbert",
        "nomic_bert",
        "gte",
    ] {
        assert!(
            err.message.contains(name),
            "{name} missing from: {}",
            err.message
        );
    }
}

#[tokio::test]
async fn a_missing_tensor_is_named_with_its_family() {
    let modern = fixtures()
        .into_iter()
        .find(|f| f.name == "modernbert")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&modern.dir, dir.path());
    // Drop one tensor from the checkpoint.
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "layers.1.mlp.Wi.weight")
        .collect();
    let out = safetensors::serialize(kept, None).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), out).unwrap();
    let manager = manager(dir.path(), "candle", "");
    let err = manager.generate_embeddings("m", &["x"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadError, "{err}");
    assert!(
        err.message.contains("modernbert") && err.message.contains("layers.1.mlp.Wi.weight"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_all_mpnet_base_v2_equals_sentence_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("models/all-mpnet-base-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        dir.display()
    );
    let text =
        std::fs::read_to_string(root.join("tests/fixtures/all_mpnet_base_v2_reference.json"))
            .unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let items = reference["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let want: Vec<Vec<f64>> = items
        .iter()
        .map(|i| {
            i["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let tokens: Vec<usize> = items
        .iter()
        .map(|i| i["tokens"].as_u64().unwrap() as usize)
        .collect();
    let manager = manager(&dir, "candle", "");
    let out = manager.generate_embeddings("m", &texts).await.unwrap();
    let (cos, norm) = agreement(&out.embeddings, &want);
    println!(
        "all-mpnet-base-v2: min cosine 1 - {:.1e}, norm within {norm:.1e}",
        1.0 - cos
    );
    assert!(cos >= 0.99999 && norm < 1e-4, "{cos} {norm}");
    // The same tokens as sentence-transformers, the 384-token cut included.
    assert_eq!(out.token_counts, tokens);
    assert_eq!(out.dimension, 768);
    manager.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_are_chosen_as_sentence_transformers_does_and_cached_as_seen() {
    let modern = fixtures()
        .into_iter()
        .find(|f| f.name == "modernbert")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&modern.dir, dir.path());
    let prompts = serde_json::json!({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"});
    std::fs::write(
        dir.path().join("config_sentence_transformers.json"),
        prompts.to_string(),
    )
    .unwrap();
    let toml = format!(
        "models.m.type = \"embedding\"\nmodels.m.backend = \"candle\"\nmodels.m.local_path = \"{}\"\n",
        dir.path().display()
    );
    let manager = model_manager_core::ModelManager::new(
        model_manager_core::Settings::from_toml_str(&toml, ".").unwrap(),
    );
    let with = |name: Option<&str>, prompt: Option<&str>| model_manager_core::EmbedOptions {
        prompt_name: name.map(str::to_owned),
        prompt: prompt.map(str::to_owned),
        ..Default::default()
    };
    let embed = |texts: &'static [&'static str], options| {
        let manager = manager.clone();
        async move {
            manager
                .generate_embeddings_with_options("m", texts, &options)
                .await
        }
    };
    // The default prompt applies: what the model sees is "query: a cat".
    let default = embed(&["a cat"], with(None, None)).await.unwrap();
    assert_eq!(default.cache_hits, 0);
    // The same seen text three ways: cache hits, the same vector.
    for options in [with(Some("query"), None), with(None, Some("query: "))] {
        let again = embed(&["a cat"], options).await.unwrap();
        assert_eq!(
            (again.cache_hits, &again.embeddings),
            (1, &default.embeddings)
        );
    }
    let literal = embed(&["query: a cat"], with(None, Some("")))
        .await
        .unwrap();
    assert_eq!(
        (literal.cache_hits, &literal.embeddings),
        (1, &default.embeddings)
    );
    // No prompt at all, and another prompt: other texts, other vectors.
    let bare = embed(&["a cat"], with(None, Some(""))).await.unwrap();
    let passage = embed(&["a cat"], with(Some("passage"), None))
        .await
        .unwrap();
    assert_eq!((bare.cache_hits, passage.cache_hits), (0, 0));
    let (cos, _) = agreement(
        &bare.embeddings,
        &[default.embeddings[0]
            .iter()
            .map(|&x| f64::from(x))
            .collect()],
    );
    assert!(cos < 0.9999, "the prompt changed nothing: {cos}");
    assert!(passage.tokens > bare.tokens);
    // Bad choices are the caller's errors, naming the model's prompts.
    let err = embed(&["a cat"], with(Some("search"), None))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(err.message.contains("passage, query"), "{}", err.message);
    let err = embed(&["a cat"], with(Some("query"), Some("x")))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "{err}");
    manager.shutdown().await.unwrap();
}
