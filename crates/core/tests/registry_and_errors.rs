//! The registry (static and run-time), `auto` backend choice, and each error path of the
//! manager's API.

mod support;

use model_manager_core::backend::{LoaderRegistration, ModelLoader, Probe};
use model_manager_core::{
    DeviceChoice, ErrorCode, Model, ModelManager, ModelSpec, Registry, Result, Settings,
};
use std::sync::Arc;
use support::{manager as test_manager, CountingLoader, Probes};

/// A custom type added with `inventory::submit!` and no change to the core.
struct StaticGreeterLoader;

impl ModelLoader for StaticGreeterLoader {
    fn model_type(&self) -> &str {
        "static_greeter"
    }
    fn backend(&self) -> &str {
        "test-static"
    }
    fn probe(&self, _spec: &ModelSpec) -> Probe {
        Probe::Accept
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        CountingLoader {
            model_type: "static_greeter",
            dimension: 4,
            probes: Arc::new(Probes::default()),
        }
        .load(spec, device)
    }
}

model_manager_core::backend::inventory::submit! {
    LoaderRegistration::new(|| Arc::new(StaticGreeterLoader))
}

/// Accepts only models whose `name` starts with its prefix; panics on load if asked to.
struct PickyLoader {
    backend: &'static str,
    prefix: &'static str,
}

impl ModelLoader for PickyLoader {
    fn model_type(&self) -> &str {
        "picky"
    }
    fn backend(&self) -> &str {
        self.backend
    }
    fn probe(&self, spec: &ModelSpec) -> Probe {
        match &spec.name {
            Some(n) if n.starts_with(self.prefix) => Probe::Accept,
            _ => Probe::reject(
                ErrorCode::ModelNotFound,
                format!("no `{}` files", self.prefix),
            ),
        }
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        if spec.name.as_deref() == Some("onnx-panic") {
            panic!("loader bug");
        }
        CountingLoader {
            model_type: "picky",
            dimension: 2,
            probes: Arc::new(Probes::default()),
        }
        .load(spec, device)
    }
}

fn picky_manager(toml: &str) -> ModelManager {
    let registry = Registry::new();
    registry
        .register(Arc::new(PickyLoader {
            backend: "candle",
            prefix: "safetensors",
        }))
        .unwrap();
    registry
        .register(Arc::new(PickyLoader {
            backend: "onnx",
            prefix: "onnx",
        }))
        .unwrap();
    ModelManager::with_registry(
        Settings::from_toml_str(toml, ".").unwrap(),
        Arc::new(registry),
    )
}

#[tokio::test]
async fn statically_registered_types_load_through_the_default_registry() {
    let settings = Settings::from_toml_str("models.g.type = \"static_greeter\"", ".").unwrap();
    let manager = ModelManager::new(settings);
    assert!(manager
        .registry()
        .types()
        .contains(&"static_greeter".to_string()));
    let handle = manager.get_model("g").await.unwrap();
    assert_eq!(handle.model().info().backend, "test");
    let status = manager.get_model_status().await.unwrap();
    assert_eq!(status.models["g"].backend.as_deref(), Some("test-static"));
}

#[tokio::test]
async fn unknown_type_lists_registered_types() {
    let (manager, _) = test_manager("models.v.type = \"custom_vision\"", &[]);
    let err = manager.get_model("v").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedModelType);
    assert!(
        err.message.contains("'custom_vision'") && err.message.contains("embedding"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("plugins.enabled"),
        "hints at plugins: {}",
        err.message
    );
    assert_eq!(
        err.details["registered_types"],
        serde_json::json!(["embedding"])
    );
}

#[tokio::test]
async fn auto_takes_the_first_backend_whose_probe_accepts() {
    let m = picky_manager(
        "models.a.type = \"picky\"\nmodels.a.name = \"onnx-model\"\n\
         models.b.type = \"picky\"\nmodels.b.name = \"safetensors-model\"\n\
         models.c.type = \"picky\"\nmodels.c.name = \"nothing\"\n\
         models.d.type = \"picky\"\nmodels.d.name = \"onnx-model\"\nmodels.d.backend = \"candle\"\n\
         models.e.type = \"picky\"\nmodels.e.backend = \"tract\"\n",
    );
    m.preload("a").await.unwrap();
    m.preload("b").await.unwrap();
    let status = m.get_model_status().await.unwrap();
    assert_eq!(status.models["a"].backend.as_deref(), Some("onnx"));
    assert_eq!(status.models["b"].backend.as_deref(), Some("candle"));

    let err = m.get_model("c").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelNotFound);
    assert!(
        err.message.contains("candle: no `safetensors` files")
            && err.message.contains("onnx: no `onnx` files"),
        "{}",
        err.message
    );

    let err = m.get_model("d").await.unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::ModelNotFound,
        "named backend's probe decides"
    );

    let err = m.get_model("e").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedModelType);
    assert!(err.message.contains("candle, onnx"), "{}", err.message);
}

