//! The child side of process isolation: opens one plugin library and answers the host's
//! requests, one at a time, until the host closes its end.

use super::protocol::{
    from_wire, read_frame_bytes, to_wire, write_frame, Reply, Request, WireType,
};
use crate::library::{open_plugin, LoadedPlugin};
use crate::loader::PluginModel;
use model_manager_core::{Device, ErrorCode, Infer, Model, ModelError, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Environment variable naming the library a child opens (its presence makes a process a
/// plugin child).
pub const CHILD_LIBRARY_ENV: &str = "MM_PLUGIN_CHILD_LIBRARY";
/// The sha256 the host vetted, so the child opens the same bytes.
pub const CHILD_SHA256_ENV: &str = "MM_PLUGIN_CHILD_SHA256";
/// The host's process id, which the child outlives by at most a moment.
pub const CHILD_HOST_PID_ENV: &str = "MM_PLUGIN_CHILD_HOST_PID";

static SERVES_CHILDREN: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main` of a program that may run plugins with
/// `plugins.isolation = "process"`: started by the host as a plugin child, it serves the
/// host and exits; otherwise it returns at once and lets the host start this executable as
/// its children (else `plugins.host_program` must name one, e.g. `mm-plugin-host`).
pub fn serve_child_if_asked() {
    if let Some(library) = std::env::var_os(CHILD_LIBRARY_ENV) {
        std::process::exit(run_child(Path::new(&library)));
    }
    SERVES_CHILDREN.store(true, Ordering::Release);
}

/// Whether this executable called [`serve_child_if_asked`].
pub(crate) fn this_executable_serves_children() -> bool {
    SERVES_CHILDREN.load(Ordering::Acquire)
}

/// The protocol's streams: private close-on-exec copies of stdin and stdout (processes the
/// plugin starts neither hold the host's pipes open nor read its requests), with descriptor
/// 0 pointed at /dev/null and 1 at stderr, so what the plugin reads or prints cannot touch
/// the frames.
fn protocol_streams() -> std::io::Result<(File, File)> {
    let null = File::open("/dev/null")?;
    // SAFETY: plain descriptor calls on descriptors this process owns; each copy is owned
    // by the returned File alone.
    unsafe {
        let input = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        let output = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if input < 0
            || output < 0
            || libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) < 0
            || libc::dup2(2, 1) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok((File::from_raw_fd(input), File::from_raw_fd(output)))
    }
}

/// Ends this process when its host goes away, even while the plugin is stuck in a call (a
/// closed request stream ends it otherwise). Polls the parent id: the kernel's parent-death
/// signal follows the host *thread* that started the child, and the host's blocking threads
/// come and go.
fn exit_with_host() {
    // The host's pid as the host said it, so a host that died before this line is noticed.
    // SAFETY: getppid has no preconditions.
    let host = std::env::var(CHILD_HOST_PID_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| unsafe { libc::getppid() });
    let _ = std::thread::Builder::new()
        .name("mm-plugin-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            // SAFETY: getppid has no preconditions; _exit skips the plugin's atexit work,
            // which may be what is stuck.
            if unsafe { libc::getppid() } != host {
                unsafe { libc::_exit(0) };
            }
        });
}

/// Serves the host; the exit status says why it stopped (0: the host closed the stream).
fn run_child(library: &Path) -> i32 {
    exit_with_host();
    let Ok((input, output)) = protocol_streams() else {
        return 70;
    };
    let (mut input, mut output) = (BufReader::new(input), BufWriter::new(output));
    let mut pins = BTreeMap::new();
    if let Ok(sha256) = std::env::var(CHILD_SHA256_ENV) {
        pins.insert(library.display().to_string(), sha256);
    }
    let plugin = match open_plugin(library, &pins, true) {
        Ok(plugin) => plugin,
        Err(error) => {
            let _ = write_frame(
                &mut output,
                &Reply::Failed {
                    error: error.into(),
                },
            );
            return 3;
        }
    };
    let hello = Reply::Hello {
        protocol: super::protocol::PROTOCOL_VERSION,
        record: plugin.record.clone(),
        panic_abort: plugin.module.panic_abort() == Some(true),
        types: plugin
            .types
            .iter()
            .map(|t| WireType {
                model_type: t.model_type.clone(),
                option_keys: t.option_keys.clone(),
            })
            .collect(),
    };
    if write_frame(&mut output, &hello).is_err() {
        return 4;
    }
    let mut models = Models {
        plugin,
        loaded: HashMap::new(),
    };
    loop {
        let bytes = match read_frame_bytes(&mut input) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return 0,
            Err(_) => return 5,
        };
        // A request that does not decode is answered, not a reason to stop.
        let reply = serde_json::from_slice::<Request>(&bytes)
            .map_err(|e| {
                ModelError::new(
                    ErrorCode::InferenceError,
                    format!("the plugin child cannot read the request: {e}"),
                )
            })
            .and_then(|request| models.answer(request))
            .unwrap_or_else(|error| Reply::Failed {
                error: error.into(),
            });
        if write_frame(&mut output, &reply).is_err() {
            return 4;
        }
    }
}

/// The models this child loaded, by the host's ids.
struct Models {
    plugin: Arc<LoadedPlugin>,
    loaded: HashMap<u64, PluginModel>,
}

impl Models {
    fn answer(&mut self, request: Request) -> Result<Reply> {
        match request {
            Request::Load { model, config } => {
                let device = match config.device.strip_prefix("cuda:") {
                    Some(n) => Device::Cuda(n.parse().unwrap_or(0)),
                    None => Device::Cpu,
                };
                let loaded = PluginModel::load(self.plugin.clone(), &config, device)?;
                let memory_bytes = loaded.info().bytes.unwrap_or(0);
                self.loaded.insert(model, loaded);
                Ok(Reply::Loaded { memory_bytes })
            }
            Request::Infer { model, inputs } => {
                let loaded = self.loaded.get(&model).ok_or_else(|| {
                    ModelError::new(
                        ErrorCode::InferenceError,
                        format!("the plugin child has no model {model}"),
                    )
                })?;
                let inputs = from_wire(inputs).map_err(|e| {
                    ModelError::new(ErrorCode::InvalidInput, format!("unreadable input {e}"))
                })?;
                let outputs = loaded.infer(&inputs)?;
                Ok(Reply::Outputs {
                    outputs: to_wire(&outputs),
                })
            }
            Request::Unload { model } => {
                self.loaded.remove(&model);
                Ok(Reply::Done)
            }
        }
    }
}
