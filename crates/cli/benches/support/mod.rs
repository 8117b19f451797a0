//! What the `mm` benches share (included with `#[path]`): the release `mm serve` on a free
//! loopback port, and a keep-alive HTTP client for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `mm` measured: `MM_BENCH_BIN` when set (to compare another build of it), else the
/// one cargo built for this bench.
pub fn mm_binary() -> PathBuf {
    std::env::var_os("MM_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mm")), PathBuf::from)
}

/// Starts `mm serve` with `config`; the child and its address.
pub fn start_server(config: &Path) -> (Child, String) {
    let mut child = Command::new(mm_binary())
        .arg("--config")
        .arg(config)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("mm starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let addr = loop {
        let line = lines.next().expect("the server listens").expect("readable");
        if let Some(addr) = line.strip_prefix("mm: listening on http://") {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// A TCP connection without Nagle's delay, as HTTP clients open them.
fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// One keep-alive connection speaking just enough HTTP/1.1.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: &str) -> Self {
        Self {
            reader: BufReader::new(connect(addr)),
        }
    }

    /// Posts `body` to /v1/embeddings; the status.
    pub fn post(&mut self, body: &str) -> u16 {
        self.request("POST", "/v1/embeddings", body).0
    }

    /// Sends one request; the status and the body.
    pub fn request(&mut self, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // One write: a head and body sent apart wait on Nagle and delayed ACK (~40 ms).
        let request = [head.as_bytes(), body.as_bytes()].concat();
        self.reader.get_mut().write_all(&request).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, body)
    }
}
