//! `embedding_cache.redis_*`: the shared cache tier behind the in-process one.

use super::value::Reader;
use std::path::PathBuf;
use std::time::Duration;

/// Where and how the shared (remote) embedding-cache tier is reached.
#[derive(Clone, PartialEq)]
pub struct RemoteCacheSettings {
    /// `redis://` or `rediss://` URL, password included or not.
    pub url: String,
    /// A file holding the password, for URLs without one.
    pub password_file: Option<PathBuf>,
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
            key_prefix: r
                .string("embedding_cache.redis_key_prefix")
                .unwrap_or_default(),
            timeout: Duration::from_millis(r.u64("embedding_cache.redis_timeout_ms").max(1)),
        })
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
}
