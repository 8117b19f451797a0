//! The host side of process isolation: one child process per plugin library, started on
//! demand, restarted with backoff after it dies or hangs. Calls are serialized per child.

use super::child::{CHILD_LIBRARY_ENV, CHILD_SHA256_ENV};
use super::protocol::{read_frame, write_frame, Reply, Request, WireType, PROTOCOL_VERSION};
use crate::library::load_error;
use model_manager_core::{ErrorCode, ModelError, PluginRecord, Result};
use parking_lot::Mutex;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// First restart delay after a crash; doubles per crash in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// A running child: its process, its request stream, and a reader thread's replies.
struct Running {
    process: Child,
    requests: BufWriter<ChildStdin>,
    replies: Receiver<std::io::Result<Option<Reply>>>,
    started: Instant,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    /// Bumped when a child dies; a model loaded in another generation must load again.
    generation: u64,
    crashes_in_a_row: u32,
    last_crash: Option<Instant>,
}

/// One plugin library hosted in child processes.
pub struct ChildPlugin {
    library: PathBuf,
    sha256: String,
    program: PathBuf,
    program_args: Vec<String>,
    timeout: Duration,
    /// The library as the first child described it.
    pub record: PluginRecord,
    /// Its types and option keys.
    pub types: Vec<WireType>,
    state: Mutex<State>,
}

impl ChildPlugin {
    /// Starts the first child for `library` (vetted, with `sha256`) and reads its manifest;
    /// `PLUGIN_LOAD_ERROR` when it cannot open the library or dies trying.
    pub fn start(
        library: &Path,
        sha256: String,
        program: (PathBuf, Vec<String>),
        timeout: Duration,
    ) -> Result<Self> {
        let mut plugin = Self {
            library: library.to_path_buf(),
            sha256,
            program: program.0,
            program_args: program.1,
            timeout,
            record: PluginRecord {
                name: String::new(),
                version: String::new(),
                abi: String::new(),
                path: library.to_path_buf(),
                sha256: String::new(),
                types: Vec::new(),
            },
            types: Vec::new(),
            state: Mutex::new(State::default()),
        };
        let (running, record, types) = plugin.spawn()?;
        plugin.record = record;
        plugin.types = types;
        let state = plugin.state.get_mut();
        state.running = Some(running);
        state.generation = 1;
        Ok(plugin)
    }

