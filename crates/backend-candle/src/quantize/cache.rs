//! The calibration of an int8 load kept between loads: each dense layer's input maxima and
//! the f32 vectors of the calibration texts, so a later load skips the f32 pass (about half
//! of what the gate costs). The gate itself still runs: the int8 vectors of this load are
//! measured against the kept f32 ones.
//!
//! An entry is named by a 128-bit hash of everything the f32 pass depends on: this
//! program's executable, the CPU's features (they choose the f32 kernels), the model's
//! options other than the quantization keys, the bytes of the model's files (weights,
//! configuration, tokenizer, sentence-transformers modules) and the calibration texts. It
//! ends with a checksum; an entry that does not read back whole, with its name, and with the
//! model's shapes is ignored (and rewritten). Entries are as trusted as the model's folder:
//! whoever can write the cache folder could also replace the model.
//!
//! Layout (little-endian): [`FORMAT`], the key (16 bytes), the layer count and each layer's
//! input count and maxima, the vector count, the dimension and the vectors (f32), then the
//! xxh3-64 of all that.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

const FORMAT: &[u8] = b"mm int8 calibration 1\n";

/// What a calibration pass yields.
pub struct Calibration {
    /// Each dense layer's input maxima, as [`crate::encoder::PackedEncoder::input_maxima`].
    pub maxima: Vec<Vec<f32>>,
    /// The f32 vector of each calibration text.
    pub vectors: Vec<Vec<f32>>,
}

/// The shapes an entry must have: each dense layer's input count, the number of
/// calibration texts and the width of their vectors.
pub struct Shape {
    /// Input count of each dense layer.
    pub layer_inputs: Vec<usize>,
    /// Calibration texts.
    pub texts: usize,
    /// Width of a vector.
    pub dimension: usize,
}

impl Shape {
    /// The exact size of an entry of this shape.
    fn bytes(&self) -> u64 {
        let floats = self.layer_inputs.iter().sum::<usize>() + self.texts * self.dimension;
        let counts = 1 + self.layer_inputs.len() + 2;
        (FORMAT.len() + 16 + 4 * counts + 4 * floats + 8) as u64
    }
}

/// The cache entry of one model, options, program and set of calibration texts.
pub struct CalibrationCache {
    path: PathBuf,
    key: u128,
}

/// `$XDG_CACHE_HOME/model-manager/int8-calibration`, else under `$HOME/.cache`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("model-manager/int8-calibration"))
}

/// The hash of this program's executable, read once (`None` if it cannot be read).
fn program() -> Option<u128> {
    static PROGRAM: OnceLock<Option<u128>> = OnceLock::new();
    *PROGRAM.get_or_init(|| {
        let mut hasher = Xxh3::new();
        hash_file(&mut hasher, &std::env::current_exe().ok()?).ok()?;
        Some(hasher.digest128())
    })
}

fn hash_file(hasher: &mut Xxh3, path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    hasher.update(&file.metadata()?.len().to_le_bytes());
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..n]);
    }
}

