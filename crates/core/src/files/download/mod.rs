//! Downloads from the Hugging Face hub into its cache, verified: each file's size against
//! what the hub declared and its hash against its etag before it enters `blobs/`; a cut
//! download resumes from `blobs/<etag>.part`; connect and read timeouts
//! (`hub.timeout_seconds`); retries with backoff for server errors and cut connections.
//! Honours `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_HUB_OFFLINE` and a token from
//! `HF_TOKEN` or the token file, as the Hugging Face tools do.

mod http;
mod progress;
mod verify;

pub use progress::{observe_downloads, DownloadEvent};

use super::hub_cache::{blob_link, shards, RepoCache};
use super::ModelFolder;
use crate::{ErrorCode, ModelError, ModelSpec, Result};
use http::{file_deadline, Failure, FileMeta, Hub};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use verify::Expected;

/// Tries per file for server errors, cut connections and damaged content.
const ATTEMPTS: u32 = 4;
/// The longest `Retry-After` honoured; a hub that asks for more fails the download.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Default of `hub.timeout_seconds`.
const DEFAULT_TIMEOUT: f64 = 30.0;
/// The revision downloads follow.
const REVISION: &str = "main";

/// `HF_ENDPOINT`, else the public hub.
fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
}

/// `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`, else
/// `~/.cache/huggingface/token`).
fn token() -> Option<String> {
    if let Ok(token) = std::env::var("HF_TOKEN") {
        return Some(token.trim().to_owned()).filter(|t| !t.is_empty());
    }
    let path = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("token")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/token"))
        })?;
    let token = std::fs::read_to_string(path).ok()?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

fn hub_for(spec: Option<&ModelSpec>) -> Hub {
    let timeout = spec
        .and_then(|s| s.backend_setting("hub.timeout_seconds"))
        .and_then(|v| v.as_f64())
        .filter(|t| *t > 0.0)
        .unwrap_or(DEFAULT_TIMEOUT);
    let speed = spec
        .and_then(|s| s.backend_setting("hub.min_bytes_per_second"))
        .and_then(|v| v.as_u64())
        .filter(|b| *b > 0)
        .unwrap_or(http::MIN_BYTES_PER_SECOND);
    Hub::new(
        &endpoint(),
        token(),
        Duration::from_secs_f64(timeout),
        speed,
    )
}

/// A failure of `repo`'s `file` as the error users see: names the endpoint and says what
/// to do instead. Files that could not be fetched are `MODEL_NOT_FOUND` (they are not here
/// and the hub did not provide them); a broken cache is `MODEL_LOAD_ERROR`.
fn download_error(hub: &Hub, repo: &str, file: &str, why: &Failure) -> ModelError {
    let code = match why {
        Failure::Io(_) => ErrorCode::ModelLoadError,
        _ => ErrorCode::ModelNotFound,
    };
    ModelError::new(
        code,
        format!("downloading {file} of {repo} from {} failed: {why}", hub.endpoint),
    )
    .with("file", file)
    .with("endpoint", hub.endpoint.clone())
    .with("hint", match why {
        Failure::Status(401 | 403, _) => {
            "the repository wants a token: set HF_TOKEN (or log in with huggingface-cli), or use a local_path"
        }
        _ => "check the network or HF_ENDPOINT; or set HF_HUB_OFFLINE=1 to use only the cache, or a local_path",
    })
}

/// A name the hub gave that becomes part of a path: a file inside the repository (relative,
/// plain components only), or a commit / etag (one plain component).
fn checked<'a>(what: &str, name: &'a str, nested: bool) -> Result<&'a str> {
    let plain = |part: &str| {
        !part.is_empty() && part != "." && part != ".." && !part.contains(['\\', '\0'])
    };
    let ok = match nested {
        true => !name.starts_with('/') && name.split('/').all(plain),
        false => plain(name) && !name.contains('/'),
    };
    match ok {
        true => Ok(name),
        false => Err(ModelError::new(
            ErrorCode::ModelLoadError,
            format!("the hub sent an unusable {what} `{name}`: refusing to use it as a path"),
        )),
    }
}

