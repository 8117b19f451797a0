//! `mm`: inspect and drive the models of a model-manager settings file.

mod bench;
mod commands;
mod embed_io;
mod infer;
mod output;
mod plugins;
mod pull;
mod server;
mod text;

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
    /// Embed texts (arguments, or a file / stdin) and print or save the vectors.
    Embed {
        /// Configured model id.
        #[arg(long, default_value = "embedding")]
        model: String,
        /// Texts to embed.
        #[arg(required_unless_present = "input")]
        texts: Vec<String>,
        /// More texts: one per line, or JSONL with a `text` field; `-` reads stdin.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Save the vectors: `.jsonl` ({"index", "embedding"} per text) or `.npy` (float32 [n, d]).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Cosine similarity matrix of texts.
    Similarity {
        /// Configured model id.
        #[arg(long, default_value = "embedding")]
        model: String,
        /// Two or more texts.
        #[arg(required = true, num_args = 2..)]
        texts: Vec<String>,
    },
    /// Semantic search: the corpus lines closest to a query.
    Search {
        /// Configured model id.
        #[arg(long, default_value = "embedding")]
        model: String,
        /// File with one document per line.
        #[arg(long)]
        corpus: PathBuf,
        /// How many matches to show.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// What to look for.
        query: String,
    },
    /// Generate text with a text2text model.
    Generate {
        /// Configured model id.
        #[arg(long, default_value = "t5_summarizer")]
        model: String,
        /// The prompt, e.g. "summarize: ...".
        prompt: String,
        /// Beam width (beam search when > 1).
        #[arg(long)]
        num_beams: Option<usize>,
        /// Most tokens to generate.
        #[arg(long)]
        max_length: Option<usize>,
        /// Sampling temperature (sampling when > 0).
        #[arg(long)]
        temperature: Option<f64>,
        /// Nucleus sampling threshold.
        #[arg(long)]
        top_p: Option<f64>,
        /// Sampling seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run a custom model type (plugin or ONNX graph) on images and/or named JSON inputs.
    Infer {
        /// Configured model id.
        #[arg(long)]
        model: String,
        /// Image file(s); each is one call with the image as input `image`.
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Named inputs as a JSON object, e.g. '{"top_k": 5}' or
        /// '{"X": {"shape": [1, 2], "dtype": "f32", "data": [1, 2]}}'.
        #[arg(long)]
        input: Option<String>,
    },
    /// Embedding throughput of a model: batched, one text per call (baseline) and cached.
    Bench {
        /// Configured model id.
        #[arg(long, default_value = "embedding")]
        model: String,
        /// One text per line (default: the bundled support corpus).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Texts per run.
        #[arg(long, default_value_t = 256)]
        texts: usize,
        /// Runs per figure; the median is shown.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Download a configured model's files, or a Hugging Face repository (org/name), into the
    /// hub cache: verified, resumable, with progress.
    Pull {
        /// A configured model id, or a repository such as sentence-transformers/all-MiniLM-L6-v2.
        target: String,
    },
    /// Plugin libraries: list the configured ones, or check one file safely.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Serve the models over HTTP (OpenAI-compatible embeddings, generation, status, load/unload).
    Serve {
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Require `Authorization: Bearer KEY` on /v1 routes and /metrics. Visible to other
        /// users in the process list: prefer MM_API_KEY or --api-key-file.
        #[arg(long, env = "MM_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// A file holding the API key (or server.api_key_file).
        #[arg(long, env = "MM_API_KEY_FILE")]
        api_key_file: Option<PathBuf>,
        /// Largest request body in bytes (server.max_body_bytes).
        #[arg(long)]
        max_body_bytes: Option<usize>,
        /// Most texts in one embeddings request (server.max_inputs).
        #[arg(long)]
        max_inputs: Option<usize>,
        /// Inference requests served at once; more are answered 503 (server.max_concurrent).
        #[arg(long)]
        max_concurrent: Option<usize>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// The plugins the settings name (plugins.dirs, plugins.paths), with their types.
    List,
    /// Load one library in a child process and report whether it is a usable plugin.
    Check {
        /// The library file.
        file: PathBuf,
        /// Load in this process (what the child runs).
        #[arg(long, hide = true)]
        in_process: bool,
    },
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

fn run(cli: &Cli) -> Result<(), ModelError> {
    // Checking a plugin file needs no settings file; it honours one that exists.
    // So does pulling a repository by name.
    let standalone = match &cli.command {
        Command::Plugins {
            command: PluginsCommand::Check { .. },
        } => true,
        Command::Pull { target } => target.contains('/'),
        _ => false,
    };
    let settings = if standalone && !cli.config.exists() {
        Settings::default()
    } else {
        Settings::from_file(&cli.config)?
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        ModelError::new(
            model_manager::ErrorCode::ConfigError,
            "cannot start the async runtime",
        )
        .caused_by("IoError", e)
    })?;
    runtime.block_on(async {
        match &cli.command {
            Command::Models => commands::models(settings, cli.json).await,
            Command::Pull { target } => pull::pull(settings, target, cli.json).await,
            Command::Status => commands::status(settings, cli.json).await,
            Command::Check => commands::check(settings, &cli.config, cli.json).await,
            Command::Embed {
                model,
                texts,
                input,
                output,
            } => {
                let (input, output) = (input.as_deref(), output.as_deref());
                text::embed(settings, model, texts, input, output, cli.json).await
            }
            Command::Similarity { model, texts } => {
                text::similarity(settings, model, texts, cli.json).await
            }
            Command::Search {
                model,
                corpus,
                top_k,
                query,
            } => text::search(settings, model, corpus, *top_k, query, cli.json).await,
            Command::Generate {
                model,
                prompt,
                num_beams,
                max_length,
                temperature,
                top_p,
                seed,
            } => {
                let params = model_manager::GenerationParams {
                    max_length: *max_length,
                    num_beams: *num_beams,
                    temperature: *temperature,
                    top_p: *top_p,
                    seed: *seed,
                    ..Default::default()
                };
                text::generate(settings, model, prompt, params, cli.json).await
            }
            Command::Infer {
                model,
                image,
                input,
            } => infer::infer(settings, model, image, input.as_deref(), cli.json).await,
            Command::Bench {
                model,
                corpus,
                texts,
                runs,
            } => {
                let options = bench::BenchOptions {
                    model,
                    corpus: corpus.as_deref(),
                    texts: *texts,
                    runs: *runs,
                };
                bench::bench(settings, options, cli.json).await
            }
            Command::Plugins { command } => match command {
                PluginsCommand::List => plugins::list(&settings, cli.json),
                PluginsCommand::Check {
                    file,
                    in_process: true,
                } => plugins::check_here(&settings, file),
                PluginsCommand::Check { file, .. } => plugins::check(&cli.config, file, cli.json),
            },
            Command::Serve {
                addr,
                api_key,
                api_key_file,
                max_body_bytes,
                max_inputs,
                max_concurrent,
            } => {
                let mut limits = settings.server.clone();
                limits.max_body_bytes = max_body_bytes.unwrap_or(limits.max_body_bytes);
                limits.max_inputs = max_inputs.unwrap_or(limits.max_inputs);
                limits.max_concurrent = max_concurrent.unwrap_or(limits.max_concurrent);
                let key_file = api_key_file.as_ref().or(limits.api_key_file.as_ref());
                let config = server::ServerConfig {
                    addr: *addr,
                    api_key: api_key_of(api_key.as_deref(), key_file)?,
                    limits,
                };
                server::serve(model_manager::ModelManager::new(settings), config).await
            }
        }
    })
}
