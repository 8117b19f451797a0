//! A plugin child's process, killed and reaped within a bound. SIGKILL ends a process only
//! once it leaves the kernel: a child stuck in uninterruptible I/O (a hung network file
//! system, a frozen cgroup) lives on, and `wait` would hold the caller, and with it the
//! library's lock, that long. Such a child is handed to a reaper thread instead.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a killed child may take to end before a reaper thread takes it over.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// A child process leading its own process group, until it is reaped or handed over.
pub(super) struct Process(Option<Child>);

impl Process {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// Its exit status if it ended (`None` while it runs). A child handed to a reaper
    /// counts as running: its end is not known here.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL to the child and, while it is unreaped (so its id, and its group's, cannot
    /// have been reused), to whatever it started. Does not wait.
    pub fn kill(&mut self) {
        let Some(child) = self.0.as_mut() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill has no memory-safety preconditions; see above for why the id
            // is ours.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = child.kill();
    }

    /// Waits up to `grace` for the child to end on its own; its status if it did.
    pub fn wait_for(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if self.0.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the child (and its group) and reaps it: its status, or `None` when it did not
    /// end within [`REAP_GRACE`] and a reaper thread now waits for it.
    pub fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        self.kill();
        if let Some(status) = self.wait_for(REAP_GRACE) {
            return Some(status);
        }
        let mut child = self.0.take()?;
        let pid = child.id();
        tracing::warn!(
            pid,
            "a killed plugin child did not end within {REAP_GRACE:?} (stuck in the kernel); a reaper thread waits for it"
        );
        let reaper = std::thread::Builder::new()
            .name("mm-plugin-reaper".into())
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(e) = reaper {
            tracing::warn!(
                pid,
                "cannot start a reaper thread ({e}); the child stays a zombie"
            );
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;

    #[test]
    fn a_killed_child_is_reaped_with_its_signal() {
        let child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut process = Process::new(child);
        assert_eq!(process.try_wait(), None);
        let status = process.kill_and_reap().expect("reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
