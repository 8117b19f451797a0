//! What a cached entry must be to be served for a model, checked on every read of every
//! tier (the in-process cache, its restored file, the shared store) before the entry is
//! served or copied into another tier: finite floats, the model's dimension, and a token
//! count the model could have produced for that text.

use super::CachedEmbedding;
use crate::model::Model;
use crate::spec::ModelSpec;

/// The most tokens a text may count, from what is known of its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenLimit {
    /// The model's tokenizer cuts every text at this many tokens (special tokens included).
    Model(usize),
    /// The model does not tokenize apart: its counts are the estimate, [`estimated_tokens`].
    Estimate,
    /// The model has not loaded in this process yet. No tokenizer makes more than two
    /// tokens per byte of text (one plus a word marker) and a few special ones.
    Unknown,
}

/// The token count usage reports for `text` with an embedder that does not tokenize apart.
pub(crate) fn estimated_tokens(text: &str) -> usize {
    text.len() / 4 + 2
}

/// Special tokens a tokenizer may add to a text beyond two per byte.
const SPECIAL_TOKENS: usize = 16;

/// What the entries of one model must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryBounds {
    /// Every vector's length, when known (the loaded model's, else `models.<id>.dimension`).
    pub dimension: Option<usize>,
    /// The most tokens of one text.
    pub tokens: TokenLimit,
}

/// Why an entry was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Flaw {
    /// A NaN or an infinity.
    NotFinite,
    /// Another length than the model's vectors.
    Dimension(usize),
    /// More tokens than the model reads from that text.
    Tokens(u32),
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flaw::NotFinite => write!(f, "a NaN or infinite value"),
            Flaw::Dimension(d) => write!(f, "{d} dimensions"),
            Flaw::Tokens(n) => write!(f, "{n} tokens"),
        }
    }
}

impl EntryBounds {
    /// What the settings alone say (before the model has loaded in this process).
    pub fn of_spec(spec: &ModelSpec) -> Self {
        Self {
            dimension: spec.dimension,
            tokens: TokenLimit::Unknown,
        }
    }

    /// What a loaded model says; `None` for a model that does not embed. A dimension of 0
    /// is no vector's, so it says nothing: the first entry admitted sets it instead (else
    /// every entry, and with it the model's cache, would be refused).
    pub fn of_model(model: &dyn Model) -> Option<Self> {
        let embedder = model.as_embedder()?;
        let tokens = match embedder.as_token_embedder() {
            Some(tokenizer) => TokenLimit::Model(tokenizer.max_tokens()),
            None => TokenLimit::Estimate,
        };
        Some(Self {
            dimension: Some(embedder.dimension()).filter(|d| *d > 0),
            tokens,
        })
    }
}

/// Checks the entries of one response: against the model's bounds, and, when the model's
/// dimension is not known yet, against the first entry admitted (one response never mixes
/// vector lengths).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryCheck {
    bounds: EntryBounds,
}

impl EntryCheck {
    pub fn new(bounds: EntryBounds) -> Self {
        Self { bounds }
    }

    /// The dimension entries must have, when known so far.
    pub fn dimension(&self) -> Option<usize> {
        self.bounds.dimension
    }

    /// Whether `entry` may be served as the embedding of `text`.
    pub fn admit(&mut self, text: &str, entry: &CachedEmbedding) -> Result<(), Flaw> {
        let dimension = entry.vector.len();
        if self.bounds.dimension.is_some_and(|d| d != dimension) || dimension == 0 {
            return Err(Flaw::Dimension(dimension));
        }
        let most = match self.bounds.tokens {
            TokenLimit::Model(limit) => limit,
            TokenLimit::Estimate => estimated_tokens(text),
            TokenLimit::Unknown => text.len().saturating_mul(2) + SPECIAL_TOKENS,
        };
        if entry.tokens as usize > most {
            return Err(Flaw::Tokens(entry.tokens));
        }
        if !entry.vector.iter().all(|x| x.is_finite()) {
            return Err(Flaw::NotFinite);
        }
        self.bounds.dimension = Some(dimension);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Embedder, ModelInfo};

