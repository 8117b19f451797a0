//! Plugins in child processes (`plugins.isolation = "process"`): real plugin libraries that
//! abort, segfault, hang or are truncated are coded errors, the host answers the next call
//! and the child is back; in this process the same libraries are refused where they can be.

mod support;

use model_manager_core::{ErrorCode, InferValue, ModelError, ModelManager, NamedValues, Settings};
use model_manager_plugin_host::ChildPlugin;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{faulty_plugins, install, workspace_plugin};

const HOST: &str = env!("CARGO_BIN_EXE_mm-plugin-host");

fn settings(libraries: &[&Path], extra: &str) -> Settings {
    settings_in(libraries, "process", extra)
}

fn settings_in(libraries: &[&Path], isolation: &str, extra: &str) -> Settings {
    let paths: Vec<String> = libraries
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let text = format!(
        "plugins.enabled = true\nplugins.paths = [{}]\nplugins.isolation = {isolation:?}\n\
         plugins.host_program = {HOST:?}\nplugins.timeout_seconds = 2\n\
         models.f.type = \"faulty\"\nmodels.f.memory_bytes = 1000\n{extra}",
        paths.join(", ")
    );
    Settings::from_toml_str(&text, ".").unwrap()
}

fn input(name: &str) -> NamedValues {
    NamedValues::from([(name.to_owned(), InferValue::Text("x".to_owned()))])
}

async fn infer(manager: &ModelManager, name: &str) -> Result<NamedValues, ModelError> {
    manager.infer("f", input(name)).await
}

