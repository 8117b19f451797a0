//! Rotary position embeddings (RoPE) on a fused QKV matrix, as Hugging Face applies them:
//! each query and key head is turned by angles `position * inv_freq[i]`, in place, before
//! attention; values are left alone.

use super::layout::Heads;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Tokens per rayon task: a few thousand values each.
const TOKENS_PER_TASK: usize = 16;

/// How the rotated values pair up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotaryStyle {
    /// `x[i]` with `x[i + half]` (`rotate_half`: Llama, Qwen, ModernBERT, NomicBert, GTE).
    Halves,
    /// `x[2i]` with `x[2i + 1]` (GPT-J; NomicBert with `rotary_emb_interleaved`).
    Interleaved,
}

/// Cosines and sines of every angle a batch needs: `[positions][half]`.
#[derive(Debug, Clone)]
pub struct RotaryTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RotaryTable {
    /// The angles `p * inv_freq[i]` for positions `0..positions`, computed in f32 as torch
    /// does (`position.float() * inv_freq`, then `cos` and `sin`).
    pub fn new(inv_freq: &[f32], positions: usize) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self { half, cos, sin }
    }

    /// Values rotated per head.
    pub fn rotated(&self) -> usize {
        2 * self.half
    }

    fn at(&self, position: usize) -> (&[f32], &[f32]) {
        let range = position * self.half..(position + 1) * self.half;
        (&self.cos[range.clone()], &self.sin[range])
    }

    /// The table's cosines and sines for each of `positions`, as `[tokens, half]` tensors
    /// (for the candle-ops form).
    pub fn gather(&self, positions: &[u32], like: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut cos = Vec::with_capacity(positions.len() * self.half);
        let mut sin = Vec::with_capacity(positions.len() * self.half);
        for &p in positions {
            let (c, s) = self.at(p as usize);
            cos.extend_from_slice(c);
            sin.extend_from_slice(s);
        }
        let shape = (positions.len(), self.half);
        let tensor =
            |v: Vec<f32>| Tensor::from_vec(v, shape, like.device())?.to_dtype(like.dtype());
        Ok((tensor(cos)?, tensor(sin)?))
    }

    /// Whether every position has its angles.
    pub fn covers(&self, positions: &[u32]) -> bool {
        let count = self.cos.len() / self.half.max(1);
        positions.iter().all(|&p| (p as usize) < count)
    }
}

/// Rotates the query and key heads of every token of `qkv` (`[tokens, heads.row()]`) by its
/// position, in place.
pub fn rotate_f32(
    qkv: &mut [f32],
    positions: &[u32],
    heads: Heads,
    table: &RotaryTable,
    style: RotaryStyle,
) -> Result<()> {
    let row = heads.row();
    if qkv.len() != positions.len() * row
        || table.rotated() > heads.head_dim
        || !table.covers(positions)
    {
        candle_core::bail!(
            "rotary: {} values for {} tokens of {heads:?}, {} rotated values a head",
            qkv.len(),
            positions.len(),
            table.rotated()
        );
    }
    let d = heads.head_dim;
    let rotated_heads = heads.heads + heads.kv_heads;
    qkv.par_chunks_mut(row * TOKENS_PER_TASK)
        .zip(positions.par_chunks(TOKENS_PER_TASK))
        .for_each(|(rows, positions)| {
            for (values, &p) in rows.chunks_exact_mut(row).zip(positions) {
                let (cos, sin) = table.at(p as usize);
                for head in values[..rotated_heads * d].chunks_exact_mut(d) {
                    rotate_head(head, cos, sin, style);
                }
            }
        });
    Ok(())
}

/// One head's first `2 * cos.len()` values turned by the angles whose cosines and sines
/// are given.
#[inline(always)]
fn rotate_head(head: &mut [f32], cos: &[f32], sin: &[f32], style: RotaryStyle) {
    let half = cos.len();
    match style {
        RotaryStyle::Halves => {
            let (a, b) = head[..2 * half].split_at_mut(half);
            for (((x1, x2), c), s) in a.iter_mut().zip(b).zip(cos).zip(sin) {
                let (u, v) = (*x1, *x2);
                *x1 = u * c - v * s;
                *x2 = v * c + u * s;
            }
        }
        RotaryStyle::Interleaved => {
            for ((pair, c), s) in head[..2 * half].chunks_exact_mut(2).zip(cos).zip(sin) {
                let (u, v) = (pair[0], pair[1]);
                pair[0] = u * c - v * s;
                pair[1] = v * c + u * s;
            }
        }
    }
}

