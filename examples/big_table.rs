//! A table larger than one chunk, in and out of Parquet: writes the W1
//! items (`shared/bench/workload.md`) to a Parquet file, maps the W1
//! pipeline over it with `DataFusionEngine` (or `--engine seq|parallel`)
//! and a fresh `DiskCache` into a Parquet file, then runs again warm, and
//! checks every result against plain Rust. One line per run:
//!
//! ```text
//! big-table: engine=<name> rows=<N> run=<cold|warm> items_per_s=<x> peak_rss_mib=<y> index_mib=<z>
//! ```
//!
//! `peak_rss_mib` is the process's peak resident memory during that run
//! (`VmHWM` from `/proc/self/status`, reset before each run), `index_mib`
//! the part of it that is the cache's signature index (which grows with the
//! rows stored; everything else is bounded).
//!
//! ```sh
//! cargo run --release --all-features --example big_table -- --rows 20000000
//! ```

#[path = "shared/workload.rs"]
mod workload;

/// The allocator of this program (not of the library): mimalloc, as the
/// `throughput` example uses, so the two compare like for like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use hypernodes::table::Table;
use hypernodes::{DiskCache, Engine, Inputs, MapOptions, Pipeline};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Peak resident memory in MiB, from `/proc/self/status` (0 where absent).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// Resets the peak to the current resident memory (Linux `clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn engine(name: &str) -> Option<Arc<dyn Engine>> {
    match name {
        "seq" => Some(Arc::new(hypernodes::SeqEngine)),
        "parallel" => Some(Arc::new(hypernodes::ParallelEngine::new())),
        #[cfg(feature = "datafusion")]
        "datafusion" => Some(Arc::new(hypernodes::engines::DataFusionEngine::new())),
        _ => None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = 20_000_000usize;
    let mut chunk_rows = Table::DEFAULT_CHUNK_ROWS;
    let mut name = if cfg!(feature = "datafusion") {
        "datafusion".to_string()
    } else {
        "parallel".to_string()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => rows = args.next().ok_or("--rows needs a number")?.parse()?,
            "--engine" => name = args.next().ok_or("--engine needs a name")?,
            "--chunk-rows" => {
                chunk_rows = args.next().ok_or("--chunk-rows needs a number")?.parse()?
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let engine = engine(&name).ok_or_else(|| format!("unknown engine `{name}`"))?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("w1.parquet");

    // The input, written a million rows at a time (never all in memory).
    {
        let file = std::fs::File::create(&input)?;
        let mut writer: Option<ArrowWriter<std::fs::File>> = None;
        let block = 1_000_000usize;
        for start in (0..rows).step_by(block) {
            let end = (start + block).min(rows);
            let texts: Vec<String> = (start..end).map(workload::item).collect();
            let batch = RecordBatch::try_from_iter([
                (
                    "id",
                    Arc::new(Int64Array::from_iter_values(start as i64..end as i64)) as ArrayRef,
                ),
                ("text", Arc::new(StringArray::from(texts)) as ArrayRef),
            ])?;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(ArrowWriter::try_new(
                    file.try_clone()?,
                    batch.schema(),
                    None,
                )?),
            };
            w.write(&batch)?;
        }
        if let Some(w) = writer {
            w.close()?;
        }
    }

    let cache = dir.path().join("cache");
    for run in ["cold", "warm"] {
        let store = Arc::new(DiskCache::new(&cache));
        let pipeline = Pipeline::new([workload::clean::node(), workload::count::node()])?
            .with_shared_engine(engine.clone())
            .with_shared_cache(store.clone());
        let output = dir.path().join(format!("out-{run}.parquet"));
        reset_peak();
        let start = Instant::now();
        let written = pipeline
            .map_table(
                Table::parquet(&input)?.carry(["id"]).chunk_rows(chunk_rows),
                Inputs::new(),
                MapOptions::default().outputs(["word_count"]),
            )?
            .write_parquet(&output)?;
        let secs = start.elapsed().as_secs_f64();
        let peak = peak_rss_mib();
        assert_eq!(written.rows, rows);
        check(&output, rows)?;
        println!(
            "big-table: engine={name} rows={rows} run={run} items_per_s={:.0} peak_rss_mib={peak} index_mib={}",
            rows as f64 / secs,
            store.index_bytes() >> 20
        );
    }
    Ok(())
}

/// Every output row is its id's expected word count, in order.
fn check(path: &std::path::Path, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?
        .with_batch_size(1 << 16)
        .build()?;
    let mut next = 0i64;
    for batch in reader {
        let batch = batch?;
        let ids = batch
            .column_by_name("id")
            .ok_or("no id column")?
            .as_primitive::<Int64Type>();
        let counts = batch
            .column_by_name("word_count")
            .ok_or("no word_count column")?
            .as_primitive::<Int64Type>();
        for (id, count) in ids.values().iter().zip(counts.iter()) {
            if *id != next {
                return Err(format!("row {next} is out of order (found id {id})").into());
            }
            let want = workload::expected_counts(&[workload::item(*id as usize)])[0];
            if count != Some(want) {
                return Err(format!("row {id}: {count:?}, expected {want}").into());
            }
            next += 1;
        }
    }
    if next as usize != rows {
        return Err(format!("{next} rows written, expected {rows}").into());
    }
    Ok(())
}
