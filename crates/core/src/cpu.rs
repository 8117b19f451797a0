//! The CPU's SIMD features, for status and for backends that pick kernels at run time.

use serde::Serialize;

/// The SIMD features the numeric kernels care about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuFeatures {
    /// AVX2.
    pub avx2: bool,
    /// AVX-512 foundation and byte/word instructions.
    pub avx512: bool,
    /// AVX-512 VNNI (int8 dot products).
    pub vnni: bool,
    /// AVX-VNNI: the same dot products on 256-bit registers, without AVX-512.
    pub avx_vnni: bool,
    /// AMX int8 tiles (Sapphire Rapids and later).
    pub amx: bool,
}

impl CpuFeatures {
    /// What this CPU has (detected once per process).
    pub fn detect() -> Self {
        static DETECTED: std::sync::OnceLock<CpuFeatures> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(Self::probe)
    }

    fn probe() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            CpuFeatures {
                avx2: has!("avx2"),
                avx512: has!("avx512f") && has!("avx512bw"),
                vnni: has!("avx512vnni"),
                avx_vnni: has!("avxvnni"),
                amx: amx_int8(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        CpuFeatures::default()
    }

    /// The features present, by name (`avx2 avx512 vnni avx-vnni amx`).
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.avx2, "avx2"),
            (self.avx512, "avx512"),
            (self.vnni, "vnni"),
            (self.avx_vnni, "avx-vnni"),
            (self.amx, "amx"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// AMX-INT8 as the CPU reports it (`cpuid`, which a masked CPU can deny) and Linux enabled
/// it (the flag in /proc/cpuinfo); std's AMX detection is unstable.
#[cfg(target_arch = "x86_64")]
fn amx_int8() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    #[allow(unused_unsafe)]
    // SAFETY: cpuid exists on every x86-64 CPU; leaf 7 is read only where it exists.
    let cpu_has = unsafe { __get_cpuid_max(0).0 >= 7 && __cpuid_count(7, 0).edx & (1 << 25) != 0 };
    cpu_has
        && std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|info| info.split_whitespace().any(|f| f == "amx_int8"))
}
