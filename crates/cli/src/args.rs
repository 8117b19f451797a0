//! The command line of `mm`: every subcommand, flag and example.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Command line of `mm`.
#[derive(Parser)]
#[command(
    name = "mm",
    version,
    about = "model-manager: load, share and inspect AI models",
    after_help = "Exit codes: 0 ok, 1 internal, 2 usage, 3 config, 4 input, 5 files not found, \
                  6 load, 7 capacity, 130/143 interrupted.\n\
                  Logs: -v (info), -vv (debug), -q (errors only), or MM_LOG / RUST_LOG filters."
)]
pub struct Cli {
    /// Settings file (default: $MM_CONFIG, else ./settings.toml; `mm init` writes one).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "MM_CONFIG",
        default_value = "settings.toml"
    )]
    pub config: PathBuf,
    /// Results and errors as compact JSON on stdout (JSONL for streams).
    #[arg(long, global = true)]
    pub json: bool,
    /// Only errors on stderr: no status lines, progress or warnings.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More logs on stderr (-v info, -vv debug, -vvv trace).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// How `mm embed` reads its input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// JSONL when every line is a JSON object, plain text when none is; mixed is an error.
    Auto,
    /// One text per line (a blank line is an empty text).
    Text,
    /// One JSON object per line with the text in `--field`.
    Jsonl,
}

/// The texts and options of `mm embed`.
#[derive(clap::Args)]
pub struct EmbedArgs {
    /// Configured model id.
    #[arg(long, short = 'm', default_value = "embedding")]
    pub model: String,
    /// Texts to embed.
    #[arg(required_unless_present = "input")]
    pub texts: Vec<String>,
    /// More texts from a file (`-` reads stdin).
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// How the input file is read.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// Fail on a text longer than the model reads, instead of cutting it (and counting it).
    #[arg(long)]
    pub no_truncate: bool,
    /// Prepend the model's prompt of this name to every text (its
    /// config_sentence_transformers.json `prompts`, e.g. `query`).
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_name: Option<String>,
    /// Prepend this text to every text (`""`: no prompt, not even the model's default).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Save the vectors: `.jsonl` ({"index", "line", "embedding"} per text), `.npy`
    /// (float32 [n, d]), or `-` for JSONL on stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// The options of `mm rerank`.
#[derive(clap::Args)]
pub struct RerankArgs {
    /// Configured model id (type `rerank`).
    #[arg(long, short = 'm', default_value = "rerank")]
    pub model: String,
    /// What the documents are ranked against (`-q` is `--quiet`).
    #[arg(long)]
    pub query: String,
    /// The documents.
    #[arg(required_unless_present = "input")]
    pub texts: Vec<String>,
    /// More documents from a file, one a line or JSONL with a `text` (`-` reads stdin).
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// Show only the best N.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub top_n: Option<u64>,
    /// Scores as the model's raw logits, without its activation.
    #[arg(long)]
    pub raw_scores: bool,
}

/// The options of `mm classify`.
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// Configured model id (type `classifier`).
    #[arg(long, short = 'm', default_value = "classifier")]
    pub model: String,
    /// Texts to classify.
    #[arg(required_unless_present = "input")]
    pub texts: Vec<String>,
    /// More texts from a file, one a line or JSONL with a `text` (`-` reads stdin).
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// Classify each text paired with this second text (natural language inference).
    #[arg(long)]
    pub pair: Option<String>,
    /// Show only the best K labels of each text.
    #[arg(long, short = 'k', value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: Option<u64>,
}

