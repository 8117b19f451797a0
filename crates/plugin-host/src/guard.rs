//! Checks made before a library is opened: opening one runs its code.

use crate::error::plugin_load_error;
use model_manager_core::{ModelError, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

fn refused(path: &Path, why: String) -> ModelError {
    plugin_load_error(path, format!("refusing plugin {}: {why}", path.display()))
}

/// Refuses a file, or any folder on its path up to `/`, that group or others may write or
/// that another user owns (root excepted): anyone who can write it, or rename a folder on
/// its path, can run code in this process. Folders with the sticky bit (like /tmp) are
/// allowed: others cannot rename what they do not own in them.
#[cfg(unix)]
pub fn check_permissions(path: &Path) -> Result<()> {
    for (depth, p) in path.ancestors().enumerate() {
        let what = match depth {
            0 => "the file".to_owned(),
            1 => "its folder".to_owned(),
            _ => format!("the folder {}", p.display()),
        };
        let meta =
            std::fs::metadata(p).map_err(|e| refused(path, format!("cannot stat {what}: {e}")))?;
        check_owner_and_mode(path, &what, p, &meta, depth > 0)?;
    }
    Ok(())
}

/// The rule of [`check_permissions`] for one file or folder `p` on `path` (`meta`, its
/// metadata): owned by this user or root, writable only by its owner (a folder with the
/// sticky bit passes when `folder`).
#[cfg(unix)]
fn check_owner_and_mode(
    path: &Path,
    what: &str,
    p: &Path,
    meta: &std::fs::Metadata,
    folder: bool,
) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mode = meta.permissions().mode();
    let sticky = folder && mode & 0o1000 != 0;
    if meta.uid() != me && meta.uid() != 0 && !sticky {
        return Err(refused(
            path,
            format!(
                "{what} ({}) belongs to another user (uid {}), who could replace it",
                p.display(),
                meta.uid()
            ),
        ));
    }
    if mode & 0o022 != 0 && !sticky {
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
    Ok(())
}

/// Windows has no group/other bits to check.
#[cfg(not(unix))]
pub fn check_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

/// The library file opened once, and its bytes read through that descriptor (checked and
/// hashed before the dynamic loader sees it). The opened file itself must be a regular
/// file of this user or root, writable by nobody else: the path's checks may have seen
/// another file than the one opened.
pub fn open_library(path: &Path) -> Result<(std::fs::File, Vec<u8>)> {
    use std::io::Read;
    let unreadable =
        |e: std::io::Error| refused(path, format!("cannot read it: {e}")).caused_by("IoError", e);
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    check_opened(path, &file.metadata().map_err(unreadable)?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(unreadable)?;
    Ok((file, bytes))
}

/// The rule of [`check_permissions`] for the file, on what was actually opened.
#[cfg(unix)]
fn check_opened(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if !meta.is_file() {
        return Err(refused(path, "it is not a regular file".to_owned()));
    }
    check_owner_and_mode(path, "the file opened", path, meta, false)
}

#[cfg(not(unix))]
fn check_opened(_path: &Path, _meta: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pin keys that may name `configured` (as written in the settings) and `canonical`
/// (the file it resolves to): either path, or either file name (a symlink's own name too).
fn pin_keys(configured: &Path, canonical: &Path) -> Vec<String> {
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned()
    };
    let mut keys = vec![
        configured.display().to_string(),
        canonical.display().to_string(),
        name(canonical),
        name(configured),
    ];
    keys.dedup();
    keys
}

/// Refuses the file if `plugins.sha256` pins another digest under its path or file name.
pub fn check_pin(
    configured: &Path,
    canonical: &Path,
    digest: &str,
    pins: &BTreeMap<String, String>,
) -> Result<()> {
    for key in pin_keys(configured, canonical) {
        match pins.get(&key) {
            Some(expected) if expected != digest => {
                return Err(refused(
                    canonical,
                    format!(
                        "its sha256 is {digest}, but `plugins.sha256.\"{key}\"` pins {expected}"
                    ),
                )
                .with("expected_sha256", expected.as_str())
                .with("found_sha256", digest));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `CONFIG_ERROR` for a pin that names none of `files` (a misspelt name would otherwise
/// leave the library it meant unpinned).
pub fn check_pins_match(
    files: &[std::path::PathBuf],
    pins: &BTreeMap<String, String>,
) -> Result<()> {
    let keys: Vec<String> = files
        .iter()
        .flat_map(|f| pin_keys(f, &f.canonicalize().unwrap_or_else(|_| f.clone())))
        .collect();
    for key in pins.keys() {
        if !keys.contains(key) {
            let names: Vec<String> = files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            return Err(ModelError::new(
                model_manager_core::ErrorCode::ConfigError,
                format!(
                    "`plugins.sha256.\"{key}\"` pins no configured plugin library (keys are a \
                     library's file name or path; configured: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            )
            .with("key", format!("plugins.sha256.\"{key}\"")));
        }
    }
    Ok(())
}
