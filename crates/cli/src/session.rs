//! One `ModelManager` per command, always shut down (models dropped, cache saved), also
//! when the command fails or a signal interrupts it.

use model_manager::{ErrorCode, ModelError, ModelManager, Settings};
use std::future::Future;
use std::path::PathBuf;

/// Who answers SIGINT / SIGTERM while a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSignal {
    /// The command is dropped and fails with `SHUTTING_DOWN` naming the signal.
    Interrupt,
    /// The command watches for signals itself (`mm serve` drains its connections first).
    LeftToCommand,
}

/// Runs `work` with a manager built from `settings`, then shuts the manager down whatever
/// happened (a second signal cuts the shutdown short). The command's error wins over a
/// shutdown error.
pub async fn with_manager<T, F, Fut>(
    settings: Settings,
    on_signal: OnSignal,
    work: F,
) -> Result<T, ModelError>
where
    F: FnOnce(ModelManager) -> Fut,
    Fut: Future<Output = Result<T, ModelError>>,
{
    let manager = ModelManager::new(settings);
    let done = match on_signal {
        OnSignal::Interrupt => until_signal(work(manager.clone()), None).await,
        OnSignal::LeftToCommand => work(manager.clone()).await,
    };
    let signal = done.as_ref().err().and_then(|e| e.details.get("signal"));
    if let Some(signal) = signal.and_then(|s| s.as_str()) {
        crate::output::status(format_args!(
            "{signal}: shutting down (send it again to stop at once)"
        ));
    }
    // Shutdown waits for loads in flight and saves the cache; a signal stops the wait.
    let shut_down = until_signal(manager.shutdown(), None).await;
    let value = done?;
    shut_down?;
    Ok(value)
}

/// Runs `work` until it ends or SIGINT / SIGTERM arrives; on a signal the work is dropped
/// (an output file in progress removes its `.partial`, named by `partial`) and the error
/// names the signal. `work` is polled first, so a nested call reports its own `partial`.
pub async fn until_signal<T>(
    work: impl Future<Output = Result<T, ModelError>>,
    partial: Option<PathBuf>,
) -> Result<T, ModelError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| ModelError::invalid_input(format!("cannot watch for SIGTERM: {e}")))?;
    let name = tokio::select! {
        biased;
        done = work => return done,
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    let removed = partial
        .map(|p| format!("; removed the unfinished {}", p.display()))
        .unwrap_or_default();
    Err(ModelError::new(
        ErrorCode::ShuttingDown,
        format!("interrupted by {name}{removed}"),
    )
    .with("signal", name))
}
