//! A lowered `map` plan travels: encoded to bytes in one place, decoded in
//! a fresh DataFusion session that knows only a node registry (the cache's
//! location comes with the plan), and run there with the same results,
//! cache entries and execution counts as `DataFusionEngine` in process —
//! cold and warm, through a nested `map_over` pipeline and a node with two
//! outputs. A plan whose node the registry lacks, or links in another
//! version, is refused while decoding, before any row runs. One test runs
//! the decoded plan in a child process (this test binary started again),
//! so nothing can reach back into the process that built it.
#![cfg(feature = "datafusion")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::engines::datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt64Array};
use hypernodes::engines::datafusion::arrow::compute::{sort_to_indices, take};
use hypernodes::engines::datafusion::prelude::SessionContext;
use hypernodes::engines::{DataFusionEngine, NodeCodec};
use hypernodes::node::{NodeRegistry, RegistryError};
use hypernodes::{DiskCache, Error, Inputs, MapOptions, Pipeline, node};

/// Tests that count node executions take this lock: the counters are
/// shared by the whole test binary.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

static SPLITS: AtomicUsize = AtomicUsize::new(0);
static TAGS: AtomicUsize = AtomicUsize::new(0);
static LABELS: AtomicUsize = AtomicUsize::new(0);

/// Two outputs.
#[node(output = ("quotient", "remainder"))]
fn split(x: i64, by: i64) -> (i64, i64) {
    SPLITS.fetch_add(1, Ordering::SeqCst);
    (x / by, x % by)
}

#[node(output = "suffix")]
fn tag(quotient: i64, remainder: i64, sep: &str) -> String {
    TAGS.fetch_add(1, Ordering::SeqCst);
    format!("{sep}q{quotient}r{remainder}")
}

/// Inside the nested pipeline, once per word; fails on `bad`.
#[node(output = "label")]
fn label(word: &str, suffix: &str) -> Result<String, String> {
    LABELS.fetch_add(1, Ordering::SeqCst);
    if word == "bad" {
        return Err(format!("cannot label `{word}`"));
    }
    Ok(format!("{word}{suffix}"))
}

fn pipeline(dir: &Path) -> Pipeline {
    let per_word = Pipeline::new([label::node()])
        .unwrap()
        .with_name("per_word")
        .as_node()
        .input_mapping([("words", "word")])
        .output_mapping([("label", "labels")])
        .map_over(["words"]);
    Pipeline::new([split::node(), tag::node(), per_word])
        .unwrap()
        .with_name("docs")
        .with_cache(DiskCache::new(dir))
}

const ITEMS: i64 = 300;

fn inputs() -> Inputs {
    let xs: Vec<i64> = (0..ITEMS).collect();
    let mut words: Vec<Vec<String>> = (0..ITEMS)
        .map(|i| (0..i % 5).map(|w| format!("w{i}-{w}")).collect())
        .collect();
    // Item 13's second word fails.
    words[13][1] = "bad".to_string();
    Inputs::new()
        .with("x", xs)
        .with("words", words)
        .with("by", 7i64)
        .with("sep", "-")
}

fn options() -> MapOptions {
    MapOptions::over(["x", "words"]).continue_on_error()
}

fn engine() -> DataFusionEngine {
    DataFusionEngine::new()
        .with_target_partitions(2)
        .with_batch_size(64)
}

/// How many times each node ran during `f`: split, tag, label.
fn counting<T>(f: impl FnOnce() -> T) -> (T, [usize; 3]) {
    let before = [&SPLITS, &TAGS, &LABELS].map(|c| c.load(Ordering::SeqCst));
    let out = f();
    let after = [&SPLITS, &TAGS, &LABELS].map(|c| c.load(Ordering::SeqCst));
    (out, [0, 1, 2].map(|i| after[i] - before[i]))
}

