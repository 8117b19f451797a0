//! The candle head a purpose (see [`Purpose`]) puts on a family's body.

use crate::families::heads::{Head, Task};
use crate::families::Family;
use candle_nn::VarBuilder;
use model_manager_core::{ErrorCode, ModelError, Result};
use model_manager_text::{Purpose, RowOutput};
use std::path::Path;

/// The head of `output` (none for sentence embeddings) on the checkpoint at `folder`
/// (`vb` at its root).
pub fn head_for(
    output: &RowOutput,
    family: Family,
    config: &serde_json::Value,
    folder: &Path,
    vb: VarBuilder,
) -> Result<Option<Head>> {
    let task = match output {
        RowOutput::Sentence => return Ok(None),
        RowOutput::Logits(head) => Task::Classify {
            labels: head.labels.len(),
        },
        RowOutput::Splade(pooling) => Task::Sparse(*pooling),
    };
    Head::load(family, config, vb, task).map(Some).map_err(|e| {
        ModelError::new(
            ErrorCode::ModelLoadError,
            format!(
                "the {} checkpoint in {} has no head this type runs: {e}",
                family.name(),
                folder.display()
            ),
        )
        .with("family", family.name())
        .caused_by("CandleError", e)
    })
}

/// `purpose`'s row output and head on the checkpoint.
pub fn headed(
    purpose: Purpose,
    family: Family,
    config: &serde_json::Value,
    folder: &Path,
    vb: VarBuilder,
) -> Result<(RowOutput, Option<Head>)> {
    let output = purpose.row_output(config, folder)?;
    let head = head_for(&output, family, config, folder, vb)?;
    Ok((output, head))
}
