//! Blocking work (model code, file I/O, hashing, downloads) off the async runtime, and
//! short model code on it with the same treatment of a panic.

use crate::error::{ErrorCode, ModelError, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `work` on tokio's blocking pool and returns what it returns; a panic in it becomes
/// a `code` error with the message `panicked` writes (only then: embedding requests pass
/// here), cause `Panic`. Dropping the future (a timeout) leaves the work to finish alone.
pub async fn off_runtime<T: Send + 'static>(
    code: ErrorCode,
    panicked: impl FnOnce() -> String,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ModelError::new(code, panicked()).caused_by("Panic", e))
}

/// Runs `work` on the calling thread, for work shorter than a hand-over to the blocking
/// pool (two thread wake-ups); a panic in it becomes the error [`off_runtime`] gives.
pub fn on_this_thread<T>(
    code: ErrorCode,
    panicked: impl FnOnce() -> String,
    work: impl FnOnce() -> T,
) -> Result<T> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        let cause = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        ModelError::new(code, panicked()).caused_by("Panic", cause)
    })
}
