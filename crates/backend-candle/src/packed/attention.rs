//! Self-attention over packed rows: every sequence attends to its own tokens only, so no
//! mask and no padding. Two forms: a fused CPU f32 kernel (one task per sequence and head,
//! across the rayon pool; short sequences by the direct kernel of [`super::direct`], long
//! ones by the gemm crate reading Q, K and V in place through their strides), and candle
//! ops for every other device and dtype (sequences of equal length batched as
//! `[n, heads, len, head_dim]`).

use super::direct::{head_direct, supports, Buffers};
use super::kernels::softmax_unnormalized;
use super::layout::{Heads, Task};
use candle_core::{Result, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Sequences up to this length take the direct kernel; longer ones the gemm crate, whose
/// larger register blocks win once its per-call setup is small beside the products
/// (measured on Zen 4: about even at 32 to 64 tokens, gemm 30% faster at 256).
const DIRECT_MAX_LEN: usize = 48;

/// Per-thread buffers, reused across tasks.
#[derive(Default)]
struct Scratch {
    direct: Buffers,
    /// Scores of the gemm path.
    scores: Vec<f32>,
    /// Inverse softmax sums of the gemm path.
    sums: Vec<f32>,
    /// The head's output, `[len, head_dim]` (and scratch rows after).
    context: Vec<f32>,
}

/// The base pointer of the output, shared by tasks that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint regions (their own rows and head columns); see `attention_f32`.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Copies a `[len, head_dim]` block into the task's rows and head columns.
    ///
    /// # Safety
    /// The output holds rows `task.start..task.start + task.len` of width `heads.hidden()`,
    /// and no other thread accesses this block of it meanwhile.
    unsafe fn write(self, block: &[f32], task: Task, heads: Heads) {
        let (hidden, d) = (heads.hidden(), heads.head_dim);
        for (i, row) in block.chunks_exact(d).take(task.len).enumerate() {
            let to = self.0.add((task.start + i) * hidden + task.head * d);
            std::ptr::copy_nonoverlapping(row.as_ptr(), to, d);
        }
    }
}

/// Fused attention on the CPU: `context[t, h*d..(h+1)*d]` for every token `t` of every
/// sequence, from `qkv` (`[tokens, 3 * hidden]`, row-major, rows of each sequence
/// consecutive in `lengths` order). `context` is `[tokens, hidden]`.
pub fn attention_f32(
    qkv: &[f32],
    lengths: &[usize],
    heads: Heads,
    context: &mut [f32],
) -> Result<()> {
    let hidden = heads.hidden();
    let tokens: usize = lengths.iter().sum();
    if heads.head_dim == 0 || qkv.len() != tokens * 3 * hidden || context.len() != tokens * hidden {
        candle_core::bail!(
            "packed attention: {} qkv values and {} outputs for {tokens} tokens of width {hidden}",
            qkv.len(),
            context.len()
        );
    }
    // One task per (sequence, head), longest first so the big ones start early and the
    // small ones fill the gaps at the end.
    let mut tasks: Vec<Task> = Vec::with_capacity(lengths.len() * heads.heads);
    let mut start = 0;
    for &len in lengths {
        if len > 0 {
            tasks.extend((0..heads.heads).map(|head| Task { start, len, head }));
        }
        start += len;
    }
    tasks.sort_by_key(|t| std::cmp::Reverse(t.len));
    let out = SharedOut(context.as_mut_ptr());
    tasks
        .par_iter()
        .for_each_init(Scratch::default, |scratch, &task| {
            if task.len <= DIRECT_MAX_LEN && supports(heads.head_dim) {
                head_direct(qkv, task, heads, &mut scratch.direct, &mut scratch.context);
            } else {
                head_gemm(qkv, task, heads, scratch);
            }
            // SAFETY: `task.start + task.len <= tokens` by construction and `context` holds
            // `tokens` rows (checked above); each task writes only its own rows and head
            // columns, and `context` stays borrowed mutably until every task has ended.
            unsafe { out.write(&scratch.context, task, heads) }
        });
    Ok(())
}

/// A matrix read by gemm in place: its first value and the steps between rows and columns.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    row_step: isize,
    col_step: isize,
}

impl View {
    fn rows(values: &[f32], row_step: usize) -> Self {
        Self {
            ptr: values.as_ptr(),
            row_step: row_step as isize,
            col_step: 1,
        }
    }

    /// The transpose of `rows(values, row_step)`.
    fn columns(values: &[f32], row_step: usize) -> Self {
        Self {
            ptr: values.as_ptr(),
            row_step: 1,
            col_step: row_step as isize,
        }
    }
}

