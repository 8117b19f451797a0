//! `mm embed` in bulk: texts stream in from arguments, a file or stdin, go through the
//! model's engine a window at a time with several windows in flight (so the next window is
//! tokenized while the engine runs the current one, and the engine sorts texts by length
//! across all of them), and vectors stream out in input order.

mod sink;
mod source;

pub use sink::EmbeddingFile;
pub use source::{InputText, TextSource};

use model_manager::{Admission, EmbedOptions, EmbeddingsOutput, ModelError, ModelManager};
use std::collections::VecDeque;
use std::io::IsTerminal;
use tokio::task::JoinHandle;

/// Texts per window handed to the engine.
const WINDOW: usize = 1024;
/// Windows in flight: the engine groups texts of similar length across all of them.
const IN_FLIGHT: usize = 4;

/// A progress bar on stderr when it is a terminal, else nothing.
fn progress() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {pos} texts  {per_sec}  {elapsed}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

/// What a bulk run produced.
pub struct RunSummary {
    /// Texts embedded.
    pub count: usize,
    /// Vector length.
    pub dimension: usize,
    /// Texts answered from the cache.
    pub cache_hits: usize,
    /// Tokens read by the model, cached texts included.
    pub tokens: usize,
    /// Texts that reached the model's token limit (cut there, or exactly that long).
    pub truncated: usize,
    /// The input line of the first of them.
    pub first_truncated: Option<InputText>,
}

/// Texts with their vectors' window.
type Window = (
    Vec<InputText>,
    JoinHandle<Result<EmbeddingsOutput, ModelError>>,
);

/// Embeds every text of `source` (with the prompt `options` choose), handing each window's
/// input lines and vectors to `sink` in input order; `INVALID_INPUT` when there are none,
/// or (with `no_truncate`) for the first text longer than the model reads.
pub async fn embed_all(
    manager: &ModelManager,
    model: &str,
    options: &EmbedOptions,
    mut source: TextSource,
    no_truncate: bool,
    mut sink: impl FnMut(&[Option<usize>], Vec<Vec<f32>>) -> Result<(), ModelError>,
) -> Result<RunSummary, ModelError> {
    let limit = manager.input_token_limit(model).await?;
    let bar = progress();
    let mut summary = RunSummary {
        count: 0,
        dimension: 0,
        cache_hits: 0,
        tokens: 0,
        truncated: 0,
        first_truncated: None,
    };
    let mut in_flight: VecDeque<Window> = VecDeque::new();
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < IN_FLIGHT {
            let texts = source.next_texts(WINDOW)?;
            exhausted = texts.len() < WINDOW;
            if !texts.is_empty() {
                in_flight.push_back(spawn_window(manager, model, options, texts));
            }
        }
        let Some((texts, window)) = in_flight.pop_front() else {
            break;
        };
        let out = window.await.map_err(|e| {
            ModelError::invalid_input(format!("an embedding window stopped: {e}"))
        })??;
        count_truncated(&mut summary, limit, &texts, &out.token_counts);
        if let (true, Some(first)) = (no_truncate, &summary.first_truncated) {
            return Err(too_long(first, limit));
        }
        summary.count += out.embeddings.len();
        summary.dimension = out.dimension;
        summary.cache_hits += out.cache_hits;
        summary.tokens += out.tokens;
        if let Some(bar) = &bar {
            bar.inc(out.embeddings.len() as u64);
        }
        let lines: Vec<Option<usize>> = texts.iter().map(|t| t.line).collect();
        sink(&lines, out.embeddings)?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if summary.count == 0 {
        return Err(ModelError::invalid_input("no texts to embed"));
    }
    Ok(summary)
}

fn count_truncated(
    summary: &mut RunSummary,
    limit: Option<usize>,
    texts: &[InputText],
    counts: &[usize],
) {
    let Some(limit) = limit else {
        return;
    };
    for (text, &count) in texts.iter().zip(counts) {
        if count >= limit {
            summary.truncated += 1;
            summary.first_truncated.get_or_insert_with(|| text.clone());
        }
    }
}

fn too_long(text: &InputText, limit: Option<usize>) -> ModelError {
    let place = match text.line {
        Some(line) => format!("line {line}"),
        None => "a text given on the command line".into(),
    };
    ModelError::invalid_input(format!(
        "{place} reaches the model's limit of {} tokens and would be cut (--no-truncate)",
        limit.unwrap_or(0)
    ))
    .with("line", text.line)
    .with(
        "hint",
        "drop --no-truncate to cut long texts at the limit, or shorten them",
    )
}

/// One window on its own task, waiting for room in the engine's queue rather than failing:
/// a bulk job runs as fast as the engine does.
fn spawn_window(
    manager: &ModelManager,
    model: &str,
    options: &EmbedOptions,
    texts: Vec<InputText>,
) -> Window {
    let (manager, model) = (manager.clone(), model.to_owned());
    let options = EmbedOptions {
        admission: Admission::Wait,
        ..options.clone()
    };
    let strings: Vec<String> = texts.iter().map(|t| t.text.clone()).collect();
    let task = tokio::spawn(async move {
        manager
            .generate_embeddings_with_options(&model, &strings, &options)
            .await
    });
    (texts, task)
}
