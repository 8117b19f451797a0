//! The shared (Redis) cache tier across `mm serve` replicas, against a real `redis-server`
//! started by the tests: remote hits with identical floats, keys that follow the model's
//! content, a Redis outage that fails no request, and damaged values refused.
mod common;

use common::redis_server::RedisServer;
use common::Server;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PREFIX: &str = "mmtest:";

fn model_dir() -> PathBuf {
    common::repo().join("models/all-MiniLM-L6-v2")
}

/// A settings file for one replica: the shared tier at `redis`, a local cache of
/// `local_entries` (0: every look-up goes to Redis), the model in `model`.
fn settings(dir: &Path, name: &str, redis: &str, model: &Path, local_entries: u64) -> PathBuf {
    settings_with_timeout(dir, name, redis, model, local_entries, 2000)
}

fn settings_with_timeout(
    dir: &Path,
    name: &str,
    redis: &str,
    model: &Path,
    local_entries: u64,
    timeout_ms: u64,
) -> PathBuf {
    let toml = format!(
        "embedding_cache.redis_url = \"{redis}\"\n\
         embedding_cache.redis_key_prefix = \"{PREFIX}\"\n\
         embedding_cache.redis_timeout_ms = {timeout_ms}\n\
         embedding_cache.max_cache_size = {local_entries}\n\
         embedding_cache.ttl_seconds = 600\n\
         models.embedding.type = \"embedding\"\n\
         models.embedding.local_path = \"{}\"\n",
        model.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn replica(config: &Path) -> Server {
    Server::start(&[], &[("MM_CONFIG", config.to_str().unwrap())])
}

/// The vectors and the usage of one request.
fn embed(server: &Server, texts: &[&str]) -> (Vec<Value>, Value) {
    let (status, out) = server.post("/v1/embeddings", &json!({"input": texts}).to_string());
    assert_eq!(status, 200, "{out}");
    let vectors = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].clone())
        .collect();
    (vectors, out["usage"].clone())
}

fn remote(server: &Server) -> Value {
    let status = server.get("/v1/status").1;
    status["cache"]["remote"].clone()
}

/// Polls the replica's remote stats until `done` holds.
fn wait_remote(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = remote(server);
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "never {what}: {stats}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connected(server: &Server) {
    wait_remote(server, "connected", |r| r["state"] == "connected");
}

fn count(stats: &Value, field: &str) -> u64 {
    stats[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {stats}"))
}

/// A copy of the model folder elsewhere: small files copied, the weights hard-linked.
fn model_copy(to: &Path) -> PathBuf {
    let dir = to.join("model-copy");
    common::copy_model(&model_dir(), &dir);
    dir
}

#[test]
fn a_text_embedded_on_one_replica_is_a_remote_hit_on_another() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Replica B reads the same files from another folder: keys follow content, not paths.
    let a = replica(&settings(dir.path(), "a", &redis.url(), &model_dir(), 1000));
    let b_model = model_copy(dir.path());
    let b = replica(&settings(dir.path(), "b", &redis.url(), &b_model, 1000));
    connected(&a);
    connected(&b);
    let texts = [
        "the cat sat on the mat",
        "a shared cache tier",
        "Grüße aus Köln",
    ];
    let (from_a, usage_a) = embed(&a, &texts);
    wait_remote(&a, "written", |r| count(r, "writes") >= 3);
    let keys = redis.keys(&format!("{PREFIX}*"));
    assert_eq!(keys.len(), 3, "{keys:?}");
    let ttl = redis.pttl(&keys[0]);
    assert!(ttl > 590_000 && ttl <= 600_000, "PTTL {ttl}");

    let (from_b, usage_b) = embed(&b, &texts);
    assert_eq!(
        from_a, from_b,
        "replica B serves replica A's floats bit for bit"
    );
    assert_eq!(usage_a, usage_b, "cached entries keep their token counts");
    let stats = remote(&b);
    assert_eq!(
        (count(&stats, "hits"), count(&stats, "misses")),
        (3, 0),
        "{stats}"
    );
    let status = b.get("/v1/status").1;
    assert_ne!(
        status["models"]["embedding"]["state"], "loaded",
        "B answered from Redis without loading the model: {status}"
    );
    // A second ask on B is a local hit: no new remote look-up.
    embed(&b, &texts[..1]);
    assert_eq!(count(&remote(&b), "hits"), 3);
    let (_, metrics) = b.request_text("GET", "/metrics", "", &[]);
    for line in [
        "mm_embedding_cache_remote_connected 1",
        "mm_embedding_cache_remote_hits_total 3",
        "mm_embedding_cache_remote_corrupt_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
}

#[test]
fn a_changed_model_file_makes_the_old_entries_unreachable() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path());
    let config = settings(dir.path(), "a", &redis.url(), &model, 1000);
    let mut a = replica(&config);
    connected(&a);
    let text = ["a text embedded before the model changed"];
    embed(&a, &text);
    wait_remote(&a, "written", |r| count(r, "writes") == 1);
    a.terminate();

    // Same meaning, other bytes: the model's files changed.
    let config_json = model.join("config.json");
    let mut content = std::fs::read(&config_json).unwrap();
    content.extend_from_slice(b"\n");
    std::fs::write(&config_json, content).unwrap();
    let b = replica(&config);
    connected(&b);
    embed(&b, &text);
    let stats = wait_remote(&b, "written", |r| count(r, "writes") == 1);
    assert_eq!(
        (count(&stats, "hits"), count(&stats, "misses")),
        (0, 1),
        "{stats}"
    );
    let keys = redis.keys(&format!("{PREFIX}*"));
    let keyspace = |k: &String| k[PREFIX.len()..].split(':').next().unwrap().to_owned();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keyspace(&keys[0]), keyspace(&keys[1]), "{keys:?}");
}

