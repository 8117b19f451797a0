//! Attention of one head of one sequence on the CPU without the gemm crate, whose per-call
//! setup outweighs products as small as most sequences' (29 tokens x 32 values): K is
//! repacked into panels once per task (Q and V are read in place), then `ROWS` query rows
//! at a time accumulate a register of scores, and later of outputs, as independent FMA
//! chains. Explicit SIMD through `pulp` (AVX-512, AVX2 or scalar, picked at run time): the
//! compiler's own vectorization of these loops picked the wrong axis (gathers).

use super::layout::{Heads, ScoreRules, Task};
use super::math::exp;
use pulp::{Arch, Simd, WithSimd};

/// Query rows per step (`scores` unpacks exactly four).
const ROWS: usize = 4;

/// Per-thread buffers, reused across tasks.
#[derive(Default)]
pub struct Buffers {
    /// K: `[padded / lanes][d][lanes]`, `padded` the length rounded up to 16.
    k: Vec<f32>,
    /// A row of zeros, the queries of the rows past the end of the last group.
    zeros: Vec<f32>,
    /// `ROWS` rows of scores, then probabilities: `[ROWS][padded]`.
    probs: Vec<f32>,
}

/// Keys rounded up to whole blocks of 16, a multiple of every register width used.
fn padded_len(len: usize) -> usize {
    len.div_ceil(16) * 16
}

/// Whether the direct kernel handles heads of `head_dim` values (whole registers of the
/// widest SIMD it may use).
pub fn supports(head_dim: usize) -> bool {
    head_dim.is_multiple_of(16)
}

/// `softmax(rules(Q K^T / sqrt d)) V` for `task` into `context` (`[len rounded up to ROWS,
/// d]`; rows past `len` are scratch). Needs [`supports`]`(heads.head_dim)`.
pub(crate) fn head_direct(
    qkv: &[f32],
    task: Task,
    heads: Heads,
    rules: &ScoreRules,
    buffers: &mut Buffers,
    context: &mut Vec<f32>,
) {
    Arch::new().dispatch(Head {
        qkv,
        task,
        heads,
        rules,
        buffers,
        context,
    });
}

struct Head<'a> {
    qkv: &'a [f32],
    task: Task,
    heads: Heads,
    rules: &'a ScoreRules<'a>,
    buffers: &'a mut Buffers,
    context: &'a mut Vec<f32>,
}

impl WithSimd for Head<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Head {
            qkv,
            task,
            heads,
            rules,
            buffers: b,
            context,
        } = self;
        let (lanes, d, stride) = (S::F32_LANES, heads.head_dim, heads.row());
        let padded = padded_len(task.len);
        pack_keys(qkv, task, heads, lanes, b);
        context.clear();
        context.resize(task.len.div_ceil(ROWS) * ROWS * d, 0.0);
        b.probs.resize(ROWS * padded, 0.0);
        b.zeros.resize(d, 0.0);
        // Token t of the sequence: its Q at `row(t)[q..q + d]`, its V at `v`.
        let rows = &qkv[task.start * stride..];
        let row = |t: usize| &rows[t * stride..];
        let (q_at, v_at) = (task.head * d, heads.v_offset(task.head));
        let k = S::as_simd_f32s(&b.k).0;
        for (group, out) in context.chunks_exact_mut(ROWS * d).enumerate() {
            let mut q: [&[f32]; ROWS] = [&b.zeros; ROWS];
            for (r, q) in q.iter_mut().enumerate().take(task.len - group * ROWS) {
                *q = &row(group * ROWS + r)[q_at..q_at + d];
            }
            scores(simd, q, k, &mut b.probs);
            // A loop, not `array::from_fn`: its closure would compile without the SIMD
            // features of this function.
            let mut inv = [0f32; ROWS];
            for (r, (inv, scores)) in inv
                .iter_mut()
                .zip(b.probs.chunks_exact_mut(padded))
                .enumerate()
            {
                let query = group * ROWS + r;
                let scale = if rules.is_plain() || query >= task.len {
                    heads.scale()
                } else {
                    rules.apply(task.head, query, scores, task.len, heads.scale());
                    1.0
                };
                *inv = 1.0 / softmax(scores, task.len, scale);
            }
            let v = |j: usize| &row(j)[v_at..v_at + d];
            weighted(simd, &b.probs, v, task.len, inv, S::as_mut_simd_f32s(out).0);
        }
    }
}

