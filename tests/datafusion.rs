//! `DataFusionEngine` beyond the shared engine matrix (which it also runs):
//! cache entries shared with the row engines in both directions, plan
//! errors before anything runs, resources shared rather than copied, and
//! the lowered plan.

#![cfg(feature = "datafusion")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::engines::DataFusionEngine;
use hypernodes::{
    DiskCache, Engine, ErrorPolicy, Inputs, MapOptions, Node, ParallelEngine, Pipeline, SeqEngine,
    node, outs,
};

fn df() -> DataFusionEngine {
    DataFusionEngine::new()
        .with_small_map(0)
        .with_target_partitions(2)
        .with_batch_size(3)
}

/// `x -> double -> y`, counting calls; fails on x = 13.
fn doubling(calls: &Arc<AtomicUsize>) -> Node {
    let calls = calls.clone();
    Node::builder("double")
        .input::<i64>("x")
        .output::<i64>("y")
        .version("1")
        .func(move |args| {
            calls.fetch_add(1, Ordering::SeqCst);
            let x = *args.get::<i64>(0)?;
            if x == 13 {
                return Err(hypernodes::NodeError::User("unlucky".into()));
            }
            Ok(outs![x * 2])
        })
}

/// Maps `xs` on `engine` over the cache in `dir`; returns the executions
/// and the values.
fn run(engine: Arc<dyn Engine>, dir: &std::path::Path, xs: &[i64]) -> (usize, Vec<i64>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let r = Pipeline::new([doubling(&calls)])
        .unwrap()
        .with_shared_engine(engine)
        .with_cache(DiskCache::new(dir))
        .map(Inputs::new().with("x", xs.to_vec()), ["x"])
        .unwrap();
    (calls.load(Ordering::SeqCst), r.values::<i64>("y").unwrap())
}

#[test]
fn cache_entries_are_shared_with_the_row_engines_both_ways() {
    let rows: [(&str, Arc<dyn Engine>); 2] = [
        ("seq", Arc::new(SeqEngine)),
        (
            "parallel",
            Arc::new(ParallelEngine::with_threads(2).unwrap()),
        ),
    ];
    let ten: Vec<i64> = (0..10).collect();
    let doubled: Vec<i64> = ten.iter().map(|x| x * 2).collect();
    for (name, row) in rows {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            run(row.clone(), dir.path(), &ten),
            (10, doubled.clone()),
            "{name}"
        );
        assert_eq!(
            run(Arc::new(df()), dir.path(), &ten),
            (0, doubled.clone()),
            "{name} -> datafusion"
        );

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            run(Arc::new(df()), dir.path(), &ten),
            (10, doubled.clone()),
            "datafusion"
        );
        assert_eq!(
            run(row.clone(), dir.path(), &ten),
            (0, doubled.clone()),
            "datafusion -> {name}"
        );

        // Half cached by the row engine: exactly the other half computes.
        let dir = tempfile::tempdir().unwrap();
        run(row.clone(), dir.path(), &ten[..5]);
        assert_eq!(
            run(Arc::new(df()), dir.path(), &ten),
            (5, doubled.clone()),
            "{name}: half"
        );
    }
}

#[test]
fn failures_name_node_and_item_and_the_other_rows_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let xs: Vec<i64> = (10..20).collect();
    let p = Pipeline::new([doubling(&calls)])
        .unwrap()
        .with_engine(df())
        .with_cache(DiskCache::new(dir.path()));
    let err = p
        .map(Inputs::new().with("x", xs.clone()), ["x"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `double` failed in pipeline `pipeline` on item 3: unlucky"
    );
    let r = p
        .map(
            Inputs::new().with("x", xs.clone()),
            MapOptions::over(["x"]).on_error(ErrorPolicy::Continue),
        )
        .unwrap();
    let failed: Vec<usize> = r.failures().iter().map(|f| f.index).collect();
    assert_eq!(failed, [3]);
    // Only the failing item ran again, on any engine.
    assert_eq!(run(Arc::new(SeqEngine), dir.path(), &xs[4..]).0, 0);
    calls.store(0, Ordering::SeqCst);
    p.map(
        Inputs::new().with("x", xs),
        MapOptions::over(["x"]).on_error(ErrorPolicy::Continue),
    )
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

static LOADS: AtomicUsize = AtomicUsize::new(0);
static CLONES: AtomicUsize = AtomicUsize::new(0);

/// A resource: no Arrow form, counts its copies.
struct Model {
    offset: i64,
}

impl Clone for Model {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::SeqCst);
        Model {
            offset: self.offset,
        }
    }
}

#[node(output = "model")]
fn load(offset: i64) -> Model {
    LOADS.fetch_add(1, Ordering::SeqCst);
    Model { offset }
}

#[node(output = "y")]
fn apply(x: i64, model: &Model) -> i64 {
    x + model.offset
}

#[test]
fn outputs_without_an_arrow_form_fail_before_anything_runs() {
    let p = Pipeline::new([load::node(), apply::node()])
        .unwrap()
        .with_engine(df());
    let before = LOADS.load(Ordering::SeqCst);
    let err = p
        .map(
            Inputs::new().with("offset", vec![1i64, 2]).with("x", 5i64),
            ["offset"],
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("node `load`") && text.contains("output `model`") && text.contains("Model"),
        "{text}"
    );
    assert_eq!(LOADS.load(Ordering::SeqCst), before, "nothing ran");
}

