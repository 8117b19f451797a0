//! A real loader for tests: no model files, but real loads on blocking threads, real
//! failures, delays and counters, and a deterministic embedder.
#![allow(dead_code)]

use model_manager_core::{
    Device, DeviceChoice, Embedder, ErrorCode, Model, ModelError, ModelInfo, ModelLoader,
    ModelManager, ModelSpec, Probe, Registry, Result, Settings,
};
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Knobs and counters shared between a test and its loader.
#[derive(Default)]
pub struct Probes {
    pub loads_started: AtomicUsize,
    pub loads_finished: AtomicUsize,
    pub fail: AtomicBool,
    pub delay_ms: AtomicU64,
    pub embedded_texts: Mutex<Vec<String>>,
    pub estimate: Mutex<std::collections::HashMap<String, u64>>,
}

pub struct CountingLoader {
    pub model_type: &'static str,
    pub dimension: usize,
    pub probes: Arc<Probes>,
}

pub struct HashEmbedder {
    pub id: String,
    pub dimension: usize,
    pub probes: Arc<Probes>,
    pub model_type: String,
}

/// The vector the test embedder gives `text`: deterministic and distinct per text.
pub fn expected_vector(text: &str, dimension: usize) -> Vec<f32> {
    let h = xxhash(text);
    (0..dimension)
        .map(|i| ((h.rotate_left(i as u32 * 7) & 0xffff) as f32) / 65535.0 + text.len() as f32)
        .collect()
}

fn xxhash(text: &str) -> u64 {
    // FNV-1a: enough to make vectors differ per text.
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl Model for HashEmbedder {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: self.model_type.clone(),
            backend: "test".into(),
            device: Device::Cpu,
            dimension: Some(self.dimension),
            bytes: None,
        }
    }
    fn as_embedder(&self) -> Option<&dyn Embedder> {
        (self.model_type == "embedding").then_some(self as &dyn Embedder)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Embedder for HashEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut seen = self.probes.embedded_texts.lock().unwrap();
        seen.extend(texts.iter().map(|t| t.to_string()));
        Ok(texts
            .iter()
            .map(|t| expected_vector(t, self.dimension))
            .collect())
    }
}

impl ModelLoader for CountingLoader {
    fn model_type(&self) -> &str {
        self.model_type
    }
    fn backend(&self) -> &str {
        "test"
    }
    fn probe(&self, _spec: &ModelSpec) -> Probe {
        Probe::Accept
    }
    fn estimate_bytes(&self, spec: &ModelSpec) -> Option<u64> {
        self.probes.estimate.lock().unwrap().get(&spec.id).copied()
    }
    fn option_keys(&self) -> &[&str] {
        &["flavour"]
    }
    fn load(&self, spec: &ModelSpec, _device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        self.probes.loads_started.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(
            self.probes.delay_ms.load(Ordering::SeqCst),
        ));
        self.probes.loads_finished.fetch_add(1, Ordering::SeqCst);
        if self.probes.fail.load(Ordering::SeqCst) {
            return Err(
                ModelError::new(ErrorCode::ModelLoadError, "weights are corrupt (test)")
                    .with("file", "weights.bin"),
            );
        }
        Ok(Arc::new(HashEmbedder {
            id: spec.id.clone(),
            dimension: self.dimension,
            probes: self.probes.clone(),
            model_type: self.model_type.to_owned(),
        }))
    }
}

/// Settings from TOML text, with models `ids` of type `embedding` appended.
pub fn settings(extra: &str, ids: &[&str]) -> Settings {
    let mut text = extra.to_owned();
    for id in ids {
        text.push_str(&format!("\nmodels.{id}.type = \"embedding\"\n"));
    }
    Settings::from_toml_str(&text, ".").expect("test settings are valid")
}

/// A manager whose registry holds one counting `embedding` loader (dimension 8).
pub fn manager(extra: &str, ids: &[&str]) -> (ModelManager, Arc<Probes>) {
    manager_with_dimension(extra, ids, 8)
}

/// Like [`manager`], with vectors of `dimension` values.
pub fn manager_with_dimension(
    extra: &str,
    ids: &[&str],
    dimension: usize,
) -> (ModelManager, Arc<Probes>) {
    let probes = Arc::new(Probes::default());
    let registry = Registry::new();
    registry
        .register(Arc::new(CountingLoader {
            model_type: "embedding",
            dimension,
            probes: probes.clone(),
        }))
        .unwrap();
    (
        ModelManager::with_registry(settings(extra, ids), Arc::new(registry)),
        probes,
    )
}

/// Lets spawned tasks (the reaper, load tasks) run on a paused current-thread runtime.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// The state of one model in status.
pub async fn state_of(manager: &ModelManager, id: &str) -> &'static str {
    manager.get_model_status().await.unwrap().models[id].state
}
