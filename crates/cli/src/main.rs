//! `mm`: inspect and drive the models of a model-manager settings file.

mod commands;
mod output;

use clap::{Parser, Subcommand};
use model_manager::{ModelError, Settings};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command line of `mm`.
#[derive(Parser)]
#[command(
    name = "mm",
    version,
    about = "model-manager: load, share and inspect AI models"
)]
struct Cli {
    /// Settings file (default: $MM_CONFIG, else ./settings.toml).
    #[arg(
        long,
        global = true,
        env = "MM_CONFIG",
        default_value = "settings.toml"
    )]
    config: PathBuf,
    /// Print results and errors as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Configured models: type, backend, whether their files and a loader are present.
    Models,
    /// The manager's status: limits, cache, and every model's state.
    Status,
    /// Validate the settings file (keys, types, environment overrides).
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MM_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error, cli.json);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), ModelError> {
    let settings = Settings::from_file(&cli.config)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        ModelError::new(
            model_manager::ErrorCode::ConfigError,
            "cannot start the async runtime",
        )
        .caused_by("IoError", e)
    })?;
    runtime.block_on(async {
        match cli.command {
            Command::Models => commands::models(settings, cli.json).await,
            Command::Status => commands::status(settings, cli.json).await,
            Command::Check => commands::check(settings, &cli.config, cli.json).await,
        }
    })
}
