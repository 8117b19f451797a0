//! What a checkpoint is loaded for: sentence embeddings (type `embedding`), or a head on the
//! same bodies whose rows are scores (`rerank`, `classifier`) or SPLADE vectors
//! (`sparse`). Engine-free: each backend runs the head its own way.

use crate::head_config::score_head;
use crate::heads::{RowOutput, SpladePooling};
use crate::pipeline::EmbeddingPipeline;
use model_manager_core::{ErrorCode, ModelError, ModelSpec, Result};
use serde_json::Value;
use std::path::Path;

/// The model type a checkpoint is loaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Sentence embeddings (sentence-transformers folders).
    Embedding,
    /// A one-label cross-encoder (`XxxForSequenceClassification`).
    Rerank,
    /// A sequence classifier with labels.
    Classifier,
    /// SPLADE over a masked-LM head (`XxxForMaskedLM`).
    Sparse,
}

impl Purpose {
    /// The registry key of the type.
    pub fn model_type(self) -> &'static str {
        match self {
            Purpose::Embedding => "embedding",
            Purpose::Rerank => "rerank",
            Purpose::Classifier => "classifier",
            Purpose::Sparse => "sparse",
        }
    }

    /// The ending of the checkpoint's `architectures` entry the purpose needs.
    fn architecture(self) -> Option<&'static str> {
        match self {
            Purpose::Embedding => None,
            Purpose::Rerank | Purpose::Classifier => Some("ForSequenceClassification"),
            Purpose::Sparse => Some("ForMaskedLM"),
        }
    }

    /// What the pipeline makes of the rows of the checkpoint whose `config.json` is
    /// `config` (in `folder`): its scoring head's labels and activation, or its SPLADE
    /// pooling. `MODEL_LOAD_ERROR` when the checkpoint has no head of the kind (its
    /// `architectures` say), or a cross-encoder has more than one label.
    pub fn row_output(self, config: &Value, folder: &Path) -> Result<RowOutput> {
        let config_path = folder.join("config.json");
        let bad = |message: String| {
            ModelError::file_load(ErrorCode::ModelLoadError, &config_path, message)
        };
        if let Some(wanted) = self.architecture() {
            let architectures = config["architectures"].as_array();
            let fits = architectures.is_none_or(|list| {
                list.iter()
                    .any(|a| a.as_str().is_some_and(|a| a.ends_with(wanted)))
            });
            if !fits {
                let listed = architectures
                    .map(|a| Value::Array(a.clone()))
                    .unwrap_or_default();
                return Err(bad(format!(
                    "the checkpoint has no head type `{}` runs: its architectures {listed} have no `…{wanted}`",
                    self.model_type()
                )));
            }
        }
        Ok(match self {
            Purpose::Embedding => RowOutput::Sentence,
            Purpose::Rerank | Purpose::Classifier => {
                let head = score_head(config, &config_path, self == Purpose::Rerank)?;
                if self == Purpose::Rerank && head.labels.len() != 1 {
                    return Err(bad(format!(
                        "a cross-encoder for rerank has one label, this one has {} (use type \"classifier\")",
                        head.labels.len()
                    )));
                }
                RowOutput::Logits(head)
            }
            Purpose::Sparse => {
                let vocab = config["vocab_size"].as_u64().unwrap_or(0) as usize;
                if vocab == 0 {
                    return Err(bad("a SPLADE model needs `vocab_size`".into()));
                }
                RowOutput::Splade(SpladePooling::read(folder, vocab)?)
            }
        })
    }

    /// The pipeline of a model loaded for this purpose with the tokenizer at `tokenizer`:
    /// sentence-transformers' modules for embeddings, none for the others.
    pub fn pipeline(
        self,
        folder: &Path,
        tokenizer: &Path,
        spec: &ModelSpec,
        model_max: Option<usize>,
        output: RowOutput,
    ) -> Result<EmbeddingPipeline> {
        match output {
            RowOutput::Sentence => {
                EmbeddingPipeline::load(folder, tokenizer, spec, model_max, true)
            }
            other => EmbeddingPipeline::load_rows(folder, tokenizer, spec, model_max, other),
        }
    }
}