/// Downloads `required` (for `a|b`, the first the hub has; an index brings its shards)
/// and whichever of `optional` the hub has, for model `spec` from repository `name`.
/// Files already in the snapshot are not fetched again. The snapshot's folder.
pub fn fetch_model(
    spec: &ModelSpec,
    name: &str,
    required: &[&str],
    optional: &[&str],
) -> Result<ModelFolder> {
    let hub = hub_for(Some(spec));
    let repo = RepoCache::of(name);
    // The first answer fixes the commit, so one model's files never span two commits.
    let mut fetch = Fetch::new(&hub, &repo, name);
    let mut snapshot: Option<PathBuf> = None;
    for entry in required {
        let alternatives: Vec<&str> = entry.split('|').collect();
        let mut got = None;
        for file in &alternatives {
            if let Some(path) = fetch.file(file)? {
                got = Some((path, *file));
                break;
            }
        }
        let Some((path, file)) = got else {
            let why = Failure::Absent;
            let mut e = download_error(&hub, name, &alternatives.join(" or "), &why);
            e.message = format!("{} (model `{}` needs it)", e.message, spec.id);
            return Err(e.for_model(&spec.id));
        };
        snapshot = snapshot.or_else(|| snapshot_of(&path, file));
    }
    for file in optional {
        if let Some(path) = fetch.file(file)? {
            snapshot = snapshot.or_else(|| snapshot_of(&path, file));
        }
    }
    snapshot.map(|path| ModelFolder { path }).ok_or_else(|| {
        ModelError::new(
            ErrorCode::ModelNotFound,
            format!("nothing to download for {name}"),
        )
    })
}

/// The snapshot folder holding `file` at `path`.
fn snapshot_of(path: &Path, file: &str) -> Option<PathBuf> {
    path.ancestors()
        .nth(file.split('/').count())
        .map(PathBuf::from)
}

/// Downloads every file of repository `name` that `wanted` accepts; the snapshot folder
/// and the files fetched or already there.
pub fn pull_repo(name: &str, wanted: &dyn Fn(&str) -> bool) -> Result<(PathBuf, Vec<String>)> {
    if super::offline() {
        return Err(ModelError::new(
            ErrorCode::ModelNotFound,
            format!("cannot pull {name}: HF_HUB_OFFLINE is set"),
        ));
    }
    let hub = hub_for(None);
    let repo = RepoCache::of(name);
    let (commit, files) = hub
        .list(name, REVISION)
        .map_err(|why| download_error(&hub, name, "the file list", &why))?;
    let commit = checked("commit", &commit, false)?.to_owned();
    let files: Vec<String> = files.into_iter().filter(|f| wanted(f)).collect();
    let mut fetch = Fetch::new(&hub, &repo, name);
    fetch.commit = Some(commit.clone());
    for file in &files {
        if fetch.file(file)?.is_none() {
            return Err(download_error(&hub, name, file, &Failure::Absent));
        }
    }
    Ok((repo.snapshots().join(commit), files))
}

/// Downloads of one repository at one commit (the first answer's, unless set).
struct Fetch<'a> {
    hub: &'a Hub,
    repo: &'a RepoCache,
    name: &'a str,
    commit: Option<String>,
}

impl<'a> Fetch<'a> {
    fn new(hub: &'a Hub, repo: &'a RepoCache, name: &'a str) -> Self {
        Self {
            hub,
            repo,
            name,
            commit: None,
        }
    }

    /// Downloads `file` into the cache (with the shards of an index); its snapshot path,
    /// or `None` when the hub has no such file.
    fn file(&mut self, file: &str) -> Result<Option<PathBuf>> {
        let (hub, name) = (self.hub, self.name);
        let file = checked("file name", file, true)?;
        let revision = self.commit.clone().unwrap_or_else(|| REVISION.to_owned());
        let meta = match with_retries(|| hub.head(name, &revision, file)) {
            Ok(meta) => meta,
            Err(Failure::Absent) => return Ok(None),
            Err(why) => return Err(download_error(hub, name, file, &why)),
        };
        let commit = checked("commit", &meta.commit, false)?.to_owned();
        checked("etag", &meta.etag, false)?;
        self.commit.get_or_insert_with(|| commit.clone());
        let link = self.repo.snapshots().join(&commit).join(file);
        if !link.is_file() {
            let blob = self.repo.blob(&meta.etag);
            if !blob.is_file() {
                download_blob(hub, name, file, &meta, &blob)?;
            }
            link_snapshot(&link, file, &meta.etag).map_err(|e| cache_error(&link, e))?;
        }
        if revision == REVISION {
            write_ref(self.repo, &commit).map_err(|e| cache_error(&self.repo.dir, e))?;
        }
        // An index names weight files, never another index (which could loop).
        if file.ends_with(".index.json") {
            let shards = shards(&link).unwrap_or_default();
            for shard in shards.iter().filter(|s| !s.ends_with(".index.json")) {
                if self.file(shard)?.is_none() {
                    return Err(download_error(hub, name, shard, &Failure::Absent));
                }
            }
        }
        Ok(Some(link))
    }
}

