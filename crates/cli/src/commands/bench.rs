//! `mm bench`: embedding throughput of a configured model, beside baselines measured in the
//! same run (one text per call, and cached texts), as medians over several runs.

use crate::output::outln;
use crate::output::print_json;
use model_manager::{ModelError, ModelManager};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// Concurrent callers of the engine measurement.
const CALLERS: usize = 32;

/// The corpus used when none is given: the bundled support corpus.
const BUILT_IN_CORPUS: &str = include_str!("../../../../examples/corpus.txt");

/// What to measure.
pub struct BenchOptions<'a> {
    /// Configured model id.
    pub model: &'a str,
    /// One text per line; the built-in corpus when `None`.
    pub corpus: Option<&'a Path>,
    /// Texts per run (corpus lines repeated with a counter to keep them distinct).
    pub texts: usize,
    /// Runs per measurement; the median is reported.
    pub runs: usize,
}

fn corpus_texts(corpus: Option<&Path>, count: usize) -> Result<Vec<String>, ModelError> {
    let lines = match corpus {
        Some(path) => super::text::read_corpus(path)?,
        None => BUILT_IN_CORPUS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if count == 0 {
        return Err(ModelError::invalid_input("--texts must be at least 1"));
    }
    // Distinct texts, so a cold run really computes every one.
    Ok((0..count)
        .map(|i| match i / lines.len() {
            0 => lines[i % lines.len()].to_owned(),
            round => format!("{} ({round})", lines[i % lines.len()]),
        })
        .collect())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Texts per second of `runs` timed passes of `pass`, median; the cache is cleared before
/// each pass when `cold`.
async fn texts_per_second<F, Fut>(
    manager: &ModelManager,
    runs: usize,
    texts: usize,
    cold: bool,
    mut pass: F,
) -> Result<f64, ModelError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ModelError>>,
{
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        if cold {
            manager.clear_cache();
        }
        let started = Instant::now();
        pass().await?;
        rates.push(texts as f64 / started.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}

/// `mm bench`.
pub async fn bench(
    manager: &ModelManager,
    options: BenchOptions<'_>,
    json_out: bool,
) -> Result<(), ModelError> {
    let texts = corpus_texts(options.corpus, options.texts)?;
    let (model, runs) = (options.model, options.runs.max(1));
    let started = Instant::now();
    manager.get_embedding_model(model).await?;
    let load_seconds = started.elapsed().as_secs_f64();

    let batched = texts_per_second(manager, runs, texts.len(), true, || async {
        manager.generate_embeddings(model, &texts).await.map(drop)
    })
    .await?;
    // One text per call, on a slice so the baseline stays quick.
    let single = &texts[..texts.len().min(64)];
    let one_by_one = texts_per_second(manager, runs, single.len(), true, || async {
        for text in single {
            manager
                .generate_embeddings(model, std::slice::from_ref(text))
                .await?;
        }
        Ok(())
    })
    .await?;
    // Many callers at once, one text each: the engine batches them across callers.
    let concurrent = texts_per_second(manager, runs, texts.len(), true, || async {
        let calls = texts.chunks(texts.len().div_ceil(CALLERS)).map(|share| {
            let (manager, share) = (manager.clone(), share.to_vec());
            let model = model.to_owned();
            tokio::spawn(async move {
                for text in &share {
                    manager
                        .generate_embeddings(&model, std::slice::from_ref(text))
                        .await?;
                }
                Ok::<_, ModelError>(())
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await
                .map_err(|e| ModelError::invalid_input(format!("a bench caller stopped: {e}")))??;
        }
        Ok(())
    })
    .await?;
    manager.generate_embeddings(model, &texts).await?;
    let cached = texts_per_second(manager, runs, texts.len(), false, || async {
        manager.generate_embeddings(model, &texts).await.map(drop)
    })
    .await?;

    if json_out {
        print_json(&json!({
            "success": true, "model": model, "texts": texts.len(), "runs": runs,
            "load_seconds": load_seconds,
            "batched_texts_per_second": batched,
            "one_per_call_texts_per_second": one_by_one,
            "concurrent_callers": CALLERS,
            "concurrent_texts_per_second": concurrent,
            "cached_texts_per_second": cached,
        }))?;
    } else {
        outln!(
            "model {model}: loaded in {load_seconds:.2} s; {} texts, median of {runs} runs",
            texts.len()
        )?;
        outln!("  batched (cold cache)     {batched:>10.1} texts/s")?;
        outln!(
            "  one text per call       {one_by_one:>10.1} texts/s   (baseline; batched is {:.2}x)",
            batched / one_by_one
        )?;
        outln!(
            "  {CALLERS} callers, 1 text each {concurrent:>10.1} texts/s   ({:.2}x batched: the engine batches across callers)",
            concurrent / batched
        )?;
        outln!(
            "  cached                  {cached:>10.1} texts/s   ({:.0}x batched)",
            cached / batched
        )?;
    }
    Ok(())
}
