//! The text commands: embed, similarity, search, generate.

use crate::args::{EmbedArgs, GenerateArgs};
use crate::embed_io::{embed_all, EmbeddingFile, RunSummary, TextSource};
use crate::output::{counted, outln, print_json, status};
use crate::session::until_signal;
use model_manager::{EmbedOptions, ErrorCode, GenerationParams, ModelError, ModelManager};
use serde_json::json;
use std::path::Path;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    dot / (norm(a) * norm(b))
}

async fn embed_texts(
    manager: &ModelManager,
    model: &str,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, ModelError> {
    Ok(manager.generate_embeddings(model, texts).await?.embeddings)
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let cut: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// `mm embed --output FILE`: vectors to a file (or stdout), a summary on stderr.
async fn embed_to_file(
    manager: &ModelManager,
    args: &EmbedArgs,
    source: TextSource,
    output: &Path,
    json_out: bool,
) -> Result<(), ModelError> {
    let mut file = EmbeddingFile::create(output)?;
    let partial = file.partial().map(Path::to_path_buf);
    let work = async {
        let summary = embed_all(
            manager,
            &args.model,
            &prompt_options(args),
            source,
            args.no_truncate,
            |lines, vectors| file.append(lines, &vectors),
        )
        .await?;
        file.finish()?;
        Ok(summary)
    };
    let summary = until_signal(work, partial).await?;
    let to_stdout = output == Path::new("-");
    if json_out && !to_stdout {
        print_json(&json!({
            "success": true, "model": args.model, "dimension": summary.dimension,
            "count": summary.count, "cache_hits": summary.cache_hits, "output": output,
            "truncated": summary.truncated,
        }))?;
    } else {
        status(format_args!(
            "wrote {} of {} dimensions to {} ({} from cache)",
            counted(summary.count as u64, "vector"),
            summary.dimension,
            if to_stdout {
                "stdout".into()
            } else {
                output.display().to_string()
            },
            summary.cache_hits
        ));
    }
    report_truncated(&summary);
    Ok(())
}

/// Says how many texts were cut at the model's limit, and where the first one is.
fn report_truncated(summary: &RunSummary) {
    let Some(first) = &summary.first_truncated else {
        return;
    };
    let place = first
        .line
        .map_or_else(|| "a command-line text".into(), |l| format!("line {l}"));
    status(format_args!(
        "{} reached the model's token limit and were cut there (first: {place}); \
         --no-truncate refuses them instead",
        counted(summary.truncated as u64, "text")
    ));
}

/// The prompt `--prompt-name` or `--prompt` chooses (else the model's default one).
fn prompt_options(args: &EmbedArgs) -> EmbedOptions {
    EmbedOptions {
        prompt_name: args.prompt_name.clone(),
        prompt: args.prompt.clone(),
        ..EmbedOptions::default()
    }
}

/// `mm embed`: the texts given, then those of `--input` (a file, or `-` for stdin). A
/// sparse (SPLADE) model writes sparse JSONL records instead.
pub async fn embed(
    manager: &ModelManager,
    args: &EmbedArgs,
    json_out: bool,
) -> Result<(), ModelError> {
    let sparse = manager
        .settings()
        .models
        .get(&args.model)
        .is_some_and(|spec| spec.model_type == "sparse");
    if sparse {
        return super::scoring::embed_sparse(manager, args, json_out).await;
    }
    let source = TextSource::open(
        args.texts.clone(),
        args.input.as_deref(),
        args.format,
        &args.field,
    )?;
    match &args.output {
        Some(output) => embed_to_file(manager, args, source, output, json_out).await,
        None => embed_to_stdout(manager, args, source, json_out).await,
    }
}

/// Vectors on stdout, one JSON array per text in input order (or one JSON object with
/// `--json`); kept in memory until all are computed.
async fn embed_to_stdout(
    manager: &ModelManager,
    args: &EmbedArgs,
    mut source: TextSource,
    json_out: bool,
) -> Result<(), ModelError> {
    let mut texts = Vec::new();
    loop {
        let more = source.next_texts(4096)?;
        if more.is_empty() {
            break;
        }
        texts.extend(more);
    }
    let mut embeddings = Vec::with_capacity(texts.len());
    let replay = TextSource::from_texts(texts);
    let summary = embed_all(
        manager,
        &args.model,
        &prompt_options(args),
        replay,
        args.no_truncate,
        |_, vectors| {
            embeddings.extend(vectors);
            Ok(())
        },
    )
    .await?;
    if json_out {
        print_json(&json!({
            "success": true, "model": args.model, "dimension": summary.dimension,
            "cached": summary.cache_hits == summary.count, "cache_hits": summary.cache_hits,
            "truncated": summary.truncated, "embeddings": embeddings,
        }))?;
    } else {
        for vector in &embeddings {
            outln!("{}", json!(vector))?;
        }
    }
    report_truncated(&summary);
    Ok(())
}

/// `mm similarity`.
pub async fn similarity(
    manager: &ModelManager,
    model: &str,
    texts: &[String],
    json_out: bool,
) -> Result<(), ModelError> {
    let vectors = embed_texts(manager, model, texts).await?;
    let matrix: Vec<Vec<f32>> = vectors
        .iter()
        .map(|a| vectors.iter().map(|b| cosine(a, b)).collect())
        .collect();
    if json_out {
        print_json(
            &json!({"success": true, "model": model, "texts": texts, "similarity": matrix}),
        )?;
    } else {
        outln!("cosine similarity ({model}):")?;
        for (i, (text, row)) in texts.iter().zip(&matrix).enumerate() {
            let cells: Vec<String> = row.iter().map(|x| format!("{x:6.3}")).collect();
            outln!("  [{i}] {:<44} {}", shorten(text, 44), cells.join(" "))?;
        }
    }
    Ok(())
}

/// The non-blank lines of a corpus file, trimmed; `INVALID_INPUT` if unreadable or empty.
pub fn read_corpus(corpus: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(corpus).map_err(|e| {
        ModelError::invalid_input(format!("cannot read corpus {}: {e}", corpus.display()))
            .with("file", corpus.display().to_string())
    })?;
    let documents: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if documents.is_empty() {
        return Err(ModelError::new(
            ErrorCode::InvalidInput,
            format!("corpus {} has no lines", corpus.display()),
        ));
    }
    Ok(documents)
}

/// `mm search`.
pub async fn search(
    manager: &ModelManager,
    model: &str,
    corpus: &Path,
    top_k: usize,
    query: &str,
    json_out: bool,
) -> Result<(), ModelError> {
    let documents = read_corpus(corpus)?;
    let query_vector = embed_texts(manager, model, &[query.to_owned()])
        .await?
        .remove(0);
    let doc_vectors = embed_texts(manager, model, &documents).await?;
    let mut scored: Vec<(f32, &String)> = doc_vectors
        .iter()
        .map(|v| cosine(&query_vector, v))
        .zip(&documents)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.truncate(top_k);
    if json_out {
        let matches: Vec<_> = scored
            .iter()
            .map(|(s, d)| json!({"text": d, "score": s}))
            .collect();
        print_json(&json!({"success": true, "model": model, "query": query, "matches": matches}))?;
    } else {
        outln!("query: {query}")?;
        for (rank, (score, doc)) in scored.iter().enumerate() {
            outln!("  {}. {score:.3}  {doc}", rank + 1)?;
        }
    }
    Ok(())
}

/// `mm generate`.
pub async fn generate(
    manager: &ModelManager,
    args: &GenerateArgs,
    json_out: bool,
) -> Result<(), ModelError> {
    let params = GenerationParams {
        max_length: args.max_length,
        num_beams: args.num_beams,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        ..Default::default()
    };
    let (model, prompt) = (args.model.as_str(), args.prompt.as_str());
    let text = manager.generate_text(model, prompt, &params).await?;
    if json_out {
        print_json(&json!({"success": true, "model": model, "text": text}))?;
    } else {
        outln!("{text}")?;
    }
    Ok(())
}
