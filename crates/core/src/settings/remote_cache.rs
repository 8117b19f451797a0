//! `embedding_cache.redis_*`: the shared cache tier behind the in-process one.

use super::value::Reader;
use crate::error::{ModelError, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable holding the secret that authenticates the tier's values; it wins
/// over `embedding_cache.redis_secret_file`.
pub const REDIS_SECRET_ENV: &str = "MM_REDIS_SECRET";

/// Shortest secret taken: shorter ones are guessable (32 bytes of hex are 128 bits).
const MIN_SECRET_BYTES: usize = 32;

/// Largest secret or password file read: such a file holds a line.
const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;

/// The bytes of a small credential file: a regular file (a FIFO or a device would block the
/// read, or never end) of at most [`MAX_CREDENTIAL_FILE_BYTES`], without the ASCII white
/// space around it (so files that differ by a trailing space or line break agree).
fn read_credential_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading would wait for a writer.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CREDENTIAL_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CREDENTIAL_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {MAX_CREDENTIAL_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes.trim_ascii().to_vec())
}

/// Where and how the shared (remote) embedding-cache tier is reached.
#[derive(Clone, PartialEq)]
pub struct RemoteCacheSettings {
    /// `redis://` or `rediss://` URL, password included or not.
    pub url: String,
    /// A file holding the password, for URLs without one.
    pub password_file: Option<PathBuf>,
    /// A file holding the secret shared by the replicas, which authenticates every value
    /// (HMAC-SHA256); without one (and without [`REDIS_SECRET_ENV`]) values are only
    /// checksummed and trusted as they are.
    pub secret_file: Option<PathBuf>,
    /// Prepended to every key, so several applications can share one Redis.
    pub key_prefix: String,
    /// Longest wait for a look-up or write before it counts as a timeout and the request
    /// goes on without the tier.
    pub timeout: Duration,
}

impl RemoteCacheSettings {
    /// The tier's settings, `None` when `embedding_cache.redis_url` is empty.
    pub(super) fn read(r: &Reader<'_>) -> Option<Self> {
        let url = r
            .string("embedding_cache.redis_url")
            .filter(|u| !u.is_empty())?;
        Some(Self {
            url,
            password_file: r.path("embedding_cache.redis_password_file"),
            secret_file: r.path("embedding_cache.redis_secret_file"),
            key_prefix: r
                .string("embedding_cache.redis_key_prefix")
                .unwrap_or_default(),
            timeout: Duration::from_millis(r.u64("embedding_cache.redis_timeout_ms").max(1)),
        })
    }

    /// The secret that authenticates values: [`REDIS_SECRET_ENV`] when it is set, else the
    /// content of `secret_file`, without the white space around it; `None` when neither is
    /// set. A variable set but empty, an unreadable file, or a secret shorter than 32 bytes
    /// is a `CONFIG_ERROR`: the tier never falls back to unauthenticated values silently.
    pub fn secret(&self) -> Result<Option<Vec<u8>>> {
        self.secret_with(std::env::var_os(REDIS_SECRET_ENV))
    }

    /// [`Self::secret`] with `variable` as the value of [`REDIS_SECRET_ENV`].
    fn secret_with(&self, variable: Option<std::ffi::OsString>) -> Result<Option<Vec<u8>>> {
        let key = "embedding_cache.redis_secret_file";
        let (secret, source) = match (variable, &self.secret_file) {
            (Some(secret), _) => {
                let secret = secret.as_encoded_bytes().trim_ascii().to_vec();
                if secret.is_empty() {
                    return Err(ModelError::config(
                        key,
                        format!("{REDIS_SECRET_ENV} is set but empty: set it to the replicas' secret, or unset it to use {key}"),
                    ));
                }
                (secret, REDIS_SECRET_ENV.to_owned())
            }
            (None, Some(file)) => {
                let secret = read_credential_file(file).map_err(|e| {
                    ModelError::config(key, format!("cannot read {key} {}: {e}", file.display()))
                })?;
                (secret, format!("{key} {}", file.display()))
            }
            (None, None) => return Ok(None),
        };
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ModelError::config(
                key,
                format!(
                    "the Redis value secret ({source}) has {} bytes; use at least {MIN_SECRET_BYTES} random ones (e.g. `openssl rand -hex 32`)",
                    secret.len()
                ),
            ));
        }
        Ok(Some(secret))
    }

    /// The content of `password_file` (white space around it left out), `None` without
    /// one; a `CONFIG_ERROR` naming the file when it cannot be read.
    pub fn password(&self) -> Result<Option<String>> {
        let key = "embedding_cache.redis_password_file";
        let Some(file) = &self.password_file else {
            return Ok(None);
        };
        let unreadable = |why: String| {
            ModelError::config(key, format!("cannot read {key} {}: {why}", file.display()))
        };
        let bytes = read_credential_file(file).map_err(|e| unreadable(e.to_string()))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| unreadable("it is not UTF-8 text".to_owned()))
    }

    /// The URL with any password replaced by `***`, for status and logs.
    pub fn redacted_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        // The host follows the last `@`: a password may contain `@`.
        match rest.rsplit_once('@') {
            Some((user_info, host)) => {
                let user = user_info.split_once(':').map_or("", |(user, _)| user);
                format!("{scheme}://{user}:***@{host}")
            }
            None => self.url.clone(),
        }
    }
}

