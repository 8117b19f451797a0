//! `GET /metrics`: Prometheus (OpenMetrics text) counters and latencies of the HTTP API,
//! plus the manager's loaded models, load counts and durations, and cache hits and misses.

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model_manager::{EngineStatus, HistogramSnapshot, ServiceStatus};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Instant;

tokio::task_local! {
    /// The model a request is about, set by its handler for the request's labels.
    static REQUEST_MODEL: std::cell::RefCell<String>;
}

/// Records `model` as the model of the request being handled (no-op outside one).
pub fn tag_model(model: &str) {
    let _ = REQUEST_MODEL.try_with(|m| *m.borrow_mut() = model.to_owned());
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    model: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: String,
    model: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    snapshot: Arc<Mutex<Option<ServiceStatus>>>,
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mm");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        });
        registry.register(
            "http_requests",
            "HTTP requests by route, model and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route and model",
            latency.clone(),
        );
        let snapshot = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(ManagerCollector(snapshot.clone())));
        Self {
            registry,
            requests,
            latency,
            snapshot,
        }
    }

    fn observe(&self, route: String, model: String, status: u16, seconds: f64) {
        self.latency
            .get_or_create(&LatencyLabels {
                route: route.clone(),
                model: model.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                model,
                status,
            })
            .inc();
    }

    /// The exposition text, with the manager's figures from `status`.
    fn render(&self, status: ServiceStatus) -> String {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Counts and times every request; the route is the matched pattern, the model what the
/// handler tagged.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let cell = std::cell::RefCell::new(String::new());
    let (response, model) = REQUEST_MODEL
        .scope(cell, async {
            let response = next.run(request).await;
            (response, REQUEST_MODEL.with(|m| m.borrow().clone()))
        })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .observe(route, model, response.status().as_u16(), seconds);
    response
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    match state.manager.get_status().await {
        Ok(status) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render(status),
        )
            .into_response(),
        Err(e) => super::errors::ApiError(e).into_response(),
    }
}

/// The manager's figures at scrape time.
#[derive(Debug)]
struct ManagerCollector(Arc<Mutex<Option<ServiceStatus>>>);

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
        metric.encode(family.encode_family(&[("model", model)])?)?;
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
