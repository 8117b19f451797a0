//! `$ORIGIN` for libraries opened through their checked descriptor. The dynamic loader takes
//! a library's origin from the name it was opened by, here `/proc/self/fd`, so a RUNPATH of
//! `$ORIGIN` would find nothing there. The dependencies it names in `$ORIGIN` folders are
//! opened first instead, each checked like a plugin and through its own descriptor; the
//! loader then matches the library's needs to them by SONAME, as it matches any library
//! already loaded.

use crate::elf::DynamicNames;
use crate::error::plugin_load_error;
use crate::library::{vet_library, VettedLibrary};
use model_manager_core::Result;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Deepest chain of `$ORIGIN` dependencies followed.
const MAX_DEPTH: usize = 8;

/// Dependencies opened by this process, by canonical path (never closed, like plugins).
fn opened() -> &'static Mutex<HashSet<PathBuf>> {
    static OPENED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// The folders of `search` that name `$ORIGIN`, with it replaced by `folder`.
fn origin_folders(search: &[String], folder: &Path) -> Vec<PathBuf> {
    let origin = folder.display().to_string();
    search
        .iter()
        .filter(|dir| dir.contains("$ORIGIN") || dir.contains("${ORIGIN}"))
        .map(|dir| {
            PathBuf::from(
                dir.replace("${ORIGIN}", &origin)
                    .replace("$ORIGIN", &origin),
            )
        })
        .collect()
}

/// Whether the dynamic loader already holds a library known as `name`.
fn loaded(name: &str) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    // SAFETY: RTLD_NOLOAD opens nothing (no code runs); a handle found is released at once.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

/// Opens the dependencies that `library` (`path` as configured) finds through `$ORIGIN`,
/// before the library itself. Those it does not find there are left to the loader's usual
/// search.
pub fn open_origin_dependencies(path: &Path, library: &VettedLibrary) -> Result<()> {
    open_dependencies(path, &library.canonical, &library.dynamic, 0)
}

fn open_dependencies(
    path: &Path,
    canonical: &Path,
    names: &DynamicNames,
    depth: usize,
) -> Result<()> {
    let folder = canonical.parent().unwrap_or(Path::new("/"));
    let folders = origin_folders(&names.search, folder);
    if folders.is_empty() {
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(plugin_load_error(
            path,
            format!(
                "plugin {}: its $ORIGIN dependencies nest deeper than {MAX_DEPTH} libraries",
                path.display()
            ),
        ));
    }
    for needed in &names.needed {
        let Some(found) = folders.iter().map(|f| f.join(needed)).find(|f| f.is_file()) else {
            continue;
        };
        if loaded(needed) {
            continue;
        }
        let dependency = vet_library(&found, &BTreeMap::new()).map_err(|e| {
            plugin_load_error(
                path,
                format!(
                    "plugin {} needs {} (found through $ORIGIN): {}",
                    path.display(),
                    found.display(),
                    e.message
                ),
            )
        })?;
        if opened().lock().contains(&dependency.canonical) {
            continue;
        }
        if dependency.dynamic.soname.as_deref() != Some(needed.as_str()) {
            return Err(plugin_load_error(
                path,
                format!(
                    "plugin {} needs `{needed}` through $ORIGIN, and {} has {}: the host opens \
                     plugins through their checked descriptor, where the dynamic loader cannot \
                     expand $ORIGIN, so it opens such dependencies first and the loader matches \
                     them by SONAME; link the dependency with `-Wl,-soname,{needed}`, or install \
                     it where the loader looks (ld.so.conf, LD_LIBRARY_PATH)",
                    path.display(),
                    found.display(),
                    match &dependency.dynamic.soname {
                        Some(other) => format!("SONAME `{other}`"),
                        None => "no SONAME".to_owned(),
                    }
                ),
            ));
        }
        open_dependencies(path, &dependency.canonical, &dependency.dynamic, depth + 1)?;
        open_vetted(path, &found, dependency)?;
    }
    Ok(())
}

/// Opens a checked dependency through its descriptor, for good.
fn open_vetted(path: &Path, found: &Path, dependency: VettedLibrary) -> Result<()> {
    let name = CString::new(dependency.loader_path().display().to_string())
        .expect("a descriptor path has no NUL");
    // SAFETY: dlopen runs the library's initializers, which is what opening it means; the
    // file was checked like a plugin.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local message or null.
        let why = unsafe {
            let e = libc::dlerror();
            match e.is_null() {
                true => "unknown error".to_owned(),
                false => CStr::from_ptr(e).to_string_lossy().into_owned(),
            }
        };
        return Err(plugin_load_error(
            path,
            format!(
                "plugin {} needs {} (found through $ORIGIN), which cannot be opened: {why}",
                path.display(),
                found.display()
            ),
        ));
    }
    opened().lock().insert(dependency.canonical.clone());
    dependency.keep_open();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_origin_folders_are_taken_and_expanded() {
        let search = ["$ORIGIN", "${ORIGIN}/../lib", "/usr/lib/x"].map(String::from);
        assert_eq!(
            origin_folders(&search, Path::new("/opt/p")),
            [PathBuf::from("/opt/p"), PathBuf::from("/opt/p/../lib")]
        );
    }
}