/// Never prints the password.
impl std::fmt::Debug for RemoteCacheSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCacheSettings")
            .field("url", &self.redacted_url())
            .field("password_file", &self.password_file)
            .field("secret_file", &self.secret_file)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> RemoteCacheSettings {
        RemoteCacheSettings {
            url: url.into(),
            password_file: None,
            secret_file: None,
            key_prefix: String::new(),
            timeout: Duration::from_millis(50),
        }
    }

    #[test]
    fn redacts_passwords() {
        let s = with_url("redis://:s3cret@cache:6379/0");
        assert_eq!(s.redacted_url(), "redis://:***@cache:6379/0");
        assert!(!format!("{s:?}").contains("s3cret"));
        let s = with_url("rediss://app:pw@cache/1");
        assert_eq!(s.redacted_url(), "rediss://app:***@cache/1");
        assert_eq!(with_url("redis://h:1/0").redacted_url(), "redis://h:1/0");
        let s = with_url("redis://:p@ss@cache/0");
        assert_eq!(s.redacted_url(), "redis://:***@cache/0");
    }

    #[test]
    fn the_secret_comes_from_its_file_and_must_not_be_short() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        let mut s = with_url("redis://h/0");
        assert_eq!(s.secret().unwrap(), None);
        let secret = "0123456789abcdef0123456789abcdef";
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        s.secret_file = Some(file.clone());
        assert_eq!(s.secret().unwrap().unwrap(), secret.as_bytes());
        // Files that differ only by white space around the secret agree.
        std::fs::write(&file, format!(" {secret} \r\n")).unwrap();
        assert_eq!(s.secret().unwrap().unwrap(), secret.as_bytes());
        std::fs::write(&file, "0123456789abcdef\n").unwrap();
        let e = s.secret().unwrap_err();
        assert!(e.message.contains("at least 32"), "{e}");
        assert!(!e.message.contains("0123456789abcdef"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        assert!(s.secret().is_err(), "an empty file is no secret");
        s.secret_file = Some(dir.path().join("absent"));
        assert_eq!(
            s.secret().unwrap_err().details["key"],
            "embedding_cache.redis_secret_file"
        );
    }

    /// The variable wins over the file; set but empty it is an error, not "no secret"; any
    /// bytes are a secret, UTF-8 or not.
    #[cfg(unix)]
    #[test]
    fn a_variable_set_but_empty_is_an_error_and_any_bytes_are_a_secret() {
        use std::os::unix::ffi::OsStringExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "f".repeat(40)).unwrap();
        let mut s = with_url("redis://h/0");
        s.secret_file = Some(file);
        for empty in ["", "  \n"] {
            let e = s.secret_with(Some(empty.into())).unwrap_err();
            assert!(e.message.contains("set but empty"), "{e}");
        }
        let bytes: Vec<u8> = (0..40).map(|i| 0x80 + i).collect();
        let variable = std::ffi::OsString::from_vec(bytes.clone());
        assert_eq!(s.secret_with(Some(variable)).unwrap(), Some(bytes));
        assert_eq!(s.secret_with(None).unwrap(), Some(vec![b'f'; 40]));
    }

    /// A FIFO (which would block the read until a writer comes) or a huge file is refused
    /// at once, as is a password file like it.
    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_huge_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let mut s = with_url("redis://h/0");
        s.secret_file = Some(fifo.clone());
        let e = s.secret().unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e}");
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'a'; 1 << 20]).unwrap();
        s.secret_file = Some(huge.clone());
        assert!(s.secret().unwrap_err().message.contains("larger than"));
        s.password_file = Some(fifo);
        assert!(s.password().is_err());
        let password = dir.path().join("password");
        std::fs::write(&password, "hunter2 \n").unwrap();
        s.password_file = Some(password);
        assert_eq!(s.password().unwrap().as_deref(), Some("hunter2"));
    }
}
