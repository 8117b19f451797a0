//! How a child's failures are reported: the coded errors of a call whose child died, overran
//! its deadline or broke the protocol, each naming the plugin and what happened.

use super::super::protocol::{Reply, WireError};
use super::super::reap::Process;
use super::{ChildPlugin, Deadline, Running, EXIT_GRACE};
use model_manager_core::{ErrorCode, ModelError};

impl ChildPlugin {
    /// The error for a child that went away; reaps it to say how.
    pub(super) fn died(&self, process: &mut Process, code: ErrorCode, doing: &str) -> ModelError {
        use std::os::unix::process::ExitStatusExt;
        let status = process
            .wait_for(EXIT_GRACE)
            .or_else(|| process.kill_and_reap());
        let how = match status.map(|s| (s.code(), s.signal())) {
            Some((_, Some(signal))) => {
                format!("was killed by signal {signal} ({})", signal_name(signal))
            }
            Some((Some(status), _)) => format!("exited with status {status}"),
            _ => "ended".to_owned(),
        };
        self.error(
            code,
            format!(
                "the process of plugin `{}` {how} while {doing}; the host lives on and restarts it on the next call",
                self.name()
            ),
            "crash",
        )
    }

    pub(super) fn overran(
        &self,
        process: &mut Process,
        code: ErrorCode,
        deadline: Deadline,
        doing: &str,
    ) -> ModelError {
        process.kill_and_reap();
        self.error(
            code,
            format!(
                "plugin `{}` did not answer within {:.1} s while {doing}; its process was killed and restarts on the next call",
                self.name(),
                deadline.limit.as_secs_f64()
            ),
            "timeout",
        )
    }

    pub(super) fn failed(
        &self,
        running: &mut Running,
        code: ErrorCode,
        what: &str,
        reason: &str,
    ) -> ModelError {
        running.kill();
        self.error(
            code,
            format!(
                "the process of plugin `{}` {what}; it was killed and restarts on the next call",
                self.name()
            ),
            reason,
        )
    }

    pub(super) fn error(&self, code: ErrorCode, message: String, reason: &str) -> ModelError {
        ModelError::new(code, message)
            .with("plugin", self.name())
            .with("path", self.library.display().to_string())
            .with("reason", reason)
    }

    pub(super) fn name(&self) -> &str {
        if self.record.name.is_empty() {
            self.library.to_str().unwrap_or("plugin")
        } else {
            &self.record.name
        }
    }
}

/// A reply frame decoded; one that does not decode is reported as the child's error (the
/// stream is still in step, so the child lives on).
pub(super) fn decode(bytes: Vec<u8>) -> Reply {
    serde_json::from_slice(&bytes).unwrap_or_else(|e| Reply::Failed {
        error: WireError::from(ModelError::new(
            ErrorCode::InferenceError,
            format!("the plugin child sent a reply the host cannot read: {e}"),
        )),
    })
}

/// `code` unless the reply carries the child's own error.
pub(super) fn unexpected(reply: Reply, code: ErrorCode) -> ModelError {
    match reply {
        Reply::Failed { error } => error.into_error(code, false),
        other => ModelError::new(code, format!("the plugin child answered {other:?}")),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
