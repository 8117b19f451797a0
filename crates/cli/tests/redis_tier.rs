//! The shared (Redis) cache tier across `mm serve` replicas, against a real `redis-server`
//! started by the tests: remote hits with identical floats, keys that follow the model's
//! content, a Redis outage that fails no request, damaged, poisoned and forged values
//! refused, and a changed Redis password picked up without a restart.
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
    settings_with(dir, name, redis, model, local_entries, timeout_ms, "")
}

/// [`settings_with_timeout`] plus `extra` lines.
fn settings_with(
    dir: &Path,
    name: &str,
    redis: &str,
    model: &Path,
    local_entries: u64,
    timeout_ms: u64,
    extra: &str,
) -> PathBuf {
    let toml = format!(
        "embedding_cache.redis_url = \"{redis}\"\n\
         embedding_cache.redis_key_prefix = \"{PREFIX}\"\n\
         embedding_cache.redis_timeout_ms = {timeout_ms}\n\
         embedding_cache.max_cache_size = {local_entries}\n\
         embedding_cache.ttl_seconds = 600\n\
         models.embedding.type = \"embedding\"\n\
         models.embedding.local_path = \"{}\"\n{extra}\n",
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

/// The first (only) key the tier wrote, once its write is counted.
fn only_key(server: &Server, redis: &RedisServer) -> String {
    wait_remote(server, "written", |r| count(r, "writes") >= 1);
    let keys = redis.keys(&format!("{PREFIX}*"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].clone()
}

/// An `MMv1` value (the unauthenticated format) for `key` with a correct xxh3 checksum:
/// what anyone who can write to Redis can make.
fn forged_v1(key: &str, vector: &[f32], tokens: u32) -> Vec<u8> {
    let mut out = b"MMv1".to_vec();
    out.extend_from_slice(&(vector.len() as u32).to_le_bytes());
    out.extend_from_slice(&tokens.to_le_bytes());
    for v in vector {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key.as_bytes());
    hasher.update(&[0]);
    hasher.update(&out);
    out.extend_from_slice(&hasher.digest().to_le_bytes());
    out
}

#[test]
fn poisoned_values_with_valid_checksums_are_refused_and_never_reach_the_cache_file() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&settings(dir.path(), "a", &redis.url(), &model_dir(), 0));
    connected(&a);
    let text = ["a text someone poisons in the shared tier"];
    let (honest, usage) = embed(&a, &text);
    let key = only_key(&a, &redis);

    // Replica B keeps a local cache and persists it: a poisoned remote hit would be copied
    // in and saved, and the next start would refuse the whole file.
    let persist = format!(
        "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"",
        dir.path().join("b.mmcache").display()
    );
    let b_config = settings_with(
        dir.path(),
        "b",
        &redis.url(),
        &model_dir(),
        1000,
        2000,
        &persist,
    );
    // Values no model makes, whatever the model: refused before this replica loads it.
    for (poison, what) in [
        (forged_v1(&key, &[f32::NAN; 384], 9), "NaN floats"),
        (forged_v1(&key, &[f32::INFINITY; 384], 9), "infinite floats"),
        (
            forged_v1(&key, &[0.05; 384], u32::MAX),
            "a token count of 2^32 - 1",
        ),
    ] {
        // A fresh replica B each time: no file, so the text is not a local hit.
        let _ = std::fs::remove_file(dir.path().join("b.mmcache"));
        redis.set(&key, &poison);
        let b = replica(&b_config);
        connected(&b);
        let (served, served_usage) = embed(&b, &text);
        assert_eq!(served, honest, "{what}: computed again, not served");
        assert_eq!(served_usage, usage, "{what}: usage is the model's");
        let stats = remote(&b);
        assert_eq!(
            (count(&stats, "hits"), count(&stats, "corrupt")),
            (0, 1),
            "{what}: {stats}"
        );
        let restored = restarted(b, &b_config);
        assert_eq!(restored["restored"], 1, "{what}: {restored}");
    }
    // A vector of another dimension than the model's: refused once the replica knows the
    // model (here it loads it for the second text).
    let _ = std::fs::remove_file(dir.path().join("b.mmcache"));
    redis.set(&key, &forged_v1(&key, &[0.05; 3], 9));
    let b = replica(&b_config);
    connected(&b);
    let (served, _) = embed(&b, &[text[0], "a second text, computed here"]);
    assert_eq!(
        served[0], honest[0],
        "3 dimensions: computed again, not served"
    );
    // Served by the remote tier before the model was known, refused once it said 384: a
    // refused value and a miss of that tier, not a hit; never found in the local tier.
    let cache = b.get("/v1/status").1["cache"].clone();
    let remote = &cache["remote"];
    assert_eq!(
        (&remote["hits"], &remote["misses"], &remote["corrupt"]),
        (&json!(0), &json!(2), &json!(1)),
        "dropped once the model said 384: {cache}"
    );
    assert_eq!(
        (&cache["hits"], &cache["rejected"]),
        (&json!(0), &json!(0)),
        "{cache}"
    );
    let restored = restarted(b, &b_config);
    assert_eq!(restored["dropped"], 0, "{restored}");
}

/// What replica `b` restored from its file after a SIGTERM and a start with `config`; the
/// file restores without error.
fn restarted(mut b: Server, config: &Path) -> Value {
    b.terminate();
    let status = replica(config).get("/v1/status").1;
    assert!(status["cache_restore_error"].is_null(), "{status}");
    status["cache_restored"].clone()
}

#[test]
fn with_a_secret_a_forged_value_is_a_miss_and_status_says_values_are_authenticated() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a shared secret of the replicas, 32+ bytes\n").unwrap();
    let extra = format!(
        "embedding_cache.redis_secret_file = \"{}\"",
        secret.display()
    );
    let a_config = settings_with(dir.path(), "a", &redis.url(), &model_dir(), 0, 2000, &extra);
    let a = replica(&a_config);
    connected(&a);
    assert_eq!(remote(&a)["authenticated"], true, "{}", remote(&a));
    let text = ["a text whose vector someone forges"];
    let (honest, usage) = embed(&a, &text);
    let key = only_key(&a, &redis);
    // Another replica with the same secret is served the authenticated value.
    let b = replica(&settings_with(
        dir.path(),
        "b",
        &redis.url(),
        &model_dir(),
        0,
        2000,
        &extra,
    ));
    connected(&b);
    assert_eq!(embed(&b, &text).0, honest);
    assert_eq!(count(&remote(&b), "hits"), 1);

    // A well-formed, finite, plausible forgery in the old unauthenticated format.
    redis.set(&key, &forged_v1(&key, &[0.05; 384], 7));
    let (served, served_usage) = embed(&b, &text);
    assert_eq!(served, honest, "the forged vector is not served");
    assert_eq!(served_usage, usage);
    let stats = remote(&b);
    assert_eq!(count(&stats, "hits"), 1, "{stats}");
    assert_eq!(count(&stats, "unauthenticated"), 1, "{stats}");

    // The same forgery in the authenticated format, tagged with another secret.
    let genuine = wait_for_value(&redis, &key);
    let mut tampered = genuine.clone();
    let at = 12 + 4 * 17;
    tampered[at..at + 4].copy_from_slice(&0.25f32.to_le_bytes());
    redis.set(&key, &tampered);
    assert_eq!(embed(&b, &text).0, honest);
    assert_eq!(count(&remote(&b), "unauthenticated"), 2);

    // A replica without the secret neither trusts nor serves authenticated values.
    let c = replica(&settings(dir.path(), "c", &redis.url(), &model_dir(), 0));
    connected(&c);
    assert_eq!(remote(&c)["authenticated"], false);
    redis.set(&key, &genuine);
    assert_eq!(embed(&c, &text).0, honest);
    assert_eq!(count(&remote(&c), "hits"), 0, "{}", remote(&c));
}

