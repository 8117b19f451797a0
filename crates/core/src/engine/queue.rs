//! The pending texts of one model and how the next batch is chosen from them.
//!
//! The oldest pending text is always in the next batch, so no text waits behind an endless
//! stream of others. Around it the batch takes the texts of nearest length (the queue is
//! ordered by length), choosing among the windows that contain the oldest text the one that
//! wastes least on padding per real token, within the row cap and the token budget.

use crate::model::{BatchCost, TokenizedText};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use super::request::RequestCell;

/// What the forward pass runs for one text.
pub(crate) enum Work {
    /// Token ids, for embedders that tokenize apart from the forward pass.
    Tokens(TokenizedText),
    /// The text itself, for embedders that take whole texts.
    Text(String),
}

/// One text waiting for a batch.
pub(crate) struct Pending {
    pub request: Arc<RequestCell>,
    /// Position of the text in its request.
    pub index: usize,
    pub tokens: usize,
    pub work: Work,
    pub enqueued: Instant,
}

/// Identifies a pending text: its length first, so the map is ordered by length.
pub(crate) type Key = (usize, u64);

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub max_rows: usize,
    pub max_tokens: usize,
    pub cost: BatchCost,
}

/// A batch's work expressed in tokens, as `cost` pays for it, for rows of `lengths`
/// (ascending).
fn paid_tokens(lengths: &[usize], cost: BatchCost) -> usize {
    match cost {
        BatchCost::Padded => lengths.last().copied().unwrap_or(0) * lengths.len(),
        BatchCost::Packed => lengths.iter().sum(),
    }
}

/// Fixed cost of a forward pass in tokens: small passes use the cores poorly, so two short
/// texts are better run together even with a little padding. Chosen by measurement (the
/// engine bench's 32-client run on 2 cores with ONNX Runtime): 64 gave 0.70-0.77x of one
/// request of the same texts, 256 gave 0.56-0.66x (more padding), and a model that priced
/// every pass under 1,024 tokens as 1,024 gave 0.44x (it mixed short and long texts).
const PASS_OVERHEAD_TOKENS: usize = 64;

/// The window `[start, end]` of `lengths` (ascending) holding `anchor` whose rows cost least
/// each in padding plus the pass's fixed cost; ties go to more rows. Every text runs in some
/// batch, so the real tokens are paid anyway: what a choice adds is padding and passes. The
/// anchor alone is always allowed, however long.
pub(crate) fn best_window(lengths: &[usize], anchor: usize, limits: BatchLimits) -> (usize, usize) {
    let max_rows = limits.max_rows.max(1);
    let mut best = (anchor, anchor);
    // Cost per row as a fraction (waste, rows), compared by cross-multiplying.
    let mut best_cost = (PASS_OVERHEAD_TOKENS, 1usize);
    for end in anchor..lengths.len() {
        if end + 1 - anchor > max_rows {
            break;
        }
        for start in (end + 1).saturating_sub(max_rows)..=anchor {
            let rows = &lengths[start..=end];
            let paid = paid_tokens(rows, limits.cost);
            if rows.len() > 1 && paid > limits.max_tokens {
                continue;
            }
            let real: usize = rows.iter().sum();
            let cost = (paid - real + PASS_OVERHEAD_TOKENS, rows.len());
            let (lhs, rhs) = (cost.0 * best_cost.1, best_cost.0 * cost.1);
            if lhs < rhs || (lhs == rhs && cost.1 > best_cost.1) {
                best = (start, end);
                best_cost = cost;
            }
        }
    }
    best
}

/// Texts waiting for a batch, ordered by length and by age.
#[derive(Default)]
pub(crate) struct Queue {
    by_length: BTreeMap<Key, Pending>,
    /// Sequence number → length, to find the oldest.
    by_age: BTreeMap<u64, usize>,
    next_seq: u64,
    pub queued_tokens: usize,
    pub closed: bool,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.by_length.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_length.is_empty()
    }

    /// Adds a text; returns its key, for cancellation.
    pub fn push(&mut self, pending: Pending) -> Key {
        let key = (pending.tokens, self.next_seq);
        self.next_seq += 1;
        self.queued_tokens += pending.tokens;
        self.by_age.insert(key.1, key.0);
        self.by_length.insert(key, pending);
        key
    }

    /// Removes a text if it is still waiting.
    pub fn remove(&mut self, key: Key) -> Option<Pending> {
        let pending = self.by_length.remove(&key)?;
        self.by_age.remove(&key.1);
        self.queued_tokens -= pending.tokens;
        Some(pending)
    }

    /// Takes the next batch (see the module's doc); empty when nothing waits.
    pub fn take_batch(&mut self, limits: BatchLimits) -> Vec<Pending> {
        let Some((&seq, &tokens)) = self.by_age.first_key_value() else {
            return Vec::new();
        };
        let anchor: Key = (tokens, seq);
        let reach = limits.max_rows.max(1) - 1;
        let mut window: Vec<Key> = self
            .by_length
            .range(..anchor)
            .rev()
            .take(reach)
            .map(|(k, _)| *k)
            .collect();
        window.reverse();
        let anchor_at = window.len();
        window.push(anchor);
        let after = (Bound::Excluded(anchor), Bound::Unbounded);
        window.extend(self.by_length.range(after).take(reach).map(|(k, _)| *k));
        let lengths: Vec<usize> = window.iter().map(|k| k.0).collect();
        let (start, end) = best_window(&lengths, anchor_at, limits);
        window[start..=end]
            .iter()
            .filter_map(|&key| self.remove(key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PADDED: BatchLimits = BatchLimits {
        max_rows: 4,
        max_tokens: 1000,
        cost: BatchCost::Padded,
    };

    #[test]
    fn the_window_holds_the_anchor_and_avoids_padding() {
        // Lengths ascending; the anchor (index 1, length 10) joins its equals, not the long tail.
        let lengths = [10, 10, 10, 200, 210];
        assert_eq!(best_window(&lengths, 1, PADDED), (0, 2));
        // The long anchor goes with the long ones.
        assert_eq!(best_window(&lengths, 4, PADDED), (3, 4));
    }

    #[test]
    fn the_row_cap_and_token_budget_bound_the_window() {
        let lengths = [50; 10];
        let (s, e) = best_window(&lengths, 5, PADDED);
        assert_eq!(e - s + 1, 4);
        assert!((s..=e).contains(&5));
        let tight = BatchLimits {
            max_tokens: 120,
            ..PADDED
        };
        let (s, e) = best_window(&lengths, 5, tight);
        assert_eq!(e - s + 1, 2, "2 x 50 fits 120 tokens, 3 x 50 does not");
        // A text longer than the whole budget still runs, alone.
        assert_eq!(best_window(&[500, 500], 0, tight), (0, 0));
    }

    #[test]
    fn packed_batches_pay_only_real_tokens() {
        let packed = BatchLimits {
            cost: BatchCost::Packed,
            ..PADDED
        };
        // Padded, the short texts stay apart from the long ones; packed, mixing is free
        // and the full row cap wins.
        assert_eq!(best_window(&[5, 6, 300, 310], 0, PADDED), (0, 1));
        assert_eq!(best_window(&[5, 6, 300, 310], 0, packed), (0, 3));
    }
}
