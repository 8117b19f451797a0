//! What the `mm` benches share (included with `#[path]`): the release `mm serve` on a free
//! loopback port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `mm serve` with `config`; the child and its address.
pub fn start_server(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mm"))
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
