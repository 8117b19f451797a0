//! `mm`: inspect and drive the models of a model-manager settings file.

mod args;
mod commands;
mod embed_io;
mod output;
mod session;

use args::{Cli, Command, PluginsCommand};
use clap::Parser;
use commands::{
    bench, check, infer, init, models, plugins, ps, pull, quantize_check, scoring, serve, status,
    text,
};
use model_manager::{ErrorCode, ModelError, ModelManager, Settings};
use session::{with_manager, OnSignal};
use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    one_malloc_arena();
    // Started as a plugin child (`plugins.isolation = "process"`), serve and exit.
    model_manager::plugin_host::serve_child_if_asked();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // After parsing: `--help` and usage errors start no threads.
    name_compute_pool();
    init_logging(&cli);
    output::set_quiet(cli.quiet);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error, cli.json);
            if let Some(signal) = output::interrupting_signal(&error) {
                die_of(signal);
            }
            ExitCode::from(output::exit_code(&error))
        }
    }
}

/// Ends the process by `signal` (its cleanup done), as the shell convention wants: a
/// shell or script waiting on `mm` sees it killed by SIGINT and stops too, where an exit
/// status of 130 would read as "handled, carry on".
fn die_of(signal: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: restoring the default action and raising a signal have no memory-safety
    // preconditions; the runtime that watched for it has already shut down.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    // Not reached: the default action of SIGINT and SIGTERM ends the process.
    std::process::exit(128 + signal)
}

/// A command line clap refuses: its usage text (exit 2), or with `--json` the error as
/// JSON like every other error. Help and version are not errors.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args().any(|a| a == "--json");
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let error = ModelError::invalid_input(message).with("usage", rendered.trim_end());
    output::print_error(&error, true);
    ExitCode::from(output::exit::USAGE)
}

/// Logs on stderr: `MM_LOG`, else `RUST_LOG`, else by `-q` / `-v`; colours only on a terminal.
/// A command that runs once and prints its own error does not also log a failed load at the
/// default level (`-v` shows it); `mm serve` does, its log being where such failures go.
fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let default = match (&cli.command, cli.verbose) {
        (Command::Serve(_), _) | (_, 1..) => level.to_owned(),
        _ => format!("{level},{}=off", model_manager::LOAD_FAILURE_LOG_TARGET),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The settings file, or a `CONFIG_ERROR` that says which path was tried and how to choose.
fn load_settings(cli: &Cli) -> Result<Settings, ModelError> {
    if cli.command.needs_no_settings() && !cli.config.exists() {
        return Ok(Settings::default());
    }
    load_settings_path(cli)?;
    Settings::from_file(&cli.config)
}

/// `CONFIG_ERROR` unless the settings file exists.
fn load_settings_path(cli: &Cli) -> Result<(), ModelError> {
    if !cli.config.exists() {
        let shown = std::path::absolute(&cli.config).unwrap_or_else(|_| cli.config.clone());
        return Err(ModelError::config(
            "config",
            format!("no settings file at {}", shown.display()),
        )
        .with("path", shown.display().to_string())
        .with(
            "hint",
            "run `mm init` to write one here, or choose one with --config FILE or MM_CONFIG",
        ));
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<(), ModelError> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        ModelError::new(ErrorCode::ConfigError, "cannot start the async runtime")
            .caused_by("IoError", e)
    })?;
    let result = runtime.block_on(dispatch(cli));
    // Work a signal abandoned (a download, a load) may still hold a blocking thread: the
    // process ends without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// Commands that need no models run alone; the others share one manager (see [`managed`]).
async fn dispatch(cli: &Cli) -> Result<(), ModelError> {
    let json = cli.json;
    match &cli.command {
        Command::Check => {
            // `mm check` reports every problem of the file, so it reads the file itself.
            load_settings_path(cli)?;
            check::check(&cli.config, json).await
        }
        Command::Init { path, force } => init::init(path, *force, json),
        Command::Ps { url, api_key } => ps::ps(url, api_key.as_deref(), json).await,
        Command::Plugins { command } => plugins_command(cli, command),
        Command::Completions { shell } => {
            // Written whole, so a closed stdout is an error here rather than a panic inside
            // clap_complete.
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "mm", &mut script);
            output::write_stdout(&script)
        }
        Command::Serve(args) => serve::serve(load_settings(cli)?, args).await,
        Command::QuantizeCheck { model, input } => {
            let settings =
                quantize_check::checking_settings(load_settings(cli)?, model, input.as_deref());
            with_manager(settings, OnSignal::Interrupt, |m| async move {
                quantize_check::quantize_check(&m, model, json).await
            })
            .await
        }
        command => managed(cli, |m| async move { with_models(&m, command, json).await }).await,
    }
}

