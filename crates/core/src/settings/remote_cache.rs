//! `embedding_cache.redis_*`: the shared cache tier behind the in-process one.

use super::value::Reader;
use crate::error::{ModelError, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable holding the secret that authenticates the tier's values; it wins
/// over `embedding_cache.redis_secret_file`.
pub const REDIS_SECRET_ENV: &str = "MM_REDIS_SECRET";

/// Shortest secret taken: shorter ones are guessable.
const MIN_SECRET_BYTES: usize = 16;

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

    /// The secret that authenticates values: [`REDIS_SECRET_ENV`], else the content of
    /// `secret_file` without its final line break; `None` when neither is set. An
    /// unreadable file, or a secret shorter than 16 bytes, is a `CONFIG_ERROR`.
    pub fn secret(&self) -> Result<Option<Vec<u8>>> {
        let key = "embedding_cache.redis_secret_file";
        let (secret, source) = match (std::env::var(REDIS_SECRET_ENV), &self.secret_file) {
            (Ok(secret), _) if !secret.is_empty() => {
                (secret.into_bytes(), REDIS_SECRET_ENV.to_owned())
            }
            (_, Some(file)) => {
                let mut secret = std::fs::read(file).map_err(|e| {
                    ModelError::config(key, format!("cannot read {key} {}: {e}", file.display()))
                })?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                (secret, format!("{key} {}", file.display()))
            }
            _ => return Ok(None),
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
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        s.secret_file = Some(file.clone());
        assert_eq!(s.secret().unwrap().unwrap(), b"0123456789abcdef0123");
        std::fs::write(&file, "short\n").unwrap();
        let e = s.secret().unwrap_err();
        assert!(e.message.contains("at least 16"), "{e}");
        assert!(!e.message.contains("short\""), "{e}");
        s.secret_file = Some(dir.path().join("absent"));
        assert_eq!(
            s.secret().unwrap_err().details["key"],
            "embedding_cache.redis_secret_file"
        );
    }
}
