//! Blocking work (model code, file I/O, hashing, downloads) off the async runtime.

use crate::error::{ErrorCode, ModelError, Result};

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