#[tokio::test]
async fn a_panicking_loader_is_a_load_error_and_the_manager_lives_on() {
    let m = picky_manager("models.p.type = \"picky\"\nmodels.p.name = \"onnx-panic\"\nmodels.ok.type = \"picky\"\nmodels.ok.name = \"onnx\"\n");
    let err = m.get_model("p").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelLoadError);
    assert!(
        err.details["error"]
            .as_str()
            .unwrap()
            .contains("loader bug"),
        "{err:?}"
    );
    m.get_model("ok").await.unwrap();
}

#[test]
fn a_second_loader_for_the_same_type_and_backend_is_refused() {
    let registry = Registry::new();
    registry
        .register(Arc::new(PickyLoader {
            backend: "onnx",
            prefix: "x",
        }))
        .unwrap();
    let err = registry
        .register(Arc::new(PickyLoader {
            backend: "onnx",
            prefix: "y",
        }))
        .unwrap_err();
    assert!(
        err.message.contains("`picky`") && err.message.contains("`onnx`"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn unknown_backend_option_is_a_config_error_at_initialize() {
    let (manager, _) = test_manager("models.embedding.flavor = \"x\"", &["embedding"]);
    let err = manager.initialize().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError);
    assert!(
        err.message
            .contains("did you mean `models.embedding.flavour`"),
        "{}",
        err.message
    );

    let (manager, _) = test_manager("models.embedding.flavour = \"x\"", &["embedding"]);
    manager.initialize().await.unwrap();
}

#[tokio::test]
async fn not_configured_wrong_capability_and_disabled() {
    let (manager, _) = test_manager("models.g.type = \"static_greeter\"", &["embedding"]);
    let err = manager.get_model("nope").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelNotConfigured);
    assert_eq!(
        err.to_json()["message"],
        "Model not found in configuration",
        "the seed's message (MODEL_NOT_CONFIGURED); the id is in the details, once"
    );
    assert_eq!(err.details["model_id"], "nope");
    let err = manager.get_model_config("nope").unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelNotConfigured);
    assert_eq!(
        manager.get_model_config("embedding").unwrap().model_type,
        "embedding"
    );

    let err = manager
        .get_text_generation_model("embedding")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidModelType);

    let (disabled, _) = test_manager("enabled = false", &["embedding"]);
    let err = disabled.get_model("embedding").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError);
    assert!(err.message.contains("enabled = false"));

    let (manual, _) = test_manager("auto_initialize = false", &["embedding"]);
    let err = manual.get_model("embedding").await.unwrap_err();
    assert!(err.message.contains("initialize()"), "{}", err.message);
    manual.initialize().await.unwrap();
    manual.get_model("embedding").await.unwrap();
}

#[tokio::test]
async fn a_missing_gpu_falls_back_with_a_reason_or_fails_when_fallback_is_off() {
    let (manager, _) = test_manager("models.embedding.device = \"cuda:0\"", &["embedding"]);
    manager.preload("embedding").await.unwrap();
    let status = manager.get_model_status().await.unwrap();
    let model = &status.models["embedding"];
    assert_eq!(model.device.as_deref(), Some("cpu"));
    assert!(model
        .device_reason
        .as_deref()
        .unwrap()
        .contains("fell back to CPU"));

    let (strict, _) = test_manager(
        "device_fallback = false\ndevice_preference = \"gpu\"",
        &["embedding"],
    );
    let err = strict.get_model("embedding").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::DeviceSetupError);
}

#[tokio::test]
async fn status_reports_service_and_model_facts() {
    let (manager, _) = test_manager("", &["embedding", "other"]);
    let handle = manager.get_model("embedding").await.unwrap();
    let status = manager.get_status().await.unwrap();
    assert!(status.initialized && !status.shutting_down);
    assert_eq!(
        (
            status.configured_models,
            status.loaded_models,
            status.total_references
        ),
        (2, 1, 1)
    );
    assert!(status.process_resident_bytes.unwrap() > 0);
    let json = serde_json::to_value(&status).unwrap();
    let model = &json["models"]["embedding"];
    assert_eq!(model["state"], "loaded");
    assert_eq!(model["type"], "embedding");
    assert_eq!(model["references"], 1);
    assert_eq!(model["load_count"], 1);
    assert!(model["loaded_at"].as_f64().unwrap() > 1.0e9);
    assert!(model["last_load_ms"].as_f64().is_some());
    assert_eq!(json["models"]["other"]["state"], "unloaded");
    drop(handle);
}