fn cache_error(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::new(
        ErrorCode::ModelLoadError,
        format!(
            "cannot write the Hugging Face cache at {}: {e}",
            path.display()
        ),
    )
}

/// Runs `call` up to [`ATTEMPTS`] times while it fails in a way worth retrying, waiting
/// what the hub asked for (`Retry-After`) or backing off.
fn with_retries<T>(
    mut call: impl FnMut() -> std::result::Result<T, Failure>,
) -> std::result::Result<T, Failure> {
    let mut attempt = 0;
    loop {
        match call() {
            Err(why) if why.retryable() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(wait_before_retry(&why, attempt, None)?);
            }
            done => return done,
        }
    }
}

/// How long to wait before try `attempt + 1`: what the hub asked for, else a backoff. A
/// hub that asks for more than [`MAX_RETRY_AFTER`], or a wait that would end past the
/// file's `deadline`, is not waited for: the download fails now, not after the wait.
fn wait_before_retry(
    why: &Failure,
    attempt: u32,
    deadline: Option<Instant>,
) -> std::result::Result<Duration, Failure> {
    let wait = match why.retry_after() {
        Some(wait) if wait > MAX_RETRY_AFTER => {
            return Err(Failure::TooSlow(format!(
                "{why}: longer than the {} s this client waits",
                MAX_RETRY_AFTER.as_secs()
            )))
        }
        Some(wait) => wait,
        None => backoff(attempt),
    };
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match left {
        Some(left) if wait >= left => Err(Failure::TooSlow(format!(
            "{why}: the file's deadline (hub.timeout_seconds plus a second per hub.min_bytes_per_second bytes) passes within the {:.1} s wait",
            wait.as_secs_f64()
        ))),
        _ => Ok(wait),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 << attempt.min(4))
}

