//! Part 2 of the engine bench (`MM_BENCH_PARTS=avx2cpu`): the bulk comparison again on an
//! emulated AVX2-only CPU, for `mm` and Python alike. `int8_kernel = "avx2"` alone (part 1)
//! keeps everything else on AVX-512, Python's onnxruntime included, which no AVX2-only
//! machine would; here every `cpuid` of `mm`, onnxruntime, numpy and tokenizers answers
//! without AVX-512, VNNI or AMX (tools/cpu-mask), so each library picks the kernels it
//! would pick on such a CPU: MLAS its AVX2 f32 GEMM, candle's gemm its AVX2 + FMA one, and
//! `quantize = "int8"` its AVX2 kernel on its own (`auto`).

use std::path::{Path, PathBuf};
use std::process::Command;

use model_manager_cpu_mask::{patch_file, patch_tree, preload_library_beside, Profile, ENV};

use super::{bulk, candle_settings, Variant};

/// The Python packages the baseline imports that carry native code.
const PYTHON_PACKAGES: [&str; 4] = ["onnxruntime", "numpy", "numpy.libs", "tokenizers"];

/// What the masked commands need: the preloaded library and the patched copies.
pub struct MaskedCpu {
    profile: Profile,
    preload: PathBuf,
    mm: PathBuf,
    site_packages: PathBuf,
    cache_home: PathBuf,
}

impl MaskedCpu {
    /// Patches `mm` and the Python packages of `python` into `dir`.
    pub fn prepare(dir: &Path, python: &Path) -> Self {
        let preload = preload_library_beside(&std::env::current_exe().unwrap())
            .expect("cargo builds tools/cpu-mask's cdylib for this bench");
        std::fs::create_dir_all(dir).unwrap();
        let mm = dir.join("mm");
        let mut replaced = patch_file(&super::support::mm_binary(), &mm).unwrap();
        let site = stdout_of(Command::new(python).args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]));
        let site_packages = dir.join("site-packages");
        std::fs::create_dir_all(&site_packages).unwrap();
        for package in PYTHON_PACKAGES {
            let source = Path::new(site.trim()).join(package);
            if source.exists() {
                replaced += patch_tree(&source, &site_packages.join(package)).unwrap();
            }
        }
        println!("{replaced} cpuid instructions rewritten in mm and {PYTHON_PACKAGES:?}");
        Self {
            profile: Profile::Avx2,
            preload,
            mm,
            site_packages,
            cache_home: super::fresh_cache_home(dir),
        }
    }

    fn mask<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("LD_PRELOAD", &self.preload)
            .env(ENV, self.profile.name())
            .env("GLIBC_TUNABLES", self.profile.glibc_tunables())
    }

    /// `mm` on the masked CPU.
    pub fn mm(&self) -> Command {
        let mut command = Command::new(&self.mm);
        self.mask(&mut command)
            .env("XDG_CACHE_HOME", &self.cache_home);
        command
    }

    /// `python` on the masked CPU, importing the patched packages.
    pub fn python(&self, python: &Path) -> Command {
        let mut command = Command::new(python);
        self.mask(&mut command)
            .env("PYTHONPATH", &self.site_packages);
        command
    }

    /// Fails the bench unless both sides see the masked CPU: a figure measured on the
    /// wrong kernels would be worse than none.
    pub fn check(&self, python: &Path, config: &Path) {
        let seen = stdout_of(self.python(python).args([
            "-c",
            "import numpy, onnxruntime\n\
             from numpy._core._multiarray_umath import __cpu_features__ as f\n\
             print(numpy.__file__, onnxruntime.__file__, f['AVX2'], f['AVX512F'])",
        ]));
        let patched = std::fs::canonicalize(&self.site_packages).unwrap();
        let patched = patched.display().to_string();
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert!(
            fields.len() == 4
                && fields[..2].iter().all(|f| f.starts_with(&patched))
                && fields[2..] == ["True", "False"],
            "Python does not run the patched packages on an AVX2-only CPU: {seen}"
        );
        let status = stdout_of(self.mm().arg("--config").arg(config).arg("status"));
        let cpu = status
            .lines()
            .find(|line| line.starts_with("cpu features:"))
            .unwrap_or_default();
        assert_eq!(cpu, "cpu features: avx2", "mm sees another CPU:\n{status}");
    }
}

fn stdout_of(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The bulk figures of `mm` (candle int8 and fp32) and of `bulk_python` (`python_args`)
/// on the masked CPU, in `dir`.
pub fn bulk_on_avx2_cpu(
    runs: usize,
    repo: &Path,
    dir: &Path,
    python: &Path,
    python_args: &dyn Fn(&Path) -> Vec<std::ffi::OsString>,
    mm_args: &dyn Fn(&Path, &Path) -> Vec<std::ffi::OsString>,
) {
    let cpu = MaskedCpu::prepare(dir, python);
    let int8 = candle_settings(
        repo,
        dir,
        "int8.toml",
        "models.embedding.quantize = \"int8\"\n",
    );
    cpu.check(python, &int8);
    let variants = [
        Variant {
            label: "candle int8 (auto)",
            config: int8,
        },
        Variant {
            label: "candle fp32",
            config: candle_settings(repo, dir, "candle.toml", ""),
        },
    ];
    println!("on an emulated AVX2-only CPU (both sides: no AVX-512, VNNI or AMX):");
    let mm = |config: &Path, out: &Path| {
        let mut command = cpu.mm();
        command.args(mm_args(config, out));
        command
    };
    let mut py = || {
        let mut command = cpu.python(python);
        command.args(python_args(&dir.join("python.npy")));
        command
    };
    bulk(runs, &variants, &mm, &mut py, dir);
}
