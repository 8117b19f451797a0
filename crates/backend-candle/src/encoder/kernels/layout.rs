//! How the packed attention kernels address their work: the head layout of a fused QKV row,
//! one (sequence, head) task, and what changes a score before its softmax (masks, a relative
//! position bias).

/// Layout of a fused QKV row: `[Q | K | V]`, Q `heads` blocks of `head_dim` values, K and V
/// `kv_heads` blocks each (fewer than `heads` for grouped-query attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key and value heads; `heads` must be a multiple of it.
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

impl Heads {
    /// Multi-head attention with as many key/value heads as query heads.
    pub fn new(heads: usize, head_dim: usize) -> Self {
        Self {
            heads,
            kv_heads: heads,
            head_dim,
        }
    }

    /// Width of Q (and of the attention output).
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of a whole QKV row.
    pub fn row(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Where K of the key/value head that query head `head` reads starts in a QKV row.
    pub fn k_offset(&self, head: usize) -> usize {
        self.hidden() + self.kv_head(head) * self.head_dim
    }

    /// Where V of the key/value head that query head `head` reads starts in a QKV row.
    pub fn v_offset(&self, head: usize) -> usize {
        self.hidden() + (self.kv_heads + self.kv_head(head)) * self.head_dim
    }

    fn kv_head(&self, head: usize) -> usize {
        head / (self.heads / self.kv_heads.max(1)).max(1)
    }

    /// Whether the sizes make sense: some heads, of some width, in whole groups.
    pub fn is_valid(&self) -> bool {
        self.heads > 0
            && self.kv_heads > 0
            && self.head_dim > 0
            && self.heads.is_multiple_of(self.kv_heads)
    }

    /// `1 / sqrt(head_dim)`.
    pub(crate) fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// One (sequence, head) pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Task {
    /// First row of the sequence.
    pub start: usize,
    /// Its tokens.
    pub len: usize,
    /// The query head.
    pub head: usize,
}

/// Which keys a query may attend to, by position in its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Every key of the sequence (bidirectional encoders).
    Full,
    /// Keys at or before the query (decoders).
    Causal,
    /// Keys at most this far from the query, either side (ModernBERT's local layers).
    Window(usize),
}

impl Mask {
    /// Whether a query at `query` may attend to the key at `key`.
    pub fn allows(self, query: usize, key: usize) -> bool {
        match self {
            Mask::Full => true,
            Mask::Causal => key <= query,
            Mask::Window(radius) => query.abs_diff(key) <= radius,
        }
    }
}

/// A bias added to every score by the distance between key and query (MPNet's learned
/// relative positions), per head.
#[derive(Debug, Clone, PartialEq)]
pub struct RelativeBias {
    heads: usize,
    /// Distances run from `-(span - 1)` to `span - 1`.
    span: usize,
    /// `[heads][2 * span - 1]`: the bias of distance `key - query` at `distance + span - 1`.
    values: Vec<f32>,
}

impl RelativeBias {
    /// The bias of each head for every distance up to `span - 1` either way, from
    /// `bias(head, key - query)`.
    pub fn new(heads: usize, span: usize, bias: impl Fn(usize, i64) -> f32) -> Self {
        let span = span.max(1);
        let width = 2 * span - 1;
        let mut values = Vec::with_capacity(heads * width);
        for head in 0..heads {
            values.extend((0..width).map(|i| bias(head, i as i64 - (span as i64 - 1))));
        }
        Self {
            heads,
            span,
            values,
        }
    }

    /// Sequences up to this long are covered.
    pub fn span(&self) -> usize {
        self.span
    }

    /// The biases of `head` for keys `0..` seen from the query at `query`.
    fn row(&self, head: usize, query: usize) -> &[f32] {
        let width = 2 * self.span - 1;
        &self.values[head * width + self.span - 1 - query..(head + 1) * width]
    }
}

/// What happens to the raw scores `q . k` of a head before its softmax: scaling, plus the
/// mask and bias if any.
#[derive(Debug, Clone, Copy)]
pub struct ScoreRules<'a> {
    /// The keys each query may see.
    pub mask: Mask,
    /// An additive bias by relative position, if the model has one.
    pub bias: Option<&'a RelativeBias>,
}

impl ScoreRules<'_> {
    /// Bidirectional attention without a bias: scores are only scaled.
    pub const FULL: ScoreRules<'static> = ScoreRules {
        mask: Mask::Full,
        bias: None,
    };

    /// Whether scores need more than a scale (a mask or a bias).
    pub fn is_plain(&self) -> bool {
        self.mask == Mask::Full && self.bias.is_none()
    }

    /// Whether these rules cover sequences of `len` tokens.
    pub fn covers(&self, len: usize) -> bool {
        self.bias.is_none_or(|b| len <= b.span())
    }

    /// `scores[j] = scale * scores[j] + bias(j - query)`, or minus infinity where the mask
    /// hides key `j`, for the first `len` scores of the query at `query` in its sequence.
    pub(crate) fn apply(
        &self,
        head: usize,
        query: usize,
        scores: &mut [f32],
        len: usize,
        scale: f32,
    ) {
        let scores = &mut scores[..len];
        match self.bias {
            Some(bias) => {
                let row = &bias.row(head, query)[..len];
                scores
                    .iter_mut()
                    .zip(row)
                    .for_each(|(s, b)| *s = *s * scale + b);
            }
            None => scores.iter_mut().for_each(|s| *s *= scale),
        }
        match self.mask {
            Mask::Full => {}
            Mask::Causal => scores[(query + 1).min(len)..].fill(f32::NEG_INFINITY),
            Mask::Window(radius) => {
                scores[..query.saturating_sub(radius)].fill(f32::NEG_INFINITY);
                scores[(query + radius + 1).min(len)..].fill(f32::NEG_INFINITY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_heads_share_keys_and_values() {
        let heads = Heads {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        };
        assert!(heads.is_valid());
        assert_eq!((heads.hidden(), heads.row()), (32, 64));
        assert_eq!([0, 1, 2, 3].map(|h| heads.k_offset(h)), [32, 32, 40, 40]);
        assert_eq!([0, 1, 2, 3].map(|h| heads.v_offset(h)), [48, 48, 56, 56]);
        let plain = Heads::new(2, 8);
        assert_eq!((plain.k_offset(1), plain.v_offset(1)), (24, 40));
        assert!(!Heads {
            kv_heads: 3,
            ..heads
        }
        .is_valid());
    }

    #[test]
    fn rules_scale_bias_and_mask_like_the_definition() {
        let bias = RelativeBias::new(2, 4, |h, d| (h as i64 * 100 + d) as f32);
        for (mask, query) in [
            (Mask::Full, 1),
            (Mask::Causal, 1),
            (Mask::Window(1), 2),
            (Mask::Window(0), 0),
        ] {
            let rules = ScoreRules {
                mask,
                bias: Some(&bias),
            };
            let mut scores = vec![1.0, 2.0, 3.0, 4.0];
            rules.apply(1, query, &mut scores, 4, 0.5);
            for (j, s) in scores.iter().enumerate() {
                let want = if mask.allows(query, j) {
                    0.5 * (j + 1) as f32 + (100 + j as i64 - query as i64) as f32
                } else {
                    f32::NEG_INFINITY
                };
                assert_eq!(*s, want, "{mask:?} query {query} key {j}");
            }
        }
        assert!(ScoreRules::FULL.is_plain() && ScoreRules::FULL.covers(10_000));
        let rules = ScoreRules {
            mask: Mask::Full,
            bias: Some(&bias),
        };
        assert!(rules.covers(4) && !rules.covers(5));
    }
}
