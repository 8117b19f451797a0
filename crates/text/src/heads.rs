//! What a pipeline's rows are beyond sentence embeddings: the logits of a scoring head
//! (cross-encoders, classifiers), or SPLADE's sparse vectors pooled from token logits over
//! the vocabulary.

use crate::batching::RowSpan;
use model_manager_core::{ErrorCode, ModelError, Result, ScoreHead, SparseVector};
use serde_json::Value;
use std::path::Path;

/// What a pipeline turns each row of a forward pass into.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutput {
    /// A sentence embedding: pooled, then the folder's Dense and Normalize modules.
    Sentence,
    /// The logits of a scoring head, as the encoder gives them (one pooled row per input).
    Logits(ScoreHead),
    /// SPLADE: token logits over the vocabulary, activated and pooled per input.
    Splade(SpladePooling),
}

/// How token logits become a SPLADE vector (sentence-transformers' `SpladePooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpladePooling {
    /// `max` (the default) or `sum` over the tokens.
    pub sum: bool,
    /// `log1p_relu`: `log(1 + log(1 + relu(x)))` instead of `log(1 + relu(x))`.
    pub double_log: bool,
    /// Entries of the vocabulary.
    pub vocab: usize,
}

impl SpladePooling {
    /// The folder's `SpladePooling` module config (`modules.json`), else max over
    /// `log(1 + relu(x))` as sentence-transformers' default.
    pub fn read(folder: &Path, vocab: usize) -> Result<Self> {
        let mut out = Self {
            sum: false,
            double_log: false,
            vocab,
        };
        let modules = folder.join("modules.json");
        let Ok(text) = std::fs::read_to_string(&modules) else {
            return Ok(out);
        };
        let bad = |e: String| ModelError::file_load(ErrorCode::ModelLoadError, &modules, e);
        let list: Vec<Value> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let Some(module) = list.iter().find(|m| {
            m["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("SpladePooling"))
        }) else {
            return Ok(out);
        };
        let config_path = folder
            .join(module["path"].as_str().unwrap_or_default())
            .join("config.json");
        let config: Value = std::fs::read_to_string(&config_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        out.sum = match config["pooling_strategy"].as_str().unwrap_or("max") {
            "max" => false,
            "sum" => true,
            other => {
                return Err(bad(format!(
                    "SPLADE pooling strategy `{other}` is not supported (max, sum)"
                )))
            }
        };
        out.double_log = match config["activation_function"].as_str().unwrap_or("relu") {
            "relu" => false,
            "log1p_relu" => true,
            other => {
                return Err(bad(format!(
                    "SPLADE activation `{other}` is not supported (relu, log1p_relu)"
                )))
            }
        };
        Ok(out)
    }

    fn activate(&self, x: f32) -> f32 {
        let y = x.max(0.0).ln_1p();
        if self.double_log {
            y.ln_1p()
        } else {
            y
        }
    }

    /// One sparse vector per span of token logits (`[tokens, vocab]`, row-major).
    pub fn pool(&self, logits: &[f32], spans: &[RowSpan]) -> Vec<SparseVector> {
        let vocab = self.vocab;
        spans
            .iter()
            .map(|span| {
                let mut pooled = vec![0f32; vocab];
                for t in span.start..span.start + span.len {
                    let row = &logits[t * vocab..(t + 1) * vocab];
                    for (p, &x) in pooled.iter_mut().zip(row) {
                        match self.sum {
                            true => *p += self.activate(x),
                            // The activation is monotonic: the max of the logits, activated
                            // once at the end.
                            false => *p = p.max(x),
                        }
                    }
                }
                if !self.sum {
                    pooled.iter_mut().for_each(|p| *p = self.activate(*p));
                }
                SparseVector::from_dense(&pooled)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splade_pools_the_activated_logits_of_each_span() {
        let pooling = SpladePooling {
            sum: false,
            double_log: false,
            vocab: 3,
        };
        // Two sequences: tokens 0-1 and token 2.
        let logits = [1.0, -2.0, 0.0, 3.0, -1.0, 0.0, -5.0, 0.5, 0.0];
        let spans = [RowSpan::new(0, 2), RowSpan::new(2, 1)];
        let out = pooling.pool(&logits, &spans);
        assert_eq!(out[0].indices, vec![0]);
        assert!((out[0].values[0] - 4f32.ln()).abs() < 1e-6);
        assert_eq!((out[1].indices.clone(), out[1].values.len()), (vec![1], 1));
        let sum = SpladePooling {
            sum: true,
            double_log: true,
            ..pooling
        };
        let out = sum.pool(&logits, &spans[..1]);
        let want = (2f32.ln().ln_1p()) + (4f32.ln().ln_1p());
        assert!((out[0].values[0] - want).abs() < 1e-6);
    }
}
