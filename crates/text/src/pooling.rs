//! Pooling token embeddings into one vector per text, as sentence-transformers' `Pooling`
//! module does: over each row's real tokens, optionally leaving out a leading prompt, with
//! several modes concatenated when the folder asks for more than one.

use crate::batching::RowSpan;
use serde::Serialize;

/// How token embeddings become one vector (sentence-transformers' pooling modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the real tokens.
    Mean,
    /// The first token (`[CLS]`), or the first after an excluded prompt.
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
    /// The last real token (decoders: the end-of-text token their tokenizer appends).
    LastToken,
    /// Sum divided by the square root of the token count.
    MeanSqrtLen,
    /// Mean weighted by position (1 for the first token, 2 for the next…).
    WeightedMean,
}

impl Pooling {
    /// Every mode, in the order sentence-transformers concatenates its legacy flags.
    pub const ALL: [Pooling; 6] = [
        Pooling::Cls,
        Pooling::Max,
        Pooling::Mean,
        Pooling::MeanSqrtLen,
        Pooling::WeightedMean,
        Pooling::LastToken,
    ];

    /// The mode a settings value or a sentence-transformers config names: `mean`, `cls`,
    /// `max`, `lasttoken` (or `last_token`), `mean_sqrt_len_tokens` (or `mean_sqrt_len`),
    /// `weightedmean` (or `weighted_mean`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "max" => Pooling::Max,
            "lasttoken" | "last_token" => Pooling::LastToken,
            "mean_sqrt_len_tokens" | "mean_sqrt_len" => Pooling::MeanSqrtLen,
            "weightedmean" | "weighted_mean" => Pooling::WeightedMean,
            _ => return None,
        })
    }

    /// The name sentence-transformers gives the mode.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::LastToken => "lasttoken",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::WeightedMean => "weightedmean",
        }
    }
}

/// A folder's pooling: one or more modes (their vectors side by side) and whether the
/// tokens of a prompt take part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolingConfig {
    /// The modes, in output order.
    pub modes: Vec<Pooling>,
    /// Whether a prompt's tokens are pooled with the text's (`include_prompt`).
    pub include_prompt: bool,
}

impl PoolingConfig {
    /// One mode, prompts included.
    pub fn single(mode: Pooling) -> Self {
        Self {
            modes: vec![mode],
            include_prompt: true,
        }
    }

    /// Width of the pooled vector for token vectors of `hidden` values.
    pub fn width(&self, hidden: usize) -> usize {
        self.modes.len() * hidden
    }

    /// The modes joined by `+`, for status.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.modes.iter().map(|m| m.name()).collect();
        let mut text = names.join("+");
        if !self.include_prompt {
            text.push_str(" (prompt excluded)");
        }
        text
    }

    /// One vector per span of `data` (token vectors of `hidden` values, row-major).
    pub fn pool(&self, data: &[f32], hidden: usize, spans: &[RowSpan]) -> Vec<Vec<f32>> {
        spans
            .iter()
            .map(|span| {
                let skip = if self.include_prompt { 0 } else { span.prompt };
                let mut out = Vec::with_capacity(self.width(hidden));
                for &mode in &self.modes {
                    out.extend(pool_row(data, hidden, *span, skip, mode));
                }
                out
            })
            .collect()
    }
}

