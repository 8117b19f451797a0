//! Without a loadable runtime every ONNX call is MISSING_DEPENDENCY, never a panic. A
//! separate test binary: a process keeps the first runtime it loads.

use model_manager_core::{ErrorCode, ModelManager, Settings};
use model_manager_onnx as _;

fn manager(runtime: &std::path::Path) -> ModelManager {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let toml = format!(
        "onnx.runtime_path = \"{}\"\nmodels.m.type = \"onnx\"\nmodels.m.backend = \"onnx\"\n\
         models.m.local_path = \"{}\"\nmodels.m.model_file = \"mul_1.onnx\"\n",
        runtime.display(),
        models.join("onnxruntime/datasets").display()
    );
    ModelManager::new(Settings::from_toml_str(&toml, ".").unwrap())
}

#[tokio::test]
async fn a_missing_or_corrupt_runtime_is_a_missing_dependency() {
    let err = manager(std::path::Path::new("/nonexistent/libonnxruntime.so"))
        .get_model("m")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::MissingDependency, "{err}");
    assert!(
        err.message.contains("/nonexistent/libonnxruntime.so"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("pip install onnxruntime"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(">= 1."),
        "names the version it needs: {}",
        err.message
    );

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so.1.32.0");
    std::fs::write(&fake, b"\x7fELF but not really a library").unwrap();
    let err = manager(&fake).get_model("m").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::MissingDependency, "{err}");
}
