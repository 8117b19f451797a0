//! Starting a child: the command (the host's environment without its secrets), its pipes
//! (requests non-blocking, replies read by a thread that stops with the child), and its
//! hello.

use super::super::child::{CHILD_HOST_PID_ENV, CHILD_LIBRARY_ENV, CHILD_SHA256_ENV};
use super::super::environment::withhold_secrets;
use super::super::pipes::{set_nonblocking, AbandonableReader};
use super::super::protocol::{read_frame_bytes, Reply, WireType, PROTOCOL_VERSION};
use super::super::reap::Process;
use super::{decode, ChildPlugin, Deadline, Running};
use crate::error::plugin_load_error;
use model_manager_core::{ErrorCode, PluginRecord, Result};
use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

/// What a child said hello with.
pub(super) struct Hello {
    pub record: PluginRecord,
    pub types: Vec<WireType>,
    pub panic_abort: bool,
}

impl ChildPlugin {
    /// The command that starts a child: the host's environment without its secrets, the
    /// library to open, and a process group of its own.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        let inherited: Vec<_> = std::env::vars_os().map(|(name, _)| name).collect();
        withhold_secrets(&mut command, inherited.iter().map(|n| n.as_os_str()));
        command
            .args(&self.program_args)
            .env(CHILD_LIBRARY_ENV, &self.library)
            .env(CHILD_SHA256_ENV, &self.sha256)
            .env(CHILD_HOST_PID_ENV, std::process::id().to_string())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Starts a child and waits for its hello.
    pub(super) fn spawn(&self) -> Result<(Running, Hello)> {
        let mut process = self.command().spawn().map_err(|e| {
            plugin_load_error(
                &self.library,
                format!(
                    "cannot start the plugin host program {} for {}: {e}",
                    self.program.display(),
                    self.library.display()
                ),
            )
            .with("key", "plugins.host_program")
        })?;
        let requests = process.stdin.take();
        let stdout = process.stdout.take().expect("piped stdout");
        let abandoned = Arc::new(AtomicBool::new(false));
        // Room for one reply: a child that writes more than it is asked for blocks instead
        // of filling the host's memory.
        let (sender, replies) = mpsc::sync_channel(1);
        let mut running = Running {
            process: Process::new(process, self.stuck.clone()),
            requests,
            replies,
            started: Instant::now(),
            abandoned: abandoned.clone(),
        };
        if let Some(requests) = &running.requests {
            set_nonblocking(requests).map_err(|e| {
                plugin_load_error(
                    &self.library,
                    format!("cannot set up the request pipe: {e}"),
                )
            })?;
        }
        let reader = std::thread::Builder::new()
            .name("mm-plugin-replies".into())
            .spawn(move || {
                let mut stdout = BufReader::new(AbandonableReader::new(stdout, abandoned));
                loop {
                    let received = read_frame_bytes(&mut stdout).map(|frame| frame.map(decode));
                    let last = !matches!(received, Ok(Some(_)));
                    if sender.send(received).is_err() || last {
                        return;
                    }
                }
            });
        if let Err(e) = reader {
            return Err(plugin_load_error(
                &self.library,
                format!("cannot start a reader: {e}"),
            ));
        }
        let deadline = Deadline::after(self.load_timeout());
        match self.receive(&mut running, deadline, ErrorCode::PluginLoadError, "starting")? {
            Reply::Hello {
                protocol: PROTOCOL_VERSION,
                record,
                types,
                panic_abort,
            } => Ok((
                running,
                Hello {
                    record,
                    types,
                    panic_abort,
                },
            )),
            Reply::Hello { protocol, .. } => Err(plugin_load_error(
                &self.library,
                format!(
                    "the plugin host program {} speaks protocol {protocol}, this host {PROTOCOL_VERSION}; use the same build for both",
                    self.program.display()
                ),
            )),
            Reply::Failed { error } => Err(error.into_error(ErrorCode::PluginLoadError, true)),
            other => Err(plugin_load_error(
                &self.library,
                format!("the plugin child greeted with {other:?}"),
            )),
        }
    }
}