/// K of the task as panels for registers of `lanes` values; padding keys are zeros.
#[inline(always)]
fn pack_keys(qkv: &[f32], task: Task, heads: Heads, lanes: usize, b: &mut Buffers) {
    let (len, d, stride) = (task.len, heads.head_dim, heads.row());
    let padded = padded_len(len);
    b.k.clear();
    b.k.resize(padded * d, 0.0);
    let rows = qkv[task.start * stride..].chunks_exact(stride).take(len);
    let k_at = heads.k_offset(task.head);
    for (t, row) in rows.enumerate() {
        let k = &row[k_at..][..d];
        let at = (t / lanes) * d * lanes + t % lanes;
        for (i, x) in k.iter().enumerate() {
            b.k[at + i * lanes] = *x;
        }
    }
}

/// `ROWS` rows of scores: `probs[r][j] = q_r . k_j`, one register of keys at a time.
#[inline(always)]
fn scores<S: Simd>(simd: S, q: [&[f32]; ROWS], k: &[S::f32s], probs: &mut [f32]) {
    let d = q[0].len();
    let rows = S::as_mut_simd_f32s(probs).0;
    let per_row = rows.len() / ROWS;
    let [q0, q1, q2, q3] = q;
    for (block, panel) in k.chunks_exact(d).enumerate() {
        let mut acc = [simd.splat_f32s(0.0); ROWS];
        // Zipped iterators: no bounds checks in the inner loop.
        let steps = panel.iter().zip(q0).zip(q1).zip(q2).zip(q3);
        for ((((keys, q0), q1), q2), q3) in steps {
            for (a, q) in acc.iter_mut().zip([q0, q1, q2, q3]) {
                *a = simd.mul_add_f32s(simd.splat_f32s(*q), *keys, *a);
            }
        }
        for (r, a) in acc.into_iter().enumerate() {
            rows[r * per_row + block] = a;
        }
    }
}

/// In place over a padded row whose first `len` values are scores: `exp(scale (x - max))`,
/// zeros at the padding; returns the sum.
#[inline(always)]
fn softmax(row: &mut [f32], len: usize, scale: f32) -> f32 {
    const LANES: usize = 16;
    let mut max = [f32::NEG_INFINITY; LANES];
    for (i, chunk) in row.chunks_exact(LANES).enumerate() {
        for (l, (m, x)) in max.iter_mut().zip(chunk).enumerate() {
            // Selects rather than `f32::max` and a partial last chunk: no NaN handling, no
            // masked stores in the loop.
            let x = if i * LANES + l < len {
                *x
            } else {
                f32::NEG_INFINITY
            };
            *m = if x > *m { x } else { *m };
        }
    }
    let max = max.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    let mut sum = [0f32; LANES];
    for (i, chunk) in row.chunks_exact_mut(LANES).enumerate() {
        // A mask rather than a scalar tail: lanes past `len` become 0.
        for (l, (x, s)) in chunk.iter_mut().zip(&mut sum).enumerate() {
            let keep = if i * LANES + l < len { 1.0 } else { 0.0 };
            *x = exp((*x - max) * scale) * keep;
            *s += *x;
        }
    }
    sum.iter().sum()
}

/// `out[r] = inv[r] * sum_j probs[r][j] v(j)` for `ROWS` rows and `len` values `v(j)`, one
/// register of outputs at a time.
#[inline(always)]
fn weighted<'v, S: Simd>(
    simd: S,
    probs: &[f32],
    v: impl Fn(usize) -> &'v [f32],
    len: usize,
    inv: [f32; ROWS],
    out: &mut [S::f32s],
) {
    let padded = probs.len() / ROWS;
    let per_row = out.len() / ROWS;
    let mut p: [&[f32]; ROWS] = [&[]; ROWS];
    for (p, row) in p.iter_mut().zip(probs.chunks_exact(padded)) {
        *p = &row[..len];
    }
    for c in 0..per_row {
        let mut acc = [simd.splat_f32s(0.0); ROWS];
        for j in 0..len {
            let values = S::as_simd_f32s(v(j)).0[c];
            for (a, p) in acc.iter_mut().zip(&p) {
                *a = simd.mul_add_f32s(simd.splat_f32s(p[j]), values, *a);
            }
        }
        for (r, a) in acc.into_iter().enumerate() {
            out[r * per_row + c] = simd.mul_f32s(a, simd.splat_f32s(inv[r]));
        }
    }
}
