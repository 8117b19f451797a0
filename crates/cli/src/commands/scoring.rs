//! The commands of the models that score rather than embed: `mm rerank` (cross-encoders),
//! `mm classify` (classifiers), and `mm embed` on a sparse (SPLADE) model.

use crate::args::{ClassifyArgs, EmbedArgs, InputFormat, RerankArgs};
use crate::embed_io::{EmbeddingFile, InputText, TextSource};
use crate::output::{counted, outln, print_json, status};
use model_manager::{ClassifyInput, ModelError, ModelManager, ScoreOptions};
use serde_json::json;
use std::path::Path;

/// Texts given on the command line, then those of `input`, all in memory.
fn read_texts(given: Vec<String>, input: Option<&Path>) -> Result<Vec<InputText>, ModelError> {
    let mut source = TextSource::open(given, input, InputFormat::Auto, "text")?;
    let mut texts = Vec::new();
    loop {
        let more = source.next_texts(4096)?;
        if more.is_empty() {
            return Ok(texts);
        }
        texts.extend(more);
    }
}

fn shorten(text: &str, width: usize) -> String {
    let flat = text.replace(['\n', '\t'], " ");
    if flat.chars().count() <= width {
        return flat;
    }
    let cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// `mm rerank`: the documents best first, with their scores.
pub async fn rerank(
    manager: &ModelManager,
    args: &RerankArgs,
    json_out: bool,
) -> Result<(), ModelError> {
    let documents = read_texts(args.texts.clone(), args.input.as_deref())?;
    if documents.is_empty() {
        return Err(ModelError::invalid_input(
            "no documents to rank: give them as arguments or with -i FILE",
        ));
    }
    let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
    let options = ScoreOptions {
        raw_scores: args.raw_scores,
        ..ScoreOptions::default()
    };
    let out = manager
        .rerank(&args.model, &args.query, &texts, &options)
        .await?;
    let mut order: Vec<(usize, f32)> = out.scores.iter().copied().enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.truncate(args.top_n.map_or(usize::MAX, |n| n as usize));
    if json_out {
        let results: Vec<_> = order
            .iter()
            .map(|&(i, score)| json!({"index": i, "line": documents[i].line, "score": score, "text": texts[i]}))
            .collect();
        print_json(
            &json!({"success": true, "model": args.model, "query": args.query, "results": results, "tokens": out.tokens}),
        )?;
        return Ok(());
    }
    outln!("{:>4}  {:>9}  {:>5}  TEXT", "RANK", "SCORE", "INDEX")?;
    for (rank, &(i, score)) in order.iter().enumerate() {
        outln!(
            "{:>4}  {score:>9.4}  {i:>5}  {}",
            rank + 1,
            shorten(texts[i], 100)
        )?;
    }
    Ok(())
}

/// `mm classify`: every label of each text (or pair) with its score, best first.
pub async fn classify(
    manager: &ModelManager,
    args: &ClassifyArgs,
    json_out: bool,
) -> Result<(), ModelError> {
    let texts = read_texts(args.texts.clone(), args.input.as_deref())?;
    if texts.is_empty() {
        return Err(ModelError::invalid_input(
            "no texts to classify: give them as arguments or with -i FILE",
        ));
    }
    let inputs: Vec<ClassifyInput> = texts
        .iter()
        .map(|t| match &args.pair {
            Some(second) => ClassifyInput::Pair(t.text.clone(), second.clone()),
            None => ClassifyInput::Text(t.text.clone()),
        })
        .collect();
    let out = manager
        .classify(&args.model, &inputs, &ScoreOptions::default())
        .await?;
    if json_out {
        let rows: Vec<_> = texts
            .iter()
            .zip(&out.predictions)
            .enumerate()
            .map(|(i, (t, labels))| json!({"index": i, "line": t.line, "text": t.text, "labels": labels}))
            .collect();
        print_json(&json!({"success": true, "model": args.model, "predictions": rows}))?;
        return Ok(());
    }
    for (t, labels) in texts.iter().zip(&out.predictions) {
        let shown: Vec<String> = labels
            .iter()
            .take(args.top_k.map_or(usize::MAX, |k| k as usize))
            .map(|l| format!("{} {:.3}", l.label, l.score))
            .collect();
        outln!("{}  {}", shown.join(", "), shorten(&t.text, 80))?;
    }
    Ok(())
}

/// Texts per call of a sparse run: vectors over a whole vocabulary are built a window at a
/// time.
const SPARSE_WINDOW: usize = 256;

/// `mm embed` on a sparse model: JSONL records `{"index", "line", "indices", "values"}`, to
/// `-o FILE.jsonl`, `-o -`, or stdout.
pub async fn embed_sparse(
    manager: &ModelManager,
    args: &EmbedArgs,
    json_out: bool,
) -> Result<(), ModelError> {
    let mut source = TextSource::open(
        args.texts.clone(),
        args.input.as_deref(),
        args.format,
        &args.field,
    )?;
    let output = args.output.clone().unwrap_or_else(|| "-".into());
    let mut file = EmbeddingFile::create(&output)?;
    let options = ScoreOptions {
        truncate: !args.no_truncate,
        ..ScoreOptions::default()
    };
    let (mut count, mut tokens) = (0usize, 0usize);
    loop {
        let window = source.next_texts(SPARSE_WINDOW)?;
        if window.is_empty() {
            break;
        }
        let texts: Vec<&str> = window.iter().map(|t| t.text.as_str()).collect();
        let out = manager.embed_sparse(&args.model, &texts, &options).await?;
        let lines: Vec<Option<usize>> = window.iter().map(|t| t.line).collect();
        file.append_sparse(&lines, &out.vectors)?;
        count += window.len();
        tokens += out.tokens;
    }
    if count == 0 {
        return Err(ModelError::invalid_input("no texts to embed"));
    }
    file.finish()?;
    if output != Path::new("-") {
        match json_out {
            true => print_json(
                &json!({"success": true, "model": args.model, "count": count, "tokens": tokens, "output": output}),
            )?,
            false => status(format_args!(
                "wrote {} to {}",
                counted(count as u64, "sparse vector"),
                output.display()
            )),
        }
    }
    Ok(())
}
