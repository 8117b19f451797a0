//! The embedding engine: one per loaded model instance, it owns the instance's forward
//! passes. Callers of every kind (the server's requests, bulk jobs, library calls) submit
//! texts; a worker thread forms batches from everything pending across callers, under a row
//! cap and a token budget, grouping texts of similar length (see [`queue`]), one forward
//! pass at a time. Admission is counted in tokens, a caller that goes away takes its waiting
//! texts out of the queue, and a failing text fails only its own caller's request.

mod queue;
mod request;
mod stats;
mod worker;

pub use stats::{EngineStatus, HistogramSnapshot};

pub(crate) use queue::Work;
pub(crate) use stats::EngineStats;

use crate::error::{ErrorCode, ModelError, Result};
use crate::model::{BatchCost, Model};
use crate::spec::ModelSpec;
use parking_lot::{Condvar, Mutex};
use queue::{BatchLimits, Key, Pending, Queue};
use request::RequestCell;
use std::sync::Arc;
use std::time::Instant;

/// The limits of one model's engine, from its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EngineConfig {
    /// Rows per forward pass (`batch_size`).
    pub max_rows: usize,
    /// Tokens per forward pass, padding included where the backend pads.
    pub max_batch_tokens: usize,
    /// Tokens waiting before new requests are refused.
    pub max_queued_tokens: usize,
    /// Worker threads, each running one forward pass at a time.
    pub workers: usize,
}

impl EngineConfig {
    pub fn of(spec: &ModelSpec) -> Self {
        Self {
            max_rows: spec.batch_size.max(1),
            max_batch_tokens: spec.max_batch_tokens,
            max_queued_tokens: spec.max_queued_tokens,
            workers: spec.engine_workers.max(1),
        }
    }
}

/// What a caller does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// Fail at once with `CAPACITY_EXHAUSTED` (servers: the client retries later).
    #[default]
    FailFast,
    /// Wait until the queue has room (bulk jobs that feed the engine as fast as it runs).
    Wait,
}

struct Shared {
    model_id: String,
    config: EngineConfig,
    queue: Mutex<Queue>,
    work_ready: Condvar,
    room: tokio::sync::Notify,
    stats: Arc<EngineStats>,
    /// Real tokens per second of recent passes, for `Retry-After` estimates.
    tokens_per_second: Mutex<f64>,
}

impl Shared {
    fn sync_gauges(&self, queue: &Queue) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.queued_texts.store(queue.len() as u64, Relaxed);
        self.stats
            .queued_tokens
            .store(queue.queued_tokens as u64, Relaxed);
    }

    fn limits(&self, cost: BatchCost) -> BatchLimits {
        BatchLimits {
            max_rows: self.config.max_rows,
            max_tokens: self.config.max_batch_tokens,
            cost,
        }
    }
}

/// The engine of one model instance. Dropping it stops its worker, which then drops its
/// reference to the model on its own thread, off the async runtime.
pub(crate) struct Engine {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Starts the worker threads of `model` (`config.workers`).
    pub fn start(
        model: Arc<dyn Model>,
        model_id: &str,
        config: EngineConfig,
        stats: Arc<EngineStats>,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            model_id: model_id.to_owned(),
            config,
            queue: Mutex::new(Queue::default()),
            work_ready: Condvar::new(),
            room: tokio::sync::Notify::new(),
            stats,
            tokens_per_second: Mutex::new(0.0),
        });
        let mut workers = Vec::new();
        for _ in 0..shared.config.workers {
            let state = shared.clone();
            let model = model.clone();
            let worker = std::thread::Builder::new()
                .name(format!("mm-engine-{model_id}"))
                .spawn(move || worker::run(&state, model))
                .map_err(|e| {
                    ModelError::new(
                        ErrorCode::GenerateEmbeddingsError,
                        format!("cannot start the embedding engine of model `{model_id}`: {e}"),
                    )
                    .for_model(model_id)
                })?;
            workers.push(worker);
        }
        drop(model);
        Ok(Self { shared, workers })
    }

    /// Stops the worker and waits until it has dropped its reference to the model.
    /// Blocking: a running forward pass finishes first.
    pub fn stop(mut self) {
        self.close();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }

    fn close(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.work_ready.notify_all();
    }

    /// Embeds `work` (one entry per text, with its token count) and returns one vector per
    /// text, in order. Dropping the future takes the texts not yet in a batch out of the
    /// queue.
    pub async fn embed(
        &self,
        work: Vec<(Work, usize)>,
        admission: Admission,
    ) -> Result<Vec<Vec<f32>>> {
        if work.is_empty() {
            return Ok(Vec::new());
        }
        let total: usize = work.iter().map(|(_, tokens)| tokens).sum();
        let (cell, reply) = RequestCell::new(work.len());
        let cell = Arc::new(cell);
        let mut work = Some(work);
        let keys = loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(keys) = self.try_enqueue(&cell, &mut work, total, admission)? {
                break keys;
            }
            room.await;
        };
        let _cancel = CancelOnDrop {
            shared: &self.shared,
            keys,
        };
        reply.await.unwrap_or_else(|_| {
            Err(ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!(
                    "the embedding engine of model `{}` stopped",
                    self.shared.model_id
                ),
            ))
        })
    }

    /// Queues the work if there is room (an empty queue always has room, so a request
    /// larger than the whole bound still runs, alone); `None` means wait and try again.
    fn try_enqueue(
        &self,
        cell: &Arc<RequestCell>,
        work: &mut Option<Vec<(Work, usize)>>,
        total: usize,
        admission: Admission,
    ) -> Result<Option<Vec<Key>>> {
        let mut queue = self.shared.queue.lock();
        let fits =
            queue.is_empty() || queue.queued_tokens + total <= self.shared.config.max_queued_tokens;
        if !fits {
            return match admission {
                Admission::Wait => Ok(None),
                Admission::FailFast => {
                    EngineStats::add(&self.shared.stats.requests_rejected, 1);
                    Err(self.queue_full(queue.queued_tokens, total))
                }
            };
        }
        let now = Instant::now();
        let keys = work
            .take()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, (work, tokens))| {
                queue.push(Pending {
                    request: cell.clone(),
                    index,
                    tokens,
                    work,
                    enqueued: now,
                })
            })
            .collect();
        self.shared.sync_gauges(&queue);
        drop(queue);
        self.shared.work_ready.notify_one();
        Ok(Some(keys))
    }

    fn queue_full(&self, queued: usize, wanted: usize) -> ModelError {
        let rate = *self.shared.tokens_per_second.lock();
        let retry_after = if rate > 0.0 {
            (queued as f64 / rate).ceil().clamp(1.0, 60.0) as u64
        } else {
            1
        };
        let id = &self.shared.model_id;
        ModelError::new(
            ErrorCode::CapacityExhausted,
            format!(
                "model `{id}` has {queued} tokens waiting; {wanted} more would pass models.{id}.max_queued_tokens = {}; retry in about {retry_after} s",
                self.shared.config.max_queued_tokens
            ),
        )
        .for_model(id)
        .with("queued_tokens", queued)
        .with("retry_after_seconds", retry_after)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes a request's texts that are still waiting out of the queue when its caller goes
/// away (or after it completed, when none are left).
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    keys: Vec<Key>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let mut queue = self.shared.queue.lock();
        let removed = self
            .keys
            .iter()
            .filter(|&&key| queue.remove(key).is_some())
            .count();
        if removed == 0 {
            return;
        }
        self.shared.sync_gauges(&queue);
        drop(queue);
        EngineStats::add(&self.shared.stats.texts_cancelled, removed);
        self.shared.room.notify_waiters();
    }
}
