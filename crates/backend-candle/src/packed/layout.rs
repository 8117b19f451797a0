//! How the packed attention kernels address their work: the head layout of a fused QKV row
//! and one (sequence, head) task.

/// Layout of a fused QKV row: `[Q | K | V]`, each `heads` blocks of `head_dim` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Attention heads.
    pub heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

impl Heads {
    /// Width of Q (and of the attention output).
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// `1 / sqrt(head_dim)`.
    pub(super) fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// One (sequence, head) pair.
#[derive(Debug, Clone, Copy)]
pub(super) struct Task {
    /// First row of the sequence.
    pub start: usize,
    /// Its tokens.
    pub len: usize,
    /// The head.
    pub head: usize,
}