#[test]
fn resources_are_shared_never_copied_per_row_or_batch() {
    let p = Pipeline::new([apply::node()]).unwrap().with_engine(df());
    let model = Model { offset: 100 };
    let before = CLONES.load(Ordering::SeqCst);
    let xs: Vec<i64> = (0..50).collect();
    let r = p
        .map(
            Inputs::new().with("x", xs.clone()).with("model", model),
            ["x"],
        )
        .unwrap();
    assert_eq!(
        r.values::<i64>("y").unwrap(),
        xs.iter().map(|x| x + 100).collect::<Vec<_>>()
    );
    assert_eq!(
        CLONES.load(Ordering::SeqCst),
        before,
        "50 rows, 17 batches, 0 copies"
    );
}

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

#[test]
fn explain_shows_signature_columns_and_one_udf_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new([clean::node(), count::node()])
        .unwrap()
        .with_cache(DiskCache::new(dir.path()));
    let plan = df()
        .explain(&p, Inputs::new().with("text", vec!["A b", " c "]), ["text"])
        .unwrap();
    for part in [
        "signature_clean_0",
        "node_clean_0",
        "signature_count_1",
        "node_count_1",
        "Projection: ?table?.__item",
        "physical plan:",
    ] {
        assert!(plan.contains(part), "{part} missing from:\n{plan}");
    }
    assert!(
        DiskCache::new(dir.path()).stats().unwrap().is_empty(),
        "nothing ran"
    );
    // Without a cache there are no signature columns.
    let plain = Pipeline::new([clean::node(), count::node()]).unwrap();
    let plan = df()
        .explain(&plain, Inputs::new().with("text", vec!["x"]), ["text"])
        .unwrap();
    assert!(!plan.contains("signature_"), "{plan}");
}

static DIVMODS: AtomicUsize = AtomicUsize::new(0);

#[node(output = ("q", "r"))]
fn divmod(x: i64) -> (i64, i64) {
    DIVMODS.fetch_add(1, Ordering::SeqCst);
    (x / 3, x % 3)
}

#[test]
fn outputs_nobody_asked_for_are_still_cached() {
    let dir = tempfile::tempdir().unwrap();
    let xs: Vec<i64> = (0..9).collect();
    let pipeline = |engine: Arc<dyn Engine>| {
        Pipeline::new([divmod::node()])
            .unwrap()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()))
    };
    let before = DIVMODS.load(Ordering::SeqCst);
    let r = pipeline(Arc::new(df()))
        .map(
            Inputs::new().with("x", xs.clone()),
            MapOptions::over(["x"]).outputs(["q"]),
        )
        .unwrap();
    assert_eq!(r.names(), ["q"]);
    assert_eq!(DIVMODS.load(Ordering::SeqCst) - before, 9);
    let r = pipeline(Arc::new(SeqEngine))
        .map(Inputs::new().with("x", xs.clone()), ["x"])
        .unwrap();
    assert_eq!(DIVMODS.load(Ordering::SeqCst) - before, 9, "all hits");
    assert_eq!(
        r.values::<i64>("r").unwrap(),
        xs.iter().map(|x| x % 3).collect::<Vec<_>>()
    );
}

/// `text -> lower`, a dual node: a counted row function and a counted batch
/// implementation over Arrow strings (optionally broken).
fn dual(row: &Arc<AtomicUsize>, batch: &Arc<AtomicUsize>, broken: bool) -> Node {
    use arrow_array::cast::AsArray;
    let (row, batch) = (row.clone(), batch.clone());
    Node::builder("lower")
        .input::<String>("text")
        .output::<String>("lowered")
        .version("1")
        .func(move |args| {
            row.fetch_add(1, Ordering::SeqCst);
            Ok(outs![args.get::<String>(0)?.trim().to_lowercase()])
        })
        .with_batch(move |arrays| {
            batch.fetch_add(1, Ordering::SeqCst);
            if broken {
                return Err("the batch version is broken".into());
            }
            let out: arrow_array::StringArray = arrays[0]
                .as_string::<i32>()
                .iter()
                .map(|t| t.map(|t| t.trim().to_lowercase()))
                .collect();
            Ok(vec![Arc::new(out) as arrow_array::ArrayRef])
        })
}

#[test]
fn dual_nodes_run_their_batch_version_with_the_same_results() {
    let texts: Vec<String> = (0..40).map(|i| format!("  Item {i} MiXeD ")).collect();
    let (row, batch) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let lowered = |engine: Arc<dyn Engine>, dir: Option<&std::path::Path>| {
        let mut p = Pipeline::new([dual(&row, &batch, false)])
            .unwrap()
            .with_shared_engine(engine);
        if let Some(dir) = dir {
            p = p.with_cache(DiskCache::new(dir));
        }
        p.map(Inputs::new().with("text", texts.clone()), ["text"])
            .unwrap()
            .values::<String>("lowered")
            .unwrap()
    };
    let reference = lowered(Arc::new(SeqEngine), None);
    assert_eq!(reference[3], "item 3 mixed");
    assert_eq!(
        (row.load(Ordering::SeqCst), batch.load(Ordering::SeqCst)),
        (40, 0)
    );

    assert_eq!(lowered(Arc::new(df()), None), reference, "same results");
    assert_eq!(row.load(Ordering::SeqCst), 40, "no row calls on datafusion");
    assert!(
        batch.load(Ordering::SeqCst) >= 14,
        "one call per batch of 3"
    );

    // One cache for both versions.
    let dir = tempfile::tempdir().unwrap();
    batch.store(0, Ordering::SeqCst);
    assert_eq!(lowered(Arc::new(df()), Some(dir.path())), reference);
    let batches = batch.load(Ordering::SeqCst);
    assert!(batches > 0);
    assert_eq!(lowered(Arc::new(SeqEngine), Some(dir.path())), reference);
    assert_eq!(
        row.load(Ordering::SeqCst),
        40,
        "all cached by the batch version"
    );
    assert_eq!(lowered(Arc::new(df()), Some(dir.path())), reference);
    assert_eq!(batch.load(Ordering::SeqCst), batches, "all cached");
}

