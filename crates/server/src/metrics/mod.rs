//! `GET /metrics`: Prometheus (OpenMetrics text) counters and latencies of the HTTP API,
//! plus the manager's loaded models, load counts and durations, cache hits and misses, and
//! each model's engine. Label values come only from configured model ids (any other model
//! named in a request counts as `_other`) and are escaped, so no request can add series or
//! break the exposition.

mod manager;

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model_manager_core::{ModelManager, ServiceStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a handler says about its request, for labels and the request log.
#[derive(Default, Clone)]
struct RequestTags {
    model: String,
    texts: usize,
    tokens: usize,
}

tokio::task_local! {
    /// The tags of the request being handled.
    static REQUEST_TAGS: std::cell::RefCell<RequestTags>;
}

/// Records `model` as the model of the request being handled (no-op outside one).
pub fn tag_model(model: &str) {
    let _ = REQUEST_TAGS.try_with(|t| t.borrow_mut().model = model.to_owned());
}

/// Records how many texts and tokens the request embedded, for the request log.
pub fn tag_usage(texts: usize, tokens: usize) {
    let _ = REQUEST_TAGS.try_with(|t| {
        let mut tags = t.borrow_mut();
        tags.texts = texts;
        tags.tokens = tokens;
    });
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

/// The label of requests that name a model the server does not have.
const OTHER_MODEL: &str = "_other";

/// `value` escaped for an OpenMetrics label (backslash, double quote, line feed).
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The server's metrics.
pub struct Metrics {
    /// The label of each configured model id, escaped.
    model_labels: HashMap<String, String>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    snapshot: Arc<Mutex<Option<ServiceStatus>>>,
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new(manager: &ModelManager) -> Self {
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
        registry.register_collector(Box::new(manager::ManagerCollector(snapshot.clone())));
        let model_labels = manager
            .settings()
            .models
            .keys()
            .map(|id| (id.clone(), escape_label(id)))
            .collect();
        Self {
            model_labels,
            registry,
            requests,
            latency,
            snapshot,
        }
    }

    /// The label of a request's model: configured ids only, anything else `_other`.
    fn model_label(&self, tagged: &str) -> String {
        match self.model_labels.get(tagged) {
            Some(label) => label.clone(),
            None if tagged.is_empty() => String::new(),
            None => OTHER_MODEL.into(),
        }
    }

    fn observe(&self, route: String, tagged: &str, status: u16, seconds: f64) {
        let model = self.model_label(tagged);
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
    let method = request.method().clone();
    let started = Instant::now();
    let cell = std::cell::RefCell::new(RequestTags::default());
    let (response, tags) = REQUEST_TAGS
        .scope(cell, async {
            let response = next.run(request).await;
            (response, REQUEST_TAGS.with(|t| t.borrow().clone()))
        })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    tracing::info!(
        target: "mm::request",
        "{method} {route} model={} texts={} tokens={} ms={:.1} status={status}",
        if tags.model.is_empty() { "-" } else { &tags.model },
        tags.texts,
        tags.tokens,
        seconds * 1e3
    );
    state.metrics.observe(route, &tags.model, status, seconds);
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
        Err(e) => super::errors::ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::escape_label;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"}\n# EOF\\"), "a\\\"}\\n# EOF\\\\");
        assert_eq!(escape_label("embedding"), "embedding");
    }
}
