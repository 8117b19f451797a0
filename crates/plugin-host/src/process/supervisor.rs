//! The host side of process isolation: one child process per plugin library, started on
//! demand, restarted with backoff after it dies, hangs or breaks the protocol. Calls to one
//! library are serialized; every exchange is bounded by a deadline, writing included.

use super::pipes::write_by;
use super::protocol::{encode_frame, from_wire, to_wire, Reply, Request, WireType};
use super::reap::Process;
use crate::error::plugin_load_error;
use failures::{decode, unexpected};
use model_manager_core::{ErrorCode, ModelError, NamedValues, PluginRecord, Result};
use model_manager_plugin::LoadConfig;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod failures;
mod start;

/// First restart delay after a failure; doubles per failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Starting a child and loading a model may take longer than a call.
const MIN_LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a child may take to exit after its request stream closes.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// Children of one library that SIGKILL could not end yet (stuck in the kernel) before no
/// new one starts: each may hold a loaded model's memory.
const MAX_STUCK_CHILDREN: usize = 4;

type Received = std::io::Result<Option<Reply>>;

/// When an exchange must be over, and the limit that set it (for the error message).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    fn after(limit: Duration) -> Self {
        Self {
            at: Instant::now() + limit,
            limit,
        }
    }

    fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// A running child: its process (leading its own process group), its request stream
/// (non-blocking: see [`write_by`]), and a reader thread's replies (at most one waiting).
struct Running {
    process: Process,
    requests: Option<ChildStdin>,
    replies: Receiver<Received>,
    started: Instant,
    /// Set when this child is dropped: its reader thread stops waiting on it.
    abandoned: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

impl Running {
    /// Kills the child and, while it is alive, whatever it started; reaps it (within a
    /// bound: see [`Process::kill_and_reap`]).
    fn kill(&mut self) {
        self.process.kill_and_reap();
    }

