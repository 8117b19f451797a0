//! The Redis store of model-manager's shared embedding-cache tier.
//!
//! Linking this crate (the facade's `redis` feature) registers a store for `redis://` and
//! `rediss://` URLs; `embedding_cache.redis_url` turns it on. Connections are made lazily and
//! remade after a failure by redis-rs's connection manager; when Redis refuses the
//! credentials (`WRONGPASS`, `NOAUTH`: the password was changed), the password file is read
//! again and a new connection manager made, so a rotation needs no restart. The core's tier
//! bounds every call with `embedding_cache.redis_timeout_ms` and probes a failing store in
//! the background.

use model_manager_core::backend::{RemoteStore, RemoteStoreRegistration, StoreFuture};
use model_manager_core::settings::RemoteCacheSettings;
use model_manager_core::{ErrorCode, ModelError, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, IntoConnectionInfo, RedisError, RedisResult};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one connection attempt may take (the tier's own timeout bounds requests).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Credentials are read again at most this often while Redis keeps refusing them.
const RELOGIN_INTERVAL: Duration = Duration::from_secs(1);

/// A store on one Redis server.
pub struct RedisStore {
    settings: RemoteCacheSettings,
    connection: Mutex<Connection>,
}

/// The connection manager in use, and when it was made.
struct Connection {
    manager: ConnectionManager,
    made: Instant,
}

inventory::submit! {
    RemoteStoreRegistration {
        schemes: &["redis", "rediss"],
        open,
    }
}

fn config_error(settings: &RemoteCacheSettings, message: String) -> ModelError {
    ModelError::new(ErrorCode::ConfigError, message)
        .with("key", "embedding_cache.redis_url")
        .with("url", settings.redacted_url())
}

fn store_error(e: RedisError) -> ModelError {
    ModelError::new(ErrorCode::CacheError, format!("redis: {e}"))
}

/// Opens a store for `settings` without connecting. `CONFIG_ERROR` for a malformed URL or
/// an unreadable password file.
pub fn open(settings: &RemoteCacheSettings) -> Result<Arc<dyn RemoteStore>> {
    let manager = connection_manager(settings)?;
    Ok(Arc::new(RedisStore {
        settings: settings.clone(),
        connection: Mutex::new(Connection {
            manager,
            made: Instant::now(),
        }),
    }))
}

/// A lazy connection manager for `settings`, with the password file's current content.
fn connection_manager(settings: &RemoteCacheSettings) -> Result<ConnectionManager> {
    let mut info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| config_error(settings, format!("embedding_cache.redis_url: {e}")))?;
    if let Some(password) = settings.password()? {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    // Values span several segments; Nagle would hold them for the server's delayed ACK.
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    info = info.set_tcp_settings(tcp);
    if settings.url.starts_with("rediss://") {
        // rustls needs a process-wide crypto provider; another crate may have set one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let client = Client::open(info)
        .map_err(|e| config_error(settings, format!("embedding_cache.redis_url: {e}")))?;
    // The tier bounds every call itself (embedding_cache.redis_timeout_ms); redis-rs's own
    // response timeout (500 ms) would cap it silently.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None)
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| config_error(settings, format!("embedding_cache.redis_url: {e}")))
}

/// Whether Redis refused the credentials (rather than failed otherwise).
fn credentials_refused(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

impl RedisStore {
    fn manager(&self) -> ConnectionManager {
        self.lock().manager.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `result` as the tier's error; when Redis refused the credentials, the password file
    /// is read again for the next call.
    fn checked<T>(&self, result: RedisResult<T>) -> Result<T> {
        result.map_err(|e| {
            if credentials_refused(&e) {
                self.log_in_again();
            }
            store_error(e)
        })
    }

    /// A new connection manager with the password file's content now (at most once per
    /// [`RELOGIN_INTERVAL`]).
    fn log_in_again(&self) {
        let mut connection = self.lock();
        if connection.made.elapsed() < RELOGIN_INTERVAL {
            return;
        }
        connection.made = Instant::now();
        match connection_manager(&self.settings) {
            Ok(manager) => {
                tracing::info!(url = %self.settings.redacted_url(), "Redis refused the credentials; read them again");
                connection.manager = manager;
            }
            Err(e) => {
                tracing::warn!("Redis refused the credentials and they cannot be read again: {e}")
            }
        }
    }
}

impl RemoteStore for RedisStore {
    /// One pipeline of `GETRANGE key 0 most_bytes` (not `MGET`, which would read a value
    /// anyone made 512 MB whole): a value longer than `most_bytes` comes back cut to one
    /// byte more. A missing key reads as empty, so does an empty value: both are `None`. A
    /// key holding another type (`WRONGTYPE`) is an empty value, which the tier refuses.
    fn get_many(
        &self,
        keys: Vec<String>,
        most_bytes: usize,
    ) -> StoreFuture<'_, Vec<Option<Vec<u8>>>> {
        let mut connection = self.manager();
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("GETRANGE").arg(key).arg(0).arg(most_bytes);
            }
            let answers = pipe
                .ignore_errors()
                .query_async::<Vec<RedisResult<Vec<u8>>>>(&mut connection)
                .await;
            let answers = self.checked(answers)?;
            answers
                .into_iter()
                .map(|answer| match answer {
                    Ok(bytes) if bytes.is_empty() => Ok(None),
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.code() == Some("WRONGTYPE") => Ok(Some(Vec::new())),
                    Err(e) => self.checked(Err(e)),
                })
                .collect()
        })
    }

    fn set_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'_, ()> {
        let mut connection = self.manager();
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for (key, value) in &entries {
                let set = pipe.cmd("SET").arg(key).arg(value.as_slice());
                if let Some(ttl) = ttl {
                    set.arg("PX").arg(ttl.as_millis().max(1) as u64);
                }
                set.ignore();
            }
            let written = pipe.query_async::<()>(&mut connection).await;
            self.checked(written)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        let mut connection = self.manager();
        Box::pin(async move {
            let answer = redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await;
            self.checked(answer).map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, password_file: Option<&str>) -> RemoteCacheSettings {
        RemoteCacheSettings {
            url: url.into(),
            password_file: password_file.map(Into::into),
            secret_file: None,
            key_prefix: "t:".into(),
            timeout: Duration::from_millis(50),
        }
    }

    fn error_of(settings: &RemoteCacheSettings) -> ModelError {
        match open(settings) {
            Ok(_) => panic!("{settings:?} opened"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn bad_urls_and_password_files_are_config_errors_without_the_password() {
        let e = error_of(&settings("redis://:hunter2@127.0.0.1:notaport/0", None));
        assert_eq!(e.code, ErrorCode::ConfigError, "{e}");
        assert!(!format!("{e} {:?}", e.details).contains("hunter2"), "{e}");
        let e = error_of(&settings("redis://127.0.0.1:1/0", Some("/nonexistent/pw")));
        assert_eq!(e.code, ErrorCode::ConfigError);
        assert!(e.message.contains("/nonexistent/pw"), "{e}");
    }

    #[tokio::test]
    async fn opening_does_not_connect() {
        // Nothing listens on port 1: opening still succeeds; the tier connects later.
        assert!(open(&settings("redis://127.0.0.1:1/0", None)).is_ok());
        assert!(open(&settings("rediss://127.0.0.1:1/0", None)).is_ok());
    }
}
