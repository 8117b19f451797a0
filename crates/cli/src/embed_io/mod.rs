//! `mm embed` in bulk: texts stream in from arguments, a file or stdin, go through the
//! model's engine a window at a time with several windows in flight (so the next window is
//! tokenized while the engine runs the current one, and the engine sorts texts by length
//! across all of them), and vectors stream out in input order.

mod sink;
mod source;

pub use sink::EmbeddingFile;
pub use source::TextSource;

use model_manager::{Admission, EmbeddingsOutput, ModelError, ModelManager};
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
}

type Window = JoinHandle<Result<EmbeddingsOutput, ModelError>>;

/// Embeds every text of `source`, handing vectors to `sink` in input order; `INVALID_INPUT`
/// when there are none.
pub async fn embed_all(
    manager: &ModelManager,
    model: &str,
    mut source: TextSource,
    mut sink: impl FnMut(Vec<Vec<f32>>) -> Result<(), ModelError>,
) -> Result<RunSummary, ModelError> {
    let bar = progress();
    let mut summary = RunSummary {
        count: 0,
        dimension: 0,
        cache_hits: 0,
        tokens: 0,
    };
    let mut in_flight: VecDeque<Window> = VecDeque::new();
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < IN_FLIGHT {
            let texts = source.next_texts(WINDOW)?;
            exhausted = texts.len() < WINDOW;
            if !texts.is_empty() {
                in_flight.push_back(spawn_window(manager, model, texts));
            }
        }
        let Some(window) = in_flight.pop_front() else {
            break;
        };
        let out = window.await.map_err(|e| {
            ModelError::invalid_input(format!("an embedding window stopped: {e}"))
        })??;
        summary.count += out.embeddings.len();
        summary.dimension = out.dimension;
        summary.cache_hits += out.cache_hits;
        summary.tokens += out.tokens;
        if let Some(bar) = &bar {
            bar.inc(out.embeddings.len() as u64);
        }
        sink(out.embeddings)?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if summary.count == 0 {
        return Err(ModelError::invalid_input("no texts to embed"));
    }
    Ok(summary)
}

/// One window on its own task, waiting for room in the engine's queue rather than failing:
/// a bulk job runs as fast as the engine does.
fn spawn_window(manager: &ModelManager, model: &str, texts: Vec<String>) -> Window {
    let (manager, model) = (manager.clone(), model.to_owned());
    tokio::spawn(async move {
        manager
            .generate_embeddings_with(&texts, &model, Admission::Wait)
            .await
    })
}