    /// Closes the request stream, lets the child exit on its own, then makes sure.
    fn stop(&mut self) {
        self.requests = None;
        self.process.wait_for(EXIT_GRACE);
        self.kill();
    }
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    /// Bumped when a child dies; models loaded in another generation load again.
    generation: u64,
    /// The generation each host model id was loaded in.
    loaded: HashMap<u64, u64>,
    failures_in_a_row: u32,
    last_failure: Option<Instant>,
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
    /// Whether it was built with `panic = "abort"`.
    pub panic_abort: bool,
    state: Mutex<State>,
    /// Models dropped while a call was running, unloaded before the next request.
    pending_unloads: Mutex<Vec<u64>>,
    /// Its children that the reaper holds (killed, not ended yet).
    stuck: Arc<AtomicUsize>,
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
                panic_abort: false,
            },
            types: Vec::new(),
            panic_abort: false,
            state: Mutex::new(State::default()),
            pending_unloads: Mutex::new(Vec::new()),
            stuck: Arc::default(),
        };
        let (running, hello) = plugin.spawn()?;
        plugin.record = hello.record;
        plugin.types = hello.types;
        plugin.panic_abort = hello.panic_abort;
        plugin.state.get_mut().running = Some(running);
        Ok(plugin)
    }

    fn load_timeout(&self) -> Duration {
        self.timeout.max(MIN_LOAD_TIMEOUT)
    }

    /// Loads model `id` (host-unique) in the current child; the memory it reports.
    pub fn load(&self, id: u64, config: &LoadConfig) -> Result<u64> {
        let result = {
            let mut state = self.state.lock();
            self.prepare(&mut state);
            self.load_locked(&mut state, id, config, ErrorCode::ModelLoadError)
        };
        self.drain_pending();
        result
    }

    /// Before a call: unloads models dropped meanwhile, and notices a child that died while
    /// idle (its models must load again) or spoke out of turn.
    fn prepare(&self, state: &mut State) {
        let pending = std::mem::take(&mut *self.pending_unloads.lock());
        for id in pending {
            self.unload_locked(state, id);
        }
        let Some(running) = state.running.as_mut() else {
            return;
        };
        match running.replies.try_recv() {
            Err(mpsc::TryRecvError::Empty) => return,
            Ok(Ok(Some(_))) => {
                let _ = self.failed(
                    running,
                    ErrorCode::InferenceError,
                    "sent a reply nobody asked for",
                    "protocol",
                );
            }
            _ => {
                let error = self.died(&mut running.process, ErrorCode::InferenceError, "idle");
                tracing::warn!(plugin = %self.name(), "{}", error.message);
            }
        }
        self.record_failure(state);
    }

    /// Unloads models dropped while the lock was held, unless another call holds it now
    /// (then that call does it): nothing dropped waits for a later request.
    fn drain_pending(&self) {
        while !self.pending_unloads.lock().is_empty() {
            let Some(mut state) = self.state.try_lock() else {
                return;
            };
            let pending = std::mem::take(&mut *self.pending_unloads.lock());
            for id in pending {
                self.unload_locked(&mut state, id);
            }
        }
    }

    fn load_locked(
        &self,
        state: &mut State,
        id: u64,
        config: &LoadConfig,
        code: ErrorCode,
    ) -> Result<u64> {
        let request = Request::Load {
            model: id,
            config: config.clone(),
        };
        match self.exchange(
            state,
            &request,
            code,
            self.load_timeout(),
            "loading a model",
        )? {
            Reply::Loaded { memory_bytes } => {
                state.loaded.insert(id, state.generation);
                Ok(memory_bytes)
            }
            reply => Err(unexpected(reply, code).for_model(&config.model_id)),
        }
    }

    /// Runs model `id` on `inputs`, loading it first in a child that does not have it (a
    /// restarted one).
    pub fn infer(&self, id: u64, config: &LoadConfig, inputs: &NamedValues) -> Result<NamedValues> {
        let result = self.infer_locked(id, config, inputs);
        self.drain_pending();
        result
    }

    fn infer_locked(
        &self,
        id: u64,
        config: &LoadConfig,
        inputs: &NamedValues,
    ) -> Result<NamedValues> {
        let code = ErrorCode::InferenceError;
        let mut state = self.state.lock();
        self.prepare(&mut state);
        if state.loaded.get(&id) != Some(&state.generation) || state.running.is_none() {
            self.load_locked(&mut state, id, config, code)?;
        }
        let request = Request::Infer {
            model: id,
            inputs: to_wire(inputs),
        };
        match self.exchange(&mut state, &request, code, self.timeout, "answering")? {
            Reply::Outputs { outputs } => from_wire(outputs).map_err(|e| {
                ModelError::new(
                    code,
                    format!(
                        "plugin `{}` returned an unreadable output: {e}",
                        self.name()
                    ),
                )
            }),
            reply => Err(unexpected(reply, code)),
        }
    }

    /// Forgets model `id`; unloaded in the child now, or before the next request when a call
    /// is running (a drop never waits behind another model's call).
    pub fn release(&self, id: u64) {
        self.pending_unloads.lock().push(id);
        self.drain_pending();
    }

    fn unload_locked(&self, state: &mut State, id: u64) {
        let current = state.loaded.remove(&id) == Some(state.generation);
        if current && state.running.is_some() {
            let request = Request::Unload { model: id };
            let _ = self.exchange(
                state,
                &request,
                ErrorCode::InferenceError,
                self.timeout,
                "unloading",
            );
        }
    }

    /// Sends `request` and returns the reply. A child that dies, overruns `timeout`, or
    /// breaks the protocol is killed and the exchange fails with `code`; the next exchange
    /// starts a new child (after a backoff when failures repeat).
    fn exchange(
        &self,
        state: &mut State,
        request: &Request,
        code: ErrorCode,
        timeout: Duration,
        doing: &str,
    ) -> Result<Reply> {
        // A request that cannot be encoded is the caller's problem, not the child's.
        let frame = encode_frame(request).map_err(|e| {
            ModelError::new(
                code,
                format!("cannot encode the request for the plugin: {e}"),
            )
        })?;
        if state.running.is_none() {
            self.restart(state, code)?;
        }
        let running = state.running.as_mut().expect("a running child");
        let deadline = Deadline::after(timeout);
        let reply = self
            .send(running, &frame, deadline, code)
            .and_then(|()| self.receive(running, deadline, code, doing));
        if reply.is_err() {
            self.record_failure(state);
        }
        reply
    }

    /// Writes `frame`, killing the child when it stops reading past `deadline`. No thread
    /// waits on the pipe: a child that SIGKILL cannot end yet keeps its end open, and a
    /// blocked writer would then wait, holding the library's lock, for as long.
    fn send(
        &self,
        running: &mut Running,
        frame: &[u8],
        deadline: Deadline,
        code: ErrorCode,
    ) -> Result<()> {
        let Running {
            process, requests, ..
        } = running;
        let Some(requests) = requests.as_mut() else {
            return Err(self.died(process, code, "taking a request"));
        };
        match write_by(requests, frame, deadline.at) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.overran(process, code, deadline, "taking a request")),
            Err(_) => Err(self.died(process, code, "taking a request")),
        }
    }

    /// The reply, or a coded error when the child dies or overruns `deadline`.
    fn receive(
        &self,
        running: &mut Running,
        deadline: Deadline,
        code: ErrorCode,
        doing: &str,
    ) -> Result<Reply> {
        let wait = deadline.left();
        match running.replies.recv_timeout(wait) {
            Ok(Ok(Some(reply))) => Ok(reply),
            Ok(Err(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(self.failed(
                running,
                code,
                &format!("sent a broken frame ({e})"),
                "protocol",
            )),
            Ok(_) | Err(RecvTimeoutError::Disconnected) => {
                Err(self.died(&mut running.process, code, doing))
            }
            Err(RecvTimeoutError::Timeout) => {
                Err(self.overran(&mut running.process, code, deadline, doing))
            }
        }
    }

    /// Counts a failure (the child is gone or killed): its models must load again, and the
    /// next start waits out the backoff.
    fn record_failure(&self, state: &mut State) {
        state.generation += 1;
        if let Some(running) = state.running.take() {
            if running.started.elapsed() >= STABLE_AFTER {
                state.failures_in_a_row = 0;
            }
        }
        state.failures_in_a_row += 1;
        state.last_failure = Some(Instant::now());
    }

    /// Starts a new child once the backoff since the last failure has passed; `code` when
    /// too many of its children are stuck in the kernel to start another.
    fn restart(&self, state: &mut State, code: ErrorCode) -> Result<()> {
        let stuck = self.stuck.load(Ordering::SeqCst);
        if stuck >= MAX_STUCK_CHILDREN {
            return Err(self.error(
                code,
                format!(
                    "{stuck} killed processes of plugin `{}` have not ended (stuck in the kernel); no new one starts until one does",
                    self.name()
                ),
                "stuck",
            ));
        }
        if let Some(last) = state.last_failure {
            let exponent = state.failures_in_a_row.saturating_sub(1).min(16);
            let backoff = (FIRST_BACKOFF * 2u32.pow(exponent)).min(MAX_BACKOFF);
            if let Some(wait) = backoff.checked_sub(last.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let started = self.spawn().and_then(|(running, hello)| {
            if hello.record.sha256 == self.record.sha256 {
                Ok(running)
            } else {
                Err(plugin_load_error(
                    &self.library,
                    format!(
                        "{} changed on disk; restart to load the new build",
                        self.library.display()
                    ),
                ))
            }
        });
        match started {
            Ok(running) => {
                tracing::info!(plugin = %self.record.name, "plugin child restarted");
                state.running = Some(running);
                Ok(())
            }
            Err(e) => {
                self.record_failure(state);
                Err(e)
            }
        }
    }
}

impl Drop for ChildPlugin {
    fn drop(&mut self) {
        if let Some(mut running) = self.state.get_mut().running.take() {
            running.stop();
        }
    }
}
