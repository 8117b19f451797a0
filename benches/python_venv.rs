//! The Python interpreter of the benches' same-run baselines (included with `#[path]`): a
//! virtualenv under target/ with the packages a baseline needs, from PyPI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Python with `packages` installed: `MM_BENCH_PYTHON` when set (it must have them),
/// else target/bench-venv, created and filled on first use.
pub fn python(repo: &Path, packages: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os("MM_BENCH_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo.join("target/bench-venv");
    let bin = venv.join("bin/python");
    if !bin.is_file() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
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
    bin
}