/// The value under `key` once a rewrite put an authenticated one back.
fn wait_for_value(redis: &RedisServer, key: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = redis.get(key).filter(|v| v.starts_with(b"MMv2")) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "no authenticated value under {key}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_changed_redis_password_is_read_again_from_the_password_file() {
    let mut redis = RedisServer::start_with_password(free_port(), Some("first-password"));
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("redis-password");
    std::fs::write(&password, "first-password\n").unwrap();
    let extra = format!(
        "embedding_cache.redis_password_file = \"{}\"",
        password.display()
    );
    let a = replica(&settings_with(
        dir.path(),
        "a",
        &redis.url(),
        &model_dir(),
        0,
        2000,
        &extra,
    ));
    connected(&a);
    embed(&a, &["before the password changed"]);
    wait_remote(&a, "written", |r| count(r, "writes") == 1);

    // The operator rotates the password: Redis restarts with the new one, and the file
    // the replicas read says it.
    let port = redis.port;
    redis.kill();
    std::fs::write(&password, "second-password\n").unwrap();
    let _redis = RedisServer::start_with_password(port, Some("second-password"));
    for i in 0..10 {
        embed(&a, &[format!("during the rotation {i}").as_str()]);
    }
    connected(&a);
    let before = remote(&a);
    let again = ["after the password changed"];
    embed(&a, &again);
    wait_remote(&a, "written with the new password", |r| {
        count(r, "writes") > count(&before, "writes")
    });
    embed(&a, &again);
    assert_eq!(count(&remote(&a), "hits"), count(&before, "hits") + 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
