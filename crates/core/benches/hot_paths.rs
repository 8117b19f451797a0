//! Hot paths of the core beside a plain `HashMap` lookup measured in the same run:
//! the cache hit path for one text and for a 1,000-text batch, and get+drop of a handle.
//! Targets: one cached text under 1 µs; handle get+drop under 500 ns.

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::collections::HashMap;
use std::sync::Arc;

/// The size of all-MiniLM-L6-v2's vectors, so copies cost what they will in use.
const DIM: usize = 384;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (manager, _) = support::manager_with_dimension(
        "embedding_cache.max_cache_size = 100000",
        &["embedding"],
        DIM,
    );
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("cached sentence number {i} about something"))
        .collect();
    rt.block_on(manager.generate_embeddings("embedding", &texts))
        .unwrap();

    let plain: HashMap<String, Arc<[f32]>> = texts
        .iter()
        .map(|t| (t.clone(), Arc::from(support::expected_vector(t, DIM))))
        .collect();
    let mut group = c.benchmark_group("baseline");
    group.bench_function("hashmap_lookup_one_text", |b| {
        b.iter(|| black_box(plain.get(black_box(&texts[17])).map(|v| v.to_vec())))
    });
    group.bench_function("hashmap_lookup_1000_texts", |b| {
        b.iter(|| {
            let out: Vec<Vec<f32>> = texts.iter().map(|t| plain[t].to_vec()).collect();
            black_box(out)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("model_manager");
    let one = [texts[17].as_str()];
    group.bench_function("cache_hit_one_text", |b| {
        b.to_async(&rt).iter(|| async {
            let out = manager
                .generate_embeddings("embedding", black_box(&one))
                .await
                .unwrap();
            assert!(out.cached);
            black_box(out)
        })
    });
    group.bench_function("cache_hit_1000_texts", |b| {
        b.to_async(&rt).iter(|| async {
            let out = manager
                .generate_embeddings("embedding", black_box(&texts))
                .await
                .unwrap();
            assert!(out.cached);
            black_box(out)
        })
    });
    let _keep_loaded = rt.block_on(manager.get_model("embedding")).unwrap();
    group.bench_function("handle_get_and_drop", |b| {
        b.to_async(&rt).iter(|| async {
            drop(black_box(manager.get_model("embedding").await.unwrap()));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
