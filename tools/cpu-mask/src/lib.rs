//! Runs unmodified programs as if the CPU lacked AVX-512, VNNI and AMX, to measure the AVX2
//! code paths of `mm` and of a Python baseline on a machine that has them all (issue #27
//! asks for int8 on AVX2-only code paths against Python, and libraries such as ONNX
//! Runtime's MLAS pick their kernels from `cpuid` with no switch to turn AVX-512 off).
//!
//! Two parts, because `cpuid` does not trap in user mode and this kernel refuses CPUID
//! faulting (`arch_prctl(ARCH_SET_CPUID)`, ENODEV in a VM):
//! - [`patch`] copies an ELF file with every `cpuid` instruction (`0F A2`) replaced by
//!   `0F FF` (UD0), which raises SIGILL; compilers never emit UD0, so a genuine `ud2`
//!   abort (`0F 0B`) still kills the process.
//! - The cdylib built from this crate, preloaded (`LD_PRELOAD`) with
//!   `MM_CPU_MASK=avx2`, answers that SIGILL: it runs the real `cpuid` for the leaf and
//!   subleaf in `eax`/`ecx`, clears the features of [`Profile`] and resumes after the
//!   instruction. Without the variable it installs nothing.
//!
//! glibc picks its string functions before any preloaded code runs; [`Profile::glibc_tunables`]
//! is the `GLIBC_TUNABLES` value that keeps those off the masked features too.

pub mod features;
pub mod patch;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod trap;

pub use features::Profile;
pub use patch::{patch_file, patch_tree, PatchError};

/// The environment variable naming the [`Profile`] the preloaded library presents.
pub const ENV: &str = "MM_CPU_MASK";

/// The preloaded library cargo built beside the executable `exe` (a test or bench in
/// `target/<profile>/deps/`, or a binary in `target/<profile>/`), if it did.
pub fn preload_library_beside(exe: &std::path::Path) -> Option<std::path::PathBuf> {
    let dir = exe.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .flat_map(|dir| [dir.to_owned(), dir.join("deps")])
        .map(|dir| dir.join("libmodel_manager_cpu_mask.so"))
        .find(|path| path.is_file())
}
