use super::*;
use crate::error::ErrorCode;
use std::time::Duration;

fn settings(size: u64) -> CacheSettings {
    CacheSettings {
        enabled: true,
        max_cache_size: size,
        ttl: Some(Duration::from_secs(60)),
        persist_to_disk: false,
        path: Default::default(),
        save_interval: None,
        remote: None,
    }
}

fn entry(values: &[f32]) -> CachedEmbedding {
    CachedEmbedding {
        vector: Vector::from(values.to_vec()),
        tokens: 3,
    }
}

const NS: CacheNamespace = CacheNamespace(11);

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
    cache.insert(NS, 1, entry(&[1.0]));
    assert!(cache.get(1).is_none());
    assert!(!cache.stats().enabled);
}

/// A cache file holding entries 7 and 8 of two dimensions each, and its bytes.
fn saved(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("c.mmcache");
    let cache = EmbeddingCache::new(&settings(10));
    cache.insert(NS, 7, entry(&[0.5, -1.5]));
    cache.insert(NS, 8, entry(&[2.0, 4.0]));
    assert_eq!(cache.save(&path).unwrap(), 2);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = saved(dir.path());
    let restored = EmbeddingCache::new(&settings(10));
    assert_eq!(restored.load(&path).unwrap().restored, 2);
    assert_eq!(restored.get(7).unwrap(), entry(&[0.5, -1.5]));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left behind");
    let none = EmbeddingCache::new(&settings(10));
    assert_eq!(none.load(&dir.path().join("none")).unwrap().restored, 0);
}

/// Restoring `bytes` fails with a `CACHE_ERROR` whose message has `why`, and restores
/// nothing.
fn assert_rejected(path: &Path, bytes: &[u8], why: &str) {
    std::fs::write(path, bytes).unwrap();
    let cache = EmbeddingCache::new(&settings(10));
    let err = cache.load(path).unwrap_err();
    assert_eq!(err.code, ErrorCode::CacheError);
    assert!(err.message.contains(why), "{why}: {}", err.message);
    assert!(err.message.contains("c.mmcache"), "{}", err.message);
    assert_eq!(cache.stats().entries, 0, "{why}: nothing is restored");
    assert!(cache.get(7).is_none() && cache.get(8).is_none());
}

/// Rewrites the trailer's checksum so that only the content checks can catch a change.
fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - 16;
    let checksum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..body + 8].copy_from_slice(&checksum.to_le_bytes());
}

#[test]
fn damaged_files_restore_nothing_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = saved(dir.path());
    for cut in [good.len() - 3, good.len() / 2, 30, 5] {
        assert_rejected(&path, &good[..cut], "");
    }
    let mut flipped = good.clone();
    flipped[40] ^= 0x10;
    assert_rejected(&path, &flipped, "checksum");
    // The first vector value is at 24 (header) + 40 (fixed part of the entry).
    let mut nan = good.clone();
    nan[64..68].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_rejected(&path, &nan, "checksum");
    reseal(&mut nan);
    assert_rejected(&path, &nan, "NaN");
    let mut inf = good.clone();
    inf[64..68].copy_from_slice(&f32::INFINITY.to_le_bytes());
    reseal(&mut inf);
    assert_rejected(&path, &inf, "infinite");
    // The first entry rewritten to 3 dimensions (as an editor would leave it).
    let mut dims = good.clone();
    dims[60..64].copy_from_slice(&3u32.to_le_bytes());
    assert_rejected(&path, &dims, "checksum");
    assert_rejected(&path, b"just some text", "not a model-manager cache file");
    assert_rejected(&path, b"MMCACHE2 older", "older version");
}

#[test]
fn one_model_s_vectors_have_one_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.mmcache");
    let cache = EmbeddingCache::new(&settings(10));
    cache.insert(NS, 7, entry(&[0.5, -1.5]));
    cache.insert(NS, 8, entry(&[2.0, 4.0, 8.0]));
    cache.save(&path).unwrap();
    let err = EmbeddingCache::new(&settings(10)).load(&path).unwrap_err();
    assert!(err.message.contains("dimensions"), "{}", err.message);
}

#[test]
fn a_foreign_file_at_the_path_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.mmcache");
    std::fs::write(&path, "precious notes").unwrap();
    let cache = EmbeddingCache::new(&settings(10));
    cache.insert(NS, 7, entry(&[0.5]));
    let err = cache.save(&path).unwrap_err();
    assert_eq!(err.code, ErrorCode::CacheError);
    assert!(
        err.message.contains("not a model-manager cache"),
        "{}",
        err.message
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious notes");
    assert!(cache.has_unsaved(), "the entries still wait for a save");
}

#[test]
fn restored_entries_keep_their_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.mmcache");
    let entries = vec![
        file::FileEntry {
            key: 1,
            namespace: 5,
            inserted_ms: now_ms() - 120_000,
            tokens: 2,
            vector: vec![1.0],
        },
        file::FileEntry {
            key: 2,
            namespace: 5,
            inserted_ms: now_ms() - 1_000,
            tokens: 2,
            vector: vec![2.0],
        },
    ];
    file::write(&path, &entries).unwrap();
    let cache = EmbeddingCache::new(&settings(10));
    let report = cache.load(&path).unwrap();
    assert_eq!((report.restored, report.expired), (1, 1));
    assert!(cache.get(1).is_none(), "older than the 60 s lifetime");
    assert!(cache.get(2).is_some());
}
