//! One packed batch as every block reads it: the id tensors, each sequence's length and
//! each token's position in its sequence.

use candle_core::{bail, Device, Result, Tensor};

/// The sequences of a forward pass, laid end to end.
pub struct Batch<'a> {
    /// Token ids, `[tokens]`.
    pub ids: Tensor,
    /// The ids as given (for position rules that look at them).
    pub id_values: &'a [u32],
    /// Segment ids, `[tokens]`.
    pub type_ids: Tensor,
    /// The segment ids as given.
    pub type_values: &'a [u32],
    /// Tokens of each sequence, in order.
    pub lengths: &'a [usize],
    /// Each token's position in its sequence, from 0.
    pub positions: Vec<u32>,
    /// The longest sequence.
    pub longest: usize,
}

impl<'a> Batch<'a> {
    /// Checks the sizes and builds the tensors on `device`.
    pub fn new(
        ids: &'a [u32],
        type_ids: &'a [u32],
        lengths: &'a [usize],
        device: &Device,
    ) -> Result<Self> {
        let tokens: usize = lengths.iter().sum();
        if ids.len() != tokens || type_ids.len() != tokens {
            bail!(
                "packed batch of {} ids and {} type ids for lengths summing to {tokens}",
                ids.len(),
                type_ids.len()
            );
        }
        let positions: Vec<u32> = lengths.iter().flat_map(|&n| 0..n as u32).collect();
        let tensor = |data: &[u32]| Tensor::from_slice(data, tokens, device);
        Ok(Self {
            ids: tensor(ids)?,
            id_values: ids,
            type_ids: tensor(type_ids)?,
            type_values: type_ids,
            lengths,
            positions,
            longest: lengths.iter().copied().max().unwrap_or(0),
        })
    }

    /// Tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.positions.len()
    }
}
