//! Throughput of the W1 two-node text pipeline (`clean -> count`, see
//! `shared/bench/workload.md`) with a fresh `DiskCache`: cold (empty
//! cache), then warm (everything cached, read back by a new cache instance
//! as a re-run would).
//!
//! ```sh
//! cargo run --release --all-features --example throughput -- --engine datafusion --items 1000000
//! ```
//!
//! `--engine` is `seq`, `parallel` or `datafusion` (the last needs the
//! `datafusion` feature); without it every available engine runs. `--dual`
//! gives both nodes a batch implementation over Arrow arrays (the "dual
//! node"), which the DataFusion engine then calls instead of the row
//! functions (the row engines ignore it). Prints one line per engine:
//! `throughput: engine=<name> items=<N> cold_items_per_s=<x> warm_items_per_s=<y>`,
//! then `incremental: engine=<name> items=<N> one_percent_new_items_per_s=<z>`
//! for a third run in which every hundredth item is new.
//!
//! `--progress` attaches progress reporting (feature `progress`) and
//! appends `+progress` to the engine's name, to measure what it costs.
//!
//! `--workload w3 --rows R` measures W3 (nested pipelines: each row a list
//! of ten W1 texts, mapped by the W1 pipeline used as a `map_over` node,
//! then summed), with a fresh `DiskCache` cold and warm, and prints
//! `throughput: workload=w3 engine=<name> rows=<R> cold_inner_items_per_s=<x> warm_inner_items_per_s=<y>`.
//!
//! `--workload callbacks|nested|small|structs` measures the situations in
//! which a columnar engine could lose to the row engines (see
//! `shared/situations.rs`): W1 without a cache with no callback, a no-op
//! one and a counting one (`--items`, default 1M); nested `map_over`
//! without a cache (`--rows`, default 5,000: 575k leaves on two levels,
//! 625k on three); maps of 0 to 1,000 items, with and without a cache; and
//! nested user structs with list and optional fields (`--items`, default
//! 200k). `--reps N` (default 3) keeps the best of N runs.
//!
//! `--workload w4` measures W4 instead: one `async` node that waits 5 ms on
//! a tokio timer (an I/O-bound call such as a model server), with up to
//! `--concurrency N` calls in flight (default 64). It maps W1 texts without
//! a cache, then with a fresh `DiskCache` cold and warm, and prints
//! `throughput: workload=w4 engine=<name> items=<N> items_per_s=<x> cold_cached_items_per_s=<y> warm_items_per_s=<z>`.

#[path = "shared/workload.rs"]
mod workload;

#[path = "shared/situations.rs"]
mod situations;

/// The allocator of this program (not of the library): mimalloc, as
/// DataFusion's own benchmarks use; glibc's returns and re-faults the large
/// buffers of every batch. Built without transparent huge pages (the
/// `no_thp` feature in `Cargo.toml`): on the development VM the kernel's
/// zeroing of 2 MiB pages on first touch halved cold throughput at times.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, Int64Array, StringArray};
use hypernodes::{DiskCache, Engine, Inputs, Node, ParallelEngine, Pipeline, SeqEngine};

/// W1's nodes, optionally with batch implementations giving the same results.
fn nodes(dual: bool) -> [Node; 2] {
    let clean = workload::clean::node();
    let count = workload::count::node();
    if !dual {
        return [clean, count];
    }
    [
        clean.with_batch(|arrays| {
            let out: StringArray = arrays[0]
                .as_string::<i32>()
                .iter()
                .map(|t| t.map(|t| t.trim().to_lowercase()))
                .collect();
            Ok(vec![Arc::new(out) as ArrayRef])
        }),
        count.with_batch(|arrays| {
            let out: Int64Array = arrays[0]
                .as_string::<i32>()
                .iter()
                .map(|t| t.map(|t| t.split_whitespace().count() as i64))
                .collect();
            Ok(vec![Arc::new(out) as ArrayRef])
        }),
    ]
}

