//! The caching table of the original HyperNodes README, measured: a node
//! that takes 10 ms per item, run over 10 items, the same again, 15 items
//! (10 old + 5 new), one item edited, and the last node's code changed.
//!
//! `cargo run --release --example cache_walkthrough`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hypernodes::{Callback, CallbackContext, DiskCache, Inputs, Node, Pipeline, node, outs};

/// Counts completed executions of one node.
struct Executions {
    node: &'static str,
    count: AtomicUsize,
}

impl Callback for Executions {
    fn on_node_end(&self, _ctx: &CallbackContext<'_>, node: &str, _elapsed: Duration) {
        if node == self.node {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

/// The expensive step: 10 ms per item.
#[node(output = "features")]
fn featurize(cleaned: &str) -> Vec<i64> {
    std::thread::sleep(Duration::from_millis(10));
    cleaned.split_whitespace().map(|w| w.len() as i64).collect()
}

/// The last step, built at run time so its version can change.
fn package(version: &str) -> Node {
    Node::builder("package")
        .input::<Vec<i64>>("features")
        .output::<String>("doc")
        .version(version)
        .func(|args| Ok(outs![format!("{:?}", args.get::<Vec<i64>>(0)?)]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let counter = Arc::new(Executions {
        node: "featurize",
        count: AtomicUsize::new(0),
    });
    let pipeline = |version: &str| -> Result<Pipeline, hypernodes::Error> {
        Ok(
            Pipeline::new([clean::node(), featurize::node(), package(version)])?
                .with_cache(DiskCache::new(dir.path()))
                .with_callback(counter.clone()),
        )
    };
    let items = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("  Item {i} Of The Batch "))
            .collect()
    };

    let mut edited = items(15);
    edited[4] = "an edited item".to_string();
    let scenarios: Vec<(&str, &str, Vec<String>, &str)> = vec![
        ("first", "Process 10 items (first time)", items(10), "v1"),
        ("again", "Process 10 items (again)", items(10), "v1"),
        ("grow", "Process 15 items (10 old + 5 new)", items(15), "v1"),
        ("edit", "Edit 1 item", edited.clone(), "v1"),
        ("last_node", "Change the last node's code", edited, "v2"),
    ];
    println!("| Scenario | Seconds | `featurize` executions |");
    println!("|---|---|---|");
    let mut summary = Vec::new();
    for (key, label, texts, version) in scenarios {
        let p = pipeline(version)?;
        counter.count.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let r = p.map(Inputs::new().with("text", texts), ["text"])?;
        let secs = start.elapsed().as_secs_f64();
        let runs = counter.count.load(Ordering::Relaxed);
        assert_eq!(r.failures().len(), 0);
        println!("| {label} | {secs:.3} | {runs} |");
        summary.push((key, runs));
    }
    let get = |k: &str| {
        summary
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    println!(
        "cache-walkthrough: first={} again={} grow={} edit={}",
        get("first"),
        get("again"),
        get("grow"),
        get("edit")
    );
    Ok(())
}
