//! The manager's figures at scrape time: loaded models, cache, loads and references per
//! model, and each model's engine (queue, batches, timings).

use super::escape_label;
use model_manager_core::{
    EngineStatus, HistogramSnapshot, RemoteCacheStats, RemoteState, ServiceStatus,
};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, Mutex};

/// The manager's figures at scrape time.
#[derive(Debug)]
pub(super) struct ManagerCollector(pub Arc<Mutex<Option<ServiceStatus>>>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn per_model<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    values: impl Iterator<Item = (String, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (model, metric) in values {
        metric.encode(family.encode_family(&[("model", escape_label(&model))])?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(status) = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        let e = &mut encoder;
        let loaded = ConstGauge::new(status.loaded_models as i64);
        loaded.encode(e.encode_descriptor(
            "loaded_models",
            "Models loaded now",
            None,
            MetricType::Gauge,
        )?)?;
        counter(
            e,
            "embedding_cache_hits",
            "Embedding cache hits",
            status.cache.hits,
        )?;
        counter(
            e,
            "embedding_cache_misses",
            "Embedding cache misses",
            status.cache.misses,
        )?;
        if let Some(remote) = &status.cache.remote {
            encode_remote_cache(e, remote)?;
        }
        let models = || status.models.iter();
        per_model(
            e,
            (
                "model_loads",
                "Completed loads per model",
                MetricType::Counter,
            ),
            models().map(|(id, m)| (id.clone(), ConstCounter::new(m.load_count))),
        )?;
        per_model(
            e,
            (
                "model_last_load_seconds",
                "Duration of the latest load per model",
                MetricType::Gauge,
            ),
            models().filter_map(|(id, m)| {
                Some((id.clone(), ConstGauge::new(m.last_load_ms? / 1000.0)))
            }),
        )?;
        per_model(
            e,
            (
                "model_references",
                "Live references per model",
                MetricType::Gauge,
            ),
            models().map(|(id, m)| (id.clone(), ConstGauge::new(m.references as i64))),
        )?;
        let engines: Vec<(&String, &EngineStatus)> = status
            .models
            .iter()
            .filter_map(|(id, m)| Some((id, m.engine.as_ref()?)))
            .collect();
        encode_engines(e, &engines)
    }
}

/// A histogram from status, as a Prometheus histogram.
#[derive(Debug)]
struct SnapshotHistogram<'a>(&'a HistogramSnapshot);

impl EncodeMetric for SnapshotHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Status keeps cumulative counts; the encoder wants each bucket's own, with
        // f64::MAX as +Inf.
        let mut previous = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(self.0.buckets.len() + 1);
        for &(le, cumulative) in &self.0.buckets {
            buckets.push((le, cumulative - previous));
            previous = cumulative;
        }
        buckets.push((f64::MAX, self.0.count - previous));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum,
            self.0.count,
            &buckets,
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type RemoteFigure = fn(&RemoteCacheStats) -> u64;

/// The shared cache tier: whether it is connected, and its counts.
fn encode_remote_cache(
    e: &mut DescriptorEncoder,
    remote: &RemoteCacheStats,
) -> Result<(), std::fmt::Error> {
    let connected = ConstGauge::new(i64::from(remote.state == RemoteState::Connected));
    connected.encode(e.encode_descriptor(
        "embedding_cache_remote_connected",
        "1 while the shared (Redis) cache tier answers, 0 while requests skip it",
        None,
        MetricType::Gauge,
    )?)?;
    let counters: [(&str, &str, RemoteFigure); 10] = [
        (
            "embedding_cache_remote_hits",
            "Texts found in the shared tier",
            |r| r.hits,
        ),
        (
            "embedding_cache_remote_misses",
            "Texts not found in the shared tier",
            |r| r.misses,
        ),
        (
            "embedding_cache_remote_corrupt",
            "Shared-tier values refused (damaged, another key's, or not what the model makes)",
            |r| r.corrupt,
        ),
        (
            "embedding_cache_remote_unauthenticated",
            "Shared-tier values refused for not carrying this tier's seal (forged, another secret)",
            |r| r.unauthenticated,
        ),
        (
            "embedding_cache_remote_errors",
            "Shared-tier calls that failed",
            |r| r.errors,
        ),
        (
            "embedding_cache_remote_timeouts",
            "Shared-tier calls past embedding_cache.redis_timeout_ms",
            |r| r.timeouts,
        ),
        (
            "embedding_cache_remote_skipped",
            "Texts not looked up because the shared tier was down",
            |r| r.skipped,
        ),
        (
            "embedding_cache_remote_writes",
            "Entries written to the shared tier",
            |r| r.writes,
        ),
        (
            "embedding_cache_remote_write_errors",
            "Entries whose shared-tier write failed",
            |r| r.write_errors,
        ),
        (
            "embedding_cache_remote_writes_dropped",
            "Entries not written: tier down or too many writes in flight",
            |r| r.writes_dropped,
        ),
    ];
    for (name, help, value) in counters {
        counter(e, name, help, value(remote))?;
    }
    Ok(())
}

type EngineFigure = fn(&EngineStatus) -> u64;
type EngineHistogram = for<'a> fn(&'a EngineStatus) -> &'a HistogramSnapshot;