fn engine(name: &str) -> Option<Arc<dyn Engine>> {
    match name {
        "seq" => Some(Arc::new(SeqEngine)),
        "parallel" => Some(Arc::new(ParallelEngine::new())),
        #[cfg(feature = "datafusion")]
        "datafusion" => Some(Arc::new(hypernodes::engines::DataFusionEngine::new())),
        _ => None,
    }
}

/// W3 on one engine: a fresh cache, cold then warm.
fn w3(name: &str, engine: Arc<dyn Engine>, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    let texts = workload::items(rows * 10);
    let lists: Vec<Vec<String>> = texts.chunks(10).map(|c| c.to_vec()).collect();
    let expected: Vec<i64> = workload::expected_counts(&texts)
        .chunks(10)
        .map(|c| c.iter().sum())
        .collect();
    let dir = tempfile::tempdir()?;
    let mut rates = Vec::new();
    for _ in ["cold", "warm"] {
        let pipeline = Pipeline::new([situations::inner_w1()?, situations::total::node()])?
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(dir.path()));
        let inputs = Inputs::new().with("texts", lists.clone());
        let start = Instant::now();
        let r = pipeline.map(
            inputs,
            hypernodes::MapOptions::over(["texts"]).outputs(["total"]),
        )?;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(r.values::<i64>("total")?, expected, "totals are right");
        rates.push((rows * 10) as f64 / secs);
    }
    println!(
        "throughput: workload=w3 engine={name} rows={rows} cold_inner_items_per_s={:.0} warm_inner_items_per_s={:.0}",
        rates[0], rates[1]
    );
    Ok(())
}

/// W4's node: an I/O-bound call of 5 ms latency.
#[hypernodes::node(output = "reply")]
async fn fetch(text: String) -> String {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    text.to_uppercase()
}

/// W4 on one engine: no cache, then a fresh cache cold and warm.
fn w4(
    name: &str,
    engine: Arc<dyn Engine>,
    items: usize,
    concurrency: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let texts = workload::items(items);
    let expected: Vec<String> = texts.iter().map(|t| t.to_uppercase()).collect();
    let dir = tempfile::tempdir()?;
    let mut rates = Vec::new();
    for cached in [false, true, true] {
        let mut pipeline = Pipeline::new([fetch::node().with_concurrency(concurrency)])?
            .with_shared_engine(engine.clone());
        if cached {
            pipeline = pipeline.with_cache(DiskCache::new(dir.path()));
        }
        let inputs = Inputs::new().with("text", texts.clone());
        let start = Instant::now();
        let r = pipeline.map(inputs, ["text"])?;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(r.values::<String>("reply")?, expected, "replies are right");
        rates.push(items as f64 / secs);
    }
    println!(
        "throughput: workload=w4 engine={name} items={items} items_per_s={:.0} cold_cached_items_per_s={:.0} warm_items_per_s={:.0}",
        rates[0], rates[1], rates[2]
    );
    Ok(())
}

/// One timed `map` of W1. Never inlined, so instruction counts can be taken
/// per map: `valgrind --tool=callgrind --dump-before=measured_map
/// --dump-after=measured_map target/release/examples/throughput ...` writes
/// one file per map (cold, warm, 1% new, in that order, between the others).
#[inline(never)]
fn measured_map(
    pipeline: &Pipeline,
    inputs: Inputs,
) -> Result<hypernodes::MapResult, hypernodes::Error> {
    pipeline.map(inputs, ["text"])
}
/// `--progress`: the pipeline with progress bars (or milestone lines off a
/// terminal), to measure what progress costs.
#[cfg(feature = "progress")]
fn with_progress(p: Pipeline) -> Result<Pipeline, Box<dyn std::error::Error>> {
    Ok(p.with_progress())
}

