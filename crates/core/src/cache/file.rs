//! The persisted cache file: versioned and checksummed; restored entry by entry.
//!
//! ```text
//! header   "MMCACHE\0" | version u32 (3) | reserved u32 | entries u64
//! entry    key u128 | namespace u64 | inserted (Unix ms) u64 | tokens u32 | dimension u32 | f32 × dimension
//! trailer  xxh3-64 of every byte before it, u64 | "MMCEND\0\0"
//! ```
//!
//! Little-endian throughout. A file whose header, size or checksum is wrong restores
//! nothing, and the error says why. In a sound file, an entry that no model could have
//! made (a NaN or infinite value, no or an impossible dimension, another dimension than the
//! most common one of its model namespace) is left out and counted: one bad entry costs
//! that entry, not the file. Writes go to a unique temporary file, are synced, renamed over
//! the old one and the folder synced, so a crash at any point leaves the previous complete
//! file or the new one.

use crate::error::{ErrorCode, ModelError, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3Default;

const MAGIC: &[u8; 8] = b"MMCACHE\0";
/// Files of earlier versions start with this too: they are ours, never a foreign file.
const FAMILY: &[u8; 7] = b"MMCACHE";
const END: &[u8; 8] = b"MMCEND\0\0";
const VERSION: u32 = 3;
const HEADER_LEN: u64 = 24;
const TRAILER_LEN: u64 = 16;
const ENTRY_FIXED_LEN: u64 = 16 + 8 + 8 + 4 + 4;
/// Larger vectors are a sign of damage, not of a model.
const MAX_DIMENSION: u32 = 1 << 16;

/// One cached embedding as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileEntry {
    pub key: u128,
    pub namespace: u64,
    pub inserted_ms: u64,
    pub tokens: u32,
    pub vector: Vec<f32>,
}

pub(crate) fn cache_error(path: &Path, action: &str, cause: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::CacheError,
        format!(
            "cannot {action} the embedding cache file {}: {cause}",
            path.display()
        ),
    )
    .with("path", path.display().to_string())
    .caused_by("CacheFileError", cause)
}

