//! A model type added from outside the core with `inventory::submit!`: no change to the
//! core, no plugin library, and the type joins the registry, lifecycle and status.

use model_manager::backend::{inventory, LoaderRegistration, ModelLoader, Probe};
use model_manager::{
    DeviceChoice, ErrorCode, Infer, InferValue, Model, ModelError, ModelInfo, ModelManager,
    ModelSpec, NamedValues, Result, Settings,
};
use std::any::Any;
use std::sync::Arc;

struct ReverseLoader;
struct Reverser(model_manager::Device);

impl ModelLoader for ReverseLoader {
    fn model_type(&self) -> &str {
        "reverse_text"
    }
    fn backend(&self) -> &str {
        "test-static"
    }
    fn probe(&self, _spec: &ModelSpec) -> Probe {
        Probe::Accept
    }
    fn load(&self, _spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        Ok(Arc::new(Reverser(device.device)))
    }
}

impl Model for Reverser {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "reverse_text".into(),
            backend: "test-static".into(),
            device: self.0,
            dimension: None,
            bytes: None,
        }
    }
    fn as_infer(&self) -> Option<&dyn Infer> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Infer for Reverser {
    fn infer(&self, inputs: &NamedValues) -> Result<NamedValues> {
        inputs
            .iter()
            .map(|(name, value)| match value {
                InferValue::Text(t) => {
                    Ok((name.clone(), InferValue::Text(t.chars().rev().collect())))
                }
                other => Err(ModelError::new(
                    ErrorCode::InvalidInput,
                    format!("`{name}` must be text, not {}", other.kind()),
                )),
            })
            .collect()
    }
}

inventory::submit! { LoaderRegistration::new(|| Arc::new(ReverseLoader)) }

#[tokio::test]
async fn a_statically_registered_type_is_served_like_a_built_in_one() {
    let settings = Settings::from_toml_str("models.rev.type = \"reverse_text\"\n", ".").unwrap();
    let manager = ModelManager::new(settings);
    let inputs = NamedValues::from([("t".to_owned(), InferValue::Text("abc".into()))]);
    let out = manager.infer("rev", inputs).await.unwrap();
    assert_eq!(out["t"], InferValue::Text("cba".into()));
    let status = manager.get_status().await.unwrap();
    assert!(status.registered_types.contains(&"reverse_text".to_owned()));
    assert_eq!(status.models["rev"].load_count, 1);
    let err = manager.get_embedding_model("rev").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidModelType);
}
