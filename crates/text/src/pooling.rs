//! Pooling token embeddings into one vector per text, honouring the attention mask.

use crate::batching::RowSpan;
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

/// Pools token vectors `hidden` (`dim` values per token) into one vector per row; each row's
/// real tokens are `span.len` consecutive tokens from `span.start`, so padded
/// (`[batch, seq, dim]`) and packed (`[total, dim]`) outputs pool alike.
pub fn pool(hidden: &[f32], dim: usize, spans: &[RowSpan], pooling: Pooling) -> Vec<Vec<f32>> {
    spans
        .iter()
        .map(|span| {
            let row = |t: usize| &hidden[(span.start + t) * dim..(span.start + t + 1) * dim];
            pool_row(span.len, row, dim, pooling)
        })
        .collect()
}

fn pool_row<'a>(
    len: usize,
    row: impl Fn(usize) -> &'a [f32],
    dim: usize,
    pooling: Pooling,
) -> Vec<f32> {
    match pooling {
        Pooling::Cls if len == 0 => vec![0.0; dim],
        Pooling::Cls => row(0).to_vec(),
        Pooling::LastToken if len == 0 => vec![0.0; dim],
        Pooling::LastToken => row(len - 1).to_vec(),
        Pooling::Max if len == 0 => vec![0.0; dim],
        Pooling::Max => {
            let mut out = vec![f32::NEG_INFINITY; dim];
            for t in 0..len {
                for (o, &x) in out.iter_mut().zip(row(t)) {
                    *o = o.max(x);
                }
            }
            out
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let mut sum = vec![0.0f32; dim];
            for t in 0..len {
                for (s, &x) in sum.iter_mut().zip(row(t)) {
                    *s += x;
                }
            }
            // sentence-transformers clamps the token count at 1e-9 to avoid dividing by 0.
            let n = (len as f32).max(1e-9);
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
    const SPANS: [RowSpan; 2] = [RowSpan { start: 0, len: 3 }, RowSpan { start: 3, len: 2 }];

    #[test]
    fn mean_ignores_padding() {
        let out = pool(&HIDDEN, 2, &SPANS, Pooling::Mean);
        assert_eq!(out, vec![vec![3.0, 4.0], vec![15.0, -1.0]]);
    }

    #[test]
    fn cls_max_last_and_sqrt() {
        assert_eq!(pool(&HIDDEN, 2, &SPANS, Pooling::Cls)[1], vec![10.0, 0.0]);
        assert_eq!(pool(&HIDDEN, 2, &SPANS, Pooling::Max)[1], vec![20.0, 0.0]);
        assert_eq!(
            pool(&HIDDEN, 2, &SPANS, Pooling::LastToken)[1],
            vec![20.0, -2.0]
        );
        let s = pool(&HIDDEN, 2, &SPANS, Pooling::MeanSqrtLen)[1].clone();
        assert!((s[0] - 30.0 / 2f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn packed_rows_pool_like_padded_ones() {
        // The same two texts packed: 3 + 2 tokens, no junk.
        let packed = &HIDDEN[..10];
        let spans = [RowSpan { start: 0, len: 3 }, RowSpan { start: 3, len: 2 }];
        for pooling in [
            Pooling::Mean,
            Pooling::Cls,
            Pooling::Max,
            Pooling::LastToken,
        ] {
            assert_eq!(
                pool(packed, 2, &spans, pooling),
                pool(&HIDDEN, 2, &SPANS, pooling)
            );
        }
    }

    #[test]
    fn empty_rows_pool_to_zeros() {
        let spans = [RowSpan { start: 0, len: 0 }];
        for pooling in [
            Pooling::Mean,
            Pooling::Cls,
            Pooling::LastToken,
            Pooling::Max,
        ] {
            assert_eq!(pool(&[], 2, &spans, pooling), vec![vec![0.0, 0.0]]);
        }
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
