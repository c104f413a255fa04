//! Callbacks: the exact lifecycle events, compared with the expected log.

mod common;

use hypernodes::{Pipeline, inputs, node};

#[node(output = "cleaned")]
fn clean(text: String) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

#[node(output = "report")]
fn summarize(word_count: i64) -> String {
    format!("{word_count} words")
}

fn text_processor() -> Pipeline {
    Pipeline::new([clean::node(), count::node()])
        .unwrap()
        .with_name("text_processor")
}

#[test]
fn run_of_a_nested_pipeline_reports_every_event_in_order() {
    for (name, engine) in common::engines() {
        let rec = common::Recorder::new();
        let analysis = Pipeline::new([text_processor().as_node(), summarize::node()])
            .unwrap()
            .with_name("analysis")
            .with_shared_engine(engine)
            .with_callback(rec.clone());
        analysis.run(inputs! {"text" => "a b"}).unwrap();
        assert_eq!(
            rec.take(),
            [
                "analysis pipeline_start",
                "analysis nested_start text_processor",
                "analysis/text_processor pipeline_start",
                "analysis/text_processor node_start clean",
                "analysis/text_processor node_end clean",
                "analysis/text_processor node_start count",
                "analysis/text_processor node_end count",
                "analysis/text_processor pipeline_end",
                "analysis nested_end text_processor",
                "analysis node_start summarize",
                "analysis node_end summarize",
                "analysis pipeline_end",
            ],
            "{name}"
        );
    }
}

#[test]
fn map_reports_items() {
    let expected = [
        "text_processor pipeline_start",
        "text_processor map_start 2",
        "text_processor[0] item_start",
        "text_processor[0] node_start clean",
        "text_processor[0] node_end clean",
        "text_processor[0] node_start count",
        "text_processor[0] node_end count",
        "text_processor[0] item_end",
        "text_processor[1] item_start",
        "text_processor[1] node_start clean",
        "text_processor[1] node_end clean",
        "text_processor[1] node_start count",
        "text_processor[1] node_end count",
        "text_processor[1] item_end",
        "text_processor map_end",
        "text_processor pipeline_end",
    ];
    for (name, engine) in common::engines() {
        let rec = common::Recorder::new();
        let p = text_processor()
            .with_shared_engine(engine)
            .with_callback(rec.clone());
        p.map(inputs! {"text" => vec!["a", "b"]}, ["text"]).unwrap();
        let mut events = rec.take();
        if name == "seq" {
            assert_eq!(events, expected);
        } else {
            // Items interleave across threads: the same events, in any order
            // between items, in order within each item.
            for item in ["[0]", "[1]"] {
                let mine: Vec<&String> = events.iter().filter(|e| e.contains(item)).collect();
                let want: Vec<&&str> = expected.iter().filter(|e| e.contains(item)).collect();
                assert_eq!(mine, want, "{name}");
            }
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.sort();
            events.sort();
            assert_eq!(events, want, "{name}");
        }
    }
}

#[test]
fn nested_pipelines_report_to_their_own_callbacks_too() {
    let inner_rec = common::Recorder::new();
    let outer_rec = common::Recorder::new();
    let inner = text_processor().with_callback(inner_rec.clone());
    let p = Pipeline::new([inner.as_node(), summarize::node()])
        .unwrap()
        .with_name("outer")
        .with_callback(outer_rec.clone());
    p.run(inputs! {"text" => "x"}).unwrap();
    let inner_events = inner_rec.take();
    assert_eq!(inner_events.len(), 6);
    assert!(
        inner_events
            .iter()
            .all(|e| e.starts_with("outer/text_processor "))
    );
    assert_eq!(outer_rec.take().len(), 12);
}