/// Counts what it writes into a checksum.
struct Hashing<W> {
    inner: W,
    hasher: Xxh3Default,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Whether `path` holds something other than a cache file of ours (never overwritten).
fn is_foreign(path: &Path) -> Result<bool> {
    let mut head = Vec::with_capacity(FAMILY.len());
    match File::open(path) {
        Ok(f) => {
            f.take(FAMILY.len() as u64)
                .read_to_end(&mut head)
                .map_err(|e| cache_error(path, "read", e))?;
            Ok(head.as_slice() != FAMILY.as_slice())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(cache_error(path, "read", e)),
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{nanos}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Removes temporary files that a process killed during a save left beside `path` (ours,
/// by name, of a process that is gone). Best effort.
pub(crate) fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}.", base.to_string_lossy());
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(middle) = name
            .strip_prefix(&prefix)
            .and_then(|n| n.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some(pid) = middle.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` may still run: on Linux, whether /proc has it; elsewhere every
/// process counts as alive, so nothing is removed.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Writes `entries` to `path` atomically; refuses to replace a file that is not a cache
/// file.
pub(crate) fn write(path: &Path, entries: &[FileEntry]) -> Result<()> {
    if is_foreign(path)? {
        return Err(cache_error(
            path,
            "write",
            "a file that is not a model-manager cache is in the way; move it or set embedding_cache.path",
        ));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| cache_error(path, "write", e))?;
    }
    let tmp = temporary_path(path);
    let written = write_file(&tmp, entries).and_then(|()| {
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the folder is.
        File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(cache_error(path, "write", e));
    }
    Ok(())
}

fn write_file(tmp: &Path, entries: &[FileEntry]) -> std::io::Result<()> {
    let file = File::create(tmp)?;
    let mut out = Hashing {
        inner: BufWriter::new(file),
        hasher: Xxh3Default::new(),
    };
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&(entries.len() as u64).to_le_bytes())?;
    for entry in entries {
        out.write_all(&entry.key.to_le_bytes())?;
        out.write_all(&entry.namespace.to_le_bytes())?;
        out.write_all(&entry.inserted_ms.to_le_bytes())?;
        out.write_all(&entry.tokens.to_le_bytes())?;
        out.write_all(&(entry.vector.len() as u32).to_le_bytes())?;
        for x in &entry.vector {
            out.write_all(&x.to_le_bytes())?;
        }
    }
    let checksum = out.hasher.digest();
    let mut inner = out.inner;
    inner.write_all(&checksum.to_le_bytes())?;
    inner.write_all(END)?;
    inner.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// What a sound file gave back.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Its sound entries.
    pub entries: Vec<FileEntry>,
    /// Entries left out, and why the first was.
    pub dropped: u64,
    pub first_flaw: Option<String>,
}

impl Restored {
    fn drop_entry(&mut self, why: impl FnOnce() -> String) {
        self.dropped += 1;
        if self.first_flaw.is_none() {
            self.first_flaw = Some(why());
        }
    }
}

/// The sound entries of `path` (none when its header, size or checksum is wrong: an
/// error); `None` when there is no file.
pub(crate) fn read(path: &Path) -> Result<Option<Restored>> {
    remove_stale_temporaries(path);
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cache_error(path, "read", e)),
    };
    let fail = |why: String| cache_error(path, "restore", why);
    let len = file
        .metadata()
        .map_err(|e| cache_error(path, "read", e))?
        .len();
    verify_checksum(&mut file, len).map_err(&fail)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| cache_error(path, "read", e))?;
    let mut restored = parse(BufReader::new(file), len - TRAILER_LEN).map_err(&fail)?;
    keep_one_dimension_per_namespace(&mut restored);
    Ok(Some(restored))
}

fn verify_checksum(file: &mut File, len: u64) -> std::result::Result<(), String> {
    let mut head = [0u8; 8];
    let read_head = file.read_exact(&mut head);
    if read_head.is_err() || &head[..7] != FAMILY {
        return Err("not a model-manager cache file".into());
    }
    if head != *MAGIC {
        return Err("written by an older version of model-manager; not restored".into());
    }
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(format!("truncated ({len} bytes)"));
    }
    let mut hasher = Xxh3Default::new();
    hasher.update(&head);
    let mut body = (&mut *file).take(len - TRAILER_LEN - head.len() as u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut trailer = [0u8; 16];
    file.read_exact(&mut trailer).map_err(|e| e.to_string())?;
    if &trailer[8..] != END {
        return Err("truncated or damaged: the end marker is missing".into());
    }
    let stored = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    if stored != hasher.digest() {
        return Err("damaged: the checksum does not match".into());
    }
    Ok(())
}

fn take<const N: usize>(input: &mut impl Read) -> std::result::Result<[u8; N], String> {
    let mut buf = [0u8; N];
    input.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Parses the entries of a file whose checksum matched; `body_len` excludes the trailer.
/// Entries with a NaN, an infinity or an impossible dimension are left out and counted.
fn parse(mut input: impl Read, body_len: u64) -> std::result::Result<Restored, String> {
    let header: [u8; HEADER_LEN as usize] = take(&mut input)?;
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("version {version}, this build reads {VERSION}"));
    }
    let count = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if count > (body_len - HEADER_LEN) / ENTRY_FIXED_LEN {
        return Err(format!("claims {count} entries, more than its size holds"));
    }
    let mut restored = Restored {
        entries: Vec::with_capacity(count as usize),
        ..Restored::default()
    };
    let mut consumed = HEADER_LEN;
    for index in 0..count {
        let key = u128::from_le_bytes(take(&mut input)?);
        let namespace = u64::from_le_bytes(take(&mut input)?);
        let inserted_ms = u64::from_le_bytes(take(&mut input)?);
        let tokens = u32::from_le_bytes(take(&mut input)?);
        let dimension = u32::from_le_bytes(take(&mut input)?);
        consumed += ENTRY_FIXED_LEN + 4 * dimension as u64;
        if consumed > body_len {
            return Err(format!(
                "entry {index} claims {dimension} dimensions, past the end of the file"
            ));
        }
        if dimension == 0 || dimension > MAX_DIMENSION {
            std::io::copy(
                &mut (&mut input).take(4 * dimension as u64),
                &mut std::io::sink(),
            )
            .map_err(|e| e.to_string())?;
            restored
                .drop_entry(|| format!("entry {index} has an impossible dimension {dimension}"));
            continue;
        }
        let mut raw = vec![0u8; 4 * dimension as usize];
        input.read_exact(&mut raw).map_err(|e| e.to_string())?;
        let vector: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if vector.iter().any(|x| !x.is_finite()) {
            restored.drop_entry(|| format!("entry {index} holds a NaN or infinite value"));
            continue;
        }
        restored.entries.push(FileEntry {
            key,
            namespace,
            inserted_ms,
            tokens,
            vector,
        });
    }
    if consumed != body_len {
        return Err(format!(
            "{} bytes after the last entry",
            body_len - consumed
        ));
    }
    Ok(restored)
}

/// Every vector of one model namespace has that model's one dimension: entries of another
/// dimension than the namespace's most common one (the first seen among equals) are left
/// out and counted.
fn keep_one_dimension_per_namespace(restored: &mut Restored) {
    let mut counts: HashMap<(u64, usize), (u64, usize)> = HashMap::new();
    for (at, entry) in restored.entries.iter().enumerate() {
        counts
            .entry((entry.namespace, entry.vector.len()))
            .or_insert((0, at))
            .0 += 1;
    }
    let mut chosen: HashMap<u64, (usize, u64, usize)> = HashMap::new();
    for (&(namespace, dimension), &(count, first)) in &counts {
        let best = chosen.entry(namespace).or_insert((dimension, count, first));
        if (count, std::cmp::Reverse(first)) > (best.1, std::cmp::Reverse(best.2)) {
            *best = (dimension, count, first);
        }
    }
    let entries = std::mem::take(&mut restored.entries);
    for entry in entries {
        let dimension = chosen[&entry.namespace].0;
        if entry.vector.len() == dimension {
            restored.entries.push(entry);
        } else {
            let found = entry.vector.len();
            restored.drop_entry(|| {
                format!("an entry has {found} dimensions where its model's others have {dimension}")
            });
        }
    }
}
