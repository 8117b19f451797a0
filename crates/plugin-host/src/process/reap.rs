//! A plugin child's process, killed and reaped within a bound. SIGKILL ends a process only
//! once it leaves the kernel: a child stuck in uninterruptible I/O (a hung network file
//! system, a frozen cgroup) lives on, and `wait` would hold the caller, and with it the
//! library's lock, that long. Such a child is handed to the reaper instead: one thread for
//! the whole process, which polls the children it holds and ends when it holds none.

use parking_lot::Mutex;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a killed child may take to end before the reaper takes it over.
pub(super) const REAP_GRACE: Duration = Duration::from_secs(1);
/// How often the reaper looks at the children it holds.
const REAP_POLL: Duration = Duration::from_millis(100);

/// A child process leading its own process group, until it is reaped or handed over.
pub(super) struct Process {
    child: Option<Child>,
    /// Its owner's count of children handed to the reaper and not reaped yet.
    stuck: Arc<AtomicUsize>,
}

impl Process {
    /// `child`, counted in `stuck` while the reaper holds it.
    pub fn new(child: Child, stuck: Arc<AtomicUsize>) -> Self {
        Self {
            child: Some(child),
            stuck,
        }
    }

    /// Its exit status if it ended (`None` while it runs). A child handed to the reaper
    /// counts as running: its end is not known here.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL to the child and, while it is unreaped (so its id, and its group's, cannot
    /// have been reused), to whatever it started. Does not wait.
    pub fn kill(&mut self) {
        let Some(child) = self.child.as_mut() else {
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
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the child (and its group) and reaps it: its status, or `None` when it did not
    /// end within [`REAP_GRACE`] and the reaper now waits for it.
    pub fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        self.kill();
        self.reap_within(REAP_GRACE)
    }

    /// Waits up to `grace` for the child to end; past that, hands it to the reaper.
    fn reap_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.wait_for(grace) {
            return Some(status);
        }
        let child = self.child.take()?;
        tracing::warn!(
            pid = child.id(),
            "a killed plugin child did not end within {grace:?} (stuck in the kernel); the reaper waits for it"
        );
        hand_over(child, self.stuck.clone());
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// The children the reaper holds, each with its owner's count, and whether its thread runs.
#[derive(Default)]
struct Reaper {
    children: Vec<(Child, Arc<AtomicUsize>)>,
    running: bool,
}

fn reaper() -> &'static Mutex<Reaper> {
    static REAPER: Mutex<Reaper> = Mutex::new(Reaper {
        children: Vec::new(),
        running: false,
    });
    &REAPER
}

/// Gives `child` to the reaper (counted in `stuck` until reaped), starting its thread if
/// none runs.
fn hand_over(child: Child, stuck: Arc<AtomicUsize>) {
    stuck.fetch_add(1, Ordering::SeqCst);
    let mut reaper = reaper().lock();
    reaper.children.push((child, stuck));
    if reaper.running {
        return;
    }
    let started = std::thread::Builder::new()
        .name("mm-plugin-reaper".into())
        .spawn(reap_until_empty);
    match started {
        Ok(_) => reaper.running = true,
        // The child stays held: the next hand-over starts the thread again.
        Err(e) => tracing::warn!("cannot start the plugin reaper thread ({e})"),
    }
}

/// The reaper's thread: reaps the children it holds as they end, then ends itself.
fn reap_until_empty() {
    loop {
        std::thread::sleep(REAP_POLL);
        let mut reaper = reaper().lock();
        reaper.children.retain_mut(|(child, stuck)| {
            let ended = !matches!(child.try_wait(), Ok(None));
            if ended {
                stuck.fetch_sub(1, Ordering::SeqCst);
            }
            !ended
        });
        if reaper.children.is_empty() {
            reaper.running = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;

    fn process(seconds: &str) -> (Process, Arc<AtomicUsize>) {
        let child = Command::new("sleep")
            .arg(seconds)
            .process_group(0)
            .spawn()
            .unwrap();
        let stuck = Arc::new(AtomicUsize::new(0));
        (Process::new(child, stuck.clone()), stuck)
    }

    #[test]
    fn a_killed_child_is_reaped_with_its_signal() {
        let (mut process, stuck) = process("30");
        assert_eq!(process.try_wait(), None);
        let status = process.kill_and_reap().expect("reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(stuck.load(Ordering::SeqCst), 0);
    }

    /// A child that outlives the grace (as one stuck in the kernel outlives SIGKILL; here it
    /// is simply not killed) is handed over at once, counted while held, and reaped by
    /// the reaper when it ends: no zombie is left.
    #[test]
    fn a_child_that_outlives_the_grace_is_handed_to_the_reaper_and_reaped() {
        let (mut process, stuck) = process("1");
        let pid = process.child.as_ref().unwrap().id() as libc::pid_t;
        let started = Instant::now();
        assert_eq!(process.reap_within(Duration::from_millis(50)), None);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(stuck.load(Ordering::SeqCst), 1, "counted while held");
        drop(process);
        let deadline = Instant::now() + Duration::from_secs(10);
        while stuck.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "the reaper never reaped it");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Reaped, so no longer our child (not a zombie waiting for a wait).
        // SAFETY: waitpid with a null status pointer has no memory-safety preconditions.
        let waited = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(waited, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );
    }
}
