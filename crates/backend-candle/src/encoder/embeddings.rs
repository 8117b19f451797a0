//! Token embeddings: word vectors, plus learned positions and segment types where the
//! family has them, then a norm where it has one.

use super::batch::Batch;
use super::norm::Norm;
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

/// How learned absolute positions are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// From 0 in each sequence (BERT, DistilBERT).
    FromZero,
    /// After the padding id, as RoBERTa's `create_position_ids_from_input_ids` numbers them:
    /// `padding_idx + 1 + i` for the i-th token that is not padding, `padding_idx` for one
    /// that is (XLM-RoBERTa, CamemBERT, MPNet).
    AfterPadding(u32),
}

/// A learned table of absolute positions.
pub struct PositionTable {
    /// The vectors.
    pub table: Embedding,
    /// Rows of the table.
    pub size: usize,
    /// How positions are numbered.
    pub numbering: Positions,
}

/// The embedding block of an encoder.
pub struct Embeddings {
    word: Embedding,
    vocab: usize,
    positions: Option<PositionTable>,
    /// The segment table and its rows.
    types: Option<(Embedding, usize)>,
    norm: Option<Norm>,
}

/// A `[rows, hidden]` table named `name` under `vb`.
pub fn table(vb: &VarBuilder, name: &str, rows: usize, hidden: usize) -> Result<Embedding> {
    Ok(Embedding::new(
        vb.get((rows, hidden), &format!("{name}.weight"))?,
        hidden,
    ))
}

impl Embeddings {
    /// Word vectors of a `vocab`-row table; add positions, types and a norm with the
    /// `with_*` methods.
    pub fn new(word: Embedding, vocab: usize) -> Self {
        Self {
            word,
            vocab,
            positions: None,
            types: None,
            norm: None,
        }
    }

    /// Adds learned absolute positions.
    pub fn with_positions(mut self, positions: PositionTable) -> Self {
        self.positions = Some(positions);
        self
    }

    /// Adds segment types from a table of `rows` types.
    pub fn with_types(mut self, table: Embedding, rows: usize) -> Self {
        self.types = Some((table, rows));
        self
    }

    /// Normalizes the sum.
    pub fn with_norm(mut self, norm: Norm) -> Self {
        self.norm = Some(norm);
        self
    }

    /// The longest sequence the position table numbers (unbounded without one).
    pub fn max_tokens(&self) -> Option<usize> {
        self.positions.as_ref().map(|p| match p.numbering {
            Positions::FromZero => p.size,
            Positions::AfterPadding(pad) => p.size.saturating_sub(pad as usize + 1),
        })
    }

    /// Refuses ids past the tables (candle checks indices on the CPU only).
    pub fn check(&self, batch: &Batch) -> Result<()> {
        if let Some(id) = batch
            .id_values
            .iter()
            .find(|&&id| id as usize >= self.vocab)
        {
            bail!("token id {id} is outside the vocabulary of {}", self.vocab);
        }
        if let Some((_, types)) = &self.types {
            if let Some(id) = batch.type_values.iter().find(|&&id| id as usize >= *types) {
                bail!("token type id {id} is outside the model's {types} types");
            }
        }
        if let Some(max) = self.max_tokens() {
            if batch.longest > max {
                bail!(
                    "a sequence of {} tokens is longer than the model's {max} positions",
                    batch.longest
                );
            }
        }
        Ok(())
    }

    /// `norm(word + type + position)` for every token of the batch, `[tokens, hidden]`.
    pub fn forward(&self, batch: &Batch, fused: bool) -> Result<Tensor> {
        let mut x = self.word.forward(&batch.ids)?;
        if let Some((types, _)) = &self.types {
            x = (x + types.forward(&batch.type_ids)?)?;
        }
        let positions = match &self.positions {
            Some(p) => Some(p.table.forward(&position_ids(p.numbering, batch)?)?),
            None => None,
        };
        match (positions, &self.norm) {
            (Some(p), Some(norm)) => norm.add_forward(x, &p, fused),
            (Some(p), None) => x + p,
            (None, Some(norm)) => norm.forward(&x, fused),
            (None, None) => Ok(x),
        }
    }
}

fn position_ids(numbering: Positions, batch: &Batch) -> Result<Tensor> {
    let ids: Vec<u32> = match numbering {
        Positions::FromZero => batch.positions.clone(),
        Positions::AfterPadding(pad) => {
            let mut out = Vec::with_capacity(batch.tokens());
            let mut start = 0;
            for &len in batch.lengths {
                let mut seen = 0;
                for &id in &batch.id_values[start..start + len] {
                    if id == pad {
                        out.push(pad);
                    } else {
                        seen += 1;
                        out.push(pad + seen);
                    }
                }
                start += len;
            }
            out
        }
    };
    Tensor::from_vec(ids, batch.tokens(), batch.ids.device())
}