/// `dst = scale * lhs rhs` with `dst` row-major `m x n`, `lhs` `m x k`, `rhs` `k x n`.
///
/// # Safety
/// `lhs` and `rhs` address valid values at every index their shapes and steps form, and
/// `dst` holds `m * n` values.
unsafe fn product(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: View, rhs: View, scale: f32) {
    debug_assert!(dst.len() >= m * n);
    gemm(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        1,
        n as isize,
        false,
        lhs.ptr,
        lhs.col_step,
        lhs.row_step,
        rhs.ptr,
        rhs.col_step,
        rhs.row_step,
        0.0,
        scale,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// One head of one long sequence: `softmax(Q K^T / sqrt d) V` with the gemm crate reading
/// Q, K and V in place through their strides.
fn head_gemm(qkv: &[f32], task: Task, heads: Heads, scratch: &mut Scratch) {
    let (hidden, d, len) = (heads.hidden(), heads.head_dim, task.len);
    let stride = 3 * hidden;
    // From Q of the first token to V of the last (`len >= 1`): every value read lies inside.
    let first = task.start * stride + task.head * d;
    let q = &qkv[first..first + (len - 1) * stride + 2 * hidden + d];
    let (k, v) = (&q[hidden..], &q[2 * hidden..]);
    scratch.scores.resize(len * len, 0.0);
    scratch.context.resize(len * d, 0.0);
    // SAFETY: the views index `row * stride + col` with `row < len` and `col < d` from the
    // start of `q`, `k` and `v`, all inside them by the slicing above; `scores` holds
    // `len x len` values and `context` `len x d`.
    unsafe {
        let (q, k) = (View::rows(q, stride), View::columns(k, stride));
        product(len, len, d, &mut scratch.scores, q, k, heads.scale());
    }
    scratch.sums.clear();
    softmax_unnormalized(&mut scratch.scores, len, &mut scratch.sums);
    // SAFETY: as above; `scores` is the `len x len` left operand.
    unsafe {
        let (p, v) = (View::rows(&scratch.scores, len), View::rows(v, stride));
        product(len, d, len, &mut scratch.context, p, v, 1.0);
    }
    for (row, inv) in scratch.context.chunks_exact_mut(d).zip(&scratch.sums) {
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Attention with candle ops, for any device and dtype: each run of consecutive sequences
/// of one length is one batched `[n, heads, len, head_dim]` product. `qkv` is
/// `[tokens, 3 * hidden]`; returns `[tokens, hidden]`.
pub fn attention_ops(qkv: &Tensor, lengths: &[usize], heads: Heads) -> Result<Tensor> {
    let hidden = heads.hidden();
    let mut parts = Vec::new();
    let mut start = 0;
    for (len, count) in equal_runs(lengths) {
        let rows = len * count;
        if rows == 0 {
            continue;
        }
        let block =
            qkv.narrow(0, start, rows)?
                .reshape((count, len, 3, heads.heads, heads.head_dim))?;
        let pick = |i: usize| {
            block
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (pick(0)?, pick(1)?, pick(2)?);
        let scores = (q.matmul(&k.t()?)? * f64::from(heads.scale()))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        parts.push(probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, hidden))?);
        start += rows;
    }
    if parts.is_empty() {
        return Tensor::zeros((0, hidden), qkv.dtype(), qkv.device());
    }
    Tensor::cat(&parts, 0)
}

/// `(length, count)` of each run of equal consecutive lengths.
fn equal_runs(lengths: &[usize]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &len in lengths {
        match runs.last_mut() {
            Some((l, n)) if *l == len => *n += 1,
            _ => runs.push((len, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_and_op_attention_agree_on_mixed_lengths() {
        // head_dim 16: short sequences direct, long ones gemm; head_dim 8: all gemm.
        for (heads, head_dim) in [(2, 16), (3, 8)] {
            agree(Heads { heads, head_dim });
        }
    }

    fn agree(heads: Heads) {
        let lengths = [5, 1, 5, 17, 0, 2, 70, 48, 49];
        let tokens: usize = lengths.iter().sum();
        let qkv: Vec<f32> = (0..tokens * 3 * heads.hidden())
            .map(|i| ((i * 2654435761usize) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let mut fused = vec![0f32; tokens * heads.hidden()];
        attention_f32(&qkv, &lengths, heads, &mut fused).unwrap();
        let t = Tensor::from_slice(&qkv, (tokens, 3 * heads.hidden()), &Device::Cpu).unwrap();
        let ops = attention_ops(&t, &lengths, heads).unwrap();
        let ops: Vec<f32> = ops.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(ops.len(), fused.len());
        for (a, b) in fused.iter().zip(&ops) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn sizes_that_do_not_fit_are_errors() {
        let heads = Heads {
            heads: 2,
            head_dim: 4,
        };
        let mut out = vec![0f32; 8];
        assert!(attention_f32(&[0.0; 24], &[2], heads, &mut out).is_err());
        assert!(attention_f32(&[0.0; 24], &[], heads, &mut []).is_err());
        attention_f32(&[], &[0, 0], heads, &mut []).unwrap();
    }
}
