//! The worker thread of one engine: takes batches, runs forward passes, hands out vectors.

use super::queue::{Pending, Work};
use super::stats::EngineStats;
use super::Shared;
use crate::blocking::on_this_thread;
use crate::error::{ErrorCode, ModelError, Result};
use crate::model::{BatchCost, Model, TokenizedText};
use std::sync::Arc;
use std::time::Instant;

/// Runs until the engine is dropped; the model is dropped here, on this thread.
pub(super) fn run(shared: &Shared, model: Arc<dyn Model>) {
    let cost = model
        .as_embedder()
        .and_then(|e| e.as_token_embedder())
        .map_or(BatchCost::Padded, |t| t.batch_cost());
    while let Some(batch) = next_batch(shared, cost) {
        shared.room.notify_waiters();
        let (live, abandoned): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| !p.request.is_abandoned());
        EngineStats::add(&shared.stats.texts_cancelled, abandoned.len());
        if !live.is_empty() {
            run_batch(shared, model.as_ref(), cost, live);
        }
    }
}

/// Waits for work; `None` once the engine is dropped.
fn next_batch(shared: &Shared, cost: BatchCost) -> Option<Vec<Pending>> {
    let mut queue = shared.queue.lock();
    loop {
        if queue.closed {
            return None;
        }
        let batch = queue.take_batch(shared.limits(cost));
        if !batch.is_empty() {
            shared.sync_gauges(&queue);
            // One request's many texts wake one worker: the rest is for the others.
            if !queue.is_empty() {
                shared.work_ready.notify_one();
            }
            return Some(batch);
        }
        shared.work_ready.wait(&mut queue);
    }
}

/// One forward pass; if it fails and the batch mixes requests, each request's texts run
/// again on their own, so only the request whose text fails gets the error.
fn run_batch(shared: &Shared, model: &dyn Model, cost: BatchCost, batch: Vec<Pending>) {
    let started = Instant::now();
    for pending in &batch {
        let waited = started.duration_since(pending.enqueued);
        shared.stats.queue_seconds.observe(waited.as_secs_f64());
    }
    match timed_forward(shared, model, cost, &batch) {
        Ok(vectors) => deliver(batch, vectors),
        Err(error) => {
            EngineStats::add(&shared.stats.batch_failures, 1);
            let groups = by_request(batch);
            if groups.len() == 1 {
                tracing::warn!(model_id = %shared.model_id, "embedding batch failed: {error}");
                fail(groups, &error);
                return;
            }
            tracing::warn!(model_id = %shared.model_id, requests = groups.len(), "embedding batch failed ({error}); running each request alone");
            for group in groups {
                match timed_forward(shared, model, cost, &group) {
                    Ok(vectors) => deliver(group, vectors),
                    Err(error) => fail(vec![group], &error),
                }
            }
        }
    }
}

fn deliver(batch: Vec<Pending>, vectors: Vec<Vec<f32>>) {
    for (pending, vector) in batch.into_iter().zip(vectors) {
        pending.request.deliver(pending.index, vector);
    }
}

fn fail(groups: Vec<Vec<Pending>>, error: &ModelError) {
    for group in groups {
        if let Some(first) = group.first() {
            first.request.fail(error.clone());
        }
    }
}

/// The batch's texts grouped by request, in first-seen order.
fn by_request(batch: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    for pending in batch {
        match groups
            .iter_mut()
            .find(|g| Arc::ptr_eq(&g[0].request, &pending.request))
        {
            Some(group) => group.push(pending),
            None => groups.push(vec![pending]),
        }
    }
    groups
}

/// A forward pass with its statistics.
fn timed_forward(
    shared: &Shared,
    model: &dyn Model,
    cost: BatchCost,
    batch: &[Pending],
) -> Result<Vec<Vec<f32>>> {
    let started = Instant::now();
    let vectors = forward(model, batch)?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = &shared.stats;
    let mut lengths: Vec<usize> = batch.iter().map(|p| p.tokens).collect();
    lengths.sort_unstable();
    let real: usize = lengths.iter().sum();
    let paid = match cost {
        BatchCost::Padded => lengths.last().copied().unwrap_or(0) * lengths.len(),
        BatchCost::Packed => real,
    };
    stats.forward_seconds.observe(seconds);
    stats.batch_rows.observe(batch.len() as f64);
    stats
        .padding_ratio
        .observe(paid as f64 / real.max(1) as f64);
    EngineStats::add(&stats.batches, 1);
    EngineStats::add(&stats.texts_computed, batch.len());
    EngineStats::add(&stats.tokens_computed, real);
    EngineStats::add(&stats.padded_tokens, paid);
    if seconds > 0.0 {
        let mut rate = shared.tokens_per_second.lock();
        let now = real as f64 / seconds;
        *rate = if *rate == 0.0 {
            now
        } else {
            0.8 * *rate + 0.2 * now
        };
    }
    Ok(vectors)
}

/// Runs the embedder on the batch; a panic is an error, and so is a wrong vector count.
fn forward(model: &dyn Model, batch: &[Pending]) -> Result<Vec<Vec<f32>>> {
    let embedder = model.as_embedder().ok_or_else(|| {
        ModelError::new(ErrorCode::InvalidModelType, "the model is not an embedder")
    })?;
    let forward_pass = || "the embedder panicked during a forward pass".to_owned();
    let vectors = on_this_thread(
        ErrorCode::GenerateEmbeddingsError,
        forward_pass,
        || match embedder.as_token_embedder() {
            Some(tokens) => {
                let rows: Option<Vec<&TokenizedText>> = batch
                    .iter()
                    .map(|p| match &p.work {
                        Work::Tokens(t) => Some(t),
                        Work::Text(_) => None,
                    })
                    .collect();
                tokens.embed_tokens(&rows.ok_or_else(mixed_work)?)
            }
            None => {
                let texts: Option<Vec<&str>> = batch
                    .iter()
                    .map(|p| match &p.work {
                        Work::Text(t) => Some(t.as_str()),
                        Work::Tokens(_) => None,
                    })
                    .collect();
                embedder.embed(&texts.ok_or_else(mixed_work)?)
            }
        },
    )??;
    if vectors.len() != batch.len() {
        return Err(ModelError::new(
            ErrorCode::GenerateEmbeddingsError,
            format!(
                "the embedder returned {} vectors for {} texts",
                vectors.len(),
                batch.len()
            ),
        ));
    }
    Ok(vectors)
}

fn mixed_work() -> ModelError {
    ModelError::new(
        ErrorCode::GenerateEmbeddingsError,
        "texts were prepared for another kind of embedder",
    )
}