    /// An embedder that reports `dimension` and embeds nothing.
    struct Reporting {
        dimension: usize,
    }

    impl Model for Reporting {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                model_type: "embedding".into(),
                backend: "test".into(),
                device: crate::Device::Cpu,
                dimension: Some(self.dimension),
                bytes: None,
            }
        }
        fn as_embedder(&self) -> Option<&dyn Embedder> {
            Some(self)
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    impl Embedder for Reporting {
        fn dimension(&self) -> usize {
            self.dimension
        }
        fn embed(&self, _texts: &[&str]) -> crate::Result<Vec<Vec<f32>>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_model_reporting_dimension_0_lets_the_first_entry_set_it() {
        let bounds = EntryBounds::of_model(&Reporting { dimension: 0 }).unwrap();
        assert_eq!(bounds.dimension, None);
        let mut check = EntryCheck::new(bounds);
        // (An embedder without a tokenizer of its own: "hi" counts 2 estimated tokens.)
        assert_eq!(check.admit("hi", &entry(&[1.0, 2.0], 2)), Ok(()));
        assert_eq!(
            check.admit("hi", &entry(&[1.0], 2)),
            Err(Flaw::Dimension(1))
        );
        let known = EntryBounds::of_model(&Reporting { dimension: 2 }).unwrap();
        assert_eq!(known.dimension, Some(2));
    }

    fn entry(vector: &[f32], tokens: u32) -> CachedEmbedding {
        CachedEmbedding {
            vector: vector.to_vec().into(),
            tokens,
        }
    }

    #[test]
    fn refuses_what_no_model_makes() {
        let known = EntryBounds {
            dimension: Some(2),
            tokens: TokenLimit::Model(8),
        };
        let mut check = EntryCheck::new(known);
        assert_eq!(check.admit("hi", &entry(&[1.0, 2.0], 3)), Ok(()));
        assert_eq!(
            check.admit("hi", &entry(&[f32::NAN, 2.0], 3)),
            Err(Flaw::NotFinite)
        );
        assert_eq!(
            check.admit("hi", &entry(&[1.0, f32::NEG_INFINITY], 3)),
            Err(Flaw::NotFinite)
        );
        assert_eq!(
            check.admit("hi", &entry(&[1.0, 2.0, 3.0], 3)),
            Err(Flaw::Dimension(3))
        );
        assert_eq!(
            check.admit("hi", &entry(&[1.0, 2.0], 9)),
            Err(Flaw::Tokens(9))
        );
        assert_eq!(check.admit("hi", &entry(&[], 1)), Err(Flaw::Dimension(0)));
    }

    #[test]
    fn before_the_model_is_known_the_text_bounds_the_tokens_and_the_first_entry_the_dimension() {
        let mut check = EntryCheck::new(EntryBounds {
            dimension: None,
            tokens: TokenLimit::Unknown,
        });
        assert_eq!(check.admit("four", &entry(&[1.0, 2.0], 24)), Ok(()));
        assert_eq!(check.dimension(), Some(2));
        assert_eq!(
            check.admit("four", &entry(&[1.0, 2.0], u32::MAX)),
            Err(Flaw::Tokens(u32::MAX))
        );
        assert_eq!(
            check.admit("four", &entry(&[1.0], 2)),
            Err(Flaw::Dimension(1))
        );
        let mut estimate = EntryCheck::new(EntryBounds {
            dimension: Some(1),
            tokens: TokenLimit::Estimate,
        });
        assert_eq!(estimate.admit("12345678", &entry(&[1.0], 4)), Ok(()));
        assert_eq!(
            estimate.admit("12345678", &entry(&[1.0], 5)),
            Err(Flaw::Tokens(5))
        );
    }
}
