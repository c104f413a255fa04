//! A `map` plan that leaves the process: the parent lowers a map to a
//! DataFusion plan and writes it to a file; a child process (this program
//! started again with `--decode FILE`) links the same nodes, decodes the
//! plan with its node registry — the cache's location comes with the plan —
//! and runs it. The parent then maps the same items on `SeqEngine`: the
//! child's results are in the shared cache, so nothing is computed again.
//!
//! ```text
//! cargo run --release --features datafusion --example plan_travels
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::engines::datafusion::arrow::array::RecordBatch;
use hypernodes::engines::{DataFusionEngine, NodeCodec};
use hypernodes::node::NodeRegistry;
use hypernodes::{DiskCache, Inputs, Pipeline, SeqEngine, node};

static CLEANED: AtomicUsize = AtomicUsize::new(0);
static COUNTED: AtomicUsize = AtomicUsize::new(0);

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    CLEANED.fetch_add(1, Ordering::Relaxed);
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    COUNTED.fetch_add(1, Ordering::Relaxed);
    cleaned.split_whitespace().count() as i64
}

/// The pipeline both processes build from the same code.
fn pipeline(cache: &Path) -> Pipeline {
    Pipeline::new([clean::node(), count::node()])
        .expect("a valid pipeline")
        .with_name("text_stats")
        .with_cache(DiskCache::new(cache))
}

fn texts() -> Vec<String> {
    (0..10_000)
        .map(|i| format!("  Item {i} Says Hello To {} Worlds ", i % 7))
        .collect()
}

fn computed() -> (usize, usize) {
    (
        CLEANED.load(Ordering::Relaxed),
        COUNTED.load(Ordering::Relaxed),
    )
}

/// The child: decodes the plan in `path` and runs it.
fn decode(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    // This process knows the nodes it links; the cache directory given here
    // is not used (the plan names its own).
    let registry = NodeRegistry::new().with_pipeline(&pipeline(Path::new("unused")));
    let codec = NodeCodec::new(registry);
    let engine = DataFusionEngine::new();
    let ctx = engine.session();
    let plan = codec.decode_plan(&bytes, &ctx)?;
    let batches: Vec<RecordBatch> = tokio::runtime::Runtime::new()?.block_on(
        hypernodes::engines::datafusion::physical_plan::collect(plan, ctx.task_ctx()),
    )?;
    let outcome = codec.close()?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let (cleaned, counted) = computed();
    println!(
        "child {}: decoded a plan of {} bytes and ran it: {rows} rows, {} failures; computed clean {cleaned}x, count {counted}x",
        std::process::id(),
        bytes.len(),
        outcome.failures.len()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, path] = args.as_slice()
        && flag == "--decode"
    {
        return decode(Path::new(path));
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("hypernodes-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cache = dir.join("cache");
    let p = pipeline(&cache);
    let inputs = || Inputs::new().with("text", texts());

    let bytes = DataFusionEngine::new().encode_map(&p, inputs(), ["text"])?;
    let file = dir.join("plan.bin");
    std::fs::write(&file, &bytes)?;
    println!(
        "parent {}: wrote a plan of {} bytes to {} (computed nothing: {:?})",
        std::process::id(),
        bytes.len(),
        file.display(),
        computed()
    );

    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--decode")
        .arg(&file)
        .status()?;
    if !status.success() {
        return Err(format!("the child process failed: {status}").into());
    }

    let r = p.with_engine(SeqEngine).map(inputs(), ["text"])?;
    let counts = r.values::<i64>("word_count")?;
    let (cleaned, counted) = computed();
    println!(
        "parent: the same map on SeqEngine found every result in the child's cache: computed clean {cleaned}x, count {counted}x; item 3 has {} words",
        counts[3]
    );
    assert_eq!((cleaned, counted), (0, 0), "everything came from the cache");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