/// Decodes `bytes` in a new session with `registry` and runs the plan:
/// its output columns (without `__item`) in item order, and each failed
/// item with its error's message.
fn run_decoded(bytes: &[u8], registry: NodeRegistry) -> (Vec<ArrayRef>, Vec<(usize, String)>) {
    run_decoded_with(bytes, registry, ITEMS as usize)
}

/// [`run_decoded`] for a map of `expected_items` items.
fn run_decoded_with(
    bytes: &[u8],
    registry: NodeRegistry,
    expected_items: usize,
) -> (Vec<ArrayRef>, Vec<(usize, String)>) {
    let codec = NodeCodec::new(registry);
    let ctx = SessionContext::new();
    let plan = codec.decode_plan(bytes, &ctx).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let batches = runtime
        .block_on(hypernodes::engines::datafusion::physical_plan::collect(
            plan,
            ctx.task_ctx(),
        ))
        .unwrap();
    finish(&codec, batches, expected_items)
}

/// Decodes the logical plan `bytes` in a new session of the engine's with
/// `registry`, optimizes and runs it there, as [`run_decoded`] does.
fn run_decoded_logical(
    bytes: &[u8],
    registry: NodeRegistry,
) -> (Vec<ArrayRef>, Vec<(usize, String)>) {
    let codec = NodeCodec::new(registry);
    let ctx = engine().session();
    let plan = codec.decode_logical_plan(bytes, &ctx).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let batches = runtime
        .block_on(async { ctx.execute_logical_plan(plan).await?.collect().await })
        .unwrap();
    finish(&codec, batches, ITEMS as usize)
}

/// Closes `codec` after its plan produced `batches`: the output columns
/// (without `__item`) in item order, and the failed items' messages.
fn finish(
    codec: &NodeCodec,
    batches: Vec<RecordBatch>,
    expected_items: usize,
) -> (Vec<ArrayRef>, Vec<(usize, String)>) {
    let outcome = codec.close().unwrap();
    assert!(
        outcome.cache_errors.is_empty(),
        "{:?}",
        outcome.cache_errors
    );
    // The failed items come back with the rows (the plan's `__errors`).
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    let failures = hypernodes::engines::failures(&batches)
        .unwrap()
        .iter()
        .map(|(i, e)| (*i, e.to_string()))
        .collect();
    let schema = batches[0].schema();
    let all =
        hypernodes::engines::datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
    let items = all
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("the item column")
        .clone();
    assert_eq!(items.len(), expected_items);
    let order = sort_to_indices(&items, None, None).unwrap();
    // The plan ends with what it reports besides results.
    let outputs = all.num_columns() - 2;
    assert_eq!(all.schema().field(outputs).name(), "__errors");
    assert_eq!(all.schema().field(outputs + 1).name(), "__counts");
    let columns = all.columns()[1..outputs]
        .iter()
        .map(|c| take(c.as_ref(), &order, None).unwrap())
        .collect();
    (columns, failures)
}

/// Rows per node in the cache at `dir`, sorted.
fn cache_rows(dir: &Path) -> Vec<(String, usize)> {
    let mut rows: Vec<(String, usize)> = DiskCache::new(dir)
        .stats()
        .unwrap()
        .into_iter()
        .map(|s| (s.node, s.rows))
        .collect();
    rows.sort();
    rows
}

fn columns(batch: &RecordBatch) -> Vec<ArrayRef> {
    batch.columns().to_vec()
}

/// What the in-process engine gives, cold, with a cache at `dir`: the
/// output columns, each failed item's message, and how many times each
/// node ran.
type InProcess = (Vec<ArrayRef>, Vec<(usize, String)>, [usize; 3]);

fn in_process(dir: &Path) -> InProcess {
    let (result, counts) = counting(|| {
        pipeline(dir)
            .with_engine(engine())
            .map(inputs(), options())
            .unwrap()
    });
    let failures = result
        .failures()
        .iter()
        .map(|f| (f.index, f.error.to_string()))
        .collect();
    (
        columns(&result.to_record_batch().unwrap()),
        failures,
        counts,
    )
}