/// Names the compute pool's threads `mm-pool-N`, so `top -H` (and the engine bench's CPU
/// accounting) tells them from the HTTP runtime's: unnamed, they would take the name of the
/// thread that first used the pool. Its size stays rayon's default (`RAYON_NUM_THREADS`, or
/// one per core).
fn name_compute_pool() {
    // Fails only if the pool already exists, and then it keeps its threads as they are.
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("mm-pool-{i}"))
        .build_global();
}

/// glibc gives each thread that allocates (rayon's, tokio's) an arena of its own, and an
/// arena keeps what a forward pass freed for its next one: with the default (8 per core)
/// bulk int8 `mm embed` peaked at 253 MiB, with one arena at 211 MiB, in the same time (the
/// large buffers are few; small ones come from the per-thread caches, which need no arena
/// lock). Called before any thread starts; an operator's own `MALLOC_ARENA_MAX` or
/// `glibc.malloc.arena_max` tunable wins (other tunables, such as the CPU features the
/// AVX2-only bench masks, leave it to us).
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"))
    {
        // SAFETY: mallopt only sets a tunable; no thread exists yet to race with it.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Runs `work` with the one manager of this command, shut down whatever happens; SIGINT
/// and SIGTERM interrupt it.
async fn managed<F, Fut>(cli: &Cli, work: F) -> Result<(), ModelError>
where
    F: FnOnce(ModelManager) -> Fut,
    Fut: Future<Output = Result<(), ModelError>>,
{
    with_manager(load_settings(cli)?, OnSignal::Interrupt, work).await
}

/// The commands that use models, given the command's manager.
async fn with_models(
    manager: &ModelManager,
    command: &Command,
    json: bool,
) -> Result<(), ModelError> {
    match command {
        Command::Models => models::models(manager, json).await,
        Command::Status => status::status(manager, json).await,
        Command::Pull { target } => pull::pull(manager, target, json).await,
        Command::Embed(args) => text::embed(manager, args, json).await,
        Command::Rerank(args) => scoring::rerank(manager, args, json).await,
        Command::Classify(args) => scoring::classify(manager, args, json).await,
        Command::Generate(args) => text::generate(manager, args, json).await,
        Command::Similarity { model, texts } => text::similarity(manager, model, texts, json).await,
        Command::Search {
            model,
            corpus,
            top_k,
            query,
        } => text::search(manager, model, corpus, *top_k as usize, query, json).await,
        Command::Infer {
            model,
            image,
            values,
        } => infer::infer(manager, model, image, values.as_deref(), json).await,
        Command::Bench {
            model,
            corpus,
            texts,
            runs,
        } => {
            let options = bench::BenchOptions {
                model,
                corpus: corpus.as_deref(),
                texts: *texts as usize,
                runs: *runs as usize,
            };
            bench::bench(manager, options, json).await
        }
        Command::Check
        | Command::Init { .. }
        | Command::Ps { .. }
        | Command::Plugins { .. }
        | Command::Completions { .. }
        | Command::QuantizeCheck { .. }
        | Command::Serve(_) => Err(ModelError::invalid_input(
            "this command runs without a model manager",
        )),
    }
}

/// `mm plugins list | check`: the libraries alone, without a manager.
fn plugins_command(cli: &Cli, command: &PluginsCommand) -> Result<(), ModelError> {
    let settings = load_settings(cli)?;
    match command {
        PluginsCommand::List => plugins::list(&settings, cli.json),
        PluginsCommand::Check {
            file,
            in_process: true,
        } => plugins::check_here(&settings, file),
        PluginsCommand::Check { file, .. } => plugins::check(&cli.config, file, cli.json),
    }
}
