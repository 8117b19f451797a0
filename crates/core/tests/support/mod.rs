//! A real loader for tests: no model files, but real loads on blocking threads, real
//! failures, delays and counters, and a deterministic embedder.
#![allow(dead_code)]

use model_manager_core::backend::{ModelLoader, Probe, TokenEmbedder, TokenizedText};
use model_manager_core::{
    Device, DeviceChoice, Embedder, ErrorCode, Model, ModelError, ModelInfo, ModelManager,
    ModelSpec, Registry, Result, Settings,
};
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Holds forward passes while closed, and tells a test when a pass has started, so tests
/// can fill an engine's queue behind a running pass without sleeping.
#[derive(Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    entered: Mutex<usize>,
    entered_changed: Condvar,
}

impl Gate {
    pub fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }
    pub fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
    /// Called by a forward pass: counts it, then waits while the gate is closed.
    fn pass(&self) {
        *self.entered.lock().unwrap() += 1;
        self.entered_changed.notify_all();
        let closed = self.closed.lock().unwrap();
        drop(self.opened.wait_while(closed, |c| *c).unwrap());
    }
    /// Blocks until `n` passes have started (call it off the async runtime).
    pub fn wait_entered(&self, n: usize) {
        let entered = self.entered.lock().unwrap();
        drop(
            self.entered_changed
                .wait_while(entered, |e| *e < n)
                .unwrap(),
        );
    }
}

/// Knobs and counters shared between a test and its loader.
#[derive(Default)]
pub struct Probes {
    pub loads_started: AtomicUsize,
    pub loads_finished: AtomicUsize,
    pub fail: AtomicBool,
    pub delay_ms: AtomicU64,
    pub embedded_texts: Mutex<Vec<String>>,
    pub estimate: Mutex<std::collections::HashMap<String, u64>>,
    /// Forward passes of the tokenizing embedder wait here.
    pub gate: Gate,
    /// Loads wait here.
    pub load_gate: Gate,
    /// Loads of these model ids fail.
    pub fail_ids: Mutex<std::collections::HashSet<String>>,
    /// Models dropped so far.
    pub dropped: AtomicUsize,
    /// Token lengths of every forward pass of the tokenizing embedder.
    pub batches: Mutex<Vec<Vec<usize>>>,
}

impl Probes {
    /// Waits (off the async runtime) until `n` loads have reached the load gate.
    pub async fn loads_entered(self: &Arc<Self>, n: usize) {
        let probes = self.clone();
        tokio::task::spawn_blocking(move || probes.load_gate.wait_entered(n))
            .await
            .unwrap();
    }

    /// Waits (off the async runtime) until `n` forward passes have started.
    pub async fn passes_entered(self: &Arc<Self>, n: usize) {
        let probes = self.clone();
        tokio::task::spawn_blocking(move || probes.gate.wait_entered(n))
            .await
            .unwrap();
    }
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
    /// `flavour = "panic_dimension"`: `dimension()` panics.
    pub panic_dimension: bool,
    /// `flavour = "file_value"`: every vector is the number in `local_path/value.txt`.
    pub file_value: Option<f32>,
}

impl Drop for HashEmbedder {
    fn drop(&mut self) {
        self.probes.dropped.fetch_add(1, Ordering::SeqCst);
    }
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
        assert!(!self.panic_dimension, "dimension() panics (test)");
        self.dimension
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut seen = self.probes.embedded_texts.lock().unwrap();
        seen.extend(texts.iter().map(|t| t.to_string()));
        Ok(texts
            .iter()
            .map(|t| match self.file_value {
                Some(v) => vec![v; self.dimension],
                None => expected_vector(t, self.dimension),
            })
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
    /// `flavour = "known_prompts"`: the prompts are known without a load (none), as a real
    /// loader reads them from the model's files.
    fn prompts(&self, spec: &ModelSpec) -> Option<model_manager_core::Prompts> {
        let flavour = spec.option_str("flavour").ok().flatten();
        (flavour == Some("known_prompts")).then(Default::default)
    }
    fn load(&self, spec: &ModelSpec, _device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        self.probes.loads_started.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(
            self.probes.delay_ms.load(Ordering::SeqCst),
        ));
        self.probes.load_gate.pass();
        self.probes.loads_finished.fetch_add(1, Ordering::SeqCst);
        let failing = self.probes.fail_ids.lock().unwrap().contains(&spec.id);
        if self.probes.fail.load(Ordering::SeqCst) || failing {
            return Err(
                ModelError::new(ErrorCode::ModelLoadError, "weights are corrupt (test)")
                    .with("file", "weights.bin"),
            );
        }
        let flavour = spec.option_str("flavour")?;
        let file_value = match (flavour, &spec.local_path) {
            (Some("file_value"), Some(dir)) => {
                let text = std::fs::read_to_string(dir.join("value.txt")).unwrap();
                Some(text.trim().parse().unwrap())
            }
            _ => None,
        };
        let embedder = HashEmbedder {
            id: spec.id.clone(),
            dimension: self.dimension,
            probes: self.probes.clone(),
            model_type: self.model_type.to_owned(),
            panic_dimension: flavour == Some("panic_dimension"),
            file_value,
        };
        if flavour == Some("tokens") {
            return Ok(Arc::new(TokenHashEmbedder(embedder)));
        }
        Ok(Arc::new(embedder))
    }
}