/// Runs a decoded plan (`run`, on the cache at `there`) cold and then
/// warm, and checks both against the in-process run on `here`: the same
/// results and failures, cold the same counts and cache rows, warm only
/// the failed word again (failures are not cached).
fn check_decoded(
    run: impl Fn() -> (Vec<ArrayRef>, Vec<(usize, String)>),
    (expected, expected_failures, counts_here): &InProcess,
    here: &Path,
    there: &Path,
) {
    let ((cold, failures), counts) = counting(&run);
    assert_eq!(&counts, counts_here);
    assert_eq!(&cold, expected);
    assert_eq!(&failures, expected_failures);
    assert_eq!(cache_rows(there), cache_rows(here));
    let ((warm, failures), counts) = counting(&run);
    assert_eq!(counts, [0, 0, 1]);
    assert_eq!(&warm, expected);
    assert_eq!(&failures, expected_failures);
}

#[test]
fn a_plan_decoded_elsewhere_gives_the_same_results_cache_and_counts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();

    // In process, cold.
    let reference = in_process(here.path());
    let total_words: usize = (0..ITEMS).map(|i| (i % 5) as usize).sum();
    assert_eq!(reference.2, [ITEMS as usize, ITEMS as usize, total_words]);
    assert_eq!(
        reference.1,
        [(
            13,
            "node `label` failed in pipeline `docs/per_word` on item 13/1: cannot label `bad`"
                .to_string()
        )]
    );

    // Encoded (nothing runs), then decoded with only the registry, cold
    // and warm.
    let p = pipeline(there.path());
    let (bytes, none) = counting(|| engine().encode_map(&p, inputs(), options()).unwrap());
    assert_eq!(none, [0, 0, 0], "encoding runs nothing");
    let registry = || NodeRegistry::new().with_pipeline(&p);
    check_decoded(
        || run_decoded(&bytes, registry()),
        &reference,
        here.path(),
        there.path(),
    );

    // What the decoded plan stored, the in-process engines find.
    let (_, counts) = counting(|| {
        pipeline(there.path())
            .with_engine(hypernodes::SeqEngine)
            .map(inputs(), options())
            .unwrap()
    });
    assert_eq!(counts, [0, 0, 1]);
}

#[test]
fn a_logical_plan_decoded_elsewhere_gives_the_same_results_cache_and_counts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let reference = in_process(here.path());

    // What a client sends a scheduler: the logical plan, input rows
    // included; optimized again and run where it is decoded.
    let p = pipeline(there.path());
    let bytes = engine()
        .encode_map_logical(&p, inputs(), options())
        .unwrap();
    let registry = || NodeRegistry::new().with_pipeline(&p);
    check_decoded(
        || run_decoded_logical(&bytes, registry()),
        &reference,
        here.path(),
        there.path(),
    );

    // An unknown node is refused when the logical plan is decoded.
    let err = NodeCodec::new(NodeRegistry::new())
        .decode_logical_plan(&bytes, &engine().session())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Registry(RegistryError::UnknownNode { .. })),
        "{err:?}"
    );
}

#[node(output = "y")]
fn double(x: i64) -> i64 {
    x * 2
}

#[node(output = "y")]
fn triple(x: i64) -> i64 {
    x * 3
}