/// Each item's events (cold, then warm, with a cache), in the order they
/// were reported, as recorded by `observe::Recorder`.
fn events_per_item(
    engine: std::sync::Arc<dyn hypernodes::Engine>,
) -> std::collections::BTreeMap<Vec<usize>, Vec<hypernodes::observe::EventKind>> {
    use hypernodes::observe::Recorder;
    let dir = tempfile::tempdir().unwrap();
    let mut per_item: std::collections::BTreeMap<Vec<usize>, Vec<_>> = Default::default();
    for _ in ["cold", "warm"] {
        let recorder = std::sync::Arc::new(Recorder::new());
        // (Every item's signatures differ: items sharing one would be
        // misses or hits depending on batch boundaries, which differ by
        // engine.)
        Pipeline::new([clean::node(), count::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(hypernodes::DiskCache::new(dir.path()))
            .with_callback(recorder.clone())
            .map(
                inputs! {"text" => (0..40).map(|i| format!(" Text {i} ")).collect::<Vec<_>>()},
                ["text"],
            )
            .unwrap();
        for event in recorder.take() {
            if !event.items.is_empty() {
                per_item.entry(event.items).or_default().push(event.kind);
            }
        }
    }
    per_item
}

#[test]
fn the_recorder_sees_each_items_events_in_the_reference_order_on_every_engine() {
    let reference = events_per_item(std::sync::Arc::new(hypernodes::SeqEngine));
    assert_eq!(reference.len(), 40);
    for (name, engine) in common::engines() {
        let events = events_per_item(engine);
        assert_eq!(events, reference, "{name}");
    }
}

/// Counts what a counting callback (one without per-item events) receives.
#[derive(Default)]
struct Counts {
    reports: std::sync::atomic::AtomicUsize,
    computed: std::sync::atomic::AtomicUsize,
    ended: std::sync::atomic::AtomicUsize,
}

impl hypernodes::Callback for Counts {
    fn item_events(&self) -> bool {
        false
    }
    fn on_node_batch(
        &self,
        _: &hypernodes::CallbackContext<'_>,
        _: &str,
        counts: hypernodes::NodeCounts,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        self.reports.fetch_add(1, Relaxed);
        self.computed.fetch_add(counts.computed, Relaxed);
    }
    fn on_items_batch(&self, _: &hypernodes::CallbackContext<'_>, counts: hypernodes::ItemCounts) {
        use std::sync::atomic::Ordering::Relaxed;
        self.reports.fetch_add(1, Relaxed);
        self.ended.fetch_add(counts.ended, Relaxed);
    }
}

/// Maps `clean` then `count` over `n` short texts ("t <i>", two words
/// each) on `engine`, with `callbacks` attached.
fn clean_and_count(
    engine: std::sync::Arc<dyn hypernodes::Engine>,
    callbacks: &[std::sync::Arc<dyn hypernodes::Callback>],
    n: usize,
) -> hypernodes::MapResult {
    let texts: Vec<String> = (0..n).map(|i| format!("t {i}")).collect();
    let mut pipeline = Pipeline::new([clean::node(), count::node()])
        .unwrap()
        .with_shared_engine(engine);
    for callback in callbacks {
        pipeline = pipeline.with_callback(callback.clone());
    }
    pipeline
        .map(hypernodes::Inputs::new().with("text", texts), ["text"])
        .unwrap()
}

#[test]
fn a_counting_callback_gets_counts_per_chunk_not_per_item() {
    use std::sync::atomic::Ordering::Relaxed;
    const N: usize = 20_000;
    for (name, engine) in common::engines() {
        let counts = std::sync::Arc::new(Counts::default());
        clean_and_count(
            engine,
            &[counts.clone() as std::sync::Arc<dyn hypernodes::Callback>],
            N,
        );
        assert_eq!(counts.computed.load(Relaxed), 2 * N, "{name}: every call");
        assert_eq!(counts.ended.load(Relaxed), N, "{name}: every item");
        // Quick items: a few reports per chunk or batch, never one per item
        // (the matrix's plan engine has batches of 4 rows: a report per
        // batch and node is what it promises).
        let reports = counts.reports.load(Relaxed);
        let bound = if name == "datafusion" { N } else { N / 10 };
        assert!(reports <= bound, "{name}: {reports} reports for {N} items");
    }
}

/// Takes node ends and item starts and ends as batches, remembering each
/// batch's size and every item it named.
#[derive(Default)]
struct Batches {
    node_end_calls: std::sync::Mutex<Vec<(String, usize)>>,
    ended_items: std::sync::Mutex<Vec<(String, usize)>>,
    item_starts: std::sync::Mutex<Vec<usize>>,
    item_ends: std::sync::Mutex<Vec<usize>>,
    mismatched_times: std::sync::atomic::AtomicUsize,
    per_item_calls: std::sync::atomic::AtomicUsize,
}

impl hypernodes::Callback for Batches {
    fn on_node_ends(&self, batch: &hypernodes::ItemBatch<'_>, node: &str, _: std::time::Duration) {
        self.node_end_calls
            .lock()
            .unwrap()
            .push((node.to_string(), batch.len()));
        let mut ended = self.ended_items.lock().unwrap();
        batch.for_each(|_, ctx| ended.push((node.to_string(), ctx.item().unwrap())));
    }
    fn on_map_item_starts(&self, batch: &hypernodes::ItemBatch<'_>) {
        let mut starts = self.item_starts.lock().unwrap();
        batch.for_each(|_, ctx| starts.push(ctx.item().unwrap()));
    }
    fn on_map_item_ends(&self, batch: &hypernodes::ItemBatch<'_>, elapsed: &[std::time::Duration]) {
        if elapsed.len() != batch.len() {
            self.mismatched_times
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut ends = self.item_ends.lock().unwrap();
        batch.for_each(|_, ctx| ends.push(ctx.item().unwrap()));
    }
    // Overridden batch methods replace the per-item calls they would make.
    fn on_node_end(&self, _: &hypernodes::CallbackContext<'_>, _: &str, _: std::time::Duration) {
        self.per_item_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn batch_callbacks_get_every_item_once_in_batches_on_columnar_engines() {
    use std::sync::atomic::Ordering::Relaxed;
    const N: usize = 3_000;
    for (name, engine) in common::engines() {
        let seen = std::sync::Arc::new(Batches::default());
        clean_and_count(
            engine,
            &[seen.clone() as std::sync::Arc<dyn hypernodes::Callback>],
            N,
        );
        let sorted = |mut v: Vec<usize>| {
            v.sort_unstable();
            v
        };
        let all: Vec<usize> = (0..N).collect();
        assert_eq!(
            sorted(seen.item_starts.lock().unwrap().clone()),
            all,
            "{name}"
        );
        assert_eq!(
            sorted(seen.item_ends.lock().unwrap().clone()),
            all,
            "{name}"
        );
        for node in ["clean", "count"] {
            let ended: Vec<usize> = seen
                .ended_items
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| n == node)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(sorted(ended), all, "{name}: {node} ended once per item");
        }
        assert_eq!(seen.mismatched_times.load(Relaxed), 0, "{name}");
        assert_eq!(seen.per_item_calls.load(Relaxed), 0, "{name}");
        let calls = seen.node_end_calls.lock().unwrap();
        let largest = calls.iter().map(|(_, n)| *n).max().unwrap();
        match name {
            // Batches of 4 rows: one call per batch and node.
            "datafusion" => {
                assert_eq!(largest, 4, "{name}");
                assert!(calls.len() < 2 * N / 3, "{name}: {} calls", calls.len());
            }
            // The row path: one item per call.
            _ => {
                assert_eq!(largest, 1, "{name}");
                assert_eq!(calls.len(), 2 * N, "{name}");
            }
        }
    }
}

/// Leaves every event at its defaults: engines learn it takes none.
struct Silent;

impl hypernodes::Callback for Silent {}

/// Counts node starts, node ends and item ends, forwarding each to a
/// silent callback that is its first field (so shares its address): the
/// forwarded defaults run for the field, not for this type.
#[derive(Default)]
#[repr(C)]
struct Forwards {
    inner: SilentField,
    starts: std::sync::atomic::AtomicUsize,
    ends: std::sync::atomic::AtomicUsize,
    item_ends: std::sync::atomic::AtomicUsize,
    zero_times: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct SilentField;

impl hypernodes::Callback for SilentField {}

impl hypernodes::Callback for Forwards {
    fn on_node_start(&self, ctx: &hypernodes::CallbackContext<'_>, node: &str) {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.on_node_start(ctx, node);
    }
    fn on_node_end(
        &self,
        ctx: &hypernodes::CallbackContext<'_>,
        node: &str,
        took: std::time::Duration,
    ) {
        self.ends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if took.is_zero() {
            self.zero_times
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.on_node_end(ctx, node, took);
    }
    fn on_map_item_end(&self, ctx: &hypernodes::CallbackContext<'_>, took: std::time::Duration) {
        self.item_ends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if took.is_zero() {
            self.zero_times
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.on_map_item_end(ctx, took);
    }
}

/// Takes node starts as batches and hands each item to its own default
/// per-item method.
#[derive(Default)]
struct OwnDefault(std::sync::atomic::AtomicUsize);

impl hypernodes::Callback for OwnDefault {
    fn on_node_starts(&self, batch: &hypernodes::ItemBatch<'_>, node: &str) {
        self.0
            .fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
        batch.for_each(|_, ctx| self.on_node_start(ctx, node));
    }
}

#[test]
fn callbacks_that_forward_or_override_one_form_get_every_event_beside_a_silent_one() {
    use std::sync::atomic::Ordering::Relaxed;
    const N: usize = 3_000;
    for (name, engine) in common::engines() {
        let forwards = std::sync::Arc::new(Forwards::default());
        let own = std::sync::Arc::new(OwnDefault::default());
        let r = clean_and_count(
            engine,
            &[std::sync::Arc::new(Silent), forwards.clone(), own.clone()],
            N,
        );
        assert_eq!(r.values::<i64>("word_count").unwrap(), vec![2; N], "{name}");
        assert_eq!(forwards.starts.load(Relaxed), 2 * N, "{name}: node starts");
        assert_eq!(forwards.ends.load(Relaxed), 2 * N, "{name}: node ends");
        assert_eq!(forwards.item_ends.load(Relaxed), N, "{name}: item ends");
        assert_eq!(
            forwards.zero_times.load(Relaxed),
            0,
            "{name}: every time read"
        );
        assert_eq!(own.0.load(Relaxed), 2 * N, "{name}: batch override");
    }
}