/// Longest sequence of the tokenizing test embedder, special tokens included.
pub const MAX_TOKENS: usize = 16;

/// The ids the tokenizing test embedder gives `text`: one per word between 101 and 102,
/// truncated at [`MAX_TOKENS`].
pub fn test_tokens(text: &str) -> Vec<u32> {
    let mut ids = vec![101];
    ids.extend(
        text.split_whitespace()
            .map(|w| (xxhash(w) % 30_000) as u32 + 1000),
    );
    ids.truncate(MAX_TOKENS - 1);
    ids.push(102);
    ids
}

/// The vector the tokenizing test embedder gives `text`, alone or in any batch.
pub fn token_vector(text: &str, dimension: usize) -> Vec<f32> {
    vector_of_ids(&test_tokens(text), dimension)
}

fn vector_of_ids(ids: &[u32], dimension: usize) -> Vec<f32> {
    (0..dimension)
        .map(|i| {
            let sum: f32 = ids
                .iter()
                .map(|&id| ((id as usize * (i + 3)) % 97) as f32)
                .sum();
            sum / ids.len() as f32
        })
        .collect()
}

/// Like [`HashEmbedder`], but tokenizing apart from its forward pass (so the engine batches
/// it by tokens) and gated by [`Probes::gate`]. A word `poison` fails the pass; `panic`
/// panics in it.
pub struct TokenHashEmbedder(pub HashEmbedder);

impl Model for TokenHashEmbedder {
    fn info(&self) -> ModelInfo {
        self.0.info()
    }
    fn as_embedder(&self) -> Option<&dyn Embedder> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Embedder for TokenHashEmbedder {
    fn dimension(&self) -> usize {
        self.0.dimension
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tokens = self.tokenize(texts)?;
        self.embed_tokens(&tokens.iter().collect::<Vec<_>>())
    }
    fn as_token_embedder(&self) -> Option<&dyn TokenEmbedder> {
        Some(self)
    }
}

impl TokenEmbedder for TokenHashEmbedder {
    fn tokenize(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        if texts.iter().any(|t| t.contains("break the tokenizer")) {
            panic!("a text asked the test tokenizer to panic");
        }
        Ok(texts
            .iter()
            .map(|t| {
                let ids = test_tokens(t);
                let n = ids.len();
                TokenizedText::new(ids, vec![0; n])
            })
            .collect())
    }
    fn vocab_size(&self) -> usize {
        31_000
    }
    fn max_tokens(&self) -> usize {
        MAX_TOKENS
    }
    fn embed_tokens(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>> {
        self.0.probes.gate.pass();
        self.0
            .probes
            .batches
            .lock()
            .unwrap()
            .push(batch.iter().map(|t| t.len()).collect());
        let poison = test_tokens("poison")[1];
        let panic = test_tokens("panic")[1];
        if batch.iter().any(|t| t.ids.contains(&panic)) {
            panic!("a text asked the test embedder to panic");
        }
        if batch.iter().any(|t| t.ids.contains(&poison)) {
            return Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                "a poisoned text (test)",
            ));
        }
        Ok(batch
            .iter()
            .map(|t| vector_of_ids(&t.ids, self.0.dimension))
            .collect())
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