#[test]
fn a_plan_naming_an_unknown_or_different_node_is_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new([double::node()])
        .unwrap()
        .with_cache(DiskCache::new(dir.path()));
    let bytes = engine()
        .encode_map(&p, Inputs::new().with("x", vec![1i64, 2, 3]), ["x"])
        .unwrap();
    let ctx = SessionContext::new();

    // Not linked at all.
    let err = NodeCodec::new(NodeRegistry::new())
        .decode_plan(&bytes, &ctx)
        .unwrap_err();
    let wanted = double::node().code_hash();
    match &err {
        Error::Registry(RegistryError::UnknownNode { node, wanted: w }) => {
            assert_eq!(node, "double");
            assert_eq!(*w, wanted);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("`double`"), "{err}");

    // Linked in another version of its code.
    let other = triple::node().with_name("double");
    let err = NodeCodec::new(NodeRegistry::new().with_node(other.clone()))
        .decode_plan(&bytes, &ctx)
        .unwrap_err();
    match &err {
        Error::Registry(RegistryError::CodeMismatch {
            node,
            wanted: w,
            linked,
        }) => {
            assert_eq!(node, "double");
            assert_eq!(*w, wanted);
            assert_eq!(*linked, other.code_hash());
            assert_ne!(*linked, wanted);
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&wanted.to_hex()) && text.contains(&other.code_hash().to_hex()),
        "{text}"
    );
    // Nothing ran, nothing was stored.
    assert!(cache_rows(dir.path()).is_empty());
}

/// A model: no Arrow form, made by a factory.
struct Model {
    scale: i64,
}

#[node(output = "scored")]
fn score(x: i64, model: &Model) -> i64 {
    x * model.scale
}

/// A resource the registry makes on first use, counting how many times.
fn counted_model(made: &Arc<AtomicUsize>) -> hypernodes::Resource {
    let made = made.clone();
    hypernodes::Resource::lazy("model-v1", move || {
        made.fetch_add(1, Ordering::SeqCst);
        Ok(Model { scale: 3 })
    })
}

#[test]
fn resources_come_from_the_registry_made_once_and_only_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new([score::node()])
        .unwrap()
        .with_cache(DiskCache::new(dir.path()));
    let here = Arc::new(AtomicUsize::new(0));
    let xs: Vec<i64> = (0..1000).collect();
    let bytes = engine()
        .encode_map(
            &p,
            Inputs::new()
                .with("x", xs.clone())
                .with("model", counted_model(&here)),
            ["x"],
        )
        .unwrap();
    assert_eq!(here.load(Ordering::SeqCst), 0, "encoding makes nothing");

    // Another process: its registry provides the model, made once however
    // many partitions and batches (1000 rows in batches of 64 on 2).
    let there = Arc::new(AtomicUsize::new(0));
    let registry = NodeRegistry::new()
        .with_pipeline(&p)
        .with_resource("model", counted_model(&there));
    let (columns, failures) = run_decoded_with(&bytes, registry.clone(), 1000);
    assert!(failures.is_empty(), "{failures:?}");
    let scored = columns[0]
        .as_any()
        .downcast_ref::<hypernodes::engines::datafusion::arrow::array::Int64Array>()
        .unwrap();
    assert_eq!(
        scored.values().to_vec(),
        xs.iter().map(|x| x * 3).collect::<Vec<_>>()
    );
    assert_eq!(there.load(Ordering::SeqCst), 1);

    // A third process, everything cached: the model is never made.
    let third = Arc::new(AtomicUsize::new(0));
    let registry = NodeRegistry::new()
        .with_pipeline(&p)
        .with_resource("model", counted_model(&third));
    run_decoded_with(&bytes, registry, 1000);
    assert_eq!(third.load(Ordering::SeqCst), 0);

    // A registry without the resource: the decoding names node and input.
    let err = NodeCodec::new(NodeRegistry::new().with_pipeline(&p))
        .decode_plan(&bytes, &SessionContext::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`score`") && err.contains("`model`"), "{err}");
}

#[test]
fn a_datafusion_failure_keeps_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new([double::node()])
        .unwrap()
        .with_cache(DiskCache::new(dir.path()));
    let mut bytes = engine()
        .encode_map(&p, Inputs::new().with("x", vec![1i64, 2, 3]), ["x"])
        .unwrap();
    bytes.truncate(bytes.len() / 2);
    let err = NodeCodec::new(NodeRegistry::new().with_pipeline(&p))
        .decode_plan(&bytes, &SessionContext::new())
        .unwrap_err();
    assert!(matches!(err, Error::External { .. }), "{err:?}");
    // The chain of causes reaches DataFusion's own error.
    let mut cause: &dyn std::error::Error = &err;
    let mut found = false;
    while let Some(next) = cause.source() {
        found |= next
            .downcast_ref::<hypernodes::engines::datafusion::error::DataFusionError>()
            .is_some();
        cause = next;
    }
    assert!(found, "{err:?}");
}