#[cfg(not(feature = "progress"))]
fn with_progress(_: Pipeline) -> Result<Pipeline, Box<dyn std::error::Error>> {
    Err("--progress needs the `progress` feature".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut names: Vec<String> = Vec::new();
    let mut items = 20_000usize;
    let mut dual = false;
    let mut progress = false;
    let mut workload = "w1".to_string();
    let mut concurrency = 64usize;
    let mut rows: Option<usize> = None;
    let mut items_given: Option<usize> = None;
    let mut reps = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--engine" => names.push(args.next().ok_or("--engine needs a name")?),
            "--items" => {
                let n = args.next().ok_or("--items needs a number")?.parse()?;
                items = n;
                items_given = Some(n);
            }
            "--reps" => reps = args.next().ok_or("--reps needs a number")?.parse()?,
            "--dual" => dual = true,
            "--progress" => progress = true,
            "--workload" => workload = args.next().ok_or("--workload needs w1, w3 or w4")?,
            "--rows" => rows = Some(args.next().ok_or("--rows needs a number")?.parse()?),
            "--concurrency" => {
                concurrency = args.next().ok_or("--concurrency needs a number")?.parse()?
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if names.is_empty() {
        names = ["seq", "parallel", "datafusion"]
            .iter()
            .filter(|n| engine(n).is_some())
            .map(|n| n.to_string())
            .collect();
    }
    match workload.as_str() {
        "w1" => {}
        "w3" => {
            for name in names {
                let engine = engine(&name).ok_or_else(|| format!("unknown engine `{name}`"))?;
                w3(&name, engine, rows.unwrap_or(10_000))?;
            }
            return Ok(());
        }
        "w4" => {
            for name in names {
                let engine = engine(&name).ok_or_else(|| format!("unknown engine `{name}`"))?;
                w4(&name, engine, items, concurrency)?;
            }
            return Ok(());
        }
        "callbacks" | "nested" | "small" | "structs" => {
            for name in names {
                let engine = engine(&name).ok_or_else(|| format!("unknown engine `{name}`"))?;
                match workload.as_str() {
                    "callbacks" => situations::callbacks(
                        &name,
                        engine,
                        items_given.unwrap_or(1_000_000),
                        reps,
                    )?,
                    "nested" => situations::nested(&name, engine, rows.unwrap_or(5_000), reps)?,
                    "small" => situations::small(&name, engine)?,
                    _ => situations::structs(&name, engine, items_given.unwrap_or(200_000), reps)?,
                }
            }
            return Ok(());
        }
        other => {
            return Err(format!(
                "unknown workload `{other}` (w1, w3, w4, callbacks, nested, small or structs)"
            )
            .into());
        }
    }
    let texts = workload::items(items);
    let expected = workload::expected_counts(&texts);
    // 1% new: every hundredth item replaced by text not seen before.
    let mut grown = texts.clone();
    for (i, t) in grown.iter_mut().enumerate().filter(|(i, _)| i % 100 == 0) {
        *t = format!("new item {i}");
    }
    let grown_expected = workload::expected_counts(&grown);
    for name in names {
        let engine = engine(&name).ok_or_else(|| {
            format!("unknown engine `{name}` (datafusion needs --features datafusion)")
        })?;
        let dir = tempfile::tempdir()?;
        let mut rates = Vec::new();
        for (texts, expected) in [
            (&texts, &expected),
            (&texts, &expected),
            (&grown, &grown_expected),
        ] {
            let mut pipeline = Pipeline::new(nodes(dual))?
                .with_shared_engine(engine.clone())
                .with_cache(DiskCache::new(dir.path()));
            if progress {
                pipeline = with_progress(pipeline)?;
            }
            let inputs = Inputs::new().with("text", texts.clone());
            let start = Instant::now();
            let r = measured_map(&pipeline, inputs)?;
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(
                &r.values::<i64>("word_count")?,
                expected,
                "results match plain Rust"
            );
            rates.push(items as f64 / secs);
        }
        let mut label = if dual && name == "datafusion" {
            "datafusion-dual".to_string()
        } else {
            name
        };
        if progress {
            label.push_str("+progress");
        }
        println!(
            "throughput: engine={label} items={items} cold_items_per_s={:.0} warm_items_per_s={:.0}",
            rates[0], rates[1]
        );
        println!(
            "incremental: engine={label} items={items} one_percent_new_items_per_s={:.0}",
            rates[2]
        );
    }
    Ok(())
}