/// The options of `mm generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Configured model id.
    #[arg(long, short = 'm', default_value = "t5_summarizer")]
    pub model: String,
    /// The prompt, e.g. "summarize: ...".
    pub prompt: String,
    /// Beam width (beam search when > 1).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Most tokens to generate.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Sampling temperature (sampling when > 0).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sampling seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The options of `mm serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT, e.g. 127.0.0.1:8080, localhost:8080, 0.0.0.0:80.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Require `Authorization: Bearer KEY` on /v1 routes and /metrics. Visible to other
    /// users in the process list: prefer MM_API_KEY or --api-key-file.
    #[arg(long, env = "MM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file holding the API key (or server.api_key_file).
    #[arg(long, env = "MM_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Largest request body in bytes (server.max_body_bytes).
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Most texts in one embeddings request (server.max_inputs).
    #[arg(long)]
    pub max_inputs: Option<usize>,
    /// Inference requests served at once; more are answered 503 (server.max_concurrent).
    #[arg(long)]
    pub max_concurrent: Option<usize>,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Configured models: type, state, loaders, and where their files are.
    Models,
    /// This process's view of the settings: limits, cache, and every model's state
    /// (`mm ps` shows a running server instead).
    Status,
    /// The models of a running `mm serve`: state, references, engine queue (like `ollama ps`).
    #[command(after_help = "Examples:\n  mm ps\n  mm ps --url http://10.0.0.5:8080 --json")]
    Ps {
        /// The server's base URL.
        #[arg(long, env = "MM_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The server's API key, if it has one.
        #[arg(long, env = "MM_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Validate the settings file: keys and values, model types against the loaders, files
    /// present (or downloadable); every problem, not only the first.
    Check,
    /// Write a commented settings.toml for the packaged models.
    #[command(after_help = "Examples:\n  mm init\n  mm init --path ~/mm/settings.toml --force")]
    Init {
        /// Where to write it.
        #[arg(long, default_value = "settings.toml")]
        path: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Embed texts (arguments, or a file / stdin) and print or save the vectors.
    #[command(
        after_help = "Examples:\n  mm embed \"first text\" \"second text\"\n  \
        mm embed -i texts.txt -o vectors.npy\n  \
        mm embed -i docs.jsonl --format jsonl --field body -o vectors.jsonl\n  \
        cat texts.txt | mm embed -i - -o - > vectors.jsonl"
    )]
    Embed(EmbedArgs),
    /// Rank documents against a query with a cross-encoder (type `rerank`), best first.
    #[command(
        after_help = "Examples:\n  mm rerank -m reranker --query \"how do I get a refund?\" \"Refunds take 14 days.\" \"Our office is in Paris.\"\n  \
        mm rerank -m reranker --query \"refund\" -i docs.txt --top-n 3 --json"
    )]
    Rerank(RerankArgs),
    /// The labels of texts (or of pairs) with a classifier (type `classifier`), best first.
    #[command(
        after_help = "Examples:\n  mm classify -m sentiment \"I love it\" \"It broke on day one\"\n  \
        mm classify -m nli --pair \"A man is outdoors.\" \"A man is playing a guitar in the park.\""
    )]
    Classify(ClassifyArgs),
    /// Cosine similarity matrix of texts.
    Similarity {
        /// Configured model id.
        #[arg(long, short = 'm', default_value = "embedding")]
        model: String,
        /// Two or more texts.
        #[arg(required = true, num_args = 2..)]
        texts: Vec<String>,
    },
    /// Semantic search: the corpus lines closest to a query.
    #[command(
        after_help = "Example:\n  mm search --corpus examples/corpus.txt -k 3 \"How do I get my money back?\""
    )]
    Search {
        /// Configured model id.
        #[arg(long, short = 'm', default_value = "embedding")]
        model: String,
        /// File with one document per line.
        #[arg(long)]
        corpus: PathBuf,
        /// How many matches to show.
        #[arg(long, short = 'k', default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        top_k: u64,
        /// What to look for.
        query: String,
    },
    /// Generate text with a text2text model.
    #[command(
        after_help = "Example:\n  mm generate \"summarize: The quick brown fox jumps over the lazy dog.\""
    )]
    Generate(GenerateArgs),
    /// Run a custom model type (plugin or ONNX graph) on images and/or named JSON inputs.
    #[command(after_help = "Examples:\n  mm infer -m digits --image seven.png\n  \
        mm infer -m iris --values '{\"X\": {\"shape\": [1, 4], \"dtype\": \"f32\", \"data\": [5.1, 3.5, 1.4, 0.2]}}'")]
    Infer {
        /// Configured model id.
        #[arg(long, short = 'm')]
        model: String,
        /// Image file(s); each is one call with the image as input `image`.
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Named inputs as a JSON object, e.g. '{"top_k": 5}' or
        /// '{"X": {"shape": [1, 2], "dtype": "f32", "data": [1, 2]}}'.
        #[arg(long, alias = "input")]
        values: Option<String>,
    },
    /// Load an embedding model in int8 and compare its vectors with f32 on calibration texts
    /// (the fidelity gate `quantize = "int8"` applies at load).
    #[command(
        name = "quantize-check",
        after_help = "Examples:\n  mm quantize-check -m embedding\n  mm quantize-check -m embedding -i my-texts.txt"
    )]
    QuantizeCheck {
        /// Configured model id (candle backend).
        #[arg(long, short = 'm', default_value = "embedding")]
        model: String,
        /// Calibration texts, one per line (default: the built-in multilingual set).
        #[arg(long, short = 'i')]
        input: Option<PathBuf>,
    },
    /// Embedding throughput of a model: batched, one text per call (baseline) and cached.
    Bench {
        /// Configured model id.
        #[arg(long, short = 'm', default_value = "embedding")]
        model: String,
        /// One text per line (default: the bundled support corpus).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Texts per run.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        texts: u64,
        /// Runs per figure; the median is shown.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        runs: u64,
    },
    /// Download a configured model's files, or a Hugging Face repository (org/name), into the
    /// hub cache: verified, resumable, with progress.
    #[command(
        after_help = "Examples:\n  mm pull embedding\n  mm pull sentence-transformers/all-MiniLM-L6-v2"
    )]
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
    #[command(
        after_help = "Examples:\n  mm serve\n  MM_API_KEY=secret mm serve --addr 0.0.0.0:8080"
    )]
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  mm completions bash > /etc/bash_completion.d/mm")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `mm plugins ...`.
#[derive(Subcommand)]
pub enum PluginsCommand {
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

impl Command {
    /// Whether the command runs without a settings file when there is none.
    pub fn needs_no_settings(&self) -> bool {
        match self {
            Command::Plugins {
                command: PluginsCommand::Check { .. },
            } => true,
            Command::Pull { target } => target.contains('/'),
            Command::Init { .. } | Command::Completions { .. } | Command::Ps { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Clap checks a command's arguments (clashing short options among them) only when the
    /// command is parsed in a debug build; this checks every subcommand at once.
    #[test]
    fn every_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