/// Downloads the content into `blob` through `blob.part`: resumed after cuts, checked for
/// size and hash, renamed into place only when both match. One process at a time per
/// blob (a lock file beside it).
fn download_blob(hub: &Hub, name: &str, file: &str, meta: &FileMeta, blob: &Path) -> Result<()> {
    let dir = blob.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| cache_error(dir, e))?;
    // Where huggingface_hub keeps its locks, so blobs/ holds only content.
    let locks = blob
        .parent()
        .and_then(Path::parent)
        .and_then(|repo| Some(repo.parent()?.join(".locks").join(repo.file_name()?)))
        .unwrap_or_else(|| dir.to_path_buf());
    std::fs::create_dir_all(&locks).map_err(|e| cache_error(&locks, e))?;
    let etag = blob
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock_path = locks.join(format!("{etag}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(|e| cache_error(&lock_path, e))?;
    lock.lock().map_err(|e| cache_error(&lock_path, e))?;
    if blob.is_file() {
        return Ok(());
    }
    let part = PathBuf::from(format!("{}.part", blob.display()));
    let expected = Expected::from_etag(&meta.etag);
    // One deadline for the file across every try: a hub that trickles bytes would
    // otherwise count as making progress forever.
    let deadline = file_deadline(hub.timeout, meta.size, hub.min_bytes_per_second);
    let mut attempt = 0;
    let mut best = 0;
    loop {
        attempt += 1;
        let mut report = progress::reporter(name, file, meta.size);
        let fetched = hub.fetch_into(meta, &part, &mut report, deadline);
        let held = std::fs::metadata(&part).map_or(0, |m| m.len());
        // A try that brought bytes is progress, not a failure to count against the file.
        if held > best {
            best = held;
            attempt = attempt.min(1);
        }
        let mut wait = backoff(attempt);
        let problem = match fetched {
            Err(why) if !why.retryable() => {
                progress::finished(name, file, false);
                return Err(download_error(hub, name, file, &why));
            }
            Err(why) => {
                wait = match wait_before_retry(&why, attempt, Some(deadline)) {
                    Ok(wait) => wait,
                    Err(too_long) => {
                        progress::finished(name, file, false);
                        return Err(download_error(hub, name, file, &too_long));
                    }
                };
                why.to_string()
            }
            Ok(()) if held < meta.size => {
                format!("the body ended at {held} of {} bytes", meta.size)
            }
            Ok(()) => match verify::mismatch(&part, &expected) {
                Ok(None) => break,
                Ok(Some(actual)) => {
                    let _ = std::fs::remove_file(&part);
                    if attempt >= ATTEMPTS {
                        progress::finished(name, file, false);
                        return Err(hash_error(hub, name, file, &expected, &actual));
                    }
                    format!("content hash {actual} is not the hub's")
                }
                Err(e) => return Err(cache_error(&part, e)),
            },
        };
        if attempt >= ATTEMPTS {
            progress::finished(name, file, false);
            let mut error = download_error(hub, name, file, &Failure::Network(problem));
            error.code = ErrorCode::ModelLoadError;
            return Err(error);
        }
        tracing::warn!(
            repo = name,
            file,
            attempt,
            "download incomplete, retrying: {problem}"
        );
        std::thread::sleep(wait);
    }
    std::fs::rename(&part, blob).map_err(|e| cache_error(blob, e))?;
    progress::finished(name, file, true);
    Ok(())
}

fn hash_error(hub: &Hub, name: &str, file: &str, expected: &Expected, actual: &str) -> ModelError {
    let want = match expected {
        Expected::Sha256(h) | Expected::GitSha1(h) => h.as_str(),
        Expected::Unknown => "?",
    };
    ModelError::new(
        ErrorCode::ModelLoadError,
        format!(
            "{file} of {name} from {} does not match its hash after {ATTEMPTS} tries: expected {want}, got {actual}; the download was deleted",
            hub.endpoint
        ),
    )
    .with("file", file)
    .with("expected", want)
    .with("actual", actual)
}

/// A temporary-file suffix unique to this process and call.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Points `snapshots/<commit>/<file>` at `blobs/<etag>` (relative, as the Python tools do).
fn link_snapshot(link: &Path, file: &str, etag: &str) -> std::io::Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = PathBuf::from(format!("{}.{}.tmp", link.display(), unique()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(blob_link(file, etag), &tmp)?;
    std::fs::rename(&tmp, link)
}

/// `refs/main` names `commit`.
fn write_ref(repo: &RepoCache, commit: &str) -> std::io::Result<()> {
    if repo.commit_of(REVISION).as_deref() == Some(commit) {
        return Ok(());
    }
    let refs = repo.dir.join("refs");
    std::fs::create_dir_all(&refs)?;
    let tmp = refs.join(format!(".{REVISION}.{}.tmp", unique()));
    std::fs::write(&tmp, commit)?;
    std::fs::rename(tmp, refs.join(REVISION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_past_the_file_s_deadline_fails_now() {
        let busy = |seconds| Failure::Busy(429, "u".into(), Some(Duration::from_secs(seconds)));
        let soon = Some(Instant::now() + Duration::from_secs(10));
        assert_eq!(
            wait_before_retry(&busy(3), 1, soon).unwrap(),
            Duration::from_secs(3)
        );
        let err = wait_before_retry(&busy(30), 1, soon).unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
        assert!(matches!(err, Failure::TooSlow(_)));
        assert!(
            wait_before_retry(&busy(121), 1, None).is_err(),
            "over MAX_RETRY_AFTER"
        );
        assert_eq!(
            wait_before_retry(&busy(30), 1, None).unwrap(),
            Duration::from_secs(30),
            "a metadata request has no file deadline"
        );
        let gone = Some(Instant::now());
        let cut = Failure::Network("cut".into());
        assert!(
            wait_before_retry(&cut, 1, gone).is_err(),
            "nor is a backoff past it"
        );
    }

    #[test]
    fn names_from_the_hub_stay_inside_the_cache() {
        for ok in ["config.json", "1_Pooling/config.json", "a..b.json"] {
            assert!(checked("file name", ok, true).is_ok(), "{ok}");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "",
            "a\\b",
            "./a",
        ] {
            assert!(checked("file name", bad, true).is_err(), "{bad}");
        }
        assert!(checked("etag", &"a".repeat(64), false).is_ok());
        for bad in ["a/b", "..", "/abs", ""] {
            assert!(checked("etag", bad, false).is_err(), "{bad}");
        }
    }
}