/// The child half of [`a_plan_runs_in_another_process`]: does nothing
/// unless that test started this process to decode and run a plan.
#[test]
fn child_decodes_and_runs_a_plan() {
    let (Ok(plan), Ok(out)) = (
        std::env::var("HYPERNODES_PROTO_PLAN"),
        std::env::var("HYPERNODES_PROTO_OUT"),
    ) else {
        return;
    };
    let bytes = std::fs::read(&plan).unwrap();
    // This process links the same nodes: its registry comes from the same
    // pipeline code (the cache directory given here is not used; the
    // plan carries its own).
    let registry = NodeRegistry::new().with_pipeline(&pipeline(Path::new("unused")));
    let ((columns, failures), counts) = counting(|| run_decoded(&bytes, registry));
    let fields: Vec<(String, ArrayRef)> = columns
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("c{i}"), c))
        .collect();
    let batch = RecordBatch::try_from_iter(fields).unwrap();
    let mut ipc = Vec::new();
    {
        let mut writer =
            hypernodes::engines::datafusion::arrow::ipc::writer::StreamWriter::try_new(
                &mut ipc,
                &batch.schema(),
            )
            .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    std::fs::write(format!("{out}.arrow"), ipc).unwrap();
    let failures: Vec<String> = failures.iter().map(|(i, e)| format!("{i}: {e}")).collect();
    std::fs::write(
        format!("{out}.txt"),
        format!("{counts:?}\n{}", failures.join("\n")),
    )
    .unwrap();
}

/// Runs this test binary again as a child that decodes `bytes` and runs
/// them: its results (in item order) and its `counts` line with failures.
fn run_in_child(bytes: &[u8], dir: &Path) -> (Vec<ArrayRef>, String) {
    let plan = dir.join("plan.bin");
    let out = dir.join("out");
    std::fs::write(&plan, bytes).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_decodes_and_runs_a_plan",
            "--test-threads=1",
        ])
        .env("HYPERNODES_PROTO_PLAN", &plan)
        .env("HYPERNODES_PROTO_OUT", &out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A child that hangs fails the test instead of stalling CI.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child process did not finish within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "the child failed: {status}");
    let ipc = std::fs::read(format!("{}.arrow", out.display())).unwrap();
    let reader = hypernodes::engines::datafusion::arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(ipc),
        None,
    )
    .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let text = std::fs::read_to_string(format!("{}.txt", out.display())).unwrap();
    (batches[0].columns().to_vec(), text)
}

#[test]
fn a_plan_runs_in_another_process() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let expected = pipeline(here.path())
        .with_engine(engine())
        .map(inputs(), options())
        .unwrap();
    let failure = format!("13: {}", expected.failures()[0].error);
    let expected = columns(&expected.to_record_batch().unwrap());
    let bytes = engine()
        .encode_map(&pipeline(there.path()), inputs(), options())
        .unwrap();
    let total_words: usize = (0..ITEMS).map(|i| (i % 5) as usize).sum();

    // Cold in the child: every node ran there, results as in process.
    let (cold, report) = run_in_child(&bytes, work.path());
    assert_eq!(cold, expected);
    assert_eq!(
        report,
        format!("[{ITEMS}, {ITEMS}, {total_words}]\n{failure}")
    );
    assert_eq!(cache_rows(there.path()), cache_rows(here.path()));

    // Warm in a second child: only the failed word runs again.
    let (warm, report) = run_in_child(&bytes, work.path());
    assert_eq!(warm, expected);
    assert_eq!(report, format!("[0, 0, 1]\n{failure}"));
}
