use super::*;
use std::time::Duration;

fn settings(size: u64) -> CacheSettings {
    CacheSettings {
        enabled: true,
        max_cache_size: size,
        ttl: Some(Duration::from_secs(60)),
        persist_to_disk: false,
        path: Default::default(),
    }
}

fn entry(values: &[f32]) -> CachedEmbedding {
    CachedEmbedding {
        vector: Vector::from(values.to_vec()),
        tokens: 3,
    }
}

#[test]
fn keys_differ_by_model_fingerprint_and_text() {
    let a = CacheNamespace::new("m", 1);
    assert_eq!(a.key("t"), a.key("t"));
    assert_ne!(a.key("t"), a.key("u"));
    assert_ne!(a.key("t"), CacheNamespace::new("m", 2).key("t"));
    assert_ne!(a.key("t"), CacheNamespace::new("n", 1).key("t"));
}

#[test]
fn disabled_cache_stores_nothing() {
    let cache = EmbeddingCache::new(&CacheSettings {
        enabled: false,
        ..settings(10)
    });
    cache.insert(1, entry(&[1.0]));
    assert!(cache.get(1).is_none());
    assert!(!cache.stats().enabled);
}

#[test]
fn save_and_load_round_trip_and_truncation_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.bin");
    let cache = EmbeddingCache::new(&settings(10));
    cache.insert(7, entry(&[0.5, -1.5]));
    assert_eq!(cache.save(&path).unwrap(), 1);

    let restored = EmbeddingCache::new(&settings(10));
    assert_eq!(restored.load(&path).unwrap(), 1);
    assert_eq!(restored.get(7).unwrap(), entry(&[0.5, -1.5]));

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = EmbeddingCache::new(&settings(10)).load(&path).unwrap_err();
    assert_eq!(err.code, ErrorCode::CacheError);
    assert!(err.message.contains("c.bin"), "{}", err.message);

    assert_eq!(
        EmbeddingCache::new(&settings(10))
            .load(&dir.path().join("none"))
            .unwrap(),
        0
    );
}
