//! Cache benchmarks on the W1 workload: the two-node text pipeline on
//! `SeqEngine` with a `DiskCache`, cold (empty cache), warm (every item
//! cached, read by a fresh cache instance as a re-run would) and with 1% new
//! items.
//!
//! Run with `cargo bench --bench cache` (set `HYPERNODES_BENCH_ITEMS=1000000`
//! for the 1M-item figures).

#[path = "../examples/shared/workload.rs"]
mod workload;

/// The allocator of this program (not of the library): mimalloc, as
/// DataFusion's own benchmarks use; glibc's returns and re-faults the large
/// buffers of every batch. Built without transparent huge pages (the
/// `no_thp` feature in `Cargo.toml`): on the development VM the kernel's
/// zeroing of 2 MiB pages on first touch halved cold throughput at times.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hypernodes::{DiskCache, Inputs, Pipeline};

/// Items per run: `HYPERNODES_BENCH_ITEMS` or 100k (1M takes minutes).
fn items() -> usize {
    std::env::var("HYPERNODES_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn pipeline(dir: &Path) -> Pipeline {
    Pipeline::new([workload::clean::node(), workload::count::node()])
        .unwrap()
        .with_cache(DiskCache::new(dir))
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn cache(c: &mut Criterion) {
    let n = items();
    let items = workload::items(n);
    let expected = workload::expected_counts(&items);
    let inputs = Inputs::new().with("text", items.clone());
    // 1% of the items are new: other text, same length.
    let mut grown = items.clone();
    for (i, t) in grown.iter_mut().enumerate().filter(|(i, _)| i % 100 == 0) {
        *t = format!("new item {i}");
    }
    let grown_inputs = Inputs::new().with("text", grown);

    let base = tempfile::tempdir().unwrap();
    let r = pipeline(base.path()).map(inputs.clone(), ["text"]).unwrap();
    assert_eq!(r.values::<i64>("word_count").unwrap(), expected);

    let mut group = c.benchmark_group("cache_seq");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("cold", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| black_box(pipeline(dir.path()).map(inputs.clone(), ["text"]).unwrap()),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("warm", |b| {
        b.iter(|| black_box(pipeline(base.path()).map(inputs.clone(), ["text"]).unwrap()))
    });
    group.bench_function("one_percent_new", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                copy_dir(base.path(), dir.path());
                dir
            },
            |dir| {
                black_box(
                    pipeline(dir.path())
                        .map(grown_inputs.clone(), ["text"])
                        .unwrap(),
                )
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
