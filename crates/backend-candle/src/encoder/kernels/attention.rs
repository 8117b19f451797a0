//! Self-attention over packed rows: every sequence attends to its own tokens only, so no
//! padding; within a sequence the [`ScoreRules`] say which keys each query sees (all of
//! them, the earlier ones, a window) and what bias its scores get. Two forms: a fused CPU f32
//! kernel (one task per sequence and head, across the rayon pool; short sequences by the
//! direct kernel of [`super::direct`], long ones by the gemm crate reading Q, K and V in
//! place through their strides), and candle ops for every other device and dtype (sequences
//! of equal length batched as `[n, heads, len, head_dim]`).

use super::direct::{head_direct, supports, Buffers};
use super::layout::{Heads, ScoreRules, Task};
use super::math::softmax_unnormalized;
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
/// sequence, from `qkv` (`[tokens, heads.row()]`, row-major, rows of each sequence
/// consecutive in `lengths` order). `context` is `[tokens, hidden]`.
pub fn attention_f32(
    qkv: &[f32],
    lengths: &[usize],
    heads: Heads,
    rules: &ScoreRules,
    context: &mut [f32],
) -> Result<()> {
    let hidden = heads.hidden();
    let tokens: usize = lengths.iter().sum();
    if !heads.is_valid() || qkv.len() != tokens * heads.row() || context.len() != tokens * hidden {
        candle_core::bail!(
            "packed attention: {} qkv values and {} outputs for {tokens} tokens of {heads:?}",
            qkv.len(),
            context.len()
        );
    }
    check_coverage(lengths, rules)?;
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
                head_direct(
                    qkv,
                    task,
                    heads,
                    rules,
                    &mut scratch.direct,
                    &mut scratch.context,
                );
            } else {
                head_gemm(qkv, task, heads, rules, scratch);
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

/// A sequence longer than the rules' bias covers is an error, not a read past its table.
fn check_coverage(lengths: &[usize], rules: &ScoreRules) -> Result<()> {
    match lengths.iter().find(|&&len| !rules.covers(len)) {
        Some(len) => candle_core::bail!("packed attention: no position bias for {len} tokens"),
        None => Ok(()),
    }
}

/// One head of one long sequence: `softmax(rules(Q K^T / sqrt d)) V` with the gemm crate
/// reading Q, K and V in place through their strides.
fn head_gemm(qkv: &[f32], task: Task, heads: Heads, rules: &ScoreRules, scratch: &mut Scratch) {
    let (d, len, stride) = (heads.head_dim, task.len, heads.row());
    // The task's rows from the first token's to the last's (`len >= 1`): every value read
    // lies inside.
    let rows = &qkv[task.start * stride..(task.start + len) * stride];
    let q = &rows[task.head * d..];
    let (k, v) = (
        &rows[heads.k_offset(task.head)..],
        &rows[heads.v_offset(task.head)..],
    );
    scratch.scores.resize(len * len, 0.0);
    scratch.context.resize(len * d, 0.0);
    let scale = if rules.is_plain() { heads.scale() } else { 1.0 };
    // SAFETY: the views index `row * stride + col` with `row < len` and `col < d` from the
    // start of `q`, `k` and `v`, all inside `rows` (each starts at most `stride - d` into
    // the first row); `scores` holds `len x len` values and `context` `len x d`.
    unsafe {
        let (q, k) = (View::rows(q, stride), View::columns(k, stride));
        product(len, len, d, &mut scratch.scores, q, k, scale);
    }
    if !rules.is_plain() {
        for (query, row) in scratch.scores.chunks_exact_mut(len).enumerate() {
            rules.apply(task.head, query, row, len, heads.scale());
        }
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
/// `[tokens, heads.row()]`; returns `[tokens, hidden]`.
pub fn attention_ops(
    qkv: &Tensor,
    lengths: &[usize],
    heads: Heads,
    rules: &ScoreRules,
) -> Result<Tensor> {
    let (hidden, d) = (heads.hidden(), heads.head_dim);
    check_coverage(lengths, rules)?;
    let mut parts = Vec::new();
    let mut start = 0;
    for (len, count) in equal_runs(lengths) {
        let rows = len * count;
        if rows == 0 {
            continue;
        }
        let block = qkv
            .narrow(0, start, rows)?
            .reshape((count, len, heads.row()))?;
        // `[count, n, len, d]` for the `n` heads whose values start at `at`.
        let pick = |at: usize, n: usize| {
            block
                .narrow(2, at, n * d)?
                .reshape((count, len, n, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = pick(0, heads.heads)?;
        let (k, v) = (
            pick(hidden, heads.kv_heads)?,
            pick(heads.v_offset(0), heads.kv_heads)?,
        );
        let (k, v) = (repeat_kv(&k, heads)?, repeat_kv(&v, heads)?);
        let mut scores = (q.matmul(&k.t()?)? * f64::from(heads.scale()))?;
        if !rules.is_plain() {
            let adds = score_additions(rules, heads.heads, len);
            let adds = Tensor::from_vec(
                adds,
                (rules.bias.map_or(1, |_| heads.heads), len, len),
                q.device(),
            )?;
            scores = scores.broadcast_add(&adds.to_dtype(q.dtype())?.unsqueeze(0)?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        parts.push(probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, hidden))?);
        start += rows;
    }
    if parts.is_empty() {
        return Tensor::zeros((0, hidden), qkv.dtype(), qkv.device());
    }
    Tensor::cat(&parts, 0)
}

/// Each key/value head repeated for the query heads of its group: `[n, kv_heads, len, d]`
/// to `[n, heads, len, d]`.
fn repeat_kv(x: &Tensor, heads: Heads) -> Result<Tensor> {
    let group = heads.heads / heads.kv_heads;
    if group == 1 {
        return Ok(x.clone());
    }
    let (n, kv, len, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((n, kv, group, len, d))?
        .reshape((n, kv * group, len, d))
}

/// What the rules add to scaled scores, `[heads or 1, len, len]`: the bias, or minus
/// infinity where the mask hides a key. Built from [`ScoreRules::apply`] on zero scores, so
/// both attention forms follow one definition.
fn score_additions(rules: &ScoreRules, heads: usize, len: usize) -> Vec<f32> {
    let planes = if rules.bias.is_some() { heads } else { 1 };
    let mut adds = vec![0f32; planes * len * len];
    for (head, plane) in adds.chunks_exact_mut(len * len).enumerate() {
        for (query, row) in plane.chunks_exact_mut(len).enumerate() {
            rules.apply(head, query, row, len, 0.0);
        }
    }
    adds
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
    use super::super::layout::{Mask, RelativeBias};
    use super::*;
    use candle_core::Device;

    /// `softmax(rules(q k / sqrt d)) v` in f64, one sequence and head at a time, straight
    /// from the definition.
    fn naive(
        qkv: &[f32],
        lengths: &[usize],
        heads: Heads,
        mask: Mask,
        bias: Option<&RelativeBias>,
    ) -> Vec<f64> {
        let (d, stride) = (heads.head_dim, heads.row());
        let bias_of = |h: usize, q: usize, k: usize| {
            bias.map_or(0.0, |b| {
                let mut one = vec![0f32; k + 1];
                let rules = ScoreRules {
                    mask: Mask::Full,
                    bias: Some(b),
                };
                rules.apply(h, q, &mut one, k + 1, 0.0);
                f64::from(one[k])
            })
        };
        let tokens: usize = lengths.iter().sum();
        let mut out = vec![0f64; tokens * heads.hidden()];
        let mut start = 0;
        for &len in lengths {
            for h in 0..heads.heads {
                for i in 0..len {
                    let row = |t: usize| &qkv[(start + t) * stride..(start + t + 1) * stride];
                    let q = &row(i)[h * d..(h + 1) * d];
                    let mut weights: Vec<f64> = (0..len)
                        .map(|j| {
                            if !mask.allows(i, j) {
                                return f64::NEG_INFINITY;
                            }
                            let k = &row(j)[heads.k_offset(h)..heads.k_offset(h) + d];
                            let dot: f64 = q
                                .iter()
                                .zip(k)
                                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                                .sum();
                            dot / (d as f64).sqrt() + bias_of(h, i, j)
                        })
                        .collect();
                    let max = weights.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    weights.iter_mut().for_each(|w| *w = (*w - max).exp());
                    let total: f64 = weights.iter().sum();
                    for (j, w) in weights.iter().enumerate() {
                        let v = &row(j)[heads.v_offset(h)..heads.v_offset(h) + d];
                        for (c, x) in v.iter().enumerate() {
                            out[(start + i) * heads.hidden() + h * d + c] +=
                                w / total * f64::from(*x);
                        }
                    }
                }
            }
            start += len;
        }
        out
    }

    #[test]
    fn both_forms_equal_the_definition_for_every_head_layout_and_rule() {
        let layouts = [
            Heads::new(2, 16), // short sequences direct, long ones gemm
            Heads::new(3, 8),  // all gemm
            Heads {
                heads: 4,
                kv_heads: 2,
                head_dim: 16,
            },
            Heads {
                heads: 6,
                kv_heads: 1,
                head_dim: 8,
            },
        ];
        let bias = RelativeBias::new(6, 80, |h, dist| {
            ((h as i64 * 7 + dist) % 11) as f32 / 5.0 - 1.0
        });
        let rules = [
            (Mask::Full, None),
            (Mask::Causal, None),
            (Mask::Window(3), None),
            (Mask::Full, Some(&bias)),
        ];
        let lengths = [5, 1, 5, 17, 0, 2, 70, 48, 49];
        let tokens: usize = lengths.iter().sum();
        for heads in layouts {
            let qkv: Vec<f32> = (0..tokens * heads.row())
                .map(|i| ((i * 2654435761usize) % 1000) as f32 / 250.0 - 2.0)
                .collect();
            for (mask, bias) in rules {
                let rules = ScoreRules { mask, bias };
                let want = naive(&qkv, &lengths, heads, mask, bias);
                let mut fused = vec![0f32; tokens * heads.hidden()];
                attention_f32(&qkv, &lengths, heads, &rules, &mut fused).unwrap();
                let t = Tensor::from_slice(&qkv, (tokens, heads.row()), &Device::Cpu).unwrap();
                let ops = attention_ops(&t, &lengths, heads, &rules).unwrap();
                let ops: Vec<f32> = ops.flatten_all().unwrap().to_vec1().unwrap();
                for (name, got) in [("fused", &fused), ("ops", &ops)] {
                    assert_eq!(got.len(), want.len());
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (f64::from(*a) - b).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        worst < 2e-5,
                        "{name} {heads:?} {mask:?} bias {}: {worst}",
                        bias.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn sizes_that_do_not_fit_are_errors() {
        let heads = Heads::new(2, 4);
        let rules = ScoreRules::FULL;
        let mut out = vec![0f32; 8];
        assert!(attention_f32(&[0.0; 24], &[2], heads, &rules, &mut out).is_err());
        assert!(attention_f32(&[0.0; 24], &[], heads, &rules, &mut []).is_err());
        attention_f32(&[], &[0, 0], heads, &rules, &mut []).unwrap();
        let gqa = Heads {
            heads: 3,
            kv_heads: 2,
            head_dim: 4,
        };
        assert!(attention_f32(&[0.0; 28], &[1], gqa, &rules, &mut out[..4]).is_err());
        // A sequence longer than the bias table.
        let bias = RelativeBias::new(2, 4, |_, _| 0.0);
        let rules = ScoreRules {
            mask: Mask::Full,
            bias: Some(&bias),
        };
        let mut out = vec![0f32; 5 * 8];
        assert!(attention_f32(&[0.0; 5 * 24], &[5], heads, &rules, &mut out).is_err());
        let t = Tensor::zeros((5, 24), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(attention_ops(&t, &[5], heads, &rules).is_err());
    }
}