    /// Starts a child and waits for its hello.
    fn spawn(&self) -> Result<(Running, PluginRecord, Vec<WireType>)> {
        let mut process = Command::new(&self.program)
            .args(&self.program_args)
            .env(CHILD_LIBRARY_ENV, &self.library)
            .env(CHILD_SHA256_ENV, &self.sha256)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                load_error(
                    &self.library,
                    format!(
                        "cannot start the plugin host program {} for {}: {e}",
                        self.program.display(),
                        self.library.display()
                    ),
                )
                .with("key", "plugins.host_program")
            })?;
        let requests = BufWriter::new(process.stdin.take().expect("piped stdin"));
        let stdout = process.stdout.take().expect("piped stdout");
        let (sender, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name("mm-plugin-replies".into())
            .spawn(move || {
                let mut stdout = BufReader::new(stdout);
                loop {
                    let reply = read_frame::<Reply>(&mut stdout);
                    let last = !matches!(reply, Ok(Some(_)));
                    if sender.send(reply).is_err() || last {
                        return;
                    }
                }
            })
            .map_err(|e| load_error(&self.library, format!("cannot start a reader: {e}")))?;
        let mut running = Running {
            process,
            requests,
            replies,
            started: Instant::now(),
        };
        match self.receive(&mut running, ErrorCode::PluginLoadError, "starting")? {
            Reply::Hello {
                protocol: PROTOCOL_VERSION,
                record,
                types,
            } => Ok((running, record, types)),
            Reply::Hello { protocol, .. } => {
                let _ = running.process.kill();
                Err(load_error(
                    &self.library,
                    format!(
                        "the plugin host program {} speaks protocol {protocol}, this host {PROTOCOL_VERSION}; use the same build for both",
                        self.program.display()
                    ),
                ))
            }
            Reply::Failed { error } => {
                let _ = running.process.wait();
                Err(error.into())
            }
            other => Err(load_error(
                &self.library,
                format!("the plugin child greeted with {other:?}"),
            )),
        }
    }

    /// The current child generation (changes when a child dies).
    pub fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// Sends `request` and returns the reply with the generation of the child that gave it.
    /// A child that dies, hangs past the timeout or answers garbage is killed and the call
    /// fails with `code`; the next call starts a new child (after a backoff when it keeps
    /// crashing).
    pub fn call(&self, request: &Request, code: ErrorCode) -> Result<(Reply, u64)> {
        let mut state = self.state.lock();
        if state.running.is_none() {
            self.restart(&mut state)?;
        }
        let generation = state.generation;
        let running = state.running.as_mut().expect("a running child");
        let sent = write_frame(&mut running.requests, request);
        let reply = match sent {
            Ok(()) => self.receive(running, code, "answering"),
            Err(_) => Err(self.died(running, code, "taking a request")),
        };
        if reply.is_err() {
            // The dead child's models are gone: the next generation loads them again.
            state.generation += 1;
            let running = state.running.take().expect("a running child");
            if running.started.elapsed() >= STABLE_AFTER {
                state.crashes_in_a_row = 0;
            }
            state.crashes_in_a_row += 1;
            state.last_crash = Some(Instant::now());
        }
        reply.map(|r| (r, generation))
    }

    /// Starts a new child once the backoff since the last crash has passed.
    fn restart(&self, state: &mut State) -> Result<()> {
        if let Some(last) = state.last_crash {
            let exponent = state.crashes_in_a_row.saturating_sub(1).min(16);
            let backoff = (FIRST_BACKOFF * 2u32.pow(exponent)).min(MAX_BACKOFF);
            if let Some(wait) = backoff.checked_sub(last.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let (running, record, _) = self.spawn()?;
        if record.sha256 != self.record.sha256 {
            return Err(load_error(
                &self.library,
                format!(
                    "{} changed on disk; restart to load the new build",
                    self.library.display()
                ),
            ));
        }
        tracing::info!(plugin = %self.record.name, "plugin child restarted");
        state.running = Some(running);
        Ok(())
    }

    /// The next reply, or a coded error when the child dies or exceeds the timeout.
    fn receive(&self, running: &mut Running, code: ErrorCode, doing: &str) -> Result<Reply> {
        match running.replies.recv_timeout(self.timeout) {
            Ok(Ok(Some(reply))) => Ok(reply),
            Ok(Ok(None) | Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                Err(self.died(running, code, doing))
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = running.process.kill();
                let _ = running.process.wait();
                Err(ModelError::new(
                    code,
                    format!(
                        "plugin `{}` did not answer within {:.1} s while {doing}; its process was killed and restarts on the next call",
                        self.name(),
                        self.timeout.as_secs_f64()
                    ),
                )
                .with("plugin", self.name())
                .with("path", self.library.display().to_string())
                .with("reason", "timeout"))
            }
        }
    }

    /// The error for a child that went away; reaps it to say how.
    fn died(&self, running: &mut Running, code: ErrorCode, doing: &str) -> ModelError {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match running.process.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = running.process.kill();
                    break running.process.wait().ok();
                }
            }
        };
        let how = match status.map(|s| (s.code(), s.signal())) {
            Some((_, Some(signal))) => {
                format!("was killed by signal {signal} ({})", signal_name(signal))
            }
            Some((Some(status), _)) => format!("exited with status {status}"),
            _ => "ended".to_owned(),
        };
        ModelError::new(
            code,
            format!(
                "the process of plugin `{}` {how} while {doing}; the host lives on and restarts it on the next call",
                self.name()
            ),
        )
        .with("plugin", self.name())
        .with("path", self.library.display().to_string())
        .with("reason", "crash")
    }

    fn name(&self) -> &str {
        if self.record.name.is_empty() {
            self.library.to_str().unwrap_or("plugin")
        } else {
            &self.record.name
        }
    }
}

impl Drop for ChildPlugin {
    fn drop(&mut self) {
        if let Some(mut running) = self.state.get_mut().running.take() {
            drop(running.requests);
            // The child exits when its request stream closes; make sure it does.
            let _ = running.process.kill();
            let _ = running.process.wait();
        }
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
