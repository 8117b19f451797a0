//! Pooling token embeddings into one vector per text, honouring the attention mask.

use serde::Serialize;

/// How token embeddings become one vector (sentence-transformers' pooling modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the real tokens.
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
    /// The last real token.
    LastToken,
    /// Sum of the real tokens divided by the square root of their count.
    MeanSqrtLen,
}

impl Pooling {
    /// Parses a setting value (`mean`, `cls`, `max`, `last_token`/`lasttoken`, `mean_sqrt_len`).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "max" => Pooling::Max,
            "last_token" | "lasttoken" => Pooling::LastToken,
            "mean_sqrt_len" | "mean_sqrt_len_tokens" => Pooling::MeanSqrtLen,
            _ => return None,
        })
    }
}

/// Pools `hidden`, row-major `[batch, seq, dim]`, with `mask` `[batch, seq]`.
pub fn pool(
    hidden: &[f32],
    dim: usize,
    mask: &[u32],
    seq: usize,
    pooling: Pooling,
) -> Vec<Vec<f32>> {
    let batch = mask.len().checked_div(seq).unwrap_or(0);
    (0..batch)
        .map(|b| {
            let rows = |t: usize| &hidden[(b * seq + t) * dim..(b * seq + t + 1) * dim];
            let real: Vec<usize> = (0..seq).filter(|&t| mask[b * seq + t] != 0).collect();
            pool_row(&real, rows, dim, pooling)
        })
        .collect()
}

fn pool_row<'a>(
    real: &[usize],
    row: impl Fn(usize) -> &'a [f32],
    dim: usize,
    pooling: Pooling,
) -> Vec<f32> {
    match pooling {
        Pooling::Cls if real.is_empty() => vec![0.0; dim],
        Pooling::Cls => row(0).to_vec(),
        Pooling::LastToken => real
            .last()
            .map_or_else(|| vec![0.0; dim], |&t| row(t).to_vec()),
        Pooling::Max => {
            let mut out = vec![f32::NEG_INFINITY; dim];
            for &t in real {
                for (o, &x) in out.iter_mut().zip(row(t)) {
                    *o = o.max(x);
                }
            }
            out
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let mut sum = vec![0.0f32; dim];
            for &t in real {
                for (s, &x) in sum.iter_mut().zip(row(t)) {
                    *s += x;
                }
            }
            // sentence-transformers clamps the token count at 1e-9 to avoid dividing by 0.
            let n = (real.len() as f32).max(1e-9);
            let divisor = if pooling == Pooling::Mean {
                n
            } else {
                n.sqrt()
            };
            sum.iter_mut().for_each(|s| *s /= divisor);
            sum
        }
    }
}

/// Scales `v` to unit length (as `torch.nn.functional.normalize`, eps 1e-12).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two texts, seq 3, dim 2; the second has one padded position holding junk.
    const HIDDEN: [f32; 12] = [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 0.0, 20.0, -2.0, 99.0, 99.0,
    ];
    const MASK: [u32; 6] = [1, 1, 1, 1, 1, 0];

    #[test]
    fn mean_ignores_padding() {
        let out = pool(&HIDDEN, 2, &MASK, 3, Pooling::Mean);
        assert_eq!(out, vec![vec![3.0, 4.0], vec![15.0, -1.0]]);
    }

    #[test]
    fn cls_max_last_and_sqrt() {
        assert_eq!(pool(&HIDDEN, 2, &MASK, 3, Pooling::Cls)[1], vec![10.0, 0.0]);
        assert_eq!(pool(&HIDDEN, 2, &MASK, 3, Pooling::Max)[1], vec![20.0, 0.0]);
        assert_eq!(
            pool(&HIDDEN, 2, &MASK, 3, Pooling::LastToken)[1],
            vec![20.0, -2.0]
        );
        let s = pool(&HIDDEN, 2, &MASK, 3, Pooling::MeanSqrtLen)[1].clone();
        assert!((s[0] - 30.0 / 2f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0, 0.0];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }
}
