//! One caller's texts in the engine: where their vectors gather, and how a caller that goes
//! away takes its waiting texts out of the queue.

use crate::error::{ModelError, Result};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Vectors of one request as batches finish them.
pub(crate) struct RequestCell {
    state: Mutex<RequestState>,
}

struct RequestState {
    vectors: Vec<Option<Vec<f32>>>,
    remaining: usize,
    reply: Option<oneshot::Sender<Result<Vec<Vec<f32>>>>>,
}

impl RequestCell {
    /// A request of `texts` texts and the receiver of its result.
    pub fn new(texts: usize) -> (Self, oneshot::Receiver<Result<Vec<Vec<f32>>>>) {
        let (tx, rx) = oneshot::channel();
        let cell = Self {
            state: Mutex::new(RequestState {
                vectors: vec![None; texts],
                remaining: texts,
                reply: Some(tx),
            }),
        };
        (cell, rx)
    }

    /// Whether nobody waits for the result any more (the caller went away, or it failed).
    pub fn is_abandoned(&self) -> bool {
        self.state
            .lock()
            .reply
            .as_ref()
            .is_none_or(oneshot::Sender::is_closed)
    }

    /// Stores the vector of text `index`; the last one sends the whole result.
    pub fn deliver(&self, index: usize, vector: Vec<f32>) {
        let mut state = self.state.lock();
        if state.reply.is_none() || state.vectors[index].is_some() {
            return;
        }
        state.vectors[index] = Some(vector);
        state.remaining -= 1;
        if state.remaining == 0 {
            let vectors = std::mem::take(&mut state.vectors)
                .into_iter()
                .flatten()
                .collect();
            if let Some(reply) = state.reply.take() {
                let _ = reply.send(Ok(vectors));
            }
        }
    }

    /// Fails the request (once); later deliveries are ignored.
    pub fn fail(&self, error: ModelError) {
        if let Some(reply) = self.state.lock().reply.take() {
            let _ = reply.send(Err(error));
        }
    }
}