#[test]
fn a_failing_batch_version_fails_its_rows_naming_node_and_item() {
    let (row, batch) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let p = Pipeline::new([dual(&row, &batch, true)])
        .unwrap()
        .with_engine(df());
    let texts = vec!["A".to_string(), "B".into(), "C".into(), "D".into()];
    let err = p
        .map(Inputs::new().with("text", texts.clone()), ["text"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `lower` failed in pipeline `pipeline` on item 0: the batch version is broken"
    );
    let r = p
        .map(
            Inputs::new().with("text", texts),
            MapOptions::over(["text"]).on_error(ErrorPolicy::Continue),
        )
        .unwrap();
    let failed: Vec<(usize, &str)> = r.failures().iter().map(|f| (f.index, f.node())).collect();
    assert_eq!(
        failed,
        [(0, "lower"), (1, "lower"), (2, "lower"), (3, "lower")]
    );
    assert_eq!(row.load(Ordering::SeqCst), 0);
}

static ROW_SHOUTS: AtomicUsize = AtomicUsize::new(0);
static BATCH_SHOUTS: AtomicUsize = AtomicUsize::new(0);

/// The batch version of `shout`: the same result for every row.
fn shout_batch(
    arrays: &[arrow_array::ArrayRef],
) -> Result<Vec<arrow_array::ArrayRef>, hypernodes::BoxError> {
    use arrow_array::cast::AsArray;
    BATCH_SHOUTS.fetch_add(1, Ordering::SeqCst);
    let out: arrow_array::StringArray = arrays[0]
        .as_string::<i32>()
        .iter()
        .map(|t| t.map(|t| format!("{}!", t.to_uppercase())))
        .collect();
    Ok(vec![Arc::new(out)])
}

#[node(output = "shouted", batch = shout_batch)]
fn shout(text: &str) -> String {
    ROW_SHOUTS.fetch_add(1, Ordering::SeqCst);
    format!("{}!", text.to_uppercase())
}

#[test]
fn node_attribute_declares_the_batch_version() {
    let texts = vec!["a".to_string(), "bc".into(), "d e".into()];
    let run = |engine: Arc<dyn Engine>| {
        Pipeline::new([shout::node()])
            .unwrap()
            .with_shared_engine(engine)
            .map(Inputs::new().with("text", texts.clone()), ["text"])
            .unwrap()
            .values::<String>("shouted")
            .unwrap()
    };
    let rows = ROW_SHOUTS.load(Ordering::SeqCst);
    let batches = BATCH_SHOUTS.load(Ordering::SeqCst);
    assert_eq!(run(Arc::new(SeqEngine)), ["A!", "BC!", "D E!"]);
    assert_eq!(ROW_SHOUTS.load(Ordering::SeqCst) - rows, 3);
    assert_eq!(run(Arc::new(df())), ["A!", "BC!", "D E!"]);
    assert_eq!(ROW_SHOUTS.load(Ordering::SeqCst) - rows, 3, "no row calls");
    assert!(BATCH_SHOUTS.load(Ordering::SeqCst) > batches);
    assert!(shout::node().batch().is_some());
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// An I/O-bound node: records how many calls are in flight at once.
#[node(output = "fetched")]
async fn fetch_slowly(x: i64) -> i64 {
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    x * 10
}

#[test]
fn async_nodes_run_several_rows_of_a_batch_at_once_bounded() {
    let engine = DataFusionEngine::new()
        .with_small_map(0)
        .with_target_partitions(1)
        .with_batch_size(8);
    let xs: Vec<i64> = (0..16).collect();
    let r = Pipeline::new([fetch_slowly::node().with_concurrency(4)])
        .unwrap()
        .with_engine(engine)
        .map(Inputs::new().with("x", xs.clone()), ["x"])
        .unwrap();
    assert_eq!(
        r.values::<i64>("fetched").unwrap(),
        xs.iter().map(|x| x * 10).collect::<Vec<_>>()
    );
    let most = MOST_IN_FLIGHT.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "{most} calls in flight at most");
}

static LOOP_CALLS: AtomicUsize = AtomicUsize::new(0);

#[node(output = "y")]
fn scaled(x: i64, model: &Model, label: &str, tags: &[String]) -> i64 {
    LOOP_CALLS.fetch_add(1, Ordering::SeqCst);
    if x == 2 {
        panic!("two is not allowed");
    }
    x * model.offset + tags.len() as i64 + label.len() as i64
}

#[test]
fn node_functions_get_a_typed_row_loop_over_arrow_columns() {
    use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
    use hypernodes::rows::RowsArg;
    let node = scaled::node();
    let rows = node.rows().expect("#[node] generates a row loop").clone();
    let x: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let label: ArrayRef = Arc::new(StringArray::from(vec!["a", "bb", "ccc"]));
    let model = hypernodes::Value::new(Model { offset: 10 });
    let tags = hypernodes::Value::new(vec!["t".to_string(), "u".to_string()]);
    let before = LOOP_CALLS.load(Ordering::SeqCst);
    let out = rows(
        &[
            RowsArg::Column(&x),
            RowsArg::Fixed(&model),
            RowsArg::Column(&label),
            RowsArg::Fixed(&tags),
        ],
        3,
        1,
    )
    .unwrap();
    // Row 1 panics twice (one retry); rows 0 and 2 are in the output.
    assert_eq!(LOOP_CALLS.load(Ordering::SeqCst) - before, 4);
    let y = out.columns[0]
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(y.values().to_vec(), [10 + 2 + 1, 30 + 2 + 3]);
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].row, 1);
    assert_eq!(out.failures[0].attempts, 2);
    assert_eq!(
        out.failures[0].error.to_string(),
        "panicked: two is not allowed"
    );
    // A resource cannot come as a column; a fixed value of the wrong type
    // is named.
    for model in [RowsArg::Column(&x), RowsArg::Fixed(&tags)] {
        let args = [
            RowsArg::Column(&x),
            model,
            RowsArg::Column(&label),
            RowsArg::Fixed(&tags),
        ];
        let err = rows(&args, 3, 0).unwrap_err();
        assert!(err.to_string().contains("input `model`"), "{err}");
    }
    // Async functions have none (the engine runs them concurrently).
    assert!(fetch_slowly::node().rows().is_none());
}

