//! The situations of issue 18, in which a columnar engine could lose to the
//! row engines: callbacks on a large map, nested `map_over` without a cache,
//! many small maps, and user structs. Each prints one line per engine with
//! its figures; every result is checked against plain Rust.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hypernodes::{
    ArrowValue, Callback, CallbackContext, DiskCache, Engine, Inputs, ItemCounts, MapOptions,
    NodeCounts, Pipeline, node,
};
use serde::{Deserialize, Serialize};

use crate::workload;

/// The best (shortest) of `reps` timings of `f`: the figure least disturbed
/// by the machine's noise.
fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        if best.as_ref().is_none_or(|(b, _)| took < *b) {
            best = Some((took, out));
        }
    }
    best.expect("at least one repetition")
}

/// A callback that does nothing (every method keeps its no-op default).
struct Silent;
impl Callback for Silent {}

/// A callback that counts node calls and finished items as a progress bar
/// does: from the counts engines report per batch of rows.
#[derive(Default)]
struct Counting {
    nodes: AtomicU64,
    items: AtomicU64,
}
impl Callback for Counting {
    fn item_events(&self) -> bool {
        false
    }
    fn on_node_batch(&self, _: &CallbackContext<'_>, _: &str, counts: NodeCounts) {
        self.nodes
            .fetch_add(counts.computed as u64, Ordering::Relaxed);
    }
    fn on_items_batch(&self, _: &CallbackContext<'_>, counts: ItemCounts) {
        self.items.fetch_add(counts.ended as u64, Ordering::Relaxed);
    }
}

/// A callback that counts node calls and finished items from the events of
/// each item.
#[derive(Default)]
struct CountingEach {
    nodes: AtomicU64,
    items: AtomicU64,
}
impl Callback for CountingEach {
    fn on_node_end(&self, _: &CallbackContext<'_>, _: &str, _: Duration) {
        self.nodes.fetch_add(1, Ordering::Relaxed);
    }
    fn on_map_item_end(&self, _: &CallbackContext<'_>, _: Duration) {
        self.items.fetch_add(1, Ordering::Relaxed);
    }
}

