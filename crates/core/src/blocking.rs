//! Blocking work (model code, file I/O, hashing, downloads) off the async runtime.

use crate::error::{ErrorCode, ModelError, Result};

/// Runs `work` on tokio's blocking pool and returns what it returns; a panic in it becomes
/// a `code` error with `panic_message` (cause `Panic`). Dropping the future (a timeout)
/// leaves the work to finish alone.
pub async fn off_runtime<T: Send + 'static>(
    code: ErrorCode,
    panic_message: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ModelError::new(code, panic_message).caused_by("Panic", e))
}