static FIRST_TRIES: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

/// Fails the first attempt on every item; always fails on 13.
#[node(output = "y", retries = 1)]
fn flaky(x: i64) -> Result<i64, String> {
    let mut seen = FIRST_TRIES.lock().unwrap();
    if x == 13 {
        return Err("unlucky".into());
    }
    if !seen.contains(&x) {
        seen.push(x);
        return Err("first try".into());
    }
    Ok(x + 1)
}

#[test]
fn datafusion_calls_the_row_loop_once_per_batch_with_retries_and_failures() {
    let calls = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let node = common::log_row_loop(flaky::node(), &calls);
    let xs: Vec<i64> = (10..17).collect();
    let r = Pipeline::new([node])
        .unwrap()
        .with_engine(df())
        .map(
            Inputs::new().with("x", xs.clone()),
            MapOptions::over(["x"]).on_error(ErrorPolicy::Continue),
        )
        .unwrap();
    let failures = r.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].index, 3);
    assert_eq!(
        failures[0].error.to_string(),
        "node `flaky` failed in pipeline `pipeline` on item 3: unlucky"
    );
    assert!(
        matches!(
            failures[0].error,
            hypernodes::Error::NodeFailed { attempts: 2, .. }
        ),
        "{:?}",
        failures[0].error
    );
    let sizes = calls.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 7, "each row once: {sizes:?}");
    assert!(sizes.iter().any(|&n| n > 1), "batched: {sizes:?}");
    let ys = common::optional_i64s(&r, "y");
    assert_eq!(
        ys,
        [
            Some(11),
            Some(12),
            Some(13),
            None,
            Some(15),
            Some(16),
            Some(17)
        ]
    );
}

/// An observed map of `node` over `x = xs` on `engine`, failures
/// continuing: the failed items' indices, every event in order, and the
/// sizes of the node's row-loop calls.
fn observed_map(
    node: Node,
    xs: Vec<i64>,
    engine: Arc<dyn Engine>,
) -> (Vec<usize>, Vec<String>, Vec<usize>) {
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = common::Recorder::new();
    let r = Pipeline::new([common::log_row_loop(node, &sizes)])
        .unwrap()
        .with_shared_engine(engine)
        .with_callback(recorder.clone())
        .map(
            Inputs::new().with("x", xs),
            MapOptions::over(["x"]).on_error(ErrorPolicy::Continue),
        )
        .unwrap();
    let failed = r.failures().iter().map(|f| f.index).collect();
    let sizes = sizes.lock().unwrap().clone();
    (failed, recorder.take(), sizes)
}

#[test]
fn observed_row_loops_fire_the_retry_events_of_the_row_path() {
    // Per item, the events of a map over `xs` (13 always fails; the others
    // fail their first attempt only), on `engine`.
    let events_per_item = |engine: Arc<dyn hypernodes::Engine>, xs: Vec<i64>| {
        let n = xs.len();
        let (failed, events, loops) = observed_map(flaky::node(), xs, engine);
        assert_eq!(failed.len(), 1);
        let per_item: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let tag = format!("pipeline[{i}] ");
                events
                    .iter()
                    .filter_map(|e| e.strip_prefix(&tag).map(str::to_string))
                    .collect()
            })
            .collect();
        (per_item, loops.len())
    };
    let (row_path, loops) = events_per_item(Arc::new(hypernodes::SeqEngine), vec![40, 41, 13, 42]);
    assert_eq!(loops, 0, "the sequential engine calls the node per item");
    let (columnar, loops) = events_per_item(Arc::new(df()), vec![50, 51, 13, 52]);
    assert!(loops > 0, "observed, the row loop still runs");
    assert_eq!(
        row_path[0],
        [
            "item_start",
            "node_start flaky",
            "node_retry flaky 1 first try",
            "node_start flaky",
            "node_end flaky",
            "item_end"
        ]
    );
    assert_eq!(
        row_path[2],
        [
            "item_start",
            "node_start flaky",
            "node_retry flaky 1 unlucky",
            "node_start flaky",
            "error flaky",
            "item_end"
        ]
    );
    assert_eq!(columnar, row_path);
}

static SCORES: AtomicUsize = AtomicUsize::new(0);

#[node(output = "score")]
fn score(word_count: i64, weight: i64) -> Result<i64, String> {
    SCORES.fetch_add(1, Ordering::SeqCst);
    if word_count == 3 {
        return Err("three words".into());
    }
    Ok(word_count * weight)
}

