//! What the rows an embedder's engine computes are: sentence embeddings (the default), the
//! logits of a scoring head (cross-encoders, classifiers), or sparse vectors over the
//! vocabulary (SPLADE). All three go through the same batching engine as `Vec<f32>` rows;
//! these types say how to read them.

use crate::error::{ErrorCode, ModelError, Result};
use serde::Serialize;

/// What an [`crate::Embedder`]'s rows are.
#[derive(Debug, Clone, PartialEq)]
pub enum Outputs {
    /// Sentence embeddings, one vector per text.
    Embeddings,
    /// One logit per label for each text or pair (a sequence-classification head).
    Scores(ScoreHead),
    /// A sparse vector over a vocabulary of this many entries, rows written by
    /// [`SparseVector::to_row`].
    Sparse {
        /// Entries of the vocabulary.
        vocab: usize,
    },
}

impl Outputs {
    /// The model type that serves these rows, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Outputs::Embeddings => "embedding",
            Outputs::Scores(head) if head.labels.len() == 1 => "rerank",
            Outputs::Scores(_) => "classifier",
            Outputs::Sparse { .. } => "sparse",
        }
    }
}

/// How a scoring head's logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreActivation {
    /// `1 / (1 + e^-x)` for each logit (one-label cross-encoders, multi-label classifiers).
    Sigmoid,
    /// `e^x / sum(e^x)` over the labels (single-label classifiers).
    Softmax,
    /// `tanh(x)`.
    Tanh,
    /// The logits as they are.
    Identity,
}

impl ScoreActivation {
    /// The activation a torch class path names (sentence-transformers' `activation_fn`:
    /// `torch.nn.modules.activation.Sigmoid`…); `None` for one it does not know.
    pub fn from_torch(path: &str) -> Option<Self> {
        Some(match path.rsplit('.').next()? {
            "Sigmoid" => Self::Sigmoid,
            "Softmax" => Self::Softmax,
            "Tanh" => Self::Tanh,
            "Identity" => Self::Identity,
            _ => return None,
        })
    }

    /// `logits` turned into scores.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Self::Sigmoid => logits.iter().map(|&x| sigmoid(x)).collect(),
            Self::Tanh => logits.iter().map(|x| x.tanh()).collect(),
            Self::Identity => logits.to_vec(),
            Self::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f64> = logits.iter().map(|&x| f64::from(x - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                exps.iter().map(|e| (e / total) as f32).collect()
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(x)).exp())) as f32
}

/// A sequence-classification head: its labels, in logit order, and their activation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreHead {
    /// Label names (`id2label`), one per logit.
    pub labels: Vec<String>,
    /// How logits become scores.
    pub activation: ScoreActivation,
}

/// A sparse vector: the non-zero entries, by index into the vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SparseVector {
    /// Indices of the non-zero entries, ascending.
    pub indices: Vec<u32>,
    /// Their values.
    pub values: Vec<f32>,
}

/// Indices travel as f32 in engine rows: exact below 2^24.
const MAX_INDEX: usize = 1 << 24;

impl SparseVector {
    /// The non-zero entries of a dense vector.
    pub fn from_dense(dense: &[f32]) -> Self {
        let mut out = Self::default();
        for (i, &v) in dense.iter().enumerate() {
            if v != 0.0 {
                out.indices.push(i as u32);
                out.values.push(v);
            }
        }
        out
    }

    /// The vector as one engine row: `[index, value, index, value, …]`. Vocabularies past
    /// 2^24 entries cannot be written so (an f32 holds integers exactly up to 2^24).
    pub fn to_row(&self) -> Result<Vec<f32>> {
        if let Some(&too_big) = self.indices.iter().find(|&&i| i as usize >= MAX_INDEX) {
            return Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!("sparse index {too_big} is past the 2^24 an engine row holds"),
            ));
        }
        Ok(self
            .indices
            .iter()
            .zip(&self.values)
            .flat_map(|(&i, &v)| [i as f32, v])
            .collect())
    }

    /// The vector an engine row holds, checked against a vocabulary of `vocab` entries.
    pub fn from_row(row: &[f32], vocab: usize) -> Result<Self> {
        let bad = |what: &str| {
            ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!("a sparse row {what}"),
            )
        };
        if !row.len().is_multiple_of(2) {
            return Err(bad("has an odd number of values"));
        }
        let mut out = Self::default();
        for pair in row.chunks_exact(2) {
            let (i, v) = (pair[0], pair[1]);
            let valid = i >= 0.0 && i.fract() == 0.0 && (i as usize) < vocab && v.is_finite();
            if !valid {
                return Err(bad(&format!(
                    "holds the entry ({i}, {v}) outside a vocabulary of {vocab}"
                )));
            }
            if out.indices.last().is_some_and(|&last| last as f32 >= i) {
                return Err(bad("is not in ascending index order"));
            }
            out.indices.push(i as u32);
            out.values.push(v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_rows_round_trip_and_refuse_what_they_cannot_hold() {
        let v = SparseVector::from_dense(&[0.0, 1.5, 0.0, 0.25]);
        assert_eq!(
            (v.indices.clone(), v.values.clone()),
            (vec![1, 3], vec![1.5, 0.25])
        );
        let row = v.to_row().unwrap();
        assert_eq!(row, vec![1.0, 1.5, 3.0, 0.25]);
        assert_eq!(SparseVector::from_row(&row, 4).unwrap(), v);
        assert!(SparseVector::from_row(&row, 3).is_err());
        assert!(SparseVector::from_row(&[1.0], 4).is_err());
        assert!(SparseVector::from_row(&[3.0, 1.0, 1.0, 1.0], 4).is_err());
        assert!(SparseVector::from_row(&[1.5, 1.0], 4).is_err());
        assert!(SparseVector::from_row(&[1.0, f32::NAN], 4).is_err());
        let huge = SparseVector {
            indices: vec![1 << 24],
            values: vec![1.0],
        };
        assert!(huge.to_row().is_err());
    }

    #[test]
    fn activations_follow_their_definitions() {
        let soft = ScoreActivation::Softmax.apply(&[1.0, 2.0, 3.0]);
        assert!((soft.iter().sum::<f32>() - 1.0).abs() < 1e-6 && soft[2] > soft[1]);
        assert_eq!(ScoreActivation::Sigmoid.apply(&[0.0]), vec![0.5]);
        assert_eq!(
            ScoreActivation::from_torch("torch.nn.modules.linear.Identity"),
            Some(ScoreActivation::Identity)
        );
        assert_eq!(ScoreActivation::from_torch("my.Custom"), None);
        // Large logits stay finite.
        assert_eq!(ScoreActivation::Softmax.apply(&[1000.0, 0.0])[0], 1.0);
    }
}