/// The misbehaviour is a coded error naming the plugin; the next call is answered by a new
/// child, and the model stayed loaded once.
async fn survives(manager: &ModelManager, misbehaviour: &str, expected: &str) {
    let err = infer(manager, misbehaviour).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InferenceError, "{err}");
    assert!(err.message.contains("faulty"), "{}", err.message);
    assert!(
        err.message.contains(expected),
        "{misbehaviour}: {}",
        err.message
    );
    let out = infer(manager, "ok").await.unwrap();
    assert_eq!(out["ok"], InferValue::Text("x".into()), "the child is back");
    assert_eq!(
        manager.get_model_status().await.unwrap().models["f"].load_count,
        1,
        "the host's model survived; only the child reloaded it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_built_plugin_is_refused_in_process_and_survived_in_a_child() {
    let (_dir, library) = install(&faulty_plugins().1, "libfaulty.so");
    let in_process = settings_in(&[&library], "in-process", "plugins.required = true\n");
    let err = ModelManager::new(in_process)
        .initialize()
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PluginLoadError);
    assert!(err.message.contains("panic = \"abort\""), "{}", err.message);

    let manager = ModelManager::new(settings(&[&library], ""));
    manager.initialize().await.unwrap();
    survives(&manager, "panic", "signal 6 (SIGABRT)").await;
    survives(&manager, "abort", "SIGABRT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segfault_and_a_hang_are_errors_and_the_child_comes_back() {
    let (_dir, library) = install(&faulty_plugins().0, "libfaulty.so");
    let manager = ModelManager::new(settings(&[&library], ""));
    manager.initialize().await.unwrap();
    survives(&manager, "segfault", "signal 11 (SIGSEGV)").await;
    let started = Instant::now();
    survives(&manager, "hang", "did not answer within 2.0 s").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // A panic (unwind build) stays a plugin error inside the child, which lives on.
    let err = infer(&manager, "panic").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InferenceError);
    assert!(err.message.contains("panic"), "{}", err.message);
    // What the plugin prints cannot corrupt the protocol.
    assert!(infer(&manager, "print").await.is_ok());
    // The host counts what the plugin reports holding.
    let status = manager.get_status().await.unwrap();
    assert_eq!(status.models["f"].estimated_bytes, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_keep_their_own_state_across_a_crash_and_odd_floats_cross_exactly() {
    let (_dir, library) = install(&faulty_plugins().0, "libfaulty.so");
    let extra = "models.f.tag = \"f\"\nmodels.g.type = \"faulty\"\nmodels.g.tag = \"g\"\n";
    let manager = ModelManager::new(settings(&[&library], extra));
    manager.initialize().await.unwrap();
    let tag = |out: &NamedValues| out["tag"].clone();
    assert_eq!(
        tag(&manager.infer("g", input("ok")).await.unwrap()),
        InferValue::Text("g".into())
    );
    assert!(infer(&manager, "segfault").await.is_err());
    for _ in 0..2 {
        let g = manager.infer("g", input("ok")).await.unwrap();
        assert_eq!(
            tag(&g),
            InferValue::Text("g".into()),
            "g reloaded in the new child"
        );
        let f = infer(&manager, "ok").await.unwrap();
        assert_eq!(tag(&f), InferValue::Text("f".into()));
    }
    // NaN and infinities are not JSON numbers; they cross bit for bit, and the child lives.
    let out = infer(&manager, "nan").await.unwrap();
    let InferValue::Tensor(t) = &out["nan"] else {
        panic!("a tensor: {out:?}")
    };
    let model_manager_core::TensorData::F32(v) = &t.data else {
        panic!("f32")
    };
    assert!(v[0].is_nan() && v[1] == f32::INFINITY && v[2].to_bits() == (-0.0f32).to_bits());
}

/// A child for the unwind-built `faulty` plugin, started directly (2 s call timeout).
fn faulty_child() -> (tempfile::TempDir, Arc<ChildPlugin>) {
    use sha2::Digest;
    let (dir, library) = install(&faulty_plugins().0, "libfaulty.so");
    let sha256: String = sha2::Sha256::digest(std::fs::read(&library).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let library = library.canonicalize().unwrap();
    let child = ChildPlugin::start(
        &library,
        sha256,
        (HOST.into(), Vec::new()),
        Duration::from_secs(2),
    )
    .unwrap();
    (dir, Arc::new(child))
}

fn config(id: &str) -> model_manager_plugin::LoadConfig {
    model_manager_plugin::LoadConfig {
        model_id: id.into(),
        model_type: "faulty".into(),
        ..Default::default()
    }
}

/// Started from a thread that then ends (as the runtime's blocking threads do when idle),
/// the child stays: its lifetime follows the host process, not the thread.
#[test]
fn a_child_outlives_the_thread_that_started_it() {
    let (_dir, child) = std::thread::spawn(faulty_child).join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    child.load(1, &config("f")).unwrap();
    let out = child.infer(1, &config("f"), &input("ok")).unwrap();
    assert_eq!(out["ok"], InferValue::Text("x".into()));
}

/// Dropping a model while another model of the same plugin is in a call neither waits for
/// that call nor wedges the plugin afterwards.
#[test]
fn a_model_dropped_during_another_call_is_unloaded_later_without_blocking() {
    let (_dir, child) = faulty_child();
    child.load(1, &config("f")).unwrap();
    child.load(2, &config("g")).unwrap();
    let busy = {
        let child = child.clone();
        std::thread::spawn(move || child.infer(1, &config("f"), &input("hang")))
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    child.release(2);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "release waited"
    );
    assert!(busy.join().unwrap().is_err(), "the hang timed out");
    // The plugin still answers, model 1 reloaded in the new child, model 2 gone.
    let out = child.infer(1, &config("f"), &input("ok")).unwrap();
    assert_eq!(out["ok"], InferValue::Text("x".into()));
    let err = child.infer(2, &config("g"), &input("ok"));
    assert!(err.is_ok(), "a released id loads again if asked: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_library_fails_only_its_models_unless_plugins_are_required() {
    let (_dir, faulty) = install(&faulty_plugins().0, "libfaulty.so");
    let whole = std::fs::read(&faulty).unwrap();
    std::fs::write(&faulty, &whole[..whole.len() / 3]).unwrap();
    let (_echo_dir, echo) = install(&workspace_plugin("mm-plugin-echo"), "libmm_plugin_echo.so");
    let extra = "models.echo.type = \"echo\"\n";
    let manager = ModelManager::new(settings(&[&faulty, &echo], extra));
    manager.initialize().await.unwrap();
    let err = manager.get_model("f").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PluginLoadError, "{err}");
    assert!(err.message.contains("libfaulty.so"), "{}", err.message);
    let out = manager.infer("echo", input("text")).await.unwrap();
    assert_eq!(out["text"], InferValue::Text("x".into()));
    let status = manager.get_status().await.unwrap();
    assert_eq!(status.plugin_failures.len(), 1);
    assert_eq!(
        status.models["f"].last_error.as_ref().unwrap().code,
        ErrorCode::PluginLoadError
    );

    let strict = settings(
        &[&faulty, &echo],
        &format!("{extra}plugins.required = true\n"),
    );
    let err = ModelManager::new(strict).initialize().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PluginLoadError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_option_typo_sets_aside_only_that_model() {
    let (_dir, library) = install(&faulty_plugins().0, "libfaulty.so");
    let extra = "models.g.type = \"faulty\"\nmodels.g.memory_bytez = 5\n";
    let manager = ModelManager::new(settings(&[&library], extra));
    manager.initialize().await.unwrap();
    let err = manager.get_model("g").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError, "{err}");
    assert!(err.message.contains("memory_bytez"), "{}", err.message);
    assert!(infer(&manager, "ok").await.is_ok());
}

/// A cgroup (v1 freezer) whose processes are frozen: in the kernel, where SIGKILL does not
/// end them until they are thawed, like a child stuck in uninterruptible I/O. (The v2
/// freezer would not do: it lets SIGKILL through.) Thawed and removed when dropped.
struct Frozen(std::path::PathBuf);

impl Frozen {
    /// Freezes `pid`; `None` where the v1 freezer cannot be used (not root, no hierarchy).
    fn freeze(pid: u32) -> Option<Self> {
        let dir = Path::new("/sys/fs/cgroup/freezer").join(format!("mm-test-{pid}"));
        std::fs::create_dir(&dir).ok()?;
        let frozen = Self(dir);
        std::fs::write(frozen.0.join("cgroup.procs"), pid.to_string()).ok()?;
        std::fs::write(frozen.0.join("freezer.state"), "FROZEN").ok()?;
        Some(frozen)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Frozen {
    /// Freezes `pid` too (a process moved into a frozen cgroup is frozen).
    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

/// One text input of 1 MiB: more than a pipe holds, so writing it waits on the child.
fn big_input() -> NamedValues {
    NamedValues::from([("ok".to_owned(), InferValue::Text("x".repeat(1 << 20)))])
}

/// A child stuck in the kernel outlives its SIGKILL: the call still fails at its deadline,
/// a request larger than the pipe included, and the next call gets a new child instead of
/// waiting behind the stuck one. Needs the v1 freezer (root); where there is none it says so
/// and [`a_request_nobody_reads_fails_at_its_deadline_even_when_the_pipe_stays_open`] covers the
/// write.
#[test]
fn a_child_stuck_in_the_kernel_costs_one_call_its_deadline_not_the_library() {
    let (_dir, child) = faulty_child();
    child.load(1, &config("f")).unwrap();
    child.infer(1, &config("f"), &input("ok")).unwrap();
    let library = child.record.path.clone();
    let pid = support::plugin_child_of(std::process::id(), Some(&library)).expect("the child");
    let Some(frozen) = Frozen::freeze(pid) else {
        eprintln!("SKIPPED: freezing a process needs the cgroup v1 freezer and root");
        return;
    };
    let (done, finished) = std::sync::mpsc::channel();
    let calls = child.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let stuck = calls.infer(1, &config("f"), &big_input());
        let took = started.elapsed();
        let next = calls.infer(1, &config("f"), &input("ok"));
        let _ = done.send((stuck, took, next));
    });
    let answered = finished.recv_timeout(Duration::from_secs(20));
    drop(frozen);
    let (stuck, took, next) = answered.expect("the calls returned while the old child was stuck");
    let err = stuck.unwrap_err();
    assert_eq!(err.code, ErrorCode::InferenceError, "{err}");
    assert!(err.message.contains("did not answer"), "{}", err.message);
    // The 2 s deadline, and at most the reaper's grace after it.
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert_eq!(next.unwrap()["ok"], InferValue::Text("x".into()));
}

/// While 4 killed children of a library are stuck in the kernel, a call fails at once
/// instead of starting a fifth (each may hold a model's memory); once they end, the library
/// answers again. Needs the v1 freezer (root), like the test above.
#[test]
fn stuck_children_of_a_library_are_bounded() {
    let (_dir, child) = faulty_child();
    child.load(1, &config("f")).unwrap();
    let library = child.record.path.clone();
    let host = std::process::id();
    let first = support::plugin_child_of(host, Some(&library)).expect("the child");
    let Some(frozen) = Frozen::freeze(first) else {
        eprintln!("SKIPPED: freezing a process needs the cgroup v1 freezer and root");
        return;
    };
    let mut stuck = vec![first];
    for round in 0..4 {
        if round > 0 {
            // A new child answers; then it is frozen too.
            let out = child.infer(1, &config("f"), &input("ok")).unwrap();
            assert_eq!(out["ok"], InferValue::Text("x".into()));
            let fresh = support::plugin_children_of(host, Some(&library))
                .into_iter()
                .find(|pid| !stuck.contains(pid))
                .expect("the new child");
            frozen.add(fresh);
            stuck.push(fresh);
        }
        let err = child.infer(1, &config("f"), &input("ok")).unwrap_err();
        assert!(err.message.contains("did not answer"), "{round}: {err}");
    }
    let started = Instant::now();
    let err = child.infer(1, &config("f"), &input("ok")).unwrap_err();
    assert_eq!(err.code, ErrorCode::InferenceError);
    assert_eq!(err.details["reason"], "stuck", "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "failed at once"
    );
    drop(frozen);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.infer(1, &config("f"), &input("ok")) {
            Ok(out) => {
                assert_eq!(out["ok"], InferValue::Text("x".into()));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never answered again: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The read end of `pid`'s request pipe (its only pipe open for reading), opened here: held,
/// it keeps the pipe open after the child dies, as a child stuck in the kernel does.
fn request_pipe_of(pid: u32) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let link = std::fs::read_link(entry.path()).unwrap_or_default();
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let flags = std::fs::read_to_string(info).unwrap_or_default();
        let access = flags
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .map(|f| f & libc::O_ACCMODE as u32);
        if link.to_string_lossy().starts_with("pipe:") && access == Some(libc::O_RDONLY as u32) {
            return std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(entry.path())
                .unwrap();
        }
    }
    panic!("child {pid} has no pipe open for reading");
}

/// A child that stops reading while its request pipe stays open after SIGKILL (here this
/// test holds the read end, as a child stuck in the kernel would; no root needed): a request
/// larger than the pipe holds still fails at its deadline, and the library answers again.
#[test]
fn a_request_nobody_reads_fails_at_its_deadline_even_when_the_pipe_stays_open() {
    let (_dir, child) = faulty_child();
    child.load(1, &config("f")).unwrap();
    let library = child.record.path.clone();
    let pid = support::plugin_child_of(std::process::id(), Some(&library)).expect("the child");
    let held = request_pipe_of(pid);
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child's.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
    let (done, finished) = std::sync::mpsc::channel();
    let calls = child.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let stuck = calls.infer(1, &config("f"), &big_input());
        let _ = done.send((stuck, started.elapsed()));
    });
    let (stuck, took) = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the call returned while the pipe stayed open");
    let err = stuck.unwrap_err();
    assert_eq!(err.code, ErrorCode::InferenceError, "{err}");
    assert!(err.message.contains("did not answer"), "{}", err.message);
    assert!(took < Duration::from_millis(3500), "{took:?}");
    let next = child.infer(1, &config("f"), &input("ok")).unwrap();
    assert_eq!(next["ok"], InferValue::Text("x".into()));
    drop(held);
}

/// The host's secrets stay out of a plugin child's environment; the rest is passed on.
#[test]
fn a_plugin_child_inherits_no_secret() {
    // Set before this test's child starts; no other test reads these variables.
    std::env::set_var("MM_REDIS_SECRET", "a secret the replicas share, 32+ bytes");
    // (A settings override may hold a Redis URL with its password; no settings read this one.)
    std::env::set_var("CORE_MODEL_MANAGER_MM_TEST_ONLY", "redis://:pw@h/0");
    std::env::set_var("MM_TEST_PASSED_ON", "yes");
    let (_dir, child) = faulty_child();
    let pid =
        support::plugin_child_of(std::process::id(), Some(&child.record.path)).expect("the child");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|v| v.split(|b| *b == b'=').next())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(names.contains(&"MM_TEST_PASSED_ON".to_owned()), "{names:?}");
    assert!(!names.contains(&"MM_REDIS_SECRET".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("CORE_MODEL_MANAGER_")),
        "{names:?}"
    );
}