/// `document -> clean -> count -> score` with `clean`/`count` in a
/// pipeline nested in a pipeline nested in the outer one, renamed on the
/// way, and `weight` bound inside the middle pipeline.
fn nested_text_pipeline(counting: Option<Arc<std::sync::Mutex<Vec<usize>>>>) -> Pipeline {
    let mut count_node = count::node();
    if let Some(sizes) = counting {
        count_node = common::log_row_loop(count_node, &sizes);
    }
    let words = Pipeline::new([clean::node(), count_node])
        .unwrap()
        .with_name("words");
    let scoring = Pipeline::new([words.as_node(), score::node()])
        .unwrap()
        .with_name("scoring")
        .bind(Inputs::new().with("weight", 10i64))
        .unwrap();
    Pipeline::new([scoring
        .as_node()
        .input_mapping([("document", "text")])
        .output_mapping([("score", "points")])])
    .unwrap()
    .with_name("outer")
}

#[test]
fn nested_pipelines_are_inlined_into_the_plan() {
    let docs: Vec<String> = ["a b", " C ", "d e f", "g h i j"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let inputs = || Inputs::new().with("document", docs.clone());
    let options = || MapOptions::over(["document"]).on_error(ErrorPolicy::Continue);

    // The plan holds every inner node's UDF, and none for the nested ones.
    let plan = df()
        .explain(&nested_text_pipeline(None), inputs(), options())
        .unwrap();
    for inner in ["node_clean_", "node_count_", "node_score_"] {
        assert!(plan.contains(inner), "{inner} missing:\n{plan}");
    }
    for nested in ["node_words_", "node_scoring_"] {
        assert!(!plan.contains(nested), "{nested} not inlined:\n{plan}");
    }
    // The whole lowered plan, as a reviewed snapshot.
    insta::assert_snapshot!("inlined_nested_plan", plan);

    // The inner node's row loop runs over batches of the outer rows.
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let p = nested_text_pipeline(Some(sizes.clone()))
        .with_engine(df())
        .with_cache(DiskCache::new(dir.path()));
    let r = p.map(inputs(), options()).unwrap();
    let points = common::optional_i64s(&r, "points");
    assert_eq!(points, [Some(20), Some(10), None, Some(40)]);
    assert_eq!(sizes.lock().unwrap().iter().sum::<usize>(), 4);
    assert!(sizes.lock().unwrap().iter().any(|&n| n > 1));
    // The failure names the innermost pipeline path and the item.
    assert_eq!(
        r.failures()[0].error.to_string(),
        "node `score` failed in pipeline `outer/scoring` on item 2: three words"
    );

    // The same cache entries as the row engines: nothing runs again there.
    let before = SCORES.load(Ordering::SeqCst);
    let seq = nested_text_pipeline(None)
        .with_engine(SeqEngine)
        .with_cache(DiskCache::new(dir.path()))
        .map(inputs(), options())
        .unwrap();
    assert_eq!(
        SCORES.load(Ordering::SeqCst) - before,
        1,
        "only the failed item"
    );
    assert_eq!(common::optional_i64s(&seq, "points"), points);
    assert_eq!(
        seq.failures()[0].error.to_string(),
        r.failures()[0].error.to_string()
    );
}

#[node(output = "word")]
fn trim_word(text: &str) -> String {
    text.trim().to_string()
}

#[node(output = "shout")]
fn upper_word(word: &str) -> String {
    word.to_uppercase()
}

#[node(output = "size")]
fn size_of(shout: &str) -> Result<i64, String> {
    if shout == "BAD" {
        return Err("a bad word".into());
    }
    Ok(shout.len() as i64)
}

#[node(output = "doubled")]
fn double_size(size: i64) -> i64 {
    size * 2
}

/// The events of an observed map of `outer: trim_word -> scale(measure(
/// upper_word -> size_of) -> double_size)` over `texts`, per item (in order) and the
/// events of no item; and the sizes of the row-loop calls of `upper_word`.
fn observed_nested_events(
    engine: Arc<dyn hypernodes::Engine>,
    texts: &[&str],
    cache: Option<&std::path::Path>,
) -> (Vec<Vec<String>>, Vec<String>, Vec<usize>) {
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shout_node = common::log_row_loop(upper_word::node(), &sizes);
    let measure = Pipeline::new([shout_node, size_of::node()])
        .unwrap()
        .with_name("measure");
    let scale = Pipeline::new([measure.as_node(), double_size::node()])
        .unwrap()
        .with_name("scale");
    let rec = common::Recorder::new();
    let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    let n = texts.len();
    let mut outer = Pipeline::new([trim_word::node(), scale.as_node()])
        .unwrap()
        .with_name("outer")
        .with_shared_engine(engine)
        .with_callback(rec.clone());
    if let Some(dir) = cache {
        outer = outer.with_cache(DiskCache::new(dir));
    }
    let r = outer
        .map(
            Inputs::new().with("text", texts),
            MapOptions::over(["text"]).on_error(ErrorPolicy::Continue),
        )
        .unwrap();
    assert_eq!(r.failures().len(), 1);
    let events = rec.take();
    let item_of = |e: &str| -> Option<usize> {
        let head = e.split(' ').next()?;
        let inside = head.split_once('[')?.1.strip_suffix(']')?;
        inside.parse().ok()
    };
    let per_item = (0..n)
        .map(|i| {
            events
                .iter()
                .filter(|e| item_of(e) == Some(i))
                .cloned()
                .collect()
        })
        .collect();
    let others = events
        .iter()
        .filter(|e| item_of(e).is_none())
        .cloned()
        .collect();
    let sizes = sizes.lock().unwrap().clone();
    (per_item, others, sizes)
}

#[test]
fn observed_nested_pipelines_are_inlined_with_the_row_engines_events() {
    let texts = ["a", " bad ", "ccc ", "dd", "e"];
    let (row_path, row_others, row_loops) =
        observed_nested_events(Arc::new(SeqEngine), &texts, None);
    assert!(row_loops.is_empty(), "the sequential engine calls per item");
    assert_eq!(
        row_path[0],
        [
            "outer[0] item_start",
            "outer[0] node_start trim_word",
            "outer[0] node_end trim_word",
            "outer[0] nested_start scale",
            "outer/scale[0] pipeline_start",
            "outer/scale[0] nested_start measure",
            "outer/scale/measure[0] pipeline_start",
            "outer/scale/measure[0] node_start upper_word",
            "outer/scale/measure[0] node_end upper_word",
            "outer/scale/measure[0] node_start size_of",
            "outer/scale/measure[0] node_end size_of",
            "outer/scale/measure[0] pipeline_end",
            "outer/scale[0] nested_end measure",
            "outer/scale[0] node_start double_size",
            "outer/scale[0] node_end double_size",
            "outer/scale[0] pipeline_end",
            "outer[0] nested_end scale",
            "outer[0] item_end"
        ]
    );
    // A failure inside ends the pipelines it is in, not their nodes.
    assert_eq!(
        row_path[1][9..],
        [
            "outer/scale/measure[1] node_start size_of",
            "outer/scale/measure[1] error size_of",
            "outer/scale/measure[1] pipeline_end",
            "outer/scale[1] pipeline_end",
            "outer[1] item_end"
        ]
    );
    let (columnar, others, loops) = observed_nested_events(Arc::new(df()), &texts, None);
    assert!(
        loops.iter().any(|&n| n > 1),
        "inlined: the inner row loop runs over batches of outer rows ({loops:?})"
    );
    assert_eq!(columnar, row_path);
    assert_eq!(others, row_others);

    // Warm, the cached inner nodes report hits inside the same events.
    let warm = |engine: Arc<dyn hypernodes::Engine>| {
        let dir = tempfile::tempdir().unwrap();
        observed_nested_events(engine.clone(), &texts, Some(dir.path()));
        observed_nested_events(engine, &texts, Some(dir.path()))
    };
    let (row_warm, row_warm_others, _) = warm(Arc::new(SeqEngine));
    assert_eq!(
        row_warm[0][4..8],
        [
            "outer/scale[0] nested_start measure",
            "outer/scale/measure[0] pipeline_start",
            "outer/scale/measure[0] node_cached upper_word",
            "outer/scale/measure[0] node_cached size_of",
        ]
    );
    let (columnar_warm, warm_others, loops) = warm(Arc::new(df()));
    assert_eq!(columnar_warm, row_warm);
    assert_eq!(warm_others, row_warm_others);
    assert!(
        loops.iter().all(|&n| n <= 1),
        "warm, only the failed item runs again ({loops:?})"
    );
}

static LABELS: AtomicUsize = AtomicUsize::new(0);

#[node(output = "label")]
fn label(word: &str, suffix: &str, sep: &str) -> Result<String, String> {
    LABELS.fetch_add(1, Ordering::SeqCst);
    if word == "bad" {
        return Err(format!("cannot label `{word}`"));
    }
    Ok(format!("{word}{sep}{suffix}"))
}

/// Per document: label each of its words with the document's own suffix
/// (an outer column beside the mapped list) and a separator fixed for all.
fn labelling(sizes: Option<Arc<std::sync::Mutex<Vec<usize>>>>) -> Pipeline {
    let mut node = label::node();
    if let Some(sizes) = sizes {
        node = common::log_row_loop(node, &sizes);
    }
    let per_word = Pipeline::new([node]).unwrap().with_name("per_word");
    Pipeline::new([per_word
        .as_node()
        .input_mapping([("words", "word")])
        .output_mapping([("label", "labels")])
        .map_over(["words"])])
    .unwrap()
    .with_name("docs")
}

#[test]
fn map_over_runs_one_inner_plan_over_the_elements_of_many_rows() {
    let words: Vec<Vec<String>> = [
        vec!["a", "b"],
        vec!["c"],
        vec![],
        vec!["d", "e", "f"],
        vec!["g", "bad"],
        vec!["h", "i", "j"],
    ]
    .iter()
    .map(|w| w.iter().map(|s| s.to_string()).collect())
    .collect();
    let suffixes: Vec<String> = (0..words.len()).map(|i| format!("s{i}")).collect();
    let inputs = |words: &Vec<Vec<String>>| {
        Inputs::new()
            .with("words", words.clone())
            .with("suffix", suffixes.clone())
            .with("sep", "-")
    };
    let options = || MapOptions::over(["words", "suffix"]).on_error(ErrorPolicy::Continue);
    let engine = DataFusionEngine::new()
        .with_small_map(0)
        .with_target_partitions(1)
        .with_batch_size(64);
    let dir = tempfile::tempdir().unwrap();
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let before = LABELS.load(Ordering::SeqCst);
    let r = labelling(Some(sizes.clone()))
        .with_engine(engine.clone())
        .with_cache(DiskCache::new(dir.path()))
        .map(inputs(&words), options())
        .unwrap();
    // Every element once, all rows' elements in one inner call.
    assert_eq!(LABELS.load(Ordering::SeqCst) - before, 11);
    assert_eq!(*sizes.lock().unwrap(), [11]);
    let labels = |r: &hypernodes::MapResult| -> Vec<Option<Vec<String>>> {
        r.column::<Vec<String>>("labels")
            .unwrap()
            .iter()
            .map(|v| v.cloned())
            .collect()
    };
    let expected = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        labels(&r),
        [
            expected(&["a-s0", "b-s0"]),
            expected(&["c-s1"]),
            expected(&[]),
            expected(&["d-s3", "e-s3", "f-s3"]),
            None,
            expected(&["h-s5", "i-s5", "j-s5"]),
        ]
    );
    // The failing element is named by outer item and element.
    assert_eq!(r.failures().len(), 1);
    assert_eq!(
        r.failures()[0].error.to_string(),
        "node `label` failed in pipeline `docs/per_word` on item 4/1: cannot label `bad`"
    );

    // The row engine finds every element cached (only `bad` runs again)
    // and gives the same results and error.
    let before = LABELS.load(Ordering::SeqCst);
    let seq = labelling(None)
        .with_engine(SeqEngine)
        .with_cache(DiskCache::new(dir.path()))
        .map(inputs(&words), options())
        .unwrap();
    assert_eq!(LABELS.load(Ordering::SeqCst) - before, 1);
    assert_eq!(labels(&seq), labels(&r));
    assert_eq!(
        seq.failures()[0].error.to_string(),
        r.failures()[0].error.to_string()
    );

    // One more word in one document: that element alone computes.
    let mut more = words.clone();
    more[1].push("k".to_string());
    more[4][1] = "ok".to_string();
    let before = LABELS.load(Ordering::SeqCst);
    let r = labelling(None)
        .with_engine(engine)
        .with_cache(DiskCache::new(dir.path()))
        .map(inputs(&more), options())
        .unwrap();
    assert_eq!(LABELS.load(Ordering::SeqCst) - before, 2, "`k` and `ok`");
    assert_eq!(labels(&r)[1], expected(&["c-s1", "k-s1"]));
    assert_eq!(labels(&r)[4], expected(&["g-s4", "ok-s4"]));
}

