//! What a remote cache store provides, and how one joins the program.
//!
//! A store crate (`model-manager-cache-redis`, linked by the facade's `redis` feature)
//! registers itself with [`inventory::submit!`] of a [`RemoteStoreRegistration`] for its URL
//! schemes; the manager opens the one whose scheme `embedding_cache.redis_url` names.

use crate::error::{ErrorCode, ModelError, Result};
use crate::settings::RemoteCacheSettings;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The future of a store operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A key-value store shared by replicas. Operations may take any time: the tier bounds
/// them with its own timeout and drops the future when it fires.
pub trait RemoteStore: Send + Sync + 'static {
    /// The value under each key (`None` where absent or empty), in key order, in one round
    /// trip, each read only up to `most_bytes + 1` bytes: a longer value comes back cut
    /// there (and is refused), never read whole, since anyone who can write to the store
    /// can make a value huge. A value of another type than bytes may come back empty.
    fn get_many(
        &self,
        keys: Vec<String>,
        most_bytes: usize,
    ) -> StoreFuture<'_, Vec<Option<Vec<u8>>>>;
    /// Writes every entry, each expiring after `ttl` (`None`: never), in one round trip.
    fn set_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'_, ()>;
    /// A round trip that changes nothing, to tell whether the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;
}

/// Opens a store for the settings (no I/O: connections are made on first use and again
/// after losing them). Runs inside a Tokio runtime.
pub type OpenStore = fn(&RemoteCacheSettings) -> Result<Arc<dyn RemoteStore>>;

/// A statically registered store for some URL schemes.
pub struct RemoteStoreRegistration {
    /// URL schemes it serves, e.g. `redis`, `rediss`.
    pub schemes: &'static [&'static str],
    /// Opens it.
    pub open: OpenStore,
}

inventory::collect!(RemoteStoreRegistration);

/// Opens the linked store for `settings.url`: `CONFIG_ERROR` for a URL without a known
/// scheme, `MISSING_DEPENDENCY` when no linked store serves it.
pub fn open_store(settings: &RemoteCacheSettings) -> Result<Arc<dyn RemoteStore>> {
    let scheme = settings.url.split_once("://").map(|(s, _)| s);
    let Some(scheme) = scheme.filter(|s| !s.is_empty()) else {
        return Err(ModelError::new(
            ErrorCode::ConfigError,
            format!(
                "embedding_cache.redis_url `{}` is not a URL; expected e.g. redis://127.0.0.1:6379/0",
                settings.redacted_url()
            ),
        )
        .with("key", "embedding_cache.redis_url"));
    };
    let registration = inventory::iter::<RemoteStoreRegistration>
        .into_iter()
        .find(|r| r.schemes.contains(&scheme));
    match registration {
        Some(r) => (r.open)(settings),
        None => Err(ModelError::new(
            ErrorCode::MissingDependency,
            format!(
                "embedding_cache.redis_url uses `{scheme}://`, but this program was built without \
                 a store for it; enable the `redis` feature of model-manager or clear the setting"
            ),
        )
        .with("key", "embedding_cache.redis_url")),
    }
}
