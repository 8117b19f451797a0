//! Checks made before a library is opened: opening one runs its code.

use crate::library::load_error;
use model_manager_core::{ModelError, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

fn refused(path: &Path, why: String) -> ModelError {
    load_error(path, format!("refusing plugin {}: {why}", path.display()))
}

/// Refuses a file, or a folder holding it, that group or others may write: anyone who can
/// write it can run code in this process.
#[cfg(unix)]
pub fn check_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let folder = path.parent().unwrap_or(Path::new("/"));
    for (what, p) in [("the file", path), ("its folder", folder)] {
        let meta =
            std::fs::metadata(p).map_err(|e| refused(path, format!("cannot stat {what}: {e}")))?;
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(refused(
                path,
                format!(
                    "{what} ({}) is writable by group or others (mode {:o}); run `chmod go-w {}`",
                    p.display(),
                    mode & 0o777,
                    p.display()
                ),
            )
            .with("mode", format!("{:o}", mode & 0o777)));
        }
    }
    Ok(())
}

/// Windows has no group/other bits to check.
#[cfg(not(unix))]
pub fn check_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

/// sha256 of the file, lowercase hex.
pub fn sha256_of(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| refused(path, format!("cannot read it: {e}")).caused_by("IoError", e))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Refuses the file if `plugins.sha256."<file name>"` pins another digest.
pub fn check_pin(path: &Path, digest: &str, pins: &BTreeMap<String, String>) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match pins.get(name) {
        Some(expected) if expected != digest => Err(refused(
            path,
            format!("its sha256 is {digest}, but `plugins.sha256.\"{name}\"` pins {expected}"),
        )
        .with("expected_sha256", expected.as_str())
        .with("found_sha256", digest)),
        _ => Ok(()),
    }
}
