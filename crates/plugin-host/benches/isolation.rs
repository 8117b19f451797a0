//! Per-call cost of process isolation: the echo plugin called in this process and in a child
//! (`plugins.isolation = "process"`), same run, for a small input and a 1 MB one. Prints the
//! median microseconds per call and the overhead.
//!
//! Run: `cargo bench -p model-manager-plugin-host --bench isolation` (MM_BENCH_CALLS, default 200).

#[path = "../tests/support/mod.rs"]
mod support;

use model_manager_core::{InferValue, ModelManager, NamedValues, Settings};
use model_manager_plugin_host as _;
use std::time::Instant;

fn manager(library: &std::path::Path, isolation: &str) -> ModelManager {
    let text = format!(
        "plugins.enabled = true\nplugins.paths = [{:?}]\nplugins.isolation = {isolation:?}\n\
         plugins.host_program = {:?}\nmodels.echo.type = \"echo\"\n",
        library.display().to_string(),
        env!("CARGO_BIN_EXE_mm-plugin-host")
    );
    ModelManager::new(Settings::from_toml_str(&text, ".").unwrap())
}

fn median_micros(
    manager: &ModelManager,
    rt: &tokio::runtime::Runtime,
    input: &NamedValues,
    calls: usize,
) -> f64 {
    let handle = rt.block_on(manager.get_model("echo")).unwrap();
    let infer = handle.model().as_infer().unwrap();
    let mut times: Vec<f64> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            infer.infer(input).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let calls = std::env::var("MM_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (_dir, library) = support::install(
        &support::workspace_plugin("mm-plugin-echo"),
        "libmm_plugin_echo.so",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let in_process = manager(&library, "in-process");
    let child = manager(&library, "process");
    println!("echo plugin, median of {calls} calls");
    for (label, bytes) in [("small (5 B text)", 5), ("1 MB text", 1 << 20)] {
        let input = NamedValues::from([("text".to_owned(), InferValue::Text("x".repeat(bytes)))]);
        let direct = median_micros(&in_process, &rt, &input, calls);
        let isolated = median_micros(&child, &rt, &input, calls);
        println!(
            "{label:<18} in-process {direct:>9.1} us   child process {isolated:>9.1} us   overhead {:>9.1} us",
            isolated - direct
        );
    }
}
