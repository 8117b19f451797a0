//! `mm`: inspect and drive the models of a model-manager settings file.

mod args;
mod bench;
mod commands;
mod embed_io;
mod infer;
mod init;
mod output;
mod plugins;
mod ps;
mod pull;
mod server;
mod text;

use args::{Cli, Command, PluginsCommand, ServeArgs};
use clap::Parser;
use model_manager::{ErrorCode, ModelError, Settings};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Started as a plugin child (`plugins.isolation = "process"`), serve and exit.
    model_manager::plugin_host::serve_child_if_asked();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(&cli);
    output::set_quiet(cli.quiet);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error, cli.json);
            ExitCode::from(output::exit_code(&error))
        }
    }
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
fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| level.into());
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
    // `mm check` reports every problem of the file, so it reads the file itself.
    if let Command::Check = cli.command {
        load_settings_path(cli)?;
        return runtime.block_on(commands::check(&cli.config, cli.json));
    }
    let settings = load_settings(cli)?;
    runtime.block_on(dispatch(cli, settings))
}

async fn dispatch(cli: &Cli, settings: Settings) -> Result<(), ModelError> {
    let json = cli.json;
    match &cli.command {
        Command::Models => commands::models(settings, json).await,
        Command::Status => commands::status(settings, json).await,
        Command::Ps { url, api_key } => ps::ps(url, api_key.as_deref(), json).await,
        Command::Check => commands::check(&cli.config, json).await,
        Command::Init { path, force } => init::init(path, *force, json),
        Command::Pull { target } => pull::pull(settings, target, json).await,
        Command::Embed(args) => text::embed(settings, args, json).await,
        Command::Similarity { model, texts } => {
            text::similarity(settings, model, texts, json).await
        }
        Command::Search {
            model,
            corpus,
            top_k,
            query,
        } => text::search(settings, model, corpus, *top_k as usize, query, json).await,
        Command::Generate(args) => text::generate(settings, args, json).await,
        Command::Infer {
            model,
            image,
            values,
        } => infer::infer(settings, model, image, values.as_deref(), json).await,
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
            bench::bench(settings, options, json).await
        }
        Command::Plugins { command } => match command {
            PluginsCommand::List => plugins::list(&settings, json),
            PluginsCommand::Check {
                file,
                in_process: true,
            } => plugins::check_here(&settings, file),
            PluginsCommand::Check { file, .. } => plugins::check(&cli.config, file, json),
        },
        Command::Serve(args) => serve(settings, args).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "mm", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The server's API key: `--api-key` / `MM_API_KEY`, else the key file; an empty key is a
/// `CONFIG_ERROR`, never a silently open server.
fn api_key_of(given: Option<&str>, file: Option<&PathBuf>) -> Result<Option<String>, ModelError> {
    let key = match (given, file) {
        (Some(key), _) => key.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                ModelError::config(
                    "server.api_key_file",
                    format!("cannot read the API key file {}: {e}", path.display()),
                )
            })?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if key.trim().is_empty() {
        return Err(ModelError::config(
            "server.api_key_file",
            "the API key is empty (--api-key, MM_API_KEY or the key file): set a key, or unset it to serve without one",
        ));
    }
    Ok(Some(key))
}

/// `HOST:PORT` with a name (`localhost:8080`) or an address.
fn listen_addr(text: &str) -> Result<std::net::SocketAddr, ModelError> {
    use std::net::ToSocketAddrs;
    let invalid = |why: String| {
        ModelError::invalid_input(format!("--addr {text}: {why}")).with(
            "hint",
            "give HOST:PORT, e.g. 127.0.0.1:8080, localhost:8080 or 0.0.0.0:80",
        )
    };
    let mut found = text.to_socket_addrs().map_err(|e| invalid(e.to_string()))?;
    found
        .next()
        .ok_or_else(|| invalid("resolves to no address".into()))
}

async fn serve(settings: Settings, args: &ServeArgs) -> Result<(), ModelError> {
    let mut limits = settings.server.clone();
    limits.max_body_bytes = args.max_body_bytes.unwrap_or(limits.max_body_bytes);
    limits.max_inputs = args.max_inputs.unwrap_or(limits.max_inputs);
    limits.max_concurrent = args.max_concurrent.unwrap_or(limits.max_concurrent);
    let key_file = args.api_key_file.as_ref().or(limits.api_key_file.as_ref());
    let config = server::ServerConfig {
        addr: listen_addr(&args.addr)?,
        api_key: api_key_of(args.api_key.as_deref(), key_file)?,
        limits,
    };
    server::serve(model_manager::ModelManager::new(settings), config).await
}
