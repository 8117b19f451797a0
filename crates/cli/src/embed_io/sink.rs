//! Where vectors go: JSONL or a float32 `.npy`, written to `<output>.partial` and renamed
//! into place when complete, so an interrupted run leaves no half-written file.

use model_manager::ModelError;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

fn write_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::invalid_input(format!("cannot write {}: {e}", path.display()))
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

/// An output file of vectors in input order.
pub struct EmbeddingFile {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    format: Format,
    written: u64,
}

impl EmbeddingFile {
    /// Opens `<path>.partial` now, so a bad path fails before any work; `.jsonl` or `.npy`.
    pub fn create(path: &Path) -> Result<Self, ModelError> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Format::Jsonl,
            Some("npy") => Format::Npy { dimension: None },
            _ => {
                return Err(ModelError::invalid_input(format!(
                    "--output {} must end in .jsonl or .npy",
                    path.display()
                )))
            }
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial).map_err(|e| write_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            out: BufWriter::new(file),
            format,
            written: 0,
        })
    }

    /// Appends vectors, continuing the input order.
    pub fn append(&mut self, vectors: &[Vec<f32>]) -> Result<(), ModelError> {
        let path = self.path.clone();
        let fail = |e: std::io::Error| write_error(&path, e);
        for vector in vectors {
            match &mut self.format {
                Format::Jsonl => {
                    let line = serde_json::json!({"index": self.written, "embedding": vector});
                    writeln!(self.out, "{line}").map_err(fail)?;
                }
                Format::Npy { dimension } => {
                    if dimension.is_none() {
                        *dimension = Some(vector.len());
                        self.out
                            .write_all(&npy_header(0, vector.len()))
                            .map_err(fail)?;
                    }
                    for x in vector {
                        self.out.write_all(&x.to_le_bytes()).map_err(fail)?;
                    }
                }
            }
            self.written += 1;
        }
        Ok(())
    }

    /// Completes the file and moves it into place.
    pub fn finish(mut self) -> Result<(), ModelError> {
        let path = self.path.clone();
        let fail = |e: std::io::Error| write_error(&path, e);
        if self.written == 0 {
            return Err(write_error(&path, "no vectors to write"));
        }
        if let Format::Npy {
            dimension: Some(dimension),
        } = self.format
        {
            self.out.seek(SeekFrom::Start(0)).map_err(fail)?;
            self.out
                .write_all(&npy_header(self.written, dimension))
                .map_err(fail)?;
        }
        self.out.flush().map_err(fail)?;
        self.out.get_ref().sync_all().map_err(fail)?;
        std::fs::rename(&self.partial, &self.path).map_err(fail)
    }
}

impl Drop for EmbeddingFile {
    fn drop(&mut self) {
        // After a successful rename there is nothing left at `partial`.
        let _ = std::fs::remove_file(&self.partial);
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
