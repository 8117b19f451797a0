//! Batches of token sequences as a forward pass takes them: padded to the longest
//! (`[batch, seq]`) or packed end to end without padding.

use model_manager_core::backend::TokenizedText;

/// Groups text indices into batches of at most `batch_size`, longest first, so each batch
/// pads little. Every index appears exactly once.
pub fn length_sorted_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable, so equal lengths keep input order and results are reproducible.
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Where each row's tokens lie in a forward pass's token output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpan {
    /// Index of the row's first token in the output's token axis.
    pub start: usize,
    /// Real tokens in the row.
    pub len: usize,
    /// Leading tokens that are an instruction prompt ([`TokenizedText::prompt_tokens`]).
    pub prompt: usize,
}

impl RowSpan {
    /// `len` tokens from `start`, no prompt.
    pub const fn new(start: usize, len: usize) -> Self {
        Self {
            start,
            len,
            prompt: 0,
        }
    }
}

/// A batch of token sequences padded to the longest, row-major `[batch, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedBatch {
    /// Rows.
    pub batch: usize,
    /// Columns (the longest sequence).
    pub seq: usize,
    /// Token ids, padded with the tokenizer's pad id.
    pub ids: Vec<u32>,
    /// Segment ids, padded with 0.
    pub type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
}

impl PaddedBatch {
    /// Pads `rows` to their longest member.
    pub fn new(rows: &[&TokenizedText], pad_id: u32) -> Self {
        let seq = rows.iter().map(|t| t.len()).max().unwrap_or(0);
        let batch = rows.len();
        let mut out = Self {
            batch,
            seq,
            ids: vec![pad_id; batch * seq],
            type_ids: vec![0; batch * seq],
            attention_mask: vec![0; batch * seq],
        };
        for (r, tokens) in rows.iter().enumerate() {
            let start = r * seq;
            let n = tokens.len();
            out.ids[start..start + n].copy_from_slice(&tokens.ids);
            out.type_ids[start..start + n].copy_from_slice(&tokens.type_ids);
            out.attention_mask[start..start + n].fill(1);
        }
        out
    }

    /// Real tokens in row `r`.
    pub fn row_length(&self, r: usize) -> usize {
        self.attention_mask[r * self.seq..(r + 1) * self.seq]
            .iter()
            .filter(|&&m| m != 0)
            .count()
    }

    /// Each row's real tokens in a `[batch, seq, hidden]` output (padding is on the right).
    pub fn spans(&self) -> Vec<RowSpan> {
        (0..self.batch)
            .map(|r| RowSpan::new(r * self.seq, self.row_length(r)))
            .collect()
    }
}

/// A batch of token sequences laid end to end without padding: `[total_tokens]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedBatch {
    /// Token ids of every row, concatenated.
    pub ids: Vec<u32>,
    /// Segment ids, likewise.
    pub type_ids: Vec<u32>,
    /// Tokens in each row, in order.
    pub lengths: Vec<usize>,
}

impl PackedBatch {
    /// Concatenates `rows`.
    pub fn new(rows: &[&TokenizedText]) -> Self {
        let total = rows.iter().map(|t| t.len()).sum();
        let mut out = Self {
            ids: Vec::with_capacity(total),
            type_ids: Vec::with_capacity(total),
            lengths: Vec::with_capacity(rows.len()),
        };
        for tokens in rows {
            out.ids.extend_from_slice(&tokens.ids);
            out.type_ids.extend_from_slice(&tokens.type_ids);
            out.lengths.push(tokens.len());
        }
        out
    }

    /// Tokens in the whole batch.
    pub fn total_tokens(&self) -> usize {
        self.ids.len()
    }

    /// Each row's tokens in a `[total_tokens, hidden]` output.
    pub fn spans(&self) -> Vec<RowSpan> {
        let mut start = 0;
        self.lengths
            .iter()
            .map(|&len| {
                let span = RowSpan::new(start, len);
                start += len;
                span
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[u32], type_ids: &[u32]) -> TokenizedText {
        TokenizedText::new(ids.to_vec(), type_ids.to_vec())
    }

    #[test]
    fn batches_cover_every_index_longest_first() {
        let batches = length_sorted_batches(&[3, 9, 1, 9, 5], 2);
        assert_eq!(batches, vec![vec![1, 3], vec![4, 0], vec![2]]);
    }

    #[test]
    fn padding_fills_ids_and_mask() {
        let a = tokens(&[5, 6, 7], &[0, 0, 0]);
        let b = tokens(&[8], &[1]);
        let batch = PaddedBatch::new(&[&a, &b], 0);
        assert_eq!((batch.batch, batch.seq), (2, 3));
        assert_eq!(batch.ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(batch.type_ids, vec![0, 0, 0, 1, 0, 0]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.row_length(1), 1);
        assert_eq!(batch.spans(), vec![RowSpan::new(0, 3), RowSpan::new(3, 1)]);
    }

    #[test]
    fn packing_concatenates_without_padding() {
        let a = tokens(&[5, 6, 7], &[0, 0, 0]);
        let b = tokens(&[8], &[1]);
        let batch = PackedBatch::new(&[&a, &b]);
        assert_eq!(batch.ids, vec![5, 6, 7, 8]);
        assert_eq!(batch.type_ids, vec![0, 0, 0, 1]);
        assert_eq!(batch.total_tokens(), 4);
        assert_eq!(batch.spans(), vec![RowSpan::new(0, 3), RowSpan::new(3, 1)]);
    }
}
