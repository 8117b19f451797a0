//! Where vectors go: JSONL or a float32 `.npy`, written to `<output>.partial` and renamed
//! into place when complete, so an interrupted run leaves no half-written file; or JSONL
//! streamed to stdout (`-`).

use model_manager::ModelError;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

fn write_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::invalid_input(format!("cannot write {}: {e}", path.display()))
}

/// A failed write: for stdout, a reader that went away is [`crate::output::broken_pipe`].
fn io_error(path: &Path, e: std::io::Error) -> ModelError {
    match path == Path::new("-") {
        true => crate::output::stdout_error(e),
        false => write_error(path, e),
    }
}

/// Bytes of the `.npy` header, a multiple of 64 as the format asks, with room for any
/// row count: the rows are counted as they stream and the header is rewritten at the end.
const NPY_HEADER_LEN: usize = 128;

fn npy_header(rows: u64, dimension: usize) -> Vec<u8> {
    let dict =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dimension}), }}");
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&((NPY_HEADER_LEN - 10) as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(NPY_HEADER_LEN - 1, b' ');
    header.push(b'\n');
    header
}

enum Format {
    Jsonl,
    Npy { dimension: Option<usize> },
}

/// Where the bytes go.
enum Target {
    /// `<path>.partial`, renamed to the path at the end.
    File {
        partial: PathBuf,
        out: BufWriter<File>,
    },
    /// Standard output, line by line.
    Stdout(BufWriter<std::io::Stdout>),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::File { out, .. } => out.write(buf),
            Target::Stdout(out) => out.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::File { out, .. } => out.flush(),
            Target::Stdout(out) => out.flush(),
        }
    }
}

/// An output of vectors in input order.
pub struct EmbeddingFile {
    path: PathBuf,
    target: Target,
    format: Format,
    written: u64,
}

impl EmbeddingFile {
    /// Opens `<path>.partial` now, so a bad path fails before any work; `.jsonl` or `.npy`,
    /// or `-` for JSONL on stdout.
    pub fn create(path: &Path) -> Result<Self, ModelError> {
        if path == Path::new("-") {
            return Ok(Self {
                path: path.to_path_buf(),
                target: Target::Stdout(BufWriter::new(std::io::stdout())),
                format: Format::Jsonl,
                written: 0,
            });
        }
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Format::Jsonl,
            Some("npy") => Format::Npy { dimension: None },
            _ => {
                return Err(ModelError::invalid_input(format!(
                    "--output {} must end in .jsonl or .npy (or be - for JSONL on stdout)",
                    path.display()
                )))
            }
        };
        if path.is_dir() {
            return Err(write_error(path, "is a folder"));
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|e| write_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            target: Target::File {
                partial,
                out: BufWriter::new(file),
            },
            format,
            written: 0,
        })
    }

    /// The partial file being written, if any (for reports of an interrupted run).
    pub fn partial(&self) -> Option<&Path> {
        match &self.target {
            Target::File { partial, .. } => Some(partial),
            Target::Stdout(_) => None,
        }
    }

    /// Appends vectors, continuing the input order; `lines` are their input lines (JSONL
    /// records carry them).
    pub fn append(
        &mut self,
        lines: &[Option<usize>],
        vectors: &[Vec<f32>],
    ) -> Result<(), ModelError> {
        let path = self.path.clone();
        let fail = |e: std::io::Error| io_error(&path, e);
        for (line, vector) in lines.iter().zip(vectors) {
            match &mut self.format {
                Format::Jsonl => {
                    let record = serde_json::json!({"index": self.written, "line": line, "embedding": vector});
                    self.write_record(&record)?;
                    continue;
                }
                Format::Npy { dimension } => {
                    if dimension.is_none() {
                        *dimension = Some(vector.len());
                        self.target
                            .write_all(&npy_header(0, vector.len()))
                            .map_err(fail)?;
                    }
                    for x in vector {
                        self.target.write_all(&x.to_le_bytes()).map_err(fail)?;
                    }
                }
            }
            self.written += 1;
        }
        self.flush_stdout()
    }

    /// Appends sparse vectors as JSONL records `{"index", "line", "indices", "values"}`;
    /// `INVALID_INPUT` for a `.npy` output (a dense array has no room for them).
    pub fn append_sparse(
        &mut self,
        lines: &[Option<usize>],
        vectors: &[model_manager::SparseVector],
    ) -> Result<(), ModelError> {
        if matches!(self.format, Format::Npy { .. }) {
            return Err(ModelError::invalid_input(
                "sparse vectors are written as JSONL (-o vectors.jsonl, or -o -), not .npy",
            ));
        }
        for (line, v) in lines.iter().zip(vectors) {
            let record = serde_json::json!({"index": self.written, "line": line, "indices": v.indices, "values": v.values});
            self.write_record(&record)?;
        }
        self.flush_stdout()
    }

    /// One JSONL record.
    fn write_record(&mut self, record: &serde_json::Value) -> Result<(), ModelError> {
        let path = self.path.clone();
        writeln!(self.target, "{record}").map_err(|e| io_error(&path, e))?;
        self.written += 1;
        Ok(())
    }

    /// Lines on stdout go out as they are written.
    fn flush_stdout(&mut self) -> Result<(), ModelError> {
        if matches!(self.target, Target::Stdout(_)) {
            let path = self.path.clone();
            self.target.flush().map_err(|e| io_error(&path, e))?;
        }
        Ok(())
    }

    /// Completes the file and moves it into place.
    pub fn finish(mut self) -> Result<(), ModelError> {
        let path = self.path.clone();
        let fail = |e: std::io::Error| io_error(&path, e);
        if self.written == 0 {
            return Err(write_error(&path, "no vectors to write"));
        }
        let Target::File { partial, out } = &mut self.target else {
            return self.target.flush().map_err(fail);
        };
        if let Format::Npy {
            dimension: Some(dimension),
        } = self.format
        {
            out.seek(SeekFrom::Start(0)).map_err(fail)?;
            out.write_all(&npy_header(self.written, dimension))
                .map_err(fail)?;
        }
        out.flush().map_err(fail)?;
        out.get_ref().sync_all().map_err(fail)?;
        std::fs::rename(&*partial, &self.path).map_err(fail)
    }
}

impl Drop for EmbeddingFile {
    fn drop(&mut self) {
        // After a successful rename there is nothing left at `partial`.
        if let Target::File { partial, .. } = &self.target {
            let _ = std::fs::remove_file(partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_64_aligned_and_fits_any_count() {
        let h = npy_header(u64::MAX, usize::MAX);
        assert_eq!(h.len(), NPY_HEADER_LEN);
        assert_eq!(h.len() % 64, 0);
        assert!(std::str::from_utf8(&h[10..])
            .unwrap()
            .contains(&u64::MAX.to_string()));
    }
}
