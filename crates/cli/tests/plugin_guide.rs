//! The plugin author's guide (docs/plugin-guide.md) works as written: its `sh` blocks run in
//! order in an empty folder, building a real plugin crate against this repository's
//! interface, pinning it, running it in a child process and serving it over HTTP.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The guide's `sh` blocks, in order.
fn guide_script(guide: &str) -> String {
    let mut script = String::from("set -euo pipefail\n");
    let mut in_sh = false;
    for line in guide.lines() {
        match (in_sh, line.trim_end()) {
            (false, "```sh") => in_sh = true,
            (true, "```") => in_sh = false,
            (true, text) => {
                script.push_str(text);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

#[test]
fn the_plugin_guide_runs_as_written() {
    let repo = common::repo();
    let guide = std::fs::read_to_string(repo.join("docs/plugin-guide.md")).unwrap();
    let script = guide_script(&guide);
    assert!(script.contains("cargo build --release") && script.contains("serve"));
    let mm = PathBuf::from(env!("CARGO_BIN_EXE_mm"));
    let path = format!(
        "{}:{}",
        mm.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("MM_REPO", &repo)
        .env("PORT", port.to_string())
        // Kept between runs: the guide's release build is the slow step.
        .env("CARGO_TARGET_DIR", repo.join("target/plugin-guide"))
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("MM_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the guide failed:\n{stdout}\n{stderr}"
    );
    // `mm infer` prints each output as `name: value`, a text as it is.
    assert!(
        stdout.lines().any(|l| l == "greeting: Hello, Ada!"),
        "mm infer: {stdout}"
    );
    assert!(
        stdout.contains(r#""outputs":{"greeting":"Hello, Grace!"}"#),
        "HTTP: {stdout}"
    );
    assert!(stdout.contains("valid"), "mm check: {stdout}");
}
