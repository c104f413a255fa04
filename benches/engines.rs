//! Engine benchmarks on the W1 workload: the two-node text pipeline mapped
//! over 100k and 1M items on every engine, the per-node-call overhead of
//! `SeqEngine`, and parallel speed-up for a node that costs about 1 µs.
//!
//! Run with `cargo bench --bench engines`.

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
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hypernodes::{Engine, Inputs, Node, ParallelEngine, Pipeline, SeqEngine, node};

/// Every engine; `DataFusionEngine` with `--features datafusion`.
fn engines() -> Vec<(&'static str, Arc<dyn Engine>)> {
    #[allow(unused_mut)]
    let mut engines: Vec<(&'static str, Arc<dyn Engine>)> = vec![
        ("seq", Arc::new(SeqEngine)),
        ("parallel", Arc::new(ParallelEngine::new())),
    ];
    #[cfg(feature = "datafusion")]
    engines.push((
        "datafusion",
        Arc::new(hypernodes::engines::DataFusionEngine::new()),
    ));
    engines
}

fn text_pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("text_pipeline");
    group.sample_size(10);
    for n in [100_000usize, 1_000_000] {
        let items = workload::items(n);
        let expected = workload::expected_counts(&items);
        for (name, engine) in engines() {
            let p = Pipeline::new([workload::clean::node(), workload::count::node()])
                .unwrap()
                .with_shared_engine(engine);
            let r = p
                .map(Inputs::new().with("text", items.clone()), ["text"])
                .unwrap();
            assert_eq!(r.values::<i64>("word_count").unwrap(), expected);
            group.throughput(Throughput::Elements(n as u64));
            // Inputs hold shared values: cloning them does not copy the items.
            let inputs = Inputs::new().with("text", items.clone());
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| black_box(p.map(inputs.clone(), ["text"]).unwrap()))
            });
        }
    }
    group.finish();
}

/// A chain of trivial nodes: throughput is in node calls per second.
fn node_call_overhead(c: &mut Criterion) {
    const NODES: usize = 10;
    const ITEMS: usize = 10_000;
    let chain: Vec<Node> = (0..NODES)
        .map(|i| {
            Node::builder(format!("inc{i}"))
                .input::<i64>(format!("v{i}"))
                .output::<i64>(format!("v{}", i + 1))
                .func(|args| Ok(hypernodes::outs![args.get::<i64>(0)? + 1]))
        })
        .collect();
    let p = Pipeline::new(chain).unwrap();
    let xs = Inputs::new().with("v0", (0..ITEMS as i64).collect::<Vec<i64>>());
    let x = Inputs::new().with("x", (0..ITEMS as i64).collect::<Vec<i64>>());
    let mut group = c.benchmark_group("node_call_overhead");
    group.throughput(Throughput::Elements((NODES * ITEMS) as u64));
    group.bench_function("seq_closure_nodes", |b| {
        b.iter(|| black_box(p.map(xs.clone(), ["v0"]).unwrap()))
    });
    let single = Pipeline::new([inc::node()]).unwrap();
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_function("seq_macro_node", |b| {
        b.iter(|| black_box(single.map(x.clone(), ["x"]).unwrap()))
    });
    group.finish();
}

#[node(output = "y")]
fn inc(x: i64) -> i64 {
    x + 1
}

/// About 1 µs of arithmetic per call on this machine class.
#[node(output = "h")]
fn spin(x: u64) -> u64 {
    let mut h = x;
    for _ in 0..400 {
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ x;
    }
    h
}

fn parallel_speedup(c: &mut Criterion) {
    const ITEMS: u64 = 100_000;
    let xs = Inputs::new().with("x", (0..ITEMS).collect::<Vec<u64>>());
    let mut group = c.benchmark_group("one_microsecond_node");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ITEMS));
    for (name, engine) in engines() {
        let p = Pipeline::new([spin::node()])
            .unwrap()
            .with_shared_engine(engine);
        group.bench_function(name, |b| {
            b.iter(|| black_box(p.map(xs.clone(), ["x"]).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, text_pipeline, node_call_overhead, parallel_speedup);
criterion_main!(benches);
