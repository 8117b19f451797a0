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
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
        ModelError::new(code, panicked()).caused_by("Panic", panic_message(&panic))
    })
}

/// What a panic said, if it said it as text.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