/// [`rotate_f32`] with candle ops, for any device and dtype; returns the new QKV matrix.
pub fn rotate_ops(
    qkv: &Tensor,
    positions: &[u32],
    heads: Heads,
    table: &RotaryTable,
    style: RotaryStyle,
) -> Result<Tensor> {
    let tokens = positions.len();
    if !table.covers(positions) || table.rotated() > heads.head_dim {
        candle_core::bail!("rotary: positions past the table or rotation wider than a head");
    }
    let (cos, sin) = table.gather(positions, qkv)?;
    let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
    let (d, half) = (heads.head_dim, table.half);
    let turn = |x: Tensor| -> Result<Tensor> {
        let n = x.dim(1)? / d;
        let x = x.reshape((tokens, n, d))?;
        let rest = x.narrow(2, 2 * half, d - 2 * half)?;
        let turned = match style {
            RotaryStyle::Halves => {
                let (a, b) = (x.narrow(2, 0, half)?, x.narrow(2, half, half)?);
                let first = (a.broadcast_mul(&cos)? - b.broadcast_mul(&sin)?)?;
                let second = (b.broadcast_mul(&cos)? + a.broadcast_mul(&sin)?)?;
                Tensor::cat(&[first, second], 2)?
            }
            RotaryStyle::Interleaved => {
                let pairs = x.narrow(2, 0, 2 * half)?.reshape((tokens, n, half, 2))?;
                let (a, b) = (
                    pairs.narrow(3, 0, 1)?.squeeze(3)?,
                    pairs.narrow(3, 1, 1)?.squeeze(3)?,
                );
                let first = (a.broadcast_mul(&cos)? - b.broadcast_mul(&sin)?)?;
                let second = (b.broadcast_mul(&cos)? + a.broadcast_mul(&sin)?)?;
                Tensor::stack(&[first, second], 3)?.reshape((tokens, n, 2 * half))?
            }
        };
        Tensor::cat(&[turned, rest], 2)?.reshape((tokens, n * d))
    };
    let qk = (heads.heads + heads.kv_heads) * d;
    let turned = turn(qkv.narrow(1, 0, qk)?)?;
    Tensor::cat(&[turned, qkv.narrow(1, qk, heads.kv_heads * d)?], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_and_ops_rotate_like_the_definition() {
        let heads = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        };
        let inv_freq = [1.0, 0.1, 0.01];
        let table = RotaryTable::new(&inv_freq, 20);
        let positions = [0u32, 1, 2, 17, 3, 0];
        let qkv: Vec<f32> = (0..positions.len() * heads.row())
            .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
            .collect();
        for style in [RotaryStyle::Halves, RotaryStyle::Interleaved] {
            let mut fused = qkv.clone();
            rotate_f32(&mut fused, &positions, heads, &table, style).unwrap();
            let t = Tensor::from_slice(&qkv, (positions.len(), heads.row()), &Device::Cpu).unwrap();
            let ops: Vec<f32> = rotate_ops(&t, &positions, heads, &table, style)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (t, &p) in positions.iter().enumerate() {
                let row = &qkv[t * heads.row()..(t + 1) * heads.row()];
                for h in 0..heads.heads + 2 * heads.kv_heads {
                    for i in 0..heads.head_dim {
                        let at = t * heads.row() + h * 8 + i;
                        let x = &row[h * 8..(h + 1) * 8];
                        let want = if h >= heads.heads + heads.kv_heads || i >= 6 {
                            x[i] // values, and the unrotated tail of each head
                        } else {
                            let (pair, j, first) = match style {
                                RotaryStyle::Halves => {
                                    (if i < 3 { i + 3 } else { i - 3 }, i % 3, i < 3)
                                }
                                RotaryStyle::Interleaved => (i ^ 1, i / 2, i % 2 == 0),
                            };
                            let angle = p as f32 * inv_freq[j];
                            let sign = if first { -1.0 } else { 1.0 };
                            x[i] * angle.cos() + sign * x[pair] * angle.sin()
                        };
                        assert!(
                            (fused[at] - want).abs() < 1e-5,
                            "{style:?} fused t{t} h{h} i{i}"
                        );
                        assert!(
                            (ops[at] - want).abs() < 1e-5,
                            "{style:?} ops t{t} h{h} i{i}"
                        );
                    }
                }
            }
        }
        let mut short = qkv.clone();
        assert!(rotate_f32(
            &mut short,
            &[0, 1, 2, 99, 0, 0],
            heads,
            &table,
            RotaryStyle::Halves
        )
        .is_err());
        assert!(rotate_f32(
            &mut short[1..],
            &positions,
            heads,
            &table,
            RotaryStyle::Halves
        )
        .is_err());
    }
}
