//! Structural checks of an ELF library before `dlopen`: the dynamic loader maps segments by
//! the offsets in the file's headers, so a truncated or damaged copy would otherwise fault
//! (SIGBUS) inside the loader instead of failing to open.

use crate::error::plugin_load_error;
use model_manager_core::{ModelError, Result};
use object::elf::{
    FileHeader64, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME, ET_DYN, PT_DYNAMIC, PT_LOAD,
    SHT_NOBITS,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;
use std::path::Path;

/// The ELF machine this host runs on.
fn host_machine() -> Option<u16> {
    match std::env::consts::ARCH {
        "x86_64" => Some(object::elf::EM_X86_64),
        "aarch64" => Some(object::elf::EM_AARCH64),
        "riscv64" => Some(object::elf::EM_RISCV),
        _ => None,
    }
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> ModelError {
    plugin_load_error(
        path,
        format!(
            "plugin {} is not a complete shared library for this host: {why}; \
             copy or build it again",
            path.display()
        ),
    )
}

/// `PLUGIN_LOAD_ERROR` unless `bytes` (the whole file at `path`) is a 64-bit ELF shared
/// library for this machine whose headers, loaded segments and sections all lie within
/// the file.
pub fn check_shared_library(path: &Path, bytes: &[u8]) -> Result<()> {
    let size = bytes.len() as u64;
    let header = FileHeader64::<Endianness>::parse(bytes)
        .map_err(|e| damaged(path, format!("no valid 64-bit ELF header ({e})")))?;
    let endian = header
        .endian()
        .map_err(|e| damaged(path, format!("bad ELF byte order ({e})")))?;
    if header.e_type(endian) != ET_DYN {
        return Err(damaged(
            path,
            format!("ELF type {} is not a shared object", header.e_type(endian)),
        ));
    }
    if let Some(machine) = host_machine() {
        if header.e_machine(endian) != machine {
            return Err(damaged(
                path,
                format!(
                    "built for ELF machine {}, this host is {} ({machine})",
                    header.e_machine(endian),
                    std::env::consts::ARCH
                ),
            ));
        }
    }
    let segments = header
        .program_headers(endian, bytes)
        .map_err(|e| damaged(path, format!("program header table: {e}")))?;
    for (i, segment) in segments.iter().enumerate() {
        let kind = segment.p_type(endian);
        // A segment of zero-filled memory only takes no bytes from the file.
        if (kind != PT_LOAD && kind != PT_DYNAMIC) || segment.p_filesz(endian) == 0 {
            continue;
        }
        let what = || format!("segment {i}");
        within_file(
            path,
            size,
            segment.p_offset(endian),
            segment.p_filesz(endian),
            what,
        )?;
    }
    let sections = header
        .sections(endian, bytes)
        .map_err(|e| damaged(path, format!("section header table: {e}")))?;
    for (i, section) in sections.iter().enumerate() {
        if section.sh_type(endian) == SHT_NOBITS {
            continue;
        }
        let what = || format!("section {i}");
        within_file(
            path,
            size,
            section.sh_offset(endian),
            section.sh_size(endian),
            what,
        )?;
    }
    Ok(())
}

/// What a library's dynamic section names: its own SONAME, the libraries it needs, and the
/// folders its RUNPATH (else its RPATH) searches, as written (`$ORIGIN` unexpanded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicNames {
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or `DT_RPATH` without one), split at `:`.
    pub search: Vec<String>,
}

/// The names in the dynamic section of `bytes` (a library [`check_shared_library`] passed);
/// empty where it has none or they cannot be read.
pub fn dynamic_names(bytes: &[u8]) -> DynamicNames {
    let mut names = DynamicNames::default();
    let Ok(header) = FileHeader64::<Endianness>::parse(bytes) else {
        return names;
    };
    let Ok(endian) = header.endian() else {
        return names;
    };
    let Ok(table) = header
        .sections(endian, bytes)
        .and_then(|sections| sections.dynamic_table(endian, bytes))
    else {
        return names;
    };
    let (mut runpath, mut rpath) = (None, None);
    for entry in table.iter() {
        let Ok(text) = table.string(entry) else {
            continue;
        };
        let text = String::from_utf8_lossy(text).into_owned();
        match entry.tag {
            DT_SONAME => names.soname = Some(text),
            DT_NEEDED => names.needed.push(text),
            DT_RUNPATH => runpath = Some(text),
            DT_RPATH => rpath = Some(text),
            _ => {}
        }
    }
    if let Some(path) = runpath.or(rpath) {
        names.search = path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
    }
    names
}

/// `PLUGIN_LOAD_ERROR` unless the `len` bytes at `offset` lie inside the file's `size`
/// (`what` names the part that needs them).
fn within_file(
    path: &Path,
    size: u64,
    offset: u64,
    len: u64,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let end = offset.checked_add(len);
    if end.is_some_and(|end| end <= size) {
        return Ok(());
    }
    Err(damaged(
        path,
        format!(
            "{} needs bytes up to {} but the file has {size} (truncated?)",
            what(),
            end.map_or("beyond 2^64".into(), |e| e.to_string())
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary itself is an ELF executable (type EXEC or DYN for PIE); a shared
    /// library of the system is a complete one.
    fn system_library() -> Option<Vec<u8>> {
        [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
    }

    #[test]
    fn a_complete_library_passes_and_every_truncation_fails() {
        let Some(bytes) = system_library() else {
            return;
        };
        let path = Path::new("libc.so.6");
        check_shared_library(path, &bytes).unwrap();
        for cut in [0, 3, 63, 64, 1000, bytes.len() / 2, bytes.len() - 1] {
            let err = check_shared_library(path, &bytes[..cut]).unwrap_err();
            assert_eq!(err.code, model_manager_core::ErrorCode::PluginLoadError);
            assert!(err.message.contains("libc.so.6"), "{}", err.message);
        }
    }

    #[test]
    fn the_dynamic_section_names_soname_needs_and_search_path() {
        let Some(bytes) = system_library() else {
            return;
        };
        let names = dynamic_names(&bytes);
        assert_eq!(names.soname.as_deref(), Some("libc.so.6"), "{names:?}");
        assert!(
            names.needed.iter().any(|n| n.starts_with("ld-linux")),
            "{names:?}"
        );
        assert_eq!(dynamic_names(b"not an ELF file"), DynamicNames::default());
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        let err = check_shared_library(Path::new("x.so"), b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(err.message.contains("ELF header"), "{}", err.message);
        let Some(mut bytes) = system_library() else {
            return;
        };
        bytes[18] ^= 0x01; // e_machine
        let err = check_shared_library(Path::new("x.so"), &bytes).unwrap_err();
        assert!(err.message.contains("machine"), "{}", err.message);
    }
}
