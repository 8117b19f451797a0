//! Which `cpuid` bits a masked CPU clears.

/// A CPU to present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// AVX2 and FMA, no AVX-512 of any kind, no AVX-VNNI, no AMX (a Haswell-to-Zen 3 class
    /// CPU).
    Avx2,
}

/// One group of bits to clear: `cpuid` leaf, subleaf, and a mask per output register
/// (`eax`, `ebx`, `ecx`, `edx`).
struct Cleared {
    leaf: u32,
    subleaf: u32,
    bits: [u32; 4],
}

const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

const AVX2_CLEARED: [Cleared; 3] = [
    Cleared {
        leaf: 7,
        subleaf: 0,
        bits: [
            0,
            // AVX512F, DQ, IFMA, PF, ER, CD, BW, VL
            bits(&[16, 17, 21, 26, 27, 28, 30, 31]),
            // AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ
            bits(&[1, 6, 11, 12, 14]),
            // AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8
            bits(&[2, 3, 8, 22, 23, 24, 25]),
        ],
    },
    Cleared {
        leaf: 7,
        subleaf: 1,
        bits: [
            // AVX-VNNI, AVX512_BF16, AVX-IFMA
            bits(&[4, 5, 23]),
            0,
            0,
            // AVX-VNNI-INT8, AVX-NE-CONVERT, AVX-VNNI-INT16, AVX10
            bits(&[4, 5, 10, 19]),
        ],
    },
    Cleared {
        leaf: 0xD,
        subleaf: 0,
        // The opmask, ZMM and AMX tile register states the OS could save.
        bits: [bits(&[5, 6, 7, 17, 18]), 0, 0, 0],
    },
];

impl Profile {
    /// The profile named `name` (`avx2`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "avx2" => Some(Self::Avx2),
            _ => None,
        }
    }

    /// Its name, as [`Profile::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx2 => "avx2",
        }
    }

    /// The `GLIBC_TUNABLES` value that keeps glibc's own code (memcpy, strlen…) off the
    /// masked features; glibc reads `cpuid` before preloaded libraries run.
    pub fn glibc_tunables(self) -> &'static str {
        match self {
            Self::Avx2 => {
                "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-AVX_VNNI"
            }
        }
    }

    /// `cpuid`'s answer `[eax, ebx, ecx, edx]` for `leaf`/`subleaf` as this CPU gives it.
    pub fn mask(self, leaf: u32, subleaf: u32, mut registers: [u32; 4]) -> [u32; 4] {
        let cleared: &[Cleared] = match self {
            Self::Avx2 => &AVX2_CLEARED,
        };
        for group in cleared {
            if group.leaf == leaf && group.subleaf == subleaf {
                for (register, bits) in registers.iter_mut().zip(group.bits) {
                    *register &= !bits;
                }
            }
        }
        registers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_clears_avx512_and_vnni_and_keeps_avx2() {
        let all = [u32::MAX; 4];
        let leaf7 = Profile::Avx2.mask(7, 0, all);
        assert_eq!(leaf7[1] & (1 << 16), 0, "AVX512F");
        assert_eq!(leaf7[2] & (1 << 11), 0, "AVX512_VNNI");
        assert_ne!(leaf7[1] & (1 << 5), 0, "AVX2 stays");
        assert_ne!(leaf7[1] & (1 << 3), 0, "BMI1 stays");
        assert_eq!(Profile::Avx2.mask(7, 1, all)[0] & (1 << 4), 0, "AVX-VNNI");
        // FMA and AVX live in leaf 1, which is untouched.
        assert_eq!(Profile::Avx2.mask(1, 0, all), all);
        assert_eq!(Profile::Avx2.mask(7, 2, all), all);
        assert_eq!(Profile::parse("avx2"), Some(Profile::Avx2));
        assert_eq!(Profile::parse("avx512"), None);
    }
}