/// One mode over one row, tokens before `skip` left out as sentence-transformers masks them
/// (a row left with no tokens pools to zeros; CLS then reads the row's first token).
fn pool_row(data: &[f32], dim: usize, span: RowSpan, skip: usize, pooling: Pooling) -> Vec<f32> {
    let token = |t: usize| &data[(span.start + t) * dim..(span.start + t + 1) * dim];
    let kept = skip.min(span.len)..span.len;
    if kept.is_empty() {
        return match (pooling, span.len) {
            (Pooling::Cls, 1..) => token(0).to_vec(),
            _ => vec![0.0; dim],
        };
    }
    match pooling {
        Pooling::Cls => token(kept.start).to_vec(),
        Pooling::LastToken => token(kept.end - 1).to_vec(),
        Pooling::Max => {
            let mut out = vec![f32::NEG_INFINITY; dim];
            for t in kept {
                out.iter_mut()
                    .zip(token(t))
                    .for_each(|(o, &x)| *o = o.max(x));
            }
            out
        }
        Pooling::Mean | Pooling::MeanSqrtLen | Pooling::WeightedMean => {
            let mut sum = vec![0.0f32; dim];
            let mut weights = 0.0f32;
            for t in kept {
                // Weighted: the token's 1-based position, the prompt's positions kept.
                let w = if pooling == Pooling::WeightedMean {
                    (t + 1) as f32
                } else {
                    1.0
                };
                sum.iter_mut().zip(token(t)).for_each(|(s, &x)| *s += w * x);
                weights += w;
            }
            // sentence-transformers clamps the divisor at 1e-9 to avoid dividing by 0.
            let weights = weights.max(1e-9);
            let divisor = if pooling == Pooling::MeanSqrtLen {
                weights.sqrt()
            } else {
                weights
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
    const SPANS: [RowSpan; 2] = [RowSpan::new(0, 3), RowSpan::new(3, 2)];

    fn pool(data: &[f32], spans: &[RowSpan], mode: Pooling) -> Vec<Vec<f32>> {
        PoolingConfig::single(mode).pool(data, 2, spans)
    }

    #[test]
    fn mean_ignores_padding() {
        let out = pool(&HIDDEN, &SPANS, Pooling::Mean);
        assert_eq!(out, vec![vec![3.0, 4.0], vec![15.0, -1.0]]);
    }

    #[test]
    fn cls_max_last_sqrt_and_weighted() {
        assert_eq!(pool(&HIDDEN, &SPANS, Pooling::Cls)[1], vec![10.0, 0.0]);
        assert_eq!(pool(&HIDDEN, &SPANS, Pooling::Max)[1], vec![20.0, 0.0]);
        assert_eq!(
            pool(&HIDDEN, &SPANS, Pooling::LastToken)[1],
            vec![20.0, -2.0]
        );
        let s = pool(&HIDDEN, &SPANS, Pooling::MeanSqrtLen)[1].clone();
        assert!((s[0] - 30.0 / 2f32.sqrt()).abs() < 1e-5);
        // Weights 1, 2, 3 over the first row: (1*1 + 2*3 + 3*5) / 6.
        let w = pool(&HIDDEN, &SPANS, Pooling::WeightedMean)[0].clone();
        assert_eq!(w, vec![22.0 / 6.0, 28.0 / 6.0]);
    }

    #[test]
    fn several_modes_are_concatenated_in_order() {
        let config = PoolingConfig {
            modes: vec![Pooling::Cls, Pooling::Mean],
            include_prompt: true,
        };
        assert_eq!(
            config.pool(&HIDDEN, 2, &SPANS[..1]),
            vec![vec![1.0, 2.0, 3.0, 4.0]]
        );
        assert_eq!(config.describe(), "cls+mean");
    }

    #[test]
    fn an_excluded_prompt_is_left_out_but_keeps_its_positions() {
        let spans = [RowSpan {
            prompt: 1,
            ..RowSpan::new(0, 3)
        }];
        let config = |mode| PoolingConfig {
            modes: vec![mode],
            include_prompt: false,
        };
        assert_eq!(
            config(Pooling::Mean).pool(&HIDDEN, 2, &spans),
            vec![vec![4.0, 5.0]]
        );
        assert_eq!(
            config(Pooling::Cls).pool(&HIDDEN, 2, &spans),
            vec![vec![3.0, 4.0]]
        );
        // Weights 2 and 3: (2*3 + 3*5) / 5.
        assert_eq!(
            config(Pooling::WeightedMean).pool(&HIDDEN, 2, &spans)[0][0],
            21.0 / 5.0
        );
        // Included, the prompt counts.
        assert_eq!(
            PoolingConfig::single(Pooling::Mean).pool(&HIDDEN, 2, &spans),
            vec![vec![3.0, 4.0]]
        );
        // A prompt that is the whole row: zeros, CLS still the first token.
        let all = [RowSpan {
            prompt: 5,
            ..RowSpan::new(0, 3)
        }];
        assert_eq!(
            config(Pooling::Mean).pool(&HIDDEN, 2, &all),
            vec![vec![0.0, 0.0]]
        );
        assert_eq!(
            config(Pooling::Cls).pool(&HIDDEN, 2, &all),
            vec![vec![1.0, 2.0]]
        );
    }

    #[test]
    fn packed_rows_pool_like_padded_ones() {
        // The same two texts packed: 3 + 2 tokens, no junk.
        let packed = &HIDDEN[..10];
        for mode in Pooling::ALL {
            assert_eq!(pool(packed, &SPANS, mode), pool(&HIDDEN, &SPANS, mode));
        }
    }

    #[test]
    fn empty_rows_pool_to_zeros() {
        for mode in Pooling::ALL {
            assert_eq!(pool(&[], &[RowSpan::new(0, 0)], mode), vec![vec![0.0, 0.0]]);
        }
    }

    #[test]
    fn names_round_trip() {
        for mode in Pooling::ALL {
            assert_eq!(Pooling::parse(mode.name()), Some(mode));
        }
        assert_eq!(Pooling::parse("last_token"), Some(Pooling::LastToken));
        assert_eq!(Pooling::parse("median"), None);
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
