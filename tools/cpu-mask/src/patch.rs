//! Copies ELF files with `cpuid` turned into a trapping instruction.

use std::path::{Path, PathBuf};

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};
use object::{Object, ObjectSection, SectionKind};

/// `cpuid`.
const CPUID: [u8; 2] = [0x0f, 0xa2];
/// UD0 without its ModRM byte: raises #UD at its first byte on Intel and AMD alike, and no
/// compiler emits it (they abort with `ud2`, `0F 0B`), so the trap handler can tell a
/// rewritten `cpuid` from a real crash.
pub(crate) const TRAP: [u8; 2] = [0x0f, 0xff];

/// Why a file could not be patched.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// Reading, writing or copying failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file starts like an ELF file but does not parse as one.
    #[error("{path}: not a readable ELF file: {reason}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PatchError + '_ {
    move |source| PatchError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file offsets of every `cpuid` in the executable sections of the x86-64 ELF image
/// `image` (decoded instruction by instruction from each section's start, as a
/// disassembler does; bytes `0F A2` inside other instructions are not touched).
pub fn cpuid_offsets(image: &[u8]) -> Result<Vec<usize>, String> {
    let file = object::File::parse(image).map_err(|e| e.to_string())?;
    let mut offsets = Vec::new();
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let Some((start, size)) = section.file_range() else {
            continue;
        };
        let (start, size) = (start as usize, size as usize);
        let code = image
            .get(start..start + size)
            .ok_or_else(|| format!("section {:?} lies past the end", section.name()))?;
        let address = section.address();
        let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
        let mut instruction = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut instruction);
            if instruction.code() == Code::Cpuid {
                let offset = start + (instruction.ip() - address) as usize;
                if image[offset..offset + 2] == CPUID {
                    offsets.push(offset);
                }
            }
        }
    }
    Ok(offsets)
}

fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Writes `source` to `target` (same permissions) with every `cpuid` of its code replaced
/// by the trap the preloaded library answers; returns how many were replaced. A file that
/// is not ELF is copied as it is (0).
pub fn patch_file(source: &Path, target: &Path) -> Result<usize, PatchError> {
    let mut image = std::fs::read(source).map_err(io(source))?;
    let offsets = if is_elf(&image) {
        cpuid_offsets(&image).map_err(|reason| PatchError::Elf {
            path: source.to_owned(),
            reason,
        })?
    } else {
        Vec::new()
    };
    for &offset in &offsets {
        image[offset..offset + 2].copy_from_slice(&TRAP);
    }
    // A fresh file: `target` may be a hard link or a mapped library of a running process.
    let _ = std::fs::remove_file(target);
    std::fs::write(target, &image).map_err(io(target))?;
    let permissions = std::fs::metadata(source).map_err(io(source))?.permissions();
    std::fs::set_permissions(target, permissions).map_err(io(target))?;
    Ok(offsets.len())
}

/// Copies the directory `source` to `target` (replacing it), patching every ELF file on
/// the way ([`patch_file`]); symbolic links are copied as links. Returns how many `cpuid`
/// were replaced in all.
pub fn patch_tree(source: &Path, target: &Path) -> Result<usize, PatchError> {
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(io(target))?;
    }
    std::fs::create_dir_all(target).map_err(io(target))?;
    let mut replaced = 0;
    for entry in std::fs::read_dir(source).map_err(io(source))? {
        let entry = entry.map_err(io(source))?;
        let (from, to) = (entry.path(), target.join(entry.file_name()));
        let kind = entry.file_type().map_err(io(&from))?;
        if kind.is_symlink() {
            let link = std::fs::read_link(&from).map_err(io(&from))?;
            std::os::unix::fs::symlink(link, &to).map_err(io(&to))?;
        } else if kind.is_dir() {
            replaced += patch_tree(&from, &to)?;
        } else {
            replaced += patch_file(&from, &to)?;
        }
    }
    Ok(replaced)
}
