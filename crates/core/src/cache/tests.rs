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
    // Resealed, the file is sound: the entry alone is left out (see below).
    reseal(&mut nan);
    std::fs::write(&path, &nan).unwrap();
    let report = EmbeddingCache::new(&settings(10)).load(&path).unwrap();
    assert_eq!((report.restored, report.dropped), (1, 1));
    // The first entry rewritten to 3 dimensions (as an editor would leave it).
    let mut dims = good.clone();
    dims[60..64].copy_from_slice(&3u32.to_le_bytes());
    assert_rejected(&path, &dims, "checksum");
    assert_rejected(&path, b"just some text", "not a model-manager cache file");
    assert_rejected(&path, b"MMCACHE2 older", "older version");
}

#[test]
fn one_model_s_vectors_have_one_dimension_the_most_common() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.mmcache");
    let cache = EmbeddingCache::new(&settings(10));
    cache.insert(NS, 7, entry(&[0.5, -1.5, 1.0]));
    cache.insert(NS, 8, entry(&[2.0, 4.0]));
    cache.insert(NS, 9, entry(&[2.0, 4.0]));
    cache.insert(CacheNamespace(12), 10, entry(&[1.0, 2.0, 3.0]));
    cache.save(&path).unwrap();
    let restored = EmbeddingCache::new(&settings(10));
    let report = restored.load(&path).unwrap();
    assert_eq!((report.restored, report.dropped), (3, 1));
    assert!(restored.get(7).is_none(), "the odd one of its model");
    assert!(
        restored.get(10).is_some(),
        "another model's dimension is its own"
    );
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

/// A file that holds, among good entries, one whose vector is NaN (as a poisoned shared
/// tier once copied in) and one of another dimension than its model's others.
fn file_with_bad_entries(path: &Path) {
    let good = |key: u128, v: f32| file::FileEntry {
        key,
        namespace: 5,
        inserted_ms: now_ms(),
        tokens: 2,
        vector: vec![v, -v],
    };
    let mut entries: Vec<file::FileEntry> = (1..=5).map(|k| good(k, k as f32)).collect();
    entries.insert(
        2,
        file::FileEntry {
            vector: vec![f32::NAN, 1.0],
            ..good(100, 0.0)
        },
    );
    entries.push(file::FileEntry {
        vector: vec![1.0, 2.0, 3.0],
        ..good(101, 0.0)
    });
    file::write(path, &entries).unwrap();
}

#[test]
fn a_bad_entry_costs_that_entry_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.mmcache");
    file_with_bad_entries(&path);
    let cache = EmbeddingCache::new(&settings(10));
    let report = cache.load(&path).expect("the good entries are restored");
    assert_eq!(report.restored, 5, "{report:?}");
    for key in 1..=5 {
        assert!(cache.get(key).is_some(), "entry {key}");
    }
    assert!(cache.get(100).is_none() && cache.get(101).is_none());
    assert_eq!(report.dropped, 2, "{report:?}");
}