#[test]
fn redis_killed_mid_run_fails_no_request_and_the_tier_comes_back() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&settings(dir.path(), "a", &redis.url(), &model_dir(), 0));
    connected(&a);
    let mut i = 0;
    let mut embed_next = |a: &Server| {
        i += 1;
        embed(a, &[format!("request number {i}").as_str()])
    };
    for _ in 0..5 {
        embed_next(&a);
    }
    wait_remote(&a, "written", |r| count(r, "writes") == 5);
    redis.kill();
    for _ in 0..20 {
        embed_next(&a);
    }
    let down = wait_remote(&a, "down", |r| r["state"] == "down");
    assert!(
        count(&down, "errors") + count(&down, "timeouts") >= 1,
        "{down}"
    );
    assert!(
        count(&down, "skipped") >= 1,
        "requests skipped the dead tier: {down}"
    );
    assert!(down["last_error"].is_string(), "{down}");

    let _redis = RedisServer::start_on(redis.port);
    connected(&a);
    let again = ["written after the restart"];
    let before = remote(&a);
    embed(&a, &again);
    wait_remote(&a, "written again", |r| {
        count(r, "writes") > count(&before, "writes")
    });
    let (vector, _) = embed(&a, &again);
    let after = remote(&a);
    assert_eq!(count(&after, "hits"), count(&before, "hits") + 1, "{after}");
    assert_eq!(vector.len(), 1);
}

#[test]
fn a_stalled_redis_costs_requests_at_most_the_timeout() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = settings_with_timeout(dir.path(), "a", &redis.url(), &model_dir(), 0, 300);
    let a = replica(&config);
    connected(&a);
    embed(&a, &["before the stall"]);
    redis.signal("STOP");
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        let started = Instant::now();
        embed(&a, &[format!("during the stall {i}").as_str()]);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(3),
        "a request took {slowest:?}"
    );
    let down = wait_remote(&a, "down", |r| r["state"] == "down");
    assert!(count(&down, "timeouts") >= 3, "{down}");
    redis.signal("CONT");
    connected(&a);
}

#[test]
fn a_value_overwritten_with_garbage_is_a_counted_miss() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&settings(dir.path(), "a", &redis.url(), &model_dir(), 0));
    connected(&a);
    let text = ["a value someone tampered with"];
    let (first, _) = embed(&a, &text);
    wait_remote(&a, "written", |r| count(r, "writes") == 1);
    let keys = redis.keys(&format!("{PREFIX}*"));
    assert_eq!(keys.len(), 1);
    redis.set(&keys[0], b"\x00garbage that is not a vector");

    let (second, _) = embed(&a, &text);
    assert_eq!(first, second, "computed again, not served from garbage");
    let stats = wait_remote(&a, "rewritten", |r| count(r, "writes") == 2);
    assert_eq!(
        (count(&stats, "corrupt"), count(&stats, "hits")),
        (1, 0),
        "{stats}"
    );
    let (third, _) = embed(&a, &text);
    assert_eq!(first, third);
    assert_eq!(
        count(&remote(&a), "hits"),
        1,
        "the rewrite repaired the entry"
    );
}

fn mm_status(config: &Path) -> (bool, Value) {
    let out = assert_cmd::Command::cargo_bin("mm")
        .unwrap()
        .env_remove("MM_CONFIG")
        .args(["--json", "--config", config.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    (out.status.success(), common::json_of(&out.stdout))
}

#[test]
fn mm_status_reports_the_tier_and_refuses_a_malformed_url() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (ok, status) = mm_status(&settings(dir.path(), "up", &redis.url(), &model_dir(), 10));
    assert!(ok, "{status}");
    assert_eq!(status["cache"]["remote"]["state"], "connected", "{status}");

    let nobody = RedisServer::start();
    let dead = nobody.url();
    drop(nobody);
    let (ok, status) = mm_status(&settings(dir.path(), "dead", &dead, &model_dir(), 10));
    assert!(
        ok,
        "an unreachable Redis is a state, not a failure: {status}"
    );
    assert_eq!(status["cache"]["remote"]["state"], "down", "{status}");

    let with_password = "redis://:hunter2@127.0.0.1:1/0";
    let (_, status) = mm_status(&settings(dir.path(), "pw", with_password, &model_dir(), 10));
    assert!(!status.to_string().contains("hunter2"), "{status}");

    for (url, code) in [
        ("redis//nowhere", "CONFIG_ERROR"),
        ("redis://127.0.0.1:notaport/0", "CONFIG_ERROR"),
        ("memcached://127.0.0.1:11211", "MISSING_DEPENDENCY"),
    ] {
        let (ok, status) = mm_status(&settings(dir.path(), "bad", url, &model_dir(), 10));
        assert!(!ok, "{url}");
        assert_eq!(status["code"], code, "{url}: {status}");
        assert_eq!(
            status["details"]["key"], "embedding_cache.redis_url",
            "{status}"
        );
    }
}
