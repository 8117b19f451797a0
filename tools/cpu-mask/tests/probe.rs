//! A patched copy of a real binary, run under the preloaded library, sees an AVX2-only CPU;
//! without the library the rewritten `cpuid` kills it (so the patch is what answers).

use std::path::Path;
use std::process::Command;

use model_manager_cpu_mask::{patch_file, preload_library_beside, Profile, ENV};

fn features(output: &[u8]) -> Vec<(String, bool)> {
    String::from_utf8_lossy(output)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value == "true"))
        .collect()
}

fn run(probe: &Path, masked: bool) -> std::process::Output {
    let mut command = Command::new(probe);
    if masked {
        command
            .env(
                "LD_PRELOAD",
                preload_library_beside(&std::env::current_exe().unwrap())
                    .expect("cargo builds the cdylib with the tests"),
            )
            .env(ENV, Profile::Avx2.name());
    }
    command.output().unwrap()
}

#[test]
fn a_patched_binary_sees_the_masked_cpu_and_dies_without_the_library() {
    let original = Path::new(env!("CARGO_BIN_EXE_cpu-mask-probe"));
    let dir = tempfile::tempdir().unwrap();
    let patched = dir.path().join("probe");
    let replaced = patch_file(original, &patched).unwrap();
    assert!(replaced > 0, "std's feature detection runs cpuid");

    let native = features(&run(original, false).stdout);
    let masked_run = run(&patched, true);
    assert!(masked_run.status.success(), "{masked_run:?}");
    let masked = features(&masked_run.stdout);
    assert_eq!(native.len(), 5);
    for ((name, native), (masked_name, masked)) in native.iter().zip(&masked) {
        assert_eq!(name, masked_name);
        match name.as_str() {
            // Leaf 1 and leaf 7's AVX2 bit pass through unchanged.
            "avx2" | "fma" => assert_eq!(masked, native, "{name}"),
            _ => assert!(!masked, "{name} is masked"),
        }
    }

    // The rewritten instruction traps: with nothing to answer it, SIGILL.
    use std::os::unix::process::ExitStatusExt;
    let unmasked = run(&patched, false);
    assert_eq!(unmasked.status.signal(), Some(libc::SIGILL), "{unmasked:?}");
}

#[test]
fn a_file_that_is_not_elf_is_copied_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("a.py"), dir.path().join("b.py"));
    std::fs::write(&source, b"print('\x0f\xa2')").unwrap();
    assert_eq!(patch_file(&source, &target).unwrap(), 0);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&source).unwrap()
    );
}
