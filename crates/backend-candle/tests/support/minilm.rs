//! The packaged all-MiniLM-L6-v2 and a CPU device choice, for the tests that load it
//! (included with `#[path]`).

use model_manager_core::DeviceChoice;
use std::path::PathBuf;

/// The model's folder (`scripts/fetch-models.sh` puts it there).
pub fn minilm() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "run scripts/fetch-models.sh first"
    );
    dir
}

/// The CPU, as the manager would choose it.
pub fn cpu() -> DeviceChoice {
    DeviceChoice {
        device: model_manager_core::Device::Cpu,
        reason: "test".into(),
        gpu_memory_fraction: 1.0,
        allow_gpu_growth: true,
    }
}
