//! Length-sorted batches padded to their longest member.

use crate::tokenize::Tokens;

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
    pub fn new(rows: &[&Tokens], pad_id: u32) -> Self {
        let seq = rows.iter().map(|t| t.ids.len()).max().unwrap_or(0);
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
            let n = tokens.ids.len();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_index_longest_first() {
        let batches = length_sorted_batches(&[3, 9, 1, 9, 5], 2);
        assert_eq!(batches, vec![vec![1, 3], vec![4, 0], vec![2]]);
    }

    #[test]
    fn padding_fills_ids_and_mask() {
        let a = Tokens {
            ids: vec![5, 6, 7],
            type_ids: vec![0, 0, 0],
        };
        let b = Tokens {
            ids: vec![8],
            type_ids: vec![1],
        };
        let batch = PaddedBatch::new(&[&a, &b], 0);
        assert_eq!((batch.batch, batch.seq), (2, 3));
        assert_eq!(batch.ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(batch.type_ids, vec![0, 0, 0, 1, 0, 0]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.row_length(1), 1);
    }
}