#[node(output = "pair")]
fn pair(left: i64, right: i64) -> i64 {
    left * 10 + right
}

#[test]
fn map_over_in_product_mode_crosses_each_rows_lists() {
    let pairs = Pipeline::new([pair::node()]).unwrap().with_name("pairs");
    let p = Pipeline::new([pairs
        .as_node()
        .input_mapping([("lefts", "left"), ("rights", "right")])
        .output_mapping([("pair", "pairs")])
        .map_over_with(["lefts", "rights"], hypernodes::MapMode::Product)])
    .unwrap();
    let lefts = vec![vec![1i64, 2], vec![3], vec![]];
    let rights = vec![vec![4i64, 5, 6], vec![7, 8], vec![9]];
    let run = |engine: Arc<dyn Engine>| {
        p.clone()
            .with_shared_engine(engine)
            .map(
                Inputs::new()
                    .with("lefts", lefts.clone())
                    .with("rights", rights.clone()),
                ["lefts", "rights"],
            )
            .unwrap()
            .values::<Vec<i64>>("pairs")
            .unwrap()
    };
    let expected = vec![vec![14, 15, 16, 24, 25, 26], vec![37, 38], vec![]];
    assert_eq!(run(Arc::new(SeqEngine)), expected);
    assert_eq!(run(Arc::new(df())), expected);

    // Rows whose lists are all empty: empty lists, nothing to run.
    let r = p
        .clone()
        .with_engine(df())
        .map(
            Inputs::new()
                .with("lefts", vec![Vec::<i64>::new(), vec![]])
                .with("rights", vec![vec![1i64], vec![]]),
            ["lefts", "rights"],
        )
        .unwrap();
    assert_eq!(
        r.values::<Vec<i64>>("pairs").unwrap(),
        vec![Vec::<i64>::new(), vec![]]
    );
}

