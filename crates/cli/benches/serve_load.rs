//! A bounded load test of `mm serve` on loopback: 32 and then 128 concurrent clients on
//! keep-alive connections, each sending one distinct text per request for a fixed time;
//! prints requests/s, p50 and p99 latency, errors, and the server's peak RSS.
//!
//! ```sh
//! cargo bench -p model-manager-cli --bench serve_load
//! ```
//!
//! The server runs the repository's default `settings.toml` (needs scripts/fetch-models.sh).
//! `MM_LOAD_SECONDS` sets each phase's length (default 10), `MM_LOAD_CONFIG` another
//! settings file.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::Client;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// `clients` clients for `seconds`; prints one line.
fn phase(addr: &str, clients: usize, seconds: u64, texts: &[String]) {
    let until = Instant::now() + Duration::from_secs(seconds);
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let mut client = Client::connect(addr);
                    let (mut latencies, mut errors) = (Vec::new(), 0);
                    let mut i = c;
                    while Instant::now() < until {
                        let text = format!("{} ({clients}:{i})", texts[i % texts.len()]);
                        let body = serde_json::json!({ "input": text }).to_string();
                        let started = Instant::now();
                        if client.post(&body) != 200 {
                            errors += 1;
                        }
                        latencies.push(started.elapsed());
                        i += clients;
                    }
                    (latencies, errors)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<Duration> = results.iter().flat_map(|r| r.0.clone()).collect();
    all.sort();
    let errors: usize = results.iter().map(|r| r.1).sum();
    println!(
        "{clients:>4} clients: {:>8.1} req/s   p50 {:>7.1} ms   p99 {:>7.1} ms   {} requests, {errors} errors",
        all.len() as f64 / seconds as f64,
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.len()
    );
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config =
        std::env::var_os("MM_LOAD_CONFIG").map_or(repo.join("settings.toml"), PathBuf::from);
    let seconds: u64 = std::env::var("MM_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let texts: Vec<String> = std::fs::read_to_string(repo.join("examples/corpus.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let (mut server, addr) = support::start_server(&config);
    Client::connect(&addr).post(r#"{"input": "warm up"}"#);
    println!(
        "mm serve ({}), one distinct text per request, {seconds} s per phase",
        config.display()
    );
    for clients in [32, 128] {
        phase(&addr, clients, seconds, &texts);
    }
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!(
        "server peak RSS: {}",
        peak.trim_start_matches("VmHWM:").trim()
    );
    let _ = server.kill();
    let _ = server.wait();
}
