//! Counters and histograms of one model's engine, readable without its lock.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram with fixed upper bounds, updated lock-free.
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus one for values above the last.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|&b| b < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = (value.max(0.0) * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&le, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (le, cumulative)
            })
            .collect();
        let count = cumulative + self.counts[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            count,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            buckets,
        }
    }
}

/// A histogram's state: cumulative counts per upper bound, as Prometheus has them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// Observations.
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
    /// `(upper bound, observations <= bound)`, ascending; `+Inf` is `count`.
    pub buckets: Vec<(f64, u64)>,
}

const ROWS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const RATIO: &[f64] = &[1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0];
const SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What one model's engine has done, kept across reloads of the model.
pub(crate) struct EngineStats {
    pub queued_texts: AtomicU64,
    pub queued_tokens: AtomicU64,
    pub batches: AtomicU64,
    pub texts_computed: AtomicU64,
    pub tokens_computed: AtomicU64,
    pub padded_tokens: AtomicU64,
    pub texts_cancelled: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub batch_failures: AtomicU64,
    pub batch_rows: Histogram,
    pub padding_ratio: Histogram,
    pub queue_seconds: Histogram,
    pub forward_seconds: Histogram,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            queued_texts: AtomicU64::new(0),
            queued_tokens: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            texts_computed: AtomicU64::new(0),
            tokens_computed: AtomicU64::new(0),
            padded_tokens: AtomicU64::new(0),
            texts_cancelled: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            batch_failures: AtomicU64::new(0),
            batch_rows: Histogram::new(ROWS),
            padding_ratio: Histogram::new(RATIO),
            queue_seconds: Histogram::new(SECONDS),
            forward_seconds: Histogram::new(SECONDS),
        }
    }
}

/// One model's engine as status shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStatus {
    /// Texts waiting for a batch.
    pub queued_texts: u64,
    /// Tokens of the texts waiting (the admission bound counts these).
    pub queued_tokens: u64,
    /// Forward passes run.
    pub batches: u64,
    /// Texts embedded.
    pub texts_computed: u64,
    /// Real tokens embedded.
    pub tokens_computed: u64,
    /// Tokens the forward passes paid for, padding included.
    pub padded_tokens: u64,
    /// Texts dropped before computing because their caller went away.
    pub texts_cancelled: u64,
    /// Requests refused because the queue was full (`CAPACITY_EXHAUSTED`).
    pub requests_rejected: u64,
    /// Forward passes that failed.
    pub batch_failures: u64,
    /// Rows per forward pass.
    pub batch_rows: HistogramSnapshot,
    /// Padded tokens / real tokens per forward pass (1.0: no padding).
    pub padding_ratio: HistogramSnapshot,
    /// Seconds each text waited in the queue.
    pub queue_seconds: HistogramSnapshot,
    /// Seconds per forward pass.
    pub forward_seconds: HistogramSnapshot,
}

impl EngineStats {
    pub fn snapshot(&self) -> EngineStatus {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStatus {
            queued_texts: n(&self.queued_texts),
            queued_tokens: n(&self.queued_tokens),
            batches: n(&self.batches),
            texts_computed: n(&self.texts_computed),
            tokens_computed: n(&self.tokens_computed),
            padded_tokens: n(&self.padded_tokens),
            texts_cancelled: n(&self.texts_cancelled),
            requests_rejected: n(&self.requests_rejected),
            batch_failures: n(&self.batch_failures),
            batch_rows: self.batch_rows.snapshot(),
            padding_ratio: self.padding_ratio.snapshot(),
            queue_seconds: self.queue_seconds.snapshot(),
            forward_seconds: self.forward_seconds.snapshot(),
        }
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_cumulatively() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 7.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (2.0, 3)]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 10.0).abs() < 1e-9);
    }
}
