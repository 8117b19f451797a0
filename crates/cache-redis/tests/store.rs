//! The Redis store against a real `redis-server` (installed by `scripts/fetch-models.sh`).

#[allow(dead_code)]
#[path = "../../cli/tests/common/redis_server.rs"]
mod redis_server;

use model_manager_core::settings::RemoteCacheSettings;
use redis_server::RedisServer;
use std::time::Duration;

fn settings(url: String) -> RemoteCacheSettings {
    RemoteCacheSettings {
        url,
        password_file: None,
        secret_file: None,
        key_prefix: String::new(),
        timeout: Duration::from_secs(5),
    }
}

/// A value anyone made huge comes back cut one byte past what the tier can use (never
/// read whole); a missing key, an empty value and a key of another type are told apart
/// from values, and a whole look-up is one answer per key, in order.
#[tokio::test]
async fn values_are_read_only_as_far_as_asked_and_odd_keys_are_not_errors() {
    let redis = RedisServer::start();
    let store = model_manager_cache_redis::open(&settings(redis.url())).unwrap();
    redis.set("huge", &vec![b'x'; 4 << 20]);
    redis.set("small", b"abc");
    redis.set("empty", b"");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg("list")
        .arg("v")
        .query(&mut connection)
        .unwrap();
    let keys = ["huge", "absent", "small", "empty", "list"].map(String::from);
    let values = store.get_many(keys.to_vec(), 1000).await.unwrap();
    assert_eq!(values.len(), 5);
    assert_eq!(
        values[0].as_ref().map(Vec::len),
        Some(1001),
        "cut, not read whole"
    );
    assert_eq!(values[1], None);
    assert_eq!(values[2].as_deref(), Some(&b"abc"[..]));
    assert_eq!(values[3], None);
    assert_eq!(
        values[4].as_deref(),
        Some(&b""[..]),
        "refused by the tier, not an error"
    );
    // What the store writes reads back whole.
    store
        .set_many(vec![("w".into(), vec![1, 2, 3])], None)
        .await
        .unwrap();
    let back = store.get_many(vec!["w".into()], 3).await.unwrap();
    assert_eq!(back, vec![Some(vec![1, 2, 3])]);
}
