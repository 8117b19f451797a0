//! The persisted embedding cache when `mm serve` is killed with SIGKILL: during steady
//! writes it loses at most the snapshot window, and a kill during a save leaves the
//! previous complete file, which the next start restores.
mod common;

use common::Server;
use model_manager::backend::{ModelLoader, Probe};
use model_manager::{
    Device, DeviceChoice, Embedder, Model, ModelInfo, ModelManager, ModelSpec, Registry, Settings,
};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn settings_file(dir: &Path, cache: &Path) -> PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let toml = format!(
        "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"\n\
         embedding_cache.save_interval_seconds = 1\nembedding_cache.max_cache_size = 100000\n\
         embedding_cache.ttl_seconds = 0\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.local_path = \"{}\"\n",
        cache.display(),
        models.join("all-MiniLM-L6-v2").display()
    );
    let path = dir.join("settings.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn start(config: &Path) -> Server {
    Server::start(&[], &[("MM_CONFIG", config.to_str().unwrap())])
}

fn embed(server: &Server, text: &str) -> serde_json::Value {
    let body = serde_json::json!({"input": text}).to_string();
    let (status, out) = server.post("/v1/embeddings", &body);
    assert_eq!(status, 200, "{out}");
    out["data"][0]["embedding"].clone()
}

fn cache_status(server: &Server) -> serde_json::Value {
    server.get("/v1/status").1
}

#[test]
fn a_kill_during_steady_writes_loses_at_most_the_snapshot_window() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("embeddings.mmcache");
    let config = settings_file(dir.path(), &cache);
    let mut server = start(&config);
    let started = Instant::now();
    let mut acknowledged: Vec<(Instant, String, serde_json::Value)> = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(3500) {
        let text = format!("steady write number {i}");
        let vector = embed(&server, &text);
        acknowledged.push((Instant::now(), text, vector));
        i += 1;
    }
    let _ = server.child.kill();
    let killed_at = Instant::now();
    let _ = server.child.wait();

    let server = start(&config);
    let status = cache_status(&server);
    assert!(status["cache_restore_error"].is_null(), "{status}");
    let restored = status["cache"]["entries"].as_u64().unwrap() as usize;
    // A snapshot runs every second (and takes a moment): what was answered over two
    // seconds before the kill is in the file.
    let safe = acknowledged
        .iter()
        .filter(|(at, _, _)| killed_at.duration_since(*at) > Duration::from_secs(2))
        .count();
    assert!(safe > 0, "the run was long enough to have a snapshot");
    assert!(
        restored >= safe,
        "restored {restored} of {safe} entries older than the window"
    );
    for (_, text, vector) in acknowledged.iter().take(safe) {
        assert_eq!(
            &embed(&server, text),
            vector,
            "{text} comes back from the cache unchanged"
        );
    }
    let hits = cache_status(&server)["cache"]["hits"].as_u64().unwrap() as usize;
    assert_eq!(hits, safe, "every one of them was a cache hit");
}

/// A model of another type that makes up vectors quickly, to fill a cache file.
struct Filler;

impl Model for Filler {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "filler".into(),
            backend: "test".into(),
            device: Device::Cpu,
            dimension: Some(384),
            bytes: None,
        }
    }
    fn as_embedder(&self) -> Option<&dyn Embedder> {
        Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Embedder for Filler {
    fn dimension(&self) -> usize {
        384
    }
    fn embed(&self, texts: &[&str]) -> model_manager::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                (0..384)
                    .map(|d| ((t.len() * 7 + d) % 13) as f32 / 13.0)
                    .collect()
            })
            .collect())
    }
}

impl ModelLoader for Filler {
    fn model_type(&self) -> &str {
        "filler"
    }
    fn backend(&self) -> &str {
        "test"
    }
    fn probe(&self, _spec: &ModelSpec) -> Probe {
        Probe::Accept
    }
    fn load(&self, _: &ModelSpec, _: &DeviceChoice) -> model_manager::Result<Arc<dyn Model>> {
        Ok(Arc::new(Filler))
    }
}

/// A cache file of `entries` vectors of another model, large enough that saving it takes a
/// while: written by a manager (its shutdown saves the cache), as an application would.
fn big_cache_file(path: &Path, entries: usize) {
    let toml = format!(
        "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"\n\
         embedding_cache.max_cache_size = 100000\nembedding_cache.ttl_seconds = 0\n\
         models.another-model.type = \"filler\"\n",
        path.display()
    );
    let settings = Settings::from_toml_str(&toml, ".").unwrap();
    let registry = Registry::new();
    registry.register(Arc::new(Filler)).unwrap();
    let manager = ModelManager::with_registry(settings, Arc::new(registry));
    let texts: Vec<String> = (0..entries).map(|i| format!("filler {i}")).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for chunk in texts.chunks(1000) {
            manager
                .generate_embeddings("another-model", chunk)
                .await
                .unwrap();
        }
        manager.shutdown().await.unwrap();
    });
    assert!(path.exists(), "the manager saved its cache");
}

fn temporary_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count()
}

#[test]
fn a_kill_during_a_save_leaves_the_previous_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("embeddings.mmcache");
    big_cache_file(&cache, 40_000);
    let config = settings_file(dir.path(), &cache);
    let mut caught_mid_save = 0;
    for round in 0..12 {
        let mut server = start(&config);
        let status = cache_status(&server);
        assert!(
            status["cache_restore_error"].is_null(),
            "round {round}: {status}"
        );
        assert!(status["cache"]["entries"].as_u64().unwrap() >= 40_000);
        assert_eq!(
            temporary_files(dir.path()),
            0,
            "stale temporary files are cleared"
        );
        // One new entry makes the next snapshot rewrite the whole file; kill somewhere in it.
        embed(&server, &format!("round {round}"));
        std::thread::sleep(Duration::from_millis(900 + 37 * round));
        let _ = server.child.kill();
        let _ = server.child.wait();
        caught_mid_save += usize::from(temporary_files(dir.path()) > 0);
        if caught_mid_save >= 2 {
            break;
        }
    }
    assert!(caught_mid_save > 0, "no kill landed during a save");
    let server = start(&config);
    assert!(cache_status(&server)["cache_restore_error"].is_null());
}