/// W1 without a cache: no callback, a no-op callback (it takes per-item
/// events, as every method keeps its default), a counting one (counts per
/// batch, as a progress bar takes them) and one counting per item.
/// Prints `callbacks: engine=<e> items=<N> none_s=<a> noop_s=<b>
/// counting_s=<c> per_item_counting_s=<d>`, then each one's cost over
/// `none` in percent.
pub fn callbacks(
    name: &str,
    engine: Arc<dyn Engine>,
    items: usize,
    reps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let texts = workload::items(items);
    let expected = workload::expected_counts(&texts);
    let inputs = Inputs::new().with("text", texts);
    let base = Pipeline::new([workload::clean::node(), workload::count::node()])?
        .with_shared_engine(engine);
    let counting = Arc::new(Counting::default());
    let each = Arc::new(CountingEach::default());
    let runs: [(&str, Pipeline); 4] = [
        ("none", base.clone()),
        ("noop", base.clone().with_callback(Arc::new(Silent))),
        ("counting", base.clone().with_callback(counting.clone())),
        ("per_item_counting", base.with_callback(each.clone())),
    ];
    // Interleaved (none, no-op, counting, per item, none, ...), best of `reps` each:
    // the machine's drift and the allocator's state reach all three alike.
    // `THROUGHPUT_ONLY=noop` (say) runs that one alone: for a profiler.
    let only = std::env::var("THROUGHPUT_ONLY").ok();
    if let Some(only) = &only {
        let (_, p) = runs
            .iter()
            .find(|(n, _)| n == only)
            .ok_or_else(|| format!("no callback case `{only}`"))?;
        for _ in 0..reps.max(1) {
            let start = Instant::now();
            p.map(inputs.clone(), ["text"])?;
            println!(
                "callbacks: engine={name} case={only} secs={:.3}",
                start.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
    let mut secs = [f64::INFINITY; 4];
    for _ in 0..reps.max(1) {
        for (k, (_, p)) in runs.iter().enumerate() {
            let start = Instant::now();
            let r = p.map(inputs.clone(), ["text"])?;
            secs[k] = secs[k].min(start.elapsed().as_secs_f64());
            assert_eq!(r.values::<i64>("word_count")?, expected, "counts are right");
        }
    }
    let rounds = reps.max(1) as u64 * items as u64;
    for (nodes, done) in [
        (&counting.nodes, &counting.items),
        (&each.nodes, &each.items),
    ] {
        assert_eq!(
            nodes.load(Ordering::Relaxed),
            2 * rounds,
            "node calls counted"
        );
        assert_eq!(done.load(Ordering::Relaxed), rounds, "items counted");
    }
    let cost = |k: usize| (secs[k] / secs[0] - 1.0) * 100.0;
    println!(
        "callbacks: engine={name} items={items} none_s={:.3} noop_s={:.3} counting_s={:.3} per_item_counting_s={:.3} noop_cost={:+.0}% counting_cost={:+.0}% per_item_counting_cost={:+.0}%",
        secs[0],
        secs[1],
        secs[2],
        secs[3],
        cost(1),
        cost(2),
        cost(3)
    );
    Ok(())
}

/// W3's last node: the row's total word count.
#[node(output = "total")]
pub fn total(word_counts: &[i64]) -> i64 {
    word_counts.iter().sum()
}

/// A group's total word count (the middle level of three).
#[node(output = "group_total")]
fn group_total(word_counts: &[i64]) -> i64 {
    word_counts.iter().sum()
}

/// The W1 pipeline (as `text_processor`) as a node mapping over `texts`,
/// giving `word_counts`: W3's nested node.
pub fn inner_w1() -> Result<hypernodes::Node, hypernodes::Error> {
    Ok(
        Pipeline::new([workload::clean::node(), workload::count::node()])?
            .with_name("text_processor")
            .as_node()
            .input_mapping([("texts", "text")])
            .output_mapping([("word_count", "word_counts")])
            .map_over(["texts"]),
    )
}

/// How many texts row `r` of the two-level shape holds: 0 to 1,000, most
/// rows short (the length is 1,000 · u⁸ for u spread evenly over [0, 1]),
/// about 575k in all over 5,000 rows.
fn row_len(r: usize) -> usize {
    let u = ((r * 7919) % 1001) as f64 / 1000.0;
    (1000.0 * u.powi(8)).round() as usize
}

/// Nested `map_over` without a cache, on two shapes: two levels (`rows`
/// rows, each a list of 0 to 1,000 W1 texts, see [`row_len`]) and three
/// levels (`rows / 2` rows, each 5 groups of 50 texts: 625k leaves for
/// 5,000 rows).
/// Prints `nested: engine=<e> shape=<s> rows=<R> leaves=<L> secs=<t>
/// leaves_per_s=<x>`.
pub fn nested(
    name: &str,
    engine: Arc<dyn Engine>,
    rows: usize,
    reps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    // Two levels.
    let mut next = 0usize;
    let mut lists: Vec<Vec<String>> = Vec::with_capacity(rows);
    for r in 0..rows {
        let len = row_len(r);
        lists.push((next..next + len).map(workload::item).collect());
        next += len;
    }
    let expected: Vec<i64> = lists
        .iter()
        .map(|l| workload::expected_counts(l).iter().sum())
        .collect();
    let p = Pipeline::new([inner_w1()?, total::node()])?.with_shared_engine(engine.clone());
    let shape = Shape {
        name: "two_levels",
        rows,
        leaves: next,
        over: "texts",
    };
    time_nested(
        name,
        &shape,
        &p,
        Inputs::new().with("texts", lists),
        &expected,
        reps,
    )?;

    // Three levels: rows of groups of texts.
    let outer_rows = rows / 2;
    let (groups, per_group) = (5usize, 50usize);
    let mut next = 0usize;
    let mut table: Vec<Vec<Vec<String>>> = Vec::with_capacity(outer_rows);
    for _ in 0..outer_rows {
        let mut row = Vec::with_capacity(groups);
        for _ in 0..groups {
            row.push((next..next + per_group).map(workload::item).collect());
            next += per_group;
        }
        table.push(row);
    }
    let expected: Vec<i64> = table
        .iter()
        .map(|row| {
            row.iter()
                .map(|g| workload::expected_counts(g).iter().sum::<i64>())
                .sum()
        })
        .collect();
    let middle = Pipeline::new([inner_w1()?, group_total::node()])?
        .with_name("group")
        .as_node()
        .input_mapping([("groups", "texts")])
        .output_mapping([("group_total", "word_counts")])
        .map_over(["groups"]);
    let p = Pipeline::new([middle, total::node()])?.with_shared_engine(engine);
    let shape = Shape {
        name: "three_levels",
        rows: outer_rows,
        leaves: next,
        over: "groups",
    };
    time_nested(
        name,
        &shape,
        &p,
        Inputs::new().with("groups", table),
        &expected,
        reps,
    )
}

/// One shape of [`nested`]: its name, outer rows, leaves, and the input
/// the outer map maps over.
struct Shape {
    name: &'static str,
    rows: usize,
    leaves: usize,
    over: &'static str,
}

/// Times `p` mapped over `shape.over` (best of `reps`), checks each row's
/// `total` against `expected`, and prints the shape's line.
fn time_nested(
    engine: &str,
    shape: &Shape,
    p: &Pipeline,
    inputs: Inputs,
    expected: &[i64],
    reps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (took, r) = best(reps, || {
        p.map(
            inputs.clone(),
            MapOptions::over([shape.over]).outputs(["total"]),
        )
    });
    assert_eq!(r?.values::<i64>("total")?, expected, "totals are right");
    println!(
        "nested: engine={engine} shape={} rows={} leaves={} secs={:.3} leaves_per_s={:.0}",
        shape.name,
        shape.rows,
        shape.leaves,
        took.as_secs_f64(),
        shape.leaves as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Many small maps of W1, without and with a cache (warm: the same items
/// again, each map a new pipeline over the same cache). Prints
/// `small: engine=<e> items=<n> maps=<m> us_per_map=<a> cached_us_per_map=<b>`.
pub fn small(name: &str, engine: Arc<dyn Engine>) -> Result<(), Box<dyn std::error::Error>> {
    for (n, maps) in [
        (0usize, 200usize),
        (1, 200),
        (10, 200),
        (100, 100),
        (1000, 100),
    ] {
        let texts = workload::items(n);
        let expected = workload::expected_counts(&texts);
        let inputs = Inputs::new().with("text", texts);
        let p = Pipeline::new([workload::clean::node(), workload::count::node()])?
            .with_shared_engine(engine.clone());
        let run = |p: &Pipeline| -> Result<Duration, Box<dyn std::error::Error>> {
            let (took, r) = best(3, || {
                let start = Instant::now();
                for _ in 0..maps {
                    let r = p.map(inputs.clone(), ["text"])?;
                    assert_eq!(r.values::<i64>("word_count")?, expected);
                }
                Ok::<_, Box<dyn std::error::Error>>(start.elapsed())
            });
            r?;
            Ok(took)
        };
        let plain = run(&p)?;
        let dir = tempfile::tempdir()?;
        let cached = p.with_cache(DiskCache::new(dir.path()));
        // One map fills the cache; the timed ones then find every item.
        cached.map(inputs.clone(), ["text"])?;
        let warm = run(&cached)?;
        println!(
            "small: engine={name} items={n} maps={maps} us_per_map={:.1} cached_us_per_map={:.1}",
            plain.as_secs_f64() * 1e6 / maps as f64,
            warm.as_secs_f64() * 1e6 / maps as f64
        );
    }
    Ok(())
}

/// Where a document came from (a struct inside [`Doc`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ArrowValue)]
pub struct Source {
    /// The item's number.
    pub id: i64,
    /// The first word, if any.
    pub first: Option<String>,
}

/// A document: a nested struct with list and optional fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ArrowValue)]
pub struct Doc {
    /// The cleaned text.
    pub text: String,
    /// Its words longer than three letters.
    pub tags: Vec<String>,
    /// Half its word count, when it has more than one word.
    pub score: Option<f64>,
    /// Where it came from.
    pub source: Source,
}

/// Builds a [`Doc`] from an item's text.
#[node(output = "doc")]
fn make_doc(text: &str, id: i64) -> Doc {
    let cleaned = text.trim().to_lowercase();
    let words = cleaned.split_whitespace().count();
    Doc {
        tags: cleaned
            .split_whitespace()
            .filter(|w| w.len() > 3)
            .map(str::to_string)
            .collect(),
        score: (words > 1).then_some(words as f64 / 2.0),
        source: Source {
            id,
            first: cleaned.split_whitespace().next().map(str::to_string),
        },
        text: cleaned,
    }
}

/// A document's weight: its tags plus its score.
#[node(output = "weight")]
fn weigh(doc: &Doc) -> f64 {
    doc.tags.len() as f64 + doc.score.unwrap_or(0.0) + doc.source.first.is_some() as i64 as f64
}

/// User structs without a cache: `items` W1 texts become nested [`Doc`]s,
/// then weights. Prints `structs: engine=<e> items=<N> secs=<t>
/// items_per_s=<x>`.
pub fn structs(
    name: &str,
    engine: Arc<dyn Engine>,
    items: usize,
    reps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let texts = workload::items(items);
    let ids: Vec<i64> = (0..items as i64).collect();
    let expected: Vec<f64> = texts
        .iter()
        .map(|t| {
            let c = t.trim().to_lowercase();
            let words: Vec<&str> = c.split_whitespace().collect();
            let tags = words.iter().filter(|w| w.len() > 3).count() as f64;
            let score = if words.len() > 1 {
                words.len() as f64 / 2.0
            } else {
                0.0
            };
            tags + score + (!words.is_empty()) as i64 as f64
        })
        .collect();
    let p = Pipeline::new([make_doc::node(), weigh::node()])?.with_shared_engine(engine);
    let inputs = Inputs::new().with("text", texts).with("id", ids);
    let (took, r) = best(reps, || p.map(inputs.clone(), ["text", "id"]));
    let r = r?;
    assert_eq!(r.values::<f64>("weight")?, expected, "weights are right");
    assert_eq!(r.values::<Doc>("doc")?.len(), items);
    println!(
        "structs: engine={name} items={items} secs={:.3} items_per_s={:.0}",
        took.as_secs_f64(),
        items as f64 / took.as_secs_f64()
    );
    Ok(())
}
