//! The Redis store of model-manager's shared embedding-cache tier.
//!
//! Linking this crate (the facade's `redis` feature) registers a store for `redis://` and
//! `rediss://` URLs; `embedding_cache.redis_url` turns it on. Connections are made lazily and
//! remade after a failure by redis-rs's connection manager; the core's tier bounds every
//! call with `embedding_cache.redis_timeout_ms` and probes a failing store in the
//! background.

use model_manager_core::backend::{RemoteStore, RemoteStoreRegistration, StoreFuture};
use model_manager_core::settings::RemoteCacheSettings;
use model_manager_core::{ErrorCode, ModelError, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, RedisError};
use std::sync::Arc;
use std::time::Duration;

/// How long one connection attempt may take (the tier's own timeout bounds requests).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A store on one Redis server.
pub struct RedisStore {
    connection: ConnectionManager,
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
    let mut info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| config_error(settings, format!("embedding_cache.redis_url: {e}")))?;
    if let Some(file) = &settings.password_file {
        let password = std::fs::read_to_string(file).map_err(|e| {
            config_error(
                settings,
                format!(
                    "cannot read embedding_cache.redis_password_file {}: {e}",
                    file.display()
                ),
            )
        })?;
        let redis = info.redis_settings().clone().set_password(password.trim());
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
    let connection = ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| config_error(settings, format!("embedding_cache.redis_url: {e}")))?;
    Ok(Arc::new(RedisStore { connection }))
}

impl RemoteStore for RedisStore {
    fn get_many(&self, keys: Vec<String>) -> StoreFuture<'_, Vec<Option<Vec<u8>>>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .map_err(store_error)
        })
    }

    fn set_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'_, ()> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for (key, value) in &entries {
                let set = pipe.cmd("SET").arg(key).arg(value.as_slice());
                if let Some(ttl) = ttl {
                    set.arg("PX").arg(ttl.as_millis().max(1) as u64);
                }
                set.ignore();
            }
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(store_error)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
                .map_err(store_error)
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
