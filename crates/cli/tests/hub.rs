//! Downloads from a Hugging Face hub, against a local server that speaks the hub's protocol
//! with switchable faults (no test touches the internet): `mm pull` and loads of a model
//! given only by `name`, the cache layout the Python tools share, offline reuse, and every
//! failure path (404, truncated, damaged, cut, hung, server errors).
mod common;

use common::fake_hub::{FakeHub, Fault, COMMIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const REPO: &str = "acme/minilm";
const WEIGHTS: &str = "model.safetensors";

fn model_dir() -> PathBuf {
    common::repo().join("models/all-MiniLM-L6-v2")
}

/// A test's world: a hub serving the packaged MiniLM as `acme/minilm`, an empty cache, and
/// a settings file whose `embedding` model has only a `name`.
struct World {
    hub: FakeHub,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        Self::serving(&model_dir())
    }

    /// A world whose hub serves `folder` as the repository.
    fn serving(folder: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = format!(
            "hub.timeout_seconds = 2\nembedding_cache.enabled = false\n\
             models.embedding.type = \"embedding\"\nmodels.embedding.name = \"{REPO}\"\n\
             models.local.type = \"embedding\"\nmodels.local.local_path = \"{}\"\n",
            model_dir().display()
        );
        std::fs::write(dir.path().join("settings.toml"), settings).unwrap();
        std::fs::create_dir(dir.path().join("hf-home")).unwrap();
        Self {
            hub: FakeHub::start(REPO, folder),
            dir,
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("hub-cache")
    }

    fn repo_cache(&self) -> PathBuf {
        self.cache().join("models--acme--minilm")
    }

    /// Runs `mm --json ARGS` against the hub (or offline), returning the output.
    fn mm(&self, args: &[&str], offline: bool) -> Output {
        let mut cmd = assert_cmd::Command::cargo_bin("mm").unwrap();
        cmd.env_remove("MM_CONFIG")
            .env_remove("HF_TOKEN")
            .env("HF_ENDPOINT", self.hub.url())
            .env("HF_HUB_CACHE", self.cache())
            .env("HF_HOME", self.dir.path().join("hf-home"))
            .arg("--json")
            .arg("--config")
            .arg(self.dir.path().join("settings.toml"))
            .args(args)
            .timeout(Duration::from_secs(120));
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        cmd.output().unwrap()
    }

    fn pull(&self) -> (bool, Value) {
        let out = self.mm(&["pull", "embedding"], false);
        (out.status.success(), common::json_of(&out.stdout))
    }

    fn embed(&self, model: &str, offline: bool) -> Value {
        let out = self.mm(&["embed", "--model", model, "a text to embed"], offline);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        common::json_of(&out.stdout)
    }

    /// The weights blob and its snapshot link.
    fn weights(&self) -> (PathBuf, PathBuf) {
        let link = self
            .repo_cache()
            .join("snapshots")
            .join(COMMIT)
            .join(WEIGHTS);
        let target = std::fs::read_link(&link).unwrap_or_default();
        (link, target)
    }

    fn blobs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.repo_cache().join("blobs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn files_state(&self) -> Value {
        let out = self.mm(&["models"], false);
        common::json_of(&out.stdout)["models"]["embedding"]["files"].clone()
    }
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn pull_lays_out_the_shared_cache_and_later_runs_work_offline() {
    let world = World::new();
    assert_eq!(world.files_state()["state"], "not_downloaded");
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(world.repo_cache().join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    let (link, target) = world.weights();
    let sha = sha256_of(&model_dir().join(WEIGHTS));
    assert_eq!(
        target,
        Path::new("../../blobs").join(&sha),
        "a relative link, as huggingface_hub makes"
    );
    assert_eq!(sha256_of(&link), sha);
    let pooling = world
        .repo_cache()
        .join("snapshots")
        .join(COMMIT)
        .join("1_Pooling/config.json");
    assert!(pooling.is_file(), "module configs come too");
    assert_eq!(world.files_state()["state"], "cached");
    assert!(
        std::fs::read_dir(world.dir.path().join("hf-home"))
            .unwrap()
            .next()
            .is_none(),
        "HF_HUB_CACHE, not HF_HOME, holds the downloads"
    );

    // Offline, with the hub gone: the cache serves, and the vector is the local model's.
    let requests = world.hub.requests().len();
    let offline = world.embed("embedding", true);
    assert_eq!(world.hub.requests().len(), requests, "no request offline");
    assert_eq!(
        offline["embeddings"],
        world.embed("local", true)["embeddings"]
    );
}

#[test]
fn a_weights_404_leaves_a_partial_cache_that_a_healthy_retry_completes() {
    let world = World::new();
    world.hub.fault(WEIGHTS, Fault::NotFound, usize::MAX);
    let (ok, out) = world.pull();
    assert!(!ok);
    assert_eq!(out["code"], "MODEL_NOT_FOUND", "{out}");
    assert!(out["message"].as_str().unwrap().contains(WEIGHTS), "{out}");
    assert_eq!(world.files_state()["state"], "partial");

    world.hub.heal();
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
    assert_eq!(world.files_state()["state"], "cached");
    assert_eq!(
        world.hub.content_gets("config.json"),
        1,
        "what the cache had is not fetched again"
    );
}

#[test]
fn a_truncated_body_is_never_linked_and_is_fetched_again() {
    let world = World::new();
    world.hub.fault(WEIGHTS, Fault::Truncate, 1);
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
    let (link, _) = world.weights();
    assert_eq!(sha256_of(&link), sha256_of(&model_dir().join(WEIGHTS)));
    assert!(world.hub.content_gets(WEIGHTS) >= 2);

    // Always short: the pull fails naming the file, and nothing enters blobs/ or snapshots/.
    let world = World::new();
    world.hub.fault(WEIGHTS, Fault::Truncate, usize::MAX);
    let (ok, out) = world.pull();
    assert!(!ok);
    assert_eq!(out["code"], "MODEL_LOAD_ERROR", "{out}");
    assert_eq!(out["details"]["file"], WEIGHTS, "{out}");
    let sha = sha256_of(&model_dir().join(WEIGHTS));
    assert!(!world.blobs().contains(&sha), "{:?}", world.blobs());
    assert!(!world.weights().0.exists());
}

#[test]
fn damaged_content_is_deleted_and_reported_with_both_hashes() {
    let world = World::new();
    world.hub.fault(WEIGHTS, Fault::Corrupt, usize::MAX);
    let (ok, out) = world.pull();
    assert!(!ok);
    assert_eq!(out["code"], "MODEL_LOAD_ERROR", "{out}");
    let sha = sha256_of(&model_dir().join(WEIGHTS));
    assert_eq!(out["details"]["expected"], sha.as_str(), "{out}");
    assert!(
        out["details"]["actual"].as_str().is_some_and(|a| a != sha),
        "{out}"
    );
    assert!(
        world.blobs().iter().all(|b| !b.starts_with(&sha)),
        "{:?}",
        world.blobs()
    );

    // Damaged once: the second try is whole.
    let world = World::new();
    world.hub.fault(WEIGHTS, Fault::Corrupt, 1);
    assert!(world.pull().0);
    assert_eq!(sha256_of(&world.weights().0), sha);
}

#[test]
fn a_cut_connection_resumes_where_it_stopped() {
    let world = World::new();
    world.hub.fault(WEIGHTS, Fault::Cut, 1);
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
    assert_eq!(
        sha256_of(&world.weights().0),
        sha256_of(&model_dir().join(WEIGHTS))
    );
    let resumed = world
        .hub
        .requests()
        .iter()
        .any(|r| r.contains("range=bytes=") && !r.contains("range=bytes=0-"));
    assert!(resumed, "{:#?}", world.hub.requests());
}

#[test]
fn server_errors_are_retried() {
    let world = World::new();
    world.hub.fault("config.json", Fault::ServerError, 2);
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
}

#[test]
fn a_hung_hub_fails_within_the_timeout_naming_the_endpoint() {
    let world = World::new();
    world.hub.fault("config.json", Fault::Hang, usize::MAX);
    let started = Instant::now();
    let (ok, out) = world.pull();
    let took = started.elapsed();
    assert!(!ok);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(
        out["code"], "MODEL_NOT_FOUND",
        "the files are not here and the hub did not give them: {out}"
    );
    let message = out["message"].as_str().unwrap();
    assert!(message.contains(&world.hub.url()), "{out}");
    assert!(
        out["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("HF_HUB_OFFLINE"),
        "{out}"
    );
}

#[test]
fn offline_with_an_empty_cache_names_what_is_missing() {
    let world = World::new();
    let out = world.mm(&["embed", "--model", "embedding", "x"], true);
    assert!(!out.status.success());
    let error = common::json_of(&out.stdout);
    assert_eq!(error["code"], "MODEL_NOT_FOUND", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("model.safetensors"), "{error}");
    assert!(!message.contains("fetch-models"), "{error}");
    assert!(
        error["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("HF_HUB_OFFLINE"),
        "{error}"
    );
    assert!(world.hub.requests().is_empty());
}

#[test]
fn a_repository_pulls_by_name_without_settings_and_sends_the_token() {
    // The model's files, plus an empty one (nothing to fetch, but it must exist).
    let served = tempfile::tempdir().unwrap();
    common::copy_model(&model_dir(), served.path());
    std::fs::write(served.path().join("added_tokens.txt"), "").unwrap();
    let world = World::serving(served.path());
    let out = assert_cmd::Command::cargo_bin("mm")
        .unwrap()
        .env_remove("MM_CONFIG")
        .env("HF_ENDPOINT", world.hub.url())
        .env("HF_HUB_CACHE", world.cache())
        .env("HF_TOKEN", "hf_secret")
        .current_dir(world.dir.path())
        .args(["--json", "pull", REPO])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let json = common::json_of(&out.stdout);
    assert!(out.status.success(), "{json}");
    let files: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        files.contains(&WEIGHTS) && files.contains(&"1_Pooling/config.json"),
        "{files:?}"
    );
    assert_eq!(
        sha256_of(&world.weights().0),
        sha256_of(&model_dir().join(WEIGHTS))
    );
    let requests = world.hub.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("/resolve/"))
            .all(|r| r.contains("auth=Bearer hf_secret")),
        "{requests:#?}"
    );
}

#[test]
fn small_files_behind_the_hubs_relative_redirect_are_followed() {
    // huggingface.co answers a non-LFS file with a 307 to a resolve cache on the same host;
    // the redirect's own length is not the file's.
    let world = World::new();
    world.hub.redirect_small_files();
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
    let config = world
        .repo_cache()
        .join("snapshots")
        .join(COMMIT)
        .join("config.json");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(model_dir().join("config.json")).unwrap()
    );
    assert!(world
        .hub
        .requests()
        .iter()
        .any(|r| r.contains("/api/resolve-cache/")));
}

#[test]
fn a_hub_that_trickles_a_body_fails_within_the_whole_file_deadline() {
    // One byte every 50 ms: every read brings something, so a read timeout never fires;
    // config.json (612 bytes) would take half a minute.
    let world = World::new();
    world.hub.fault("config.json", Fault::Trickle, usize::MAX);
    let started = Instant::now();
    let (ok, out) = world.pull();
    let took = started.elapsed();
    assert!(!ok, "{out}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let message = out["message"].as_str().unwrap();
    assert!(message.contains("config.json"), "{out}");
    assert!(message.contains("hub.timeout_seconds"), "{out}");
}

#[test]
fn a_429_is_retried_after_the_hub_s_retry_after() {
    let world = World::new();
    world.hub.fault("config.json", Fault::RateLimited(3), 1);
    let started = Instant::now();
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "retried after {:?}, before the 3 s the hub asked for",
        started.elapsed()
    );
}

/// A hub repository of the int8 ONNX export with its tokenizer and sentence-transformers
/// configs, and a world whose `onnx` model names it (backend `onnx`, no `local_path`).
fn onnx_world(runtime: &Path) -> World {
    // The hub reads the repository into memory when it starts.
    let folder = tempfile::tempdir().unwrap();
    let served = folder.path();
    let minilm = model_dir();
    for file in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "README.md",
    ] {
        std::fs::copy(minilm.join(file), served.join(file)).unwrap();
    }
    std::fs::create_dir(served.join("1_Pooling")).unwrap();
    std::fs::copy(
        minilm.join("1_Pooling/config.json"),
        served.join("1_Pooling/config.json"),
    )
    .unwrap();
    std::fs::create_dir(served.join("onnx")).unwrap();
    let graph = common::repo().join("models/all-MiniLM-L6-v2-int8-onnx/model.onnx");
    std::fs::hard_link(&graph, served.join("onnx/model.onnx")).unwrap();
    let world = World::serving(served);
    let settings = format!(
        "hub.timeout_seconds = 2\nembedding_cache.enabled = false\n\
         onnx.runtime_path = \"{}\"\n\
         models.embedding.type = \"embedding\"\nmodels.embedding.backend = \"onnx\"\n\
         models.embedding.name = \"{REPO}\"\n",
        runtime.display()
    );
    std::fs::write(world.dir.path().join("settings.toml"), settings).unwrap();
    world
}

#[test]
fn an_onnx_model_is_pulled_by_hub_name_without_loading_it() {
    // No runtime at that path: a pull that loaded the model would fail.
    let world = onnx_world(Path::new("/nonexistent/libonnxruntime.so"));
    let (ok, out) = world.pull();
    assert!(ok, "{out}");
    let snapshot = world.repo_cache().join("snapshots").join(COMMIT);
    for file in ["onnx/model.onnx", "tokenizer.json", "1_Pooling/config.json"] {
        assert!(snapshot.join(file).is_file(), "{file}: {out}");
    }
    assert_eq!(
        world.hub.content_gets("README.md"),
        0,
        "only what the loader reads"
    );

    // With the runtime, the pulled files embed offline like the local export does.
    let runtime = common::repo().join("models/onnxruntime/capi/libonnxruntime.so.1.32.0");
    let settings = std::fs::read_to_string(world.dir.path().join("settings.toml")).unwrap();
    let settings = settings.replace("/nonexistent/libonnxruntime.so", runtime.to_str().unwrap());
    std::fs::write(world.dir.path().join("settings.toml"), settings).unwrap();
    let out = world.embed("embedding", true);
    assert_eq!(out["dimension"], 384, "{out}");
}