#[test]
fn under_the_stop_policy_items_after_the_earliest_failure_do_not_run() {
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = DataFusionEngine::new()
        .with_small_map(0)
        .with_target_partitions(1)
        .with_batch_size(4);
    let err = Pipeline::new([doubling(&calls)])
        .unwrap()
        .with_engine(engine)
        .map(
            Inputs::new().with("x", (0..100i64).collect::<Vec<_>>()),
            ["x"],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `double` failed in pipeline `pipeline` on item 13: unlucky"
    );
    // Batches of 4 in order: the failing item's batch completes, no later one runs.
    assert_eq!(calls.load(Ordering::SeqCst), 16);
}

#[test]
fn batch_calls_fire_the_same_node_events_as_row_calls() {
    let texts: Vec<String> = (0..7).map(|i| format!(" T{i} ")).collect();
    let (row, batch) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let events = |engine: Arc<dyn Engine>| {
        let recorder = common::Recorder::new();
        Pipeline::new([dual(&row, &batch, false)])
            .unwrap()
            .with_shared_engine(engine)
            .with_callback(recorder.clone())
            .map(Inputs::new().with("text", texts.clone()), ["text"])
            .unwrap();
        let mut events = recorder.take();
        events.sort();
        events
    };
    let seq = events(Arc::new(SeqEngine));
    assert_eq!(
        seq.iter()
            .filter(|e| e.ends_with("node_start lower"))
            .count(),
        7
    );
    let batches = batch.load(Ordering::SeqCst);
    assert_eq!(events(Arc::new(df())), seq);
    assert!(
        batch.load(Ordering::SeqCst) > batches,
        "the batch version ran"
    );
}

static ASYNC_TRIES: std::sync::Mutex<Vec<(usize, i64)>> = std::sync::Mutex::new(Vec::new());

