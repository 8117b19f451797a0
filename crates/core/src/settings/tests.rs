use super::*;
use crate::device::DeviceRequest;
use crate::error::ErrorCode;

fn parse(text: &str) -> Result<Settings> {
    Settings::from_toml_str(text, "/srv/app")
}

fn err(text: &str) -> ModelError {
    let e = parse(text).unwrap_err();
    assert_eq!(e.code, ErrorCode::ConfigError, "{e}");
    e
}

#[test]
fn defaults_follow_the_seed() {
    let s = Settings::default();
    assert_eq!(s.device_preference, DevicePreference::Auto);
    assert_eq!(s.gpu_memory_fraction, 0.8);
    assert!(s.allow_gpu_growth && s.device_fallback);
    assert!(s.sharing.enabled && s.sharing.reference_counting);
    assert_eq!(s.sharing.max_shared_models, 5);
    assert_eq!(s.sharing.unload_after, Some(Duration::from_secs(1800)));
    assert!(s.embedding_cache.enabled && !s.embedding_cache.persist_to_disk);
    assert_eq!(s.embedding_cache.max_cache_size, 10000);
    assert_eq!(s.embedding_cache.ttl, Some(Duration::from_secs(3600)));
    assert!(s.enabled && s.auto_initialize && s.log_model_usage && s.memory_monitoring);
    assert_eq!(s.memory_max_bytes, None);
}

#[test]
fn model_keys_and_relative_paths() {
    let s = parse(
        "models.embedding.type = \"embedding\"\nmodels.embedding.local_path = \"./models/mini\"\n\
         models.embedding.dimension = 384\nmodels.embedding.device = \"cuda:1\"\n\
         models.embedding.batch_size = 16\nmodels.embedding.shared = false\n\
         models.t5.type = \"text2text\"\nmodels.t5.max_input_length = 512\n",
    )
    .unwrap();
    let e = &s.models["embedding"];
    assert_eq!(
        e.local_path.as_deref(),
        Some(Path::new("/srv/app/models/mini"))
    );
    assert_eq!(e.dimension, Some(384));
    assert_eq!(e.device, DeviceRequest::Cuda(Some(1)));
    assert_eq!(e.batch_size, 16);
    assert!(!e.shared && e.cache_embeddings);
    assert_eq!(
        s.models["t5"].option_u64("max_input_length").unwrap(),
        Some(512)
    );
    assert_eq!(s.models["t5"].batch_size, 32);
}

#[test]
fn unknown_key_suggests_the_nearest() {
    let e = err("sharing.max_shared_modls = 3");
    assert!(
        e.message.contains("sharing.max_shared_modls"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("did you mean `sharing.max_shared_models`"),
        "{}",
        e.message
    );
    assert_eq!(e.details["key"], "sharing.max_shared_modls");
}

#[test]
fn wrong_type_names_key_expected_and_found() {
    let e = err("sharing.max_shared_models = \"five\"");
    assert!(
        e.message.contains("sharing.max_shared_models"),
        "{}",
        e.message
    );
    assert!(e.message.contains("an integer >= 1"), "{}", e.message);
    assert!(e.message.contains("string \"five\""), "{}", e.message);

    let e = err("device_preference = \"tpu\"");
    assert!(
        e.message.contains("one of auto, cpu, gpu") && e.message.contains("\"tpu\""),
        "{}",
        e.message
    );

    let e = err("gpu_memory_fraction = 1.5");
    assert!(e.message.contains("between 0 and 1"), "{}", e.message);

    let e = err("models.m.type = \"embedding\"\nmodels.m.device = \"cuda:x\"");
    assert!(e.message.contains("models.m.device"), "{}", e.message);

    let e = err("sharing.max_shared_models = 0");
    assert!(e.message.contains("found integer 0"), "{}", e.message);
}

#[test]
fn model_without_type_and_malformed_model_keys() {
    let e = err("models.embedding.name = \"x\"");
    assert!(e.message.contains("models.embedding.type"), "{}", e.message);
    let e = err("models.embedding = \"x\"");
    assert!(e.message.contains("models.<id>.<key>"), "{}", e.message);
    let e = err("models.a.b.type = \"x\"");
    assert!(
        e.message.contains("may not be empty or contain dots"),
        "{}",
        e.message
    );
}

#[test]
fn environment_overrides_apply_with_types() {
    let s = Settings::from_toml_str_with_env(
        "models.t5_summarizer.type = \"text2text\"",
        "/srv",
        [
            (
                "CORE_MODEL_MANAGER_MODELS_T5_SUMMARIZER_LOCAL_PATH".to_string(),
                "models/t5".to_string(),
            ),
            (
                "CORE_MODEL_MANAGER_DEVICE_PREFERENCE".to_string(),
                "gpu".to_string(),
            ),
            (
                "CORE_MODEL_MANAGER_SHARING_ENABLED".to_string(),
                "false".to_string(),
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        s.models["t5_summarizer"].local_path.as_deref(),
        Some(Path::new("/srv/models/t5"))
    );
    assert_eq!(s.device_preference, DevicePreference::Gpu);
    assert!(!s.sharing.enabled);
}

#[test]
fn settings_file_paths_resolve_against_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    std::fs::write(
        &path,
        "models.e.type = \"embedding\"\nmodels.e.local_path = \"m/e\"\n",
    )
    .unwrap();
    let s = Settings::from_file_with_env(&path, []).unwrap();
    assert_eq!(s.models["e"].local_path, Some(dir.path().join("m/e")));
    assert_eq!(s.source.as_deref(), Some(path.as_path()));

    let missing = Settings::from_file_with_env(dir.path().join("nope.toml"), []).unwrap_err();
    assert_eq!(missing.code, ErrorCode::ConfigError);
    assert!(missing.message.contains("nope.toml"));
}

#[test]
fn every_schema_default_is_valid_for_its_kind() {
    for def in schema::GLOBAL_KEYS.iter().chain(schema::MODEL_KEYS) {
        if def.default.is_empty() {
            continue;
        }
        let v: toml::Table = format!("v = {}", def.default).parse().unwrap();
        let value = &v["v"];
        // memory.max_bytes = 0 means "no budget" and is valid for Int { min: 0 }.
        value::check(def.key, def.kind, value).unwrap_or_else(|e| panic!("{}: {e}", def.key));
    }
}
