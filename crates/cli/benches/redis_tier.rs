//! The shared (Redis) cache tier between `mm serve` replicas, each figure beside its
//! baseline from the same run (medians where repeated; read the ratios):
//!
//! 1. Remote hits: replica A embeds a corpus cold (computing every text and writing it to
//!    Redis), then a fresh replica B, sharing the Redis, embeds the same corpus (every text
//!    a remote hit). Texts/s of both and B / A.
//! 2. The tier's cost on a miss: one new text per request, sequentially, to a replica with
//!    the tier and to one without it, interleaved; median latency of both and the difference.
//!
//! ```sh
//! cargo bench -p model-manager-cli --bench redis_tier
//! ```
//!
//! Needs scripts/fetch-models.sh (models and redis-server). `MM_BENCH_CORPUS` (default
//! `../shared/bench/corpus_mixed_public.txt`, else examples/corpus.txt), `MM_BENCH_MISSES`
//! (requests per side in part 2, default 200). Model: all-MiniLM-L6-v2 on candle.

#[allow(dead_code)]
#[path = "../tests/common/redis_server.rs"]
mod redis_server;
#[path = "support/mod.rs"]
mod support;

use redis_server::RedisServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use support::Client;

const CLIENTS: usize = 8;
const TEXTS_PER_REQUEST: usize = 16;

struct Replica {
    child: Child,
    addr: String,
}

impl Replica {
    fn start(dir: &Path, name: &str, redis: Option<&str>) -> Self {
        let model = repo().join("models/all-MiniLM-L6-v2");
        let mut toml = format!(
            "log_model_usage = false\nembedding_cache.max_cache_size = 100000\n\
             models.embedding.type = \"embedding\"\nmodels.embedding.local_path = \"{}\"\n",
            model.display()
        );
        if let Some(url) = redis {
            toml.push_str(&format!("embedding_cache.redis_url = \"{url}\"\n"));
        }
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let (child, addr) = support::start_server(&config);
        let replica = Self { child, addr };
        if redis.is_some() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while replica.remote()["state"] != "connected" {
                assert!(Instant::now() < deadline, "{}", replica.remote());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        replica.embed(&[format!("warm up {name}")]);
        replica
    }

    fn embed(&self, texts: &[String]) {
        let body = json!({ "input": texts }).to_string();
        assert_eq!(Client::connect(&self.addr).post(&body), 200);
    }

    fn remote(&self) -> Value {
        let (status, body) = Client::connect(&self.addr).request("GET", "/v1/status", "");
        assert_eq!(status, 200);
        let status: Value = serde_json::from_slice(&body).unwrap();
        status["cache"]["remote"].clone()
    }

    /// Waits until the tier's `field` reaches `at_least`.
    fn wait_remote(&self, field: &str, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.remote()[field].as_u64().unwrap_or(0) < at_least {
            assert!(Instant::now() < deadline, "{field}: {}", self.remote());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every text once, by `CLIENTS` keep-alive clients; texts/s.
    fn throughput(&self, texts: &[String]) -> f64 {
        let chunks: Vec<&[String]> = texts.chunks(TEXTS_PER_REQUEST).collect();
        let started = Instant::now();
        std::thread::scope(|s| {
            for client in 0..CLIENTS {
                let chunks = &chunks;
                let addr = &self.addr;
                s.spawn(move || {
                    let mut connection = Client::connect(addr);
                    for chunk in chunks.iter().skip(client).step_by(CLIENTS) {
                        let body = json!({ "input": chunk }).to_string();
                        assert_eq!(connection.post(&body), 200);
                    }
                });
            }
        });
        texts.len() as f64 / started.elapsed().as_secs_f64()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus() -> (PathBuf, Vec<String>) {
    let shared = repo().join("../shared/bench/corpus_mixed_public.txt");
    let path = std::env::var_os("MM_BENCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or(match shared.is_file() {
            true => shared,
            false => repo().join("examples/corpus.txt"),
        });
    let mut texts: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    texts.sort();
    texts.dedup();
    (path, texts)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn remote_hits(texts: &[String], dir: &Path, redis: &RedisServer) {
    let a = Replica::start(dir, "a", Some(&redis.url()));
    a.wait_remote("writes", 1);
    let cold = a.throughput(texts);
    a.wait_remote("writes", 1 + texts.len() as u64);
    let b = Replica::start(dir, "b", Some(&redis.url()));
    let hits_before = b.remote()["hits"].as_u64().unwrap_or(0);
    let warm = b.throughput(texts);
    let hits = b.remote()["hits"].as_u64().unwrap_or(0) - hits_before;
    assert_eq!(hits, texts.len() as u64, "every text a remote hit on B");
    println!(
        "{} texts, {CLIENTS} clients x {TEXTS_PER_REQUEST} texts per request:",
        texts.len()
    );
    println!("  replica A, cold (computes, writes Redis)   {cold:>9.1} texts/s");
    println!("  replica B, fresh, every text a remote hit  {warm:>9.1} texts/s");
    println!(
        "  B / A                                      {:>9.2}x",
        warm / cold
    );
}

fn miss_cost(dir: &Path, redis: &RedisServer) {
    let rounds: usize = std::env::var("MM_BENCH_MISSES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let with = Replica::start(dir, "with", Some(&redis.url()));
    let without = Replica::start(dir, "without", None);
    with.wait_remote("writes", 1);
    let (mut a, mut b) = (Client::connect(&with.addr), Client::connect(&without.addr));
    let (mut tier, mut plain) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        for (client, times, side) in [(&mut a, &mut tier, "with"), (&mut b, &mut plain, "without")]
        {
            let body = json!({ "input": format!("a text never seen before, {side} {i}") });
            let started = Instant::now();
            assert_eq!(client.post(&body.to_string()), 200);
            times.push(started.elapsed());
        }
    }
    let misses = with.remote()["misses"].as_u64().unwrap_or(0);
    assert!(
        misses >= rounds as u64,
        "every request a remote miss: {}",
        with.remote()
    );
    let (t, p) = (median(tier), median(plain));
    println!("one new text per request, sequential, median of {rounds}:");
    println!("  without the tier   {:>8.3} ms", p.as_secs_f64() * 1e3);
    println!("  with the tier      {:>8.3} ms", t.as_secs_f64() * 1e3);
    println!(
        "  added by the tier  {:>8.3} ms per request (a miss: one MGET, write behind)",
        (t.as_secs_f64() - p.as_secs_f64()) * 1e3
    );
}

fn main() {
    assert!(
        repo().join("models/all-MiniLM-L6-v2").is_dir(),
        "run scripts/fetch-models.sh first"
    );
    let (path, texts) = corpus();
    println!(
        "corpus {}; all-MiniLM-L6-v2 on candle; redis-server on loopback",
        path.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    remote_hits(&texts, dir.path(), &redis);
    miss_cost(dir.path(), &redis);
}
