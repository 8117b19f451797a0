//! The child side of process isolation: opens one plugin library and answers the host's
//! requests, one at a time, until the host closes its end.

use super::protocol::{from_wire, read_frame, to_wire, write_frame, Reply, Request, WireType};
use crate::library::{open_plugin, LoadedPlugin};
use crate::loader::PluginModel;
use model_manager_core::{Device, Infer, Model, ModelError, Result};
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

/// The protocol's streams: stdin, and a private copy of stdout, with descriptor 1 pointed
/// at stderr so that what the plugin prints cannot corrupt the frames.
fn protocol_streams() -> std::io::Result<(File, File)> {
    // SAFETY: plain descriptor calls on descriptors this process owns; the copy is owned by
    // the returned File alone.
    unsafe {
        let out = libc::dup(1);
        if out < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((File::from_raw_fd(0), File::from_raw_fd(out)))
    }
}

/// Serves the host; the exit status says why it stopped (0: the host closed the stream).
fn run_child(library: &Path) -> i32 {
    // A child must not outlive its host (a killed host leaves no plugin processes behind).
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with these arguments only sets this process's death signal.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
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
        next: 1,
    };
    loop {
        let request: Request = match read_frame(&mut input) {
            Ok(Some(request)) => request,
            Ok(None) => return 0,
            Err(_) => return 5,
        };
        let reply = models
            .answer(request)
            .unwrap_or_else(|error| Reply::Failed {
                error: error.into(),
            });
        if write_frame(&mut output, &reply).is_err() {
            return 4;
        }
    }
}

/// The models this child loaded, by handle.
struct Models {
    plugin: Arc<LoadedPlugin>,
    loaded: HashMap<u64, PluginModel>,
    next: u64,
}

impl Models {
    fn answer(&mut self, request: Request) -> Result<Reply> {
        match request {
            Request::Load { config } => {
                let device = match config.device.strip_prefix("cuda:") {
                    Some(n) => Device::Cuda(n.parse().unwrap_or(0)),
                    None => Device::Cpu,
                };
                let model = PluginModel::load(self.plugin.clone(), &config, device)?;
                let memory_bytes = model.info().bytes.unwrap_or(0);
                let handle = self.next;
                self.next += 1;
                self.loaded.insert(handle, model);
                Ok(Reply::Loaded {
                    model: handle,
                    memory_bytes,
                })
            }
            Request::Infer { model, inputs } => {
                let loaded = self.loaded.get(&model).ok_or_else(|| {
                    ModelError::new(
                        model_manager_core::ErrorCode::InferenceError,
                        format!("the plugin child has no model {model}"),
                    )
                })?;
                let outputs = loaded.infer(&from_wire(inputs))?;
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
