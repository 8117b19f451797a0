//! Structural checks of an ELF library before `dlopen`: the dynamic loader maps segments by
//! the offsets in the file's headers, so a truncated or damaged copy would otherwise fault
//! (SIGBUS) inside the loader instead of failing to open.

use crate::error::plugin_load_error;
use model_manager_core::{ModelError, Result};
use object::elf::{FileHeader64, ET_DYN, PT_DYNAMIC, PT_LOAD, SHT_NOBITS};
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
        let end = segment
            .p_offset(endian)
            .checked_add(segment.p_filesz(endian));
        if end.is_none_or(|end| end > size) {
            return Err(damaged(
                path,
                format!(
                    "segment {i} needs bytes up to {} but the file has {size} (truncated?)",
                    end.map_or("beyond 2^64".into(), |e| e.to_string())
                ),
            ));
        }
    }
    let sections = header
        .sections(endian, bytes)
        .map_err(|e| damaged(path, format!("section header table: {e}")))?;
    for (i, section) in sections.iter().enumerate() {
        if section.sh_type(endian) == SHT_NOBITS {
            continue;
        }
        let end = section
            .sh_offset(endian)
            .checked_add(section.sh_size(endian));
        if end.is_none_or(|end| end > size) {
            return Err(damaged(
                path,
                format!("section {i} lies past the end of the file ({size} bytes; truncated?)"),
            ));
        }
    }
    Ok(())
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