/// The files of `folder` the f32 pass depends on: `weights`, the configuration and
/// tokenizer files at the top (`.json`, `.txt`, `.model`), and every file of the
/// sentence-transformers module folders (`1_Pooling`, `2_Dense`…); sorted.
fn model_files(folder: &Path, weights: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = weights.to_vec();
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_file() {
            let small = [".json", ".txt", ".model"]
                .iter()
                .any(|e| name.ends_with(e));
            if small {
                files.push(path);
            }
        } else if path.is_dir() && name.starts_with(|c: char| c.is_ascii_digit()) {
            for inner in std::fs::read_dir(&path)? {
                let inner = inner?.path();
                if inner.is_file() {
                    files.push(inner);
                }
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

impl CalibrationCache {
    /// The entry in `dir` for the model in `folder` (its weight files `weights`), loaded
    /// with `options` (the quantization keys left out), calibrated on `texts`; `None` when
    /// a file cannot be read (the load then calibrates as if there were no cache).
    pub fn new(
        dir: &Path,
        folder: &Path,
        weights: &[PathBuf],
        options: &serde_json::Map<String, serde_json::Value>,
        texts: &[&str],
    ) -> Option<Self> {
        let mut hasher = Xxh3::new();
        // Every variable-length part with its length first, so no two inputs run together.
        let part = |hasher: &mut Xxh3, bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        hasher.update(FORMAT);
        hasher.update(&program()?.to_le_bytes());
        let cpu = model_manager_core::CpuFeatures::detect().names().join(" ");
        part(&mut hasher, cpu.as_bytes());
        let options: serde_json::Map<_, _> = options
            .iter()
            .filter(|(k, _)| !super::OPTION_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        part(
            &mut hasher,
            serde_json::Value::Object(options).to_string().as_bytes(),
        );
        let files = model_files(folder, weights).ok()?;
        hasher.update(&(files.len() as u64).to_le_bytes());
        for file in files {
            let name = file.strip_prefix(folder).unwrap_or(&file);
            part(&mut hasher, name.to_string_lossy().as_bytes());
            hash_file(&mut hasher, &file).ok()?;
        }
        hasher.update(&(texts.len() as u64).to_le_bytes());
        for text in texts {
            part(&mut hasher, text.as_bytes());
        }
        let key = hasher.digest128();
        Some(Self {
            path: dir.join(format!("{key:032x}.bin")),
            key,
        })
    }

    /// The kept calibration, if a whole entry with this key and `shape` is there (only a
    /// file of exactly that size is read).
    pub fn read(&self, shape: &Shape) -> Option<Calibration> {
        let file = std::fs::File::open(&self.path).ok()?;
        let size = shape.bytes();
        let mut bytes = Vec::new();
        let whole =
            file.metadata().ok()?.len() == size && file.take(size).read_to_end(&mut bytes).is_ok();
        let parsed = whole.then(|| self.parse(&bytes, shape)).flatten();
        if parsed.is_none() {
            tracing::warn!(file = %self.path.display(), "ignoring a damaged int8 calibration entry; calibrating again");
        }
        parsed
    }

    /// The entry in `bytes`, if it is whole, has this key and `shape`: every count is
    /// checked against `shape` before it is used, so no field makes the reader loop or
    /// allocate past what the model needs.
    fn parse(&self, bytes: &[u8], shape: &Shape) -> Option<Calibration> {
        let (body, checksum) = bytes.split_at(bytes.len().checked_sub(8)?);
        if xxh3_64(body).to_le_bytes() != checksum {
            return None;
        }
        let mut reader = Reader(body.strip_prefix(FORMAT)?);
        if reader.take(16)? != self.key.to_le_bytes() {
            return None;
        }
        if reader.count()? != shape.layer_inputs.len() {
            return None;
        }
        let mut maxima = Vec::new();
        for &inputs in &shape.layer_inputs {
            if reader.count()? != inputs {
                return None;
            }
            maxima.push(reader.floats(inputs)?);
        }
        let (count, dimension) = (reader.count()?, reader.count()?);
        if (count, dimension) != (shape.texts, shape.dimension) {
            return None;
        }
        let mut vectors = Vec::new();
        for _ in 0..count {
            vectors.push(reader.floats(dimension)?);
        }
        reader
            .0
            .is_empty()
            .then_some(Calibration { maxima, vectors })
    }

    /// Keeps a calibration's `maxima` and `vectors` (written to a temporary file, then
    /// renamed into place, so a reader sees a whole entry or none); failures are logged,
    /// the load goes on.
    pub fn write(&self, maxima: &[Vec<f32>], vectors: &[Vec<f32>]) {
        let mut bytes = FORMAT.to_vec();
        bytes.extend_from_slice(&self.key.to_le_bytes());
        let count =
            |bytes: &mut Vec<u8>, n: usize| bytes.extend_from_slice(&(n as u32).to_le_bytes());
        count(&mut bytes, maxima.len());
        for most in maxima {
            count(&mut bytes, most.len());
            most.iter()
                .for_each(|m| bytes.extend_from_slice(&m.to_le_bytes()));
        }
        count(&mut bytes, vectors.len());
        count(&mut bytes, vectors.first().map_or(0, Vec::len));
        for vector in vectors {
            vector
                .iter()
                .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        }
        let checksum = xxh3_64(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        let temporary = self.path.with_extension(format!(
            "{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                // create_new: never through a link someone left at the temporary name.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&temporary)?;
                std::io::Write::write_all(&mut file, &bytes)
            })
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(file = %self.path.display(), "could not keep the int8 calibration: {error}");
        }
    }
}

/// Reads an entry's fields, `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn count(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }

    fn floats(&mut self, n: usize) -> Option<Vec<f32>> {
        let bytes = self.take(n.checked_mul(4)?)?;
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, texts: &[&str]) -> CalibrationCache {
        let folder = dir.join("model");
        if !folder.exists() {
            std::fs::create_dir_all(folder.join("1_Pooling")).unwrap();
            std::fs::write(folder.join("model.safetensors"), b"weights").unwrap();
            std::fs::write(folder.join("config.json"), b"{}").unwrap();
            std::fs::write(folder.join("1_Pooling/config.json"), b"{}").unwrap();
        }
        let weights = [folder.join("model.safetensors")];
        CalibrationCache::new(
            &dir.join("cache"),
            &folder,
            &weights,
            &Default::default(),
            texts,
        )
        .unwrap()
    }

    fn shape() -> Shape {
        Shape {
            layer_inputs: vec![2, 3],
            texts: 2,
            dimension: 2,
        }
    }

    fn calibration() -> Calibration {
        Calibration {
            maxima: vec![vec![1.0, 2.5], vec![0.0, 3.0, 4.0]],
            vectors: vec![vec![0.1, -0.2], vec![0.3, f32::MIN_POSITIVE]],
        }
    }

    #[test]
    fn an_entry_reads_back_bit_for_bit_and_only_under_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = entry(dir.path(), &["a", "b"]);
        assert!(cache.read(&shape()).is_none(), "nothing kept yet");
        cache.write(&calibration().maxima, &calibration().vectors);
        let read = cache.read(&shape()).expect("kept");
        assert_eq!(read.maxima, calibration().maxima);
        assert_eq!(read.vectors, calibration().vectors);
        // Other texts, or a changed model file, name another entry.
        assert!(entry(dir.path(), &["a", "c"]).read(&shape()).is_none());
        let wider = Shape {
            dimension: 3,
            ..shape()
        };
        assert!(cache.read(&wider).is_none(), "another shape");
        std::fs::write(dir.path().join("model/1_Pooling/config.json"), b"{\"x\":1}").unwrap();
        assert!(entry(dir.path(), &["a", "b"]).read(&shape()).is_none());
    }

    #[test]
    fn an_entry_is_written_whole_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let cache = entry(dir.path(), &["a", "b"]);
        cache.write(&calibration().maxima, &calibration().vectors);
        let size = std::fs::metadata(&cache.path).unwrap().len();
        assert_eq!(size, shape().bytes());
        // A link at the temporary name: the write fails (logged) and its target is untouched.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let temporary = cache.path.with_extension(format!(
            "{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        std::os::unix::fs::symlink(&victim, &temporary).unwrap();
        cache.write(&calibration().maxima, &calibration().vectors);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn a_damaged_or_foreign_entry_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = entry(dir.path(), &["a", "b"]);
        cache.write(&calibration().maxima, &calibration().vectors);
        let good = std::fs::read(&cache.path).unwrap();
        for at in [0, FORMAT.len() + 3, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&cache.path, &bad).unwrap();
            assert!(cache.read(&shape()).is_none(), "byte {at} flipped");
        }
        std::fs::write(&cache.path, &good[..good.len() - 9]).unwrap();
        assert!(cache.read(&shape()).is_none(), "cut short");
        // A forged entry of the right size, key and checksum whose counts say 2^32 - 1
        // vectors of width 0: refused before any loop.
        let mut forged = good.clone();
        let counts_at = good.len() - 8 - 4 * (2 * 2) - 8;
        forged[counts_at..counts_at + 8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        let body = forged.len() - 8;
        let checksum = xxh3_64(&forged[..body]).to_le_bytes();
        forged[body..].copy_from_slice(&checksum);
        std::fs::write(&cache.path, &forged).unwrap();
        assert!(cache.read(&shape()).is_none(), "forged counts");
        // Another key's whole entry at this name (a renamed file) is not this one.
        let other = entry(dir.path(), &["x", "y"]);
        other.write(&calibration().maxima, &calibration().vectors);
        std::fs::copy(&other.path, &cache.path).unwrap();
        assert!(cache.read(&shape()).is_none());
    }
}
