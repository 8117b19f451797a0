//! Which int8 kernel runs, and what the CPU offers.

use super::{Tile, K_STEP, MAX_ROWS, PANEL};
use model_manager_core::CpuFeatures;

/// An int8 matrix kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// `vpdpbusd` on 512-bit registers (AVX-512 VNNI): unsigned activations times signed
    /// weights, four products a lane per instruction.
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit registers (AVX-VNNI, without AVX-512).
    AvxVnni,
    /// `vpmaddwd` on 256-bit registers (AVX2): both sides widened to 16 bits.
    Avx2,
    /// Plain loops: any CPU, and the reference the others are tested against.
    Scalar,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 4] = [
        Int8Kernel::Avx512Vnni,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx2,
        Int8Kernel::Scalar,
    ];

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Int8Kernel::Scalar)
    }

    /// Whether this CPU runs the kernel.
    pub fn available(self) -> bool {
        let cpu = CpuFeatures::detect();
        match self {
            Int8Kernel::Avx512Vnni => cpu.avx512 && cpu.vnni,
            Int8Kernel::AvxVnni => cpu.avx2 && cpu.avx_vnni,
            Int8Kernel::Avx2 => cpu.avx2,
            Int8Kernel::Scalar => true,
        }
    }

    /// The kernel named `name` as settings spell it (`avx512-vnni`, `avx2`, `scalar`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kernel's name in settings and status.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Avx512Vnni => "avx512-vnni",
            Int8Kernel::AvxVnni => "avx-vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Scalar => "scalar",
        }
    }

    /// Whether the kernel reads 16-bit words ([`Operands::Words`]) instead of bytes.
    pub(super) fn reads_words(self) -> bool {
        self == Int8Kernel::Avx2
    }

    /// `tile[r][c] (+)= Σ_k a[r][k] w[k][c]` over `depth` inputs, for `rows` rows of `a`
    /// (`stride` values apart) and the part of a packed panel from the same input on;
    /// added to the tile when `accumulate`. The operands must be of the kind the kernel
    /// reads ([`Self::reads_words`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn panel(
        self,
        operands: Operands,
        stride: usize,
        rows: usize,
        depth: usize,
        tile: &mut Tile,
        accumulate: bool,
    ) {
        assert!((1..=MAX_ROWS).contains(&rows) && depth.is_multiple_of(K_STEP));
        let (a_len, panel_len) = match operands {
            Operands::Bytes { a, panel } => (a.len(), panel.len()),
            Operands::Words { a, panel } => (a.len(), panel.len()),
        };
        assert!(a_len >= (rows - 1) * stride + depth && panel_len >= depth * PANEL);
        let step = Step {
            stride,
            rows,
            depth,
            accumulate,
        };
        match (self, operands) {
            // SAFETY: bounds asserted above; `available` is checked when a matrix picks
            // its kernel (`Int8Matrix::quantize`).
            (Int8Kernel::Avx512Vnni, Operands::Bytes { a, panel }) => unsafe {
                super::avx512::panel(a.as_ptr(), panel.as_ptr(), step, tile)
            },
            // SAFETY: as above.
            (Int8Kernel::AvxVnni, Operands::Bytes { a, panel }) => unsafe {
                super::avxvnni::panel(a.as_ptr(), panel.as_ptr(), step, tile)
            },
            // SAFETY: as above.
            (Int8Kernel::Avx2, Operands::Words { a, panel }) => unsafe {
                super::avx2::panel(a.as_ptr(), panel.as_ptr(), step, tile)
            },
            (Int8Kernel::Scalar, Operands::Bytes { a, panel }) => {
                super::scalar::panel(a, panel, step, tile)
            }
            (kernel, _) => unreachable!("{kernel:?} given the other kind of operands"),
        }
    }
}

/// Activations and a panel of weights, as a kernel reads them.
#[derive(Clone, Copy)]
pub(super) enum Operands<'a> {
    /// Unsigned activation bytes, `[k / 4][column][k % 4]` weight bytes.
    Bytes { a: &'a [u8], panel: &'a [i8] },
    /// Activations widened to words, `[k / 2][column][k % 2]` weight words.
    Words { a: &'a [i16], panel: &'a [i16] },
}

/// The shape of one kernel call.
#[derive(Clone, Copy)]
pub(super) struct Step {
    /// Bytes from one activation row to the next.
    pub stride: usize,
    /// Activation rows, 1 to [`MAX_ROWS`].
    pub rows: usize,
    /// Inputs summed, a multiple of [`K_STEP`].
    pub depth: usize,
    /// Add to the tile instead of overwriting it.
    pub accumulate: bool,
}