/// The engines' queues, batches and timings per model.
fn encode_engines(
    e: &mut DescriptorEncoder,
    engines: &[(&String, &EngineStatus)],
) -> Result<(), std::fmt::Error> {
    let gauges: [(&str, &str, EngineFigure); 2] = [
        ("engine_queued_texts", "Texts waiting for a batch", |s| {
            s.queued_texts
        }),
        (
            "engine_queued_tokens",
            "Tokens waiting for a batch (the admission bound counts these)",
            |s| s.queued_tokens,
        ),
    ];
    for (name, help, value) in gauges {
        let values = engines
            .iter()
            .map(|(id, s)| ((*id).clone(), ConstGauge::new(value(s) as i64)));
        per_model(e, (name, help, MetricType::Gauge), values)?;
    }
    let counters: [(&str, &str, EngineFigure); 7] = [
        ("engine_batches", "Forward passes run", |s| s.batches),
        ("engine_texts", "Texts embedded", |s| s.texts_computed),
        ("engine_tokens", "Real tokens embedded", |s| {
            s.tokens_computed
        }),
        (
            "engine_padded_tokens",
            "Tokens paid for by forward passes, padding included",
            |s| s.padded_tokens,
        ),
        (
            "engine_cancelled_texts",
            "Texts dropped before computing because their caller went away",
            |s| s.texts_cancelled,
        ),
        (
            "engine_rejected_requests",
            "Requests refused because the queue was full",
            |s| s.requests_rejected,
        ),
        ("engine_failed_batches", "Forward passes that failed", |s| {
            s.batch_failures
        }),
    ];
    for (name, help, value) in counters {
        let values = engines
            .iter()
            .map(|(id, s)| ((*id).clone(), ConstCounter::new(value(s))));
        per_model(e, (name, help, MetricType::Counter), values)?;
    }
    let histograms: [(&str, &str, EngineHistogram); 4] = [
        ("engine_batch_rows", "Rows per forward pass", |s| {
            &s.batch_rows
        }),
        (
            "engine_padding_ratio",
            "Paid tokens / real tokens per forward pass (1: no padding)",
            |s| &s.padding_ratio,
        ),
        (
            "engine_queue_seconds",
            "Seconds each text waited for a batch",
            |s| &s.queue_seconds,
        ),
        ("engine_forward_seconds", "Seconds per forward pass", |s| {
            &s.forward_seconds
        }),
    ];
    for (name, help, value) in histograms {
        let values = engines
            .iter()
            .map(|(id, s)| ((*id).clone(), SnapshotHistogram(value(s))));
        per_model(e, (name, help, MetricType::Histogram), values)?;
    }
    Ok(())
}
