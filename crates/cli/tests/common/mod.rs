//! Helpers of the `mm` tests: JSON output, and the real `mm serve` on a loopback port driven
//! with plain HTTP/1.1 requests.

#![allow(dead_code)]

pub mod fake_hub;
#[path = "../../../../benches/python_venv.rs"]
pub mod python_venv;
pub mod redis_server;

/// The repository's root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// `from`'s tree at `to`: small files copied (a test may edit them), large ones (weights)
/// hard-linked.
pub fn copy_model(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_model(&entry.path(), &target);
        } else if entry.metadata().unwrap().len() > 1 << 20 {
            std::fs::hard_link(entry.path(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Parses `mm --json` output, showing it when it is not JSON.
pub fn json_of(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(output)))
}

/// A running `mm serve`.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Its stderr so far, one entry per line.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("mm"));
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env_remove("MM_CONFIG")
            .env_remove("MM_API_KEY")
            .env_remove("MM_API_KEY_FILE")
            // The default settings name a hub model (FLAN-T5): tests never reach the internet.
            .env("HF_HUB_OFFLINE", "1")
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            log.lock().unwrap().push(line.clone());
            if let Some(addr) = line.strip_prefix("mm: listening on http://") {
                break addr.to_owned();
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, addr, log }
    }

    /// Sends one request; the status and the body as text.
    pub fn request_text(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        stream
            .write_all(format!("{head}\r\n{body}").as_bytes())
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status: u16 = response[9..12].parse().unwrap();
        let payload = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, payload.to_owned())
    }

    /// Sends one request; the status and the body as JSON (null when it is not JSON).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let (status, payload) = self.request_text(method, path, body, headers);
        (
            status,
            serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap()
    }

    /// Waits up to 10 s for a stderr line containing `text`; the line.
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{text}` in the server's log: {:#?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The server's address as a base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        self.request("POST", path, body, &[])
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.request("GET", path, "", &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
