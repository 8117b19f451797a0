//! The facade: the default settings file parses, and the README documents every key.

use model_manager::settings::schema::{GLOBAL_KEYS, MODEL_KEYS};
use model_manager::{ErrorCode, ModelManager, Settings};

fn repo_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn the_default_settings_file_is_valid() {
    let settings = Settings::from_file_with_env(repo_file("settings.toml"), []).unwrap();
    let embedding = &settings.models["embedding"];
    assert_eq!(embedding.dimension, Some(384));
    assert!(embedding
        .local_path
        .as_ref()
        .unwrap()
        .ends_with("models/all-MiniLM-L6-v2"));
    assert_eq!(settings.models["t5_summarizer"].model_type, "text2text");
}

#[test]
fn the_readme_documents_every_settings_key() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    for def in GLOBAL_KEYS.iter().chain(MODEL_KEYS) {
        assert!(
            readme.contains(&format!("| `{}` |", def.key)),
            "README lacks `{}`",
            def.key
        );
    }
}

#[tokio::test]
async fn a_type_without_a_loader_in_this_build_is_reported_not_faked() {
    let settings = Settings::from_toml_str("models.v.type = \"custom_vision\"", ".").unwrap();
    let err = ModelManager::new(settings)
        .get_model("v")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedModelType);
}

#[cfg(feature = "candle")]
#[test]
fn the_facade_links_the_candle_backend() {
    let registry = model_manager::Registry::with_static_loaders();
    let entries = registry.entries();
    assert!(
        entries.contains(&("embedding".to_string(), "candle".to_string())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("text2text".to_string(), "candle".to_string())),
        "{entries:?}"
    );
}
