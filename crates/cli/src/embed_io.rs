//! `mm embed` with files: texts from lines or JSONL (a file or stdin), vectors to JSONL or
//! a float32 `.npy`, written to a temporary file and renamed into place when complete.

use model_manager::{ModelError, ModelManager};
use npyz::WriterBuilder;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Texts per `generate_embeddings` call: the progress bar's step.
const CHUNK: usize = 256;

fn io_error(what: String, e: std::io::Error) -> ModelError {
    ModelError::invalid_input(format!("{what}: {e}")).caused_by("IoError", e)
}

/// Texts of `source` (`-` is stdin): JSONL when every non-blank line is an object with a
/// string `text`, else one text per non-blank line.
pub fn read_texts(source: &Path) -> Result<Vec<String>, ModelError> {
    let mut raw = String::new();
    let shown = source.display();
    if source == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut raw)
            .map_err(|e| io_error("cannot read texts from stdin".into(), e))?;
    } else {
        raw = std::fs::read_to_string(source)
            .map_err(|e| io_error(format!("cannot read texts from {shown}"), e))?;
    }
    let lines: Vec<&str> = raw.lines().filter(|l| !l.trim().is_empty()).collect();
    let as_jsonl: Option<Vec<String>> = lines
        .iter()
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).ok()?;
            value.get("text")?.as_str().map(str::to_owned)
        })
        .collect();
    let texts = as_jsonl.unwrap_or_else(|| lines.iter().map(|l| (*l).to_owned()).collect());
    if texts.is_empty() {
        return Err(ModelError::invalid_input(format!("{shown} has no texts")));
    }
    Ok(texts)
}

enum Sink {
    Jsonl(BufWriter<std::fs::File>),
    Npy(npyz::NpyWriter<f32, BufWriter<std::fs::File>>),
}

/// Where vectors go, chosen by the extension of the output path.
pub struct EmbeddingFile {
    path: PathBuf,
    partial: PathBuf,
    rows: usize,
    written: usize,
    sink: Option<Sink>,
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::invalid_input(format!("cannot write {}: {e}", path.display()))
}

impl EmbeddingFile {
    /// An output for `rows` vectors; `.jsonl` or `.npy`, else `INVALID_INPUT`.
    pub fn create(path: &Path, rows: usize) -> Result<Self, ModelError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !matches!(ext, "jsonl" | "npy") {
            return Err(ModelError::invalid_input(format!(
                "--output {} must end in .jsonl or .npy",
                path.display()
            )));
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        Ok(Self {
            path: path.to_path_buf(),
            partial: partial.into(),
            rows,
            written: 0,
            sink: None,
        })
    }

    fn open(&self, dimension: usize) -> Result<Sink, ModelError> {
        let file = std::fs::File::create(&self.partial).map_err(|e| write_error(&self.path, e))?;
        let out = BufWriter::new(file);
        if self.path.extension().is_some_and(|e| e == "jsonl") {
            return Ok(Sink::Jsonl(out));
        }
        npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[self.rows as u64, dimension as u64])
            .writer(out)
            .begin_nd()
            .map(Sink::Npy)
            .map_err(|e| write_error(&self.path, e))
    }

    /// Appends vectors in input order.
    pub fn append(&mut self, vectors: &[Vec<f32>]) -> Result<(), ModelError> {
        if self.sink.is_none() {
            let dimension = vectors.first().map_or(0, Vec::len);
            self.sink = Some(self.open(dimension)?);
        }
        let path = self.path.clone();
        match self.sink.as_mut() {
            Some(Sink::Jsonl(out)) => {
                for vector in vectors {
                    let line = serde_json::json!({"index": self.written, "embedding": vector});
                    writeln!(out, "{line}").map_err(|e| write_error(&path, e))?;
                    self.written += 1;
                }
            }
            Some(Sink::Npy(out)) => {
                for vector in vectors {
                    out.extend(vector.iter().copied())
                        .map_err(|e| write_error(&path, e))?;
                    self.written += 1;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Flushes and moves the complete file into place.
    pub fn finish(mut self) -> Result<(), ModelError> {
        match self.sink.take() {
            Some(Sink::Jsonl(mut out)) => out.flush().map_err(|e| write_error(&self.path, e))?,
            Some(Sink::Npy(out)) => out.finish().map_err(|e| write_error(&self.path, e))?,
            None => return Err(write_error(&self.path, "no vectors to write")),
        }
        std::fs::rename(&self.partial, &self.path).map_err(|e| write_error(&self.path, e))
    }
}

impl Drop for EmbeddingFile {
    fn drop(&mut self) {
        // An interrupted or failed run leaves no half-written file behind.
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// A progress bar on stderr when it is a terminal, else nothing.
fn progress(total: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || total <= CHUNK {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} texts  {per_sec}  eta {eta}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

/// What a chunked embedding run produced.
pub struct RunSummary {
    /// Texts embedded.
    pub count: usize,
    /// Vector length.
    pub dimension: usize,
    /// Texts answered from the cache.
    pub cache_hits: usize,
}

/// Embeds `texts` in chunks, handing each chunk's vectors to `sink` in input order.
pub async fn embed_in_chunks(
    manager: &ModelManager,
    model: &str,
    texts: &[String],
    mut sink: impl FnMut(Vec<Vec<f32>>) -> Result<(), ModelError>,
) -> Result<RunSummary, ModelError> {
    let bar = progress(texts.len());
    let mut summary = RunSummary {
        count: 0,
        dimension: 0,
        cache_hits: 0,
    };
    for chunk in texts.chunks(CHUNK) {
        let out = manager.generate_embeddings(chunk, model).await?;
        summary.count += chunk.len();
        summary.dimension = out.dimension;
        summary.cache_hits += out.cache_hits;
        sink(out.embeddings)?;
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
}
