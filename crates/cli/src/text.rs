//! The text commands: embed, similarity, search, generate.

use crate::embed_io::{embed_all, EmbeddingFile, TextSource};
use crate::output::print_json;
use model_manager::{ErrorCode, GenerationParams, ModelError, ModelManager, Settings};
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
    Ok(manager.generate_embeddings(texts, model).await?.embeddings)
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let cut: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// `mm embed --output FILE`: vectors to a file, a summary to stdout.
async fn embed_to_file(
    manager: &ModelManager,
    model: &str,
    source: TextSource,
    output: &Path,
    json_out: bool,
) -> Result<(), ModelError> {
    let mut file = EmbeddingFile::create(output)?;
    let summary = embed_all(manager, model, source, |vectors| file.append(&vectors)).await?;
    file.finish()?;
    if json_out {
        print_json(&json!({
            "success": true, "model": model, "dimension": summary.dimension,
            "count": summary.count, "cache_hits": summary.cache_hits, "output": output,
        }));
    } else {
        println!(
            "wrote {} vectors of {} dims to {} ({} from cache)",
            summary.count,
            summary.dimension,
            output.display(),
            summary.cache_hits
        );
    }
    Ok(())
}

/// `mm embed`: the texts given, then those of `input` (a file, or `-` for stdin).
pub async fn embed(
    settings: Settings,
    model: &str,
    texts: &[String],
    input: Option<&Path>,
    output: Option<&Path>,
    json_out: bool,
) -> Result<(), ModelError> {
    let manager = ModelManager::new(settings);
    if let Some(output) = output {
        let source = TextSource::open(texts.to_vec(), input)?;
        embed_to_file(&manager, model, source, output, json_out).await?;
        manager.shutdown().await?;
        return Ok(());
    }
    // Printed beside their texts, so these are kept.
    let mut texts = texts.to_vec();
    if input.is_some() {
        let mut source = TextSource::open(Vec::new(), input)?;
        loop {
            let more = source.next_texts(4096)?;
            if more.is_empty() {
                break;
            }
            texts.extend(more);
        }
    }
    let mut embeddings = Vec::with_capacity(texts.len());
    let summary = embed_all(
        &manager,
        model,
        TextSource::open(texts.clone(), None)?,
        |vectors| {
            embeddings.extend(vectors);
            Ok(())
        },
    )
    .await?;
    if json_out {
        print_json(&json!({
            "success": true, "model": model, "dimension": summary.dimension,
            "cached": summary.cache_hits == summary.count, "cache_hits": summary.cache_hits,
            "embeddings": embeddings,
        }));
    } else {
        for (text, vector) in texts.iter().zip(&embeddings) {
            let head: Vec<String> = vector.iter().take(6).map(|x| format!("{x:+.4}")).collect();
            println!(
                "{:<40} [{} … ] ({} dims)",
                shorten(text, 40),
                head.join(", "),
                vector.len()
            );
        }
    }
    manager.shutdown().await?;
    Ok(())
}

/// `mm similarity`.
pub async fn similarity(
    settings: Settings,
    model: &str,
    texts: &[String],
    json_out: bool,
) -> Result<(), ModelError> {
    let manager = ModelManager::new(settings);
    let vectors = embed_texts(&manager, model, texts).await?;
    let matrix: Vec<Vec<f32>> = vectors
        .iter()
        .map(|a| vectors.iter().map(|b| cosine(a, b)).collect())
        .collect();
    if json_out {
        print_json(&json!({"success": true, "model": model, "texts": texts, "similarity": matrix}));
    } else {
        println!("cosine similarity ({model}):");
        for (i, (text, row)) in texts.iter().zip(&matrix).enumerate() {
            let cells: Vec<String> = row.iter().map(|x| format!("{x:6.3}")).collect();
            println!("  [{i}] {:<44} {}", shorten(text, 44), cells.join(" "));
        }
    }
    manager.shutdown().await?;
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
    settings: Settings,
    model: &str,
    corpus: &Path,
    top_k: usize,
    query: &str,
    json_out: bool,
) -> Result<(), ModelError> {
    let documents = read_corpus(corpus)?;
    let manager = ModelManager::new(settings);
    let query_vector = embed_texts(&manager, model, &[query.to_owned()])
        .await?
        .remove(0);
    let doc_vectors = embed_texts(&manager, model, &documents).await?;
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
        print_json(&json!({"success": true, "model": model, "query": query, "matches": matches}));
    } else {
        println!("query: {query}");
        for (rank, (score, doc)) in scored.iter().enumerate() {
            println!("  {}. {score:.3}  {doc}", rank + 1);
        }
    }
    manager.shutdown().await?;
    Ok(())
}

/// `mm generate`.
pub async fn generate(
    settings: Settings,
    model: &str,
    prompt: &str,
    params: GenerationParams,
    json_out: bool,
) -> Result<(), ModelError> {
    let manager = ModelManager::new(settings);
    let text = manager.generate_text(model, prompt, &params).await?;
    if json_out {
        print_json(&json!({"success": true, "model": model, "text": text}));
    } else {
        println!("{text}");
    }
    manager.shutdown().await?;
    Ok(())
}