/// Fails its first attempt on every item (per run tag), panics on 5.
#[node(output = "y", retries = 1)]
async fn flaky_later(x: i64, tag: usize) -> Result<i64, String> {
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    if x == 5 {
        panic!("five");
    }
    let first = {
        let mut tries = ASYNC_TRIES.lock().unwrap();
        let first = !tries.contains(&(tag, x));
        tries.push((tag, x));
        first
    };
    if first {
        return Err("first try".into());
    }
    Ok(x * 3)
}

#[test]
fn async_rows_in_flight_keep_retries_errors_and_events() {
    let run = |engine: Arc<dyn Engine>, tag: usize, observe: bool| {
        let recorder = common::Recorder::new();
        let mut p = Pipeline::new([flaky_later::node().with_concurrency(4)])
            .unwrap()
            .with_shared_engine(engine);
        if observe {
            p = p.with_callback(recorder.clone());
        }
        let r = p
            .map(
                Inputs::new()
                    .with("x", (0..8i64).collect::<Vec<_>>())
                    .with("tag", tag),
                MapOptions::over(["x"]).on_error(ErrorPolicy::Continue),
            )
            .unwrap();
        let ys = common::optional_i64s(&r, "y");
        let errors: Vec<String> = r.failures().iter().map(|f| f.error.to_string()).collect();
        let mut events = recorder.take();
        events.sort();
        (ys, errors, events)
    };
    let engine = || -> Arc<dyn Engine> {
        Arc::new(
            DataFusionEngine::new()
                .with_small_map(0)
                .with_target_partitions(1)
                .with_batch_size(8),
        )
    };
    let (seq_ys, seq_errors, seq_events) = run(Arc::new(SeqEngine), 1, true);
    assert_eq!(
        seq_ys,
        [
            Some(0),
            Some(3),
            Some(6),
            Some(9),
            Some(12),
            None,
            Some(18),
            Some(21)
        ]
    );
    assert_eq!(
        seq_errors,
        ["node `flaky_later` failed in pipeline `pipeline` on item 5: panicked: five"]
    );
    // Observed: the same events as the row engine (retries included).
    let (ys, errors, events) = run(engine(), 2, true);
    assert_eq!((ys, errors), (seq_ys.clone(), seq_errors.clone()));
    assert_eq!(events, seq_events);
    // Unobserved (rows awaited concurrently from one thread): same results.
    let (ys, errors, _) = run(engine(), 3, false);
    assert_eq!((ys, errors), (seq_ys, seq_errors));
}

#[test]
fn observed_maps_keep_the_row_loop_and_fire_the_same_events() {
    let xs = || (1..9i64).collect::<Vec<_>>();
    let (seq_failed, mut seq_events, loops) =
        observed_map(common::check::node(), xs(), Arc::new(SeqEngine));
    assert_eq!(seq_failed, [2, 5]);
    assert!(loops.is_empty(), "row engines call per row");
    let (failed, mut events, loops) = observed_map(common::check::node(), xs(), Arc::new(df()));
    assert_eq!(failed, seq_failed);
    seq_events.sort();
    events.sort();
    assert_eq!(events, seq_events);
    assert!(!loops.is_empty(), "the row loop ran");
}

/// A store that finds everything but lends batches without their columns.
struct ShapelessLender(DiskCache);

impl hypernodes::Cache for ShapelessLender {
    fn lookup(
        &self,
        key: &hypernodes::CacheKey,
        sigs: &[hypernodes::Signature],
    ) -> Result<hypernodes::Hits, hypernodes::CacheError> {
        self.0.lookup(key, sigs)
    }

    fn locate(
        &self,
        _key: &hypernodes::CacheKey,
        sigs: &[hypernodes::Signature],
    ) -> Result<Option<hypernodes::Located>, hypernodes::CacheError> {
        Ok(Some(hypernodes::Located {
            columns: vec![Vec::new()],
            hashes: vec![Vec::new()],
            rows: vec![Some((0, 0)); sigs.len()],
        }))
    }

    fn store(
        &self,
        key: &hypernodes::CacheKey,
        rows: &hypernodes::CacheRows,
    ) -> Result<(), hypernodes::CacheError> {
        self.0.store(key, rows)
    }
}

#[test]
fn a_store_lending_malformed_batches_fails_the_map_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let err = Pipeline::new([doubling(&calls)])
        .unwrap()
        .with_engine(df())
        .with_cache(ShapelessLender(DiskCache::new(dir.path())))
        .map(Inputs::new().with("x", vec![1i64, 2, 3]), ["x"])
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("0 value and 0 hash columns for node `double`'s 1 outputs"),
        "{text}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing ran on bad hits");
}

#[node(output = "slept")]
fn nap(x: i64) -> i64 {
    std::thread::sleep(std::time::Duration::from_millis(2));
    x
}

#[test]
fn small_maps_run_on_the_row_path_and_slow_ones_spread_over_the_cores() {
    // 64 items of 2 ms: a small map, but slower than the millisecond it
    // runs on the calling thread, so the rest spreads over the pool.
    let threads = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let seen = threads.clone();
    let record = Node::builder("where")
        .input::<i64>("slept")
        .output::<i64>("y")
        .func(move |args| {
            seen.lock().unwrap().insert(std::thread::current().id());
            Ok(outs![*args.get::<i64>(0)?])
        });
    let xs: Vec<i64> = (0..64).collect();
    let r = Pipeline::new([nap::node(), record])
        .unwrap()
        .with_engine(DataFusionEngine::new())
        .map(Inputs::new().with("x", xs.clone()), ["x"])
        .unwrap();
    assert_eq!(r.values::<i64>("y").unwrap(), xs);
    let threads = threads.lock().unwrap().len();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert!(threads > 1, "ran on {threads} thread(s)");
    }
}
