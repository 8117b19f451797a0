//! Part 3 of the engine bench (`serve`): concurrent single-text clients of `mm serve`
//! against one request of the same texts, with the engine's counters and the CPU time of
//! each kind of thread per text, to explain a ratio.

use std::path::Path;
use std::time::Instant;

use super::median;
use super::support::{self, Client};

/// Concurrent single-text clients of the server measurement.
const CLIENT_COUNTS: [usize; 2] = [32, 128];

/// Wall seconds for `clients` keep-alive clients to send `texts` one per request between
/// them, and every request's latency.
fn concurrent(addr: &str, clients: usize, texts: &[String]) -> (f64, Vec<f64>) {
    let started = Instant::now();
    let latencies = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                s.spawn(move || {
                    // Keep-alive, as HTTP clients and SDKs pool their connections.
                    let mut connection = Client::connect(addr);
                    let mut latencies = Vec::new();
                    for text in texts.iter().skip(client).step_by(clients) {
                        let body = serde_json::json!({ "input": text }).to_string();
                        let sent = Instant::now();
                        assert_eq!(connection.post(&body), 200);
                        latencies.push(sent.elapsed().as_secs_f64());
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    (started.elapsed().as_secs_f64(), latencies)
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// The engine's counters that explain a throughput: forward passes, texts and seconds in
/// forward passes so far, from the server's /metrics.
#[derive(Clone, Copy, Default)]
struct EngineCounters {
    batches: f64,
    texts: f64,
    tokens: f64,
    padded_tokens: f64,
    forward_seconds: f64,
}

impl EngineCounters {
    fn read(addr: &str) -> Self {
        let (status, body) = Client::connect(addr).request("GET", "/metrics", "");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        Self {
            batches: value("mm_engine_batches_total{"),
            texts: value("mm_engine_texts_total{"),
            tokens: value("mm_engine_tokens_total{"),
            padded_tokens: value("mm_engine_padded_tokens_total{"),
            forward_seconds: value("mm_engine_forward_seconds_sum{"),
        }
    }
}

/// `since` (this reading less an earlier one) and `add` (sums over runs), field by field,
/// for the readings below.
macro_rules! field_wise {
    ($reading:ident { $($field:ident),* }) => {
        impl $reading {
            fn since(self, before: Self) -> Self {
                Self { $($field: self.$field - before.$field),* }
            }

            fn add(&mut self, other: Self) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

field_wise!(EngineCounters {
    batches,
    texts,
    tokens,
    padded_tokens,
    forward_seconds
});
field_wise!(CpuTimes {
    pool,
    engine,
    http,
    clients,
    idle,
    stolen
});

/// CPU seconds by kind of thread: the server's compute pool (`mm-pool-*`; ONNX Runtime's
/// intra-op threads take their engine worker's name), its engine workers (`mm-engine-*`), its
/// HTTP runtime (`tokio-*`) and the rest, and this bench's clients.
/// From /proc in clock ticks (10 ms), so read over whole loads; a thread that ended between
/// two reads is missing from the second. Beside them, the machine's idle time (no thread
/// had work) and the time its hypervisor took (steal).
#[derive(Clone, Copy, Default)]
struct CpuTimes {
    pool: f64,
    engine: f64,
    http: f64,
    clients: f64,
    idle: f64,
    stolen: f64,
}

impl CpuTimes {
    fn read(server: u32) -> Self {
        // SAFETY: sysconf and getrusage only write the struct passed to them.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        // cpu  user nice system idle iowait irq softirq steal …
        let machine: Vec<f64> = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<f64>().unwrap() / tick)
            .collect();
        let mut times = Self {
            clients: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            idle: machine[3] + machine[4],
            stolen: machine[7],
            ..Self::default()
        };
        let tasks = std::fs::read_dir(format!("/proc/{server}/task")).unwrap();
        for task in tasks.flatten() {
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(task.path().join("comm")),
                std::fs::read_to_string(task.path().join("stat")),
            ) else {
                continue;
            };
            // Fields after the parenthesised name: state is the first, utime the 12th.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            let ticks: f64 =
                fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
            let slot = if name.starts_with("mm-engine") {
                &mut times.engine
            } else if name.starts_with("mm-pool") {
                &mut times.pool
            } else {
                &mut times.http
            };
            *slot += ticks / tick;
        }
        times
    }

    /// Milliseconds per text of each kind, for `texts` texts.
    fn per_text(self, texts: f64) -> String {
        let ms = |s: f64| s * 1e3 / texts;
        format!(
            "CPU ms a text: pool {:.2}, engine {:.2}, http and rest {:.2}, clients {:.2}, idle {:.2}, stolen {:.2}",
            ms(self.pool),
            ms(self.engine),
            ms(self.http),
            ms(self.clients),
            ms(self.idle),
            ms(self.stolen)
        )
    }
}

/// Seconds for the server to embed all of `texts` as one request.
fn one_request(client: &mut Client, body: &str) -> f64 {
    let started = Instant::now();
    assert_eq!(client.post(body), 200);
    started.elapsed().as_secs_f64()
}

/// The server measurement; each run times one request of all texts just before and after
/// the concurrent loads, and a load's ratio is taken against that run's mean of the two
/// (paired, so the machine's drift between runs cancels), its median printed.
pub fn serve(runs: usize, backend: &str, config: &Path, texts: &[String]) {
    let (mut child, addr) = support::start_server(config);
    let one = serde_json::json!({ "input": texts }).to_string();
    let mut baseline = Client::connect(&addr);
    one_request(&mut baseline, &one);
    let server = child.id();
    let before = (EngineCounters::read(&addr), CpuTimes::read(server));
    one_request(&mut baseline, &one);
    let whole = EngineCounters::read(&addr).since(before.0);
    let whole_cpu = CpuTimes::read(server).since(before.1);
    let mut single = Vec::new();
    let mut loads: Vec<Load> = CLIENT_COUNTS.iter().map(|&c| Load::new(c)).collect();
    for _ in 0..runs {
        let before = one_request(&mut baseline, &one);
        let walls: Vec<f64> = loads
            .iter_mut()
            .map(|load| load.run(&addr, server, texts))
            .collect();
        let after = one_request(&mut baseline, &one);
        let reference = (before + after) / 2.0;
        single.push(reference);
        for (load, wall) in loads.iter_mut().zip(walls) {
            load.ratios.push(reference / wall);
        }
    }
    let peak = std::fs::read_to_string(format!("/proc/{server}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    let _ = child.kill();
    let _ = child.wait();
    let n = texts.len() as f64;
    println!(
        "server ({backend}), {} texts, median of {runs}, server peak RSS {:.0} MiB:",
        texts.len(),
        peak / 1024.0
    );
    println!(
        "  one request of all texts         {:>8.1} texts/s   {:.1} texts a pass, {:.2} ms of pass a text, paid/real tokens {:.2}; {}",
        n / median(single),
        whole.texts / whole.batches.max(1.0),
        whole.forward_seconds * 1e3 / whole.texts.max(1.0),
        whole.padded_tokens / whole.tokens.max(1.0),
        whole_cpu.per_text(n),
    );
    for load in loads {
        load.print(n);
    }
}

/// One concurrent load's measurements over the runs.
struct Load {
    clients: usize,
    walls: Vec<f64>,
    ratios: Vec<f64>,
    latencies: Vec<f64>,
    counters: EngineCounters,
    cpu: CpuTimes,
}

impl Load {
    fn new(clients: usize) -> Self {
        Self {
            clients,
            walls: Vec::new(),
            ratios: Vec::new(),
            latencies: Vec::new(),
            counters: EngineCounters::default(),
            cpu: CpuTimes::default(),
        }
    }

    /// One run; its wall seconds.
    fn run(&mut self, addr: &str, server: u32, texts: &[String]) -> f64 {
        let before = (EngineCounters::read(addr), CpuTimes::read(server));
        let (wall, each) = concurrent(addr, self.clients, texts);
        let during = EngineCounters::read(addr).since(before.0);
        self.cpu.add(CpuTimes::read(server).since(before.1));
        self.counters.add(during);
        self.walls.push(wall);
        self.latencies.extend(each);
        wall
    }

    fn print(self, texts: f64) {
        let busy = self.counters.forward_seconds / self.walls.iter().sum::<f64>();
        println!(
            "  {:>3} clients, one text each     {:>8.1} texts/s   ({:.2}x one request)   latency p50 {:.1} ms, p99 {:.1} ms   {:.1} texts a pass, paid/real tokens {:.2}, {:.2} ms of pass a text, in passes {:.0}% of the time; {}",
            self.clients,
            texts / median(self.walls.clone()),
            median(self.ratios),
            percentile(self.latencies.clone(), 0.5) * 1e3,
            percentile(self.latencies, 0.99) * 1e3,
            self.counters.texts / self.counters.batches.max(1.0),
            self.counters.padded_tokens / self.counters.tokens.max(1.0),
            self.counters.forward_seconds * 1e3 / self.counters.texts.max(1.0),
            busy * 100.0,
            self.cpu.per_text(texts * self.walls.len() as f64),
        );
    }
}
