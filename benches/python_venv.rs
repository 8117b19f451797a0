//! Python interpreters with packages from PyPI, in virtualenvs under target/ (included with
//! `#[path]` by the benches' same-run baselines and by tests that drive real Python clients).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The benches' Python with `packages`: `MM_BENCH_PYTHON` when set (it must have them),
/// else target/bench-venv.
#[allow(dead_code)]
pub fn python(repo: &Path, packages: &[&str]) -> PathBuf {
    match std::env::var_os("MM_BENCH_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => python_in(&repo.join("target/bench-venv"), packages),
    }
}

/// The Python of the virtualenv `venv` with `packages` installed, creating it and
/// installing them once (a marker file names what was installed).
pub fn python_in(venv: &Path, packages: &[&str]) -> PathBuf {
    let bin = venv.join("bin/python");
    let marker = venv.join(format!(
        "installed-{}",
        packages.join("+").replace(['/', ' '], "_")
    ));
    if marker.exists() {
        return bin;
    }
    if !bin.is_file() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot create {}", venv.display());
    }
    let installed = Command::new(&bin)
        .args(["-m", "pip", "install", "--quiet"])
        .args(packages)
        .status()
        .is_ok_and(|s| s.success());
    assert!(installed, "pip could not install {packages:?}");
    std::fs::write(&marker, "").expect("the marker is written");
    bin
}
