//! Caching: exact execution counts for the scenarios users rely on (new,
//! edited, dropped items; code changes of one node), on every engine, with
//! a real `DiskCache` directory.

mod common;

use hypernodes::{DiskCache, Inputs, MapOptions, Node, Pipeline, inputs, node, outs};

fn node_a() -> Node {
    Node::builder("a")
        .input::<i64>("x")
        .output::<i64>("a")
        .version("1")
        .func(|args| Ok(outs![args.get::<i64>(0)? + 1]))
}

fn node_b(version: &str, factor: i64) -> Node {
    Node::builder("b")
        .input::<i64>("a")
        .output::<i64>("b")
        .version(version)
        .func(move |args| Ok(outs![args.get::<i64>(0)? * factor]))
}

fn node_c(version: &str) -> Node {
    Node::builder("c")
        .input::<i64>("b")
        .output::<i64>("c")
        .version(version)
        .func(|args| Ok(outs![args.get::<i64>(0)? + 100]))
}

/// Runs `map` over `xs` and returns how many times a, b and c executed, and c's values.
fn map_counts(p: &Pipeline, xs: Vec<i64>) -> ((usize, usize, usize), Vec<i64>) {
    let rec = common::Recorder::new();
    let p = p.clone().with_callback(rec.clone());
    let r = p.map(Inputs::new().with("x", xs), ["x"]).unwrap();
    let events = rec.take();
    let n = |node: &str| {
        let end = format!(" node_end {node}");
        events.iter().filter(|e| e.ends_with(&end)).count()
    };
    ((n("a"), n("b"), n("c")), r.values::<i64>("c").unwrap())
}

fn expected(xs: &[i64], factor: i64) -> Vec<i64> {
    xs.iter().map(|x| (x + 1) * factor + 100).collect()
}

#[test]
fn only_new_and_edited_items_compute() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new([node_a(), node_b("1", 2), node_c("1")])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(dir.path()));
        let ten: Vec<i64> = (0..10).collect();
        assert_eq!(
            map_counts(&p, ten.clone()),
            ((10, 10, 10), expected(&ten, 2)),
            "{name}: first"
        );
        assert_eq!(
            map_counts(&p, ten.clone()),
            ((0, 0, 0), expected(&ten, 2)),
            "{name}: again"
        );
        let fifteen: Vec<i64> = (0..15).collect();
        assert_eq!(
            map_counts(&p, fifteen.clone()),
            ((5, 5, 5), expected(&fifteen, 2)),
            "{name}: grow"
        );
        let mut edited = fifteen.clone();
        edited[3] = 1000;
        assert_eq!(
            map_counts(&p, edited.clone()),
            ((1, 1, 1), expected(&edited, 2)),
            "{name}: edit"
        );
        let mut dropped = edited.clone();
        dropped.remove(7);
        assert_eq!(
            map_counts(&p, dropped.clone()),
            ((0, 0, 0), expected(&dropped, 2)),
            "{name}: drop"
        );

        // A new process (a new cache instance on the same directory) sees it all.
        let again = Pipeline::new([node_a(), node_b("1", 2), node_c("1")])
            .unwrap()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()));
        assert_eq!(
            map_counts(&again, fifteen.clone()).0,
            (0, 0, 0),
            "{name}: persisted"
        );
    }
}

#[test]
fn code_changes_recompute_the_node_and_what_its_values_change() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let build = |b: Node, c: Node| {
            Pipeline::new([node_a(), b, c])
                .unwrap()
                .with_shared_engine(engine.clone())
                .with_cache(DiskCache::new(dir.path()))
        };
        let xs: Vec<i64> = (0..6).collect();
        assert_eq!(
            map_counts(&build(node_b("1", 2), node_c("1")), xs.clone()).0,
            (6, 6, 6)
        );
        // The last node's code changed: only it runs.
        let r = map_counts(&build(node_b("1", 2), node_c("2")), xs.clone());
        assert_eq!(r, ((0, 0, 6), expected(&xs, 2)), "{name}: edit c");
        // b's code changed but gives the same values: c stays cached.
        let r = map_counts(&build(node_b("1-refactored", 2), node_c("2")), xs.clone());
        assert_eq!(r, ((0, 6, 0), expected(&xs, 2)), "{name}: refactor b");
        // b now computes something else: b and c run.
        let r = map_counts(&build(node_b("3", 7), node_c("2")), xs.clone());
        assert_eq!(r, ((0, 6, 6), expected(&xs, 7)), "{name}: change b");
    }
}

#[node(output = "word_count")]
fn count_words(text: &str) -> i64 {
    text.split_whitespace().count() as i64
}

#[node(output = "total")]
fn total(word_counts: &[i64]) -> i64 {
    word_counts.iter().sum()
}

#[test]
fn run_and_nested_map_over_cache_per_element() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Pipeline::new([count_words::node()])
            .unwrap()
            .with_name("inner");
        let batch = inner
            .as_node()
            .input_mapping([("texts", "text")])
            .output_mapping([("word_count", "word_counts")])
            .map_over(["texts"]);
        let rec = common::Recorder::new();
        let p = Pipeline::new([batch, total::node()])
            .unwrap()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(rec.clone());
        let runs = |node: &str| {
            let end = format!(" node_end {node}");
            rec.take().iter().filter(|e| e.ends_with(&end)).count()
        };
        let out = p.run(inputs! {"texts" => vec!["a b", "c"]}).unwrap();
        assert_eq!(*out.get::<i64>("total").unwrap(), 3);
        assert_eq!(runs("count_words"), 2, "{name}");
        let out = p
            .run(inputs! {"texts" => vec!["a b", "c", "d e f"]})
            .unwrap();
        assert_eq!(*out.get::<i64>("total").unwrap(), 6);
        assert_eq!(runs("count_words"), 1, "{name}: one new element");
        p.run(inputs! {"texts" => vec!["a b", "c", "d e f"]})
            .unwrap();
        let events = rec.take();
        assert!(
            !events.iter().any(|e| e.contains("node_end")),
            "{name}: all cached: {events:?}"
        );
        assert!(
            events.iter().any(|e| e.ends_with("node_cached total")),
            "{name}"
        );
    }
}

#[test]
fn failed_items_are_not_cached_and_the_rest_are() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let rec = common::Recorder::new();
        let p = Pipeline::new([common::check::node()])
            .unwrap()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(rec.clone());
        let options = || MapOptions::over(["x"]).continue_on_error();
        let r = p.map(inputs! {"x" => vec![1i64, 3, 4]}, options()).unwrap();
        assert_eq!(r.failures().len(), 1);
        rec.take();
        let r = p.map(inputs! {"x" => vec![1i64, 3, 4]}, options()).unwrap();
        assert_eq!(r.failures()[0].index, 1, "{name}");
        let starts = rec
            .take()
            .iter()
            .filter(|e| e.ends_with("node_start check"))
            .count();
        assert_eq!(starts, 1, "{name}: only the failed item runs again");
    }
}

#[test]
fn corrupt_segments_are_recomputed_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new([node_a()])
        .unwrap()
        .with_cache(DiskCache::new(dir.path()));
    let xs: Vec<i64> = (0..20).collect();
    let options = || MapOptions::over(["x"]).flush_every(5);
    p.map(Inputs::new().with("x", xs.clone()), options())
        .unwrap();
    let mut segs: Vec<std::path::PathBuf> = walk(dir.path());
    segs.sort();
    assert_eq!(segs.len(), 4, "one segment per batch of 5");
    let bytes = std::fs::read(&segs[0]).unwrap();
    std::fs::write(&segs[0], &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(&segs[2], b"garbage garbage garbage").unwrap();

    let rec = common::Recorder::new();
    let p = Pipeline::new([node_a()])
        .unwrap()
        .with_cache(DiskCache::new(dir.path()))
        .with_callback(rec.clone());
    let r = p
        .map(Inputs::new().with("x", xs.clone()), options())
        .unwrap();
    assert_eq!(
        r.values::<i64>("a").unwrap(),
        xs.iter().map(|x| x + 1).collect::<Vec<_>>()
    );
    let runs = rec
        .take()
        .iter()
        .filter(|e| e.ends_with("node_end a"))
        .count();
    assert_eq!(runs, 10, "exactly the items of the two damaged segments");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.file_name().unwrap().to_str().unwrap().starts_with("seg-") {
            out.push(p);
        }
    }
    out
}

/// A resource keyed by its model name: the token is a secret, not part of the key.
struct Model {
    name: String,
    api_token: String,
}

impl hypernodes::ResourceKey for Model {
    fn cache_key(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

#[node(output = "embedding")]
fn embed(text: &str, model: &Model) -> Vec<i64> {
    assert!(!model.api_token.is_empty());
    text.bytes()
        .map(|b| b as i64 + model.name.len() as i64)
        .collect()
}

/// A serializable resource: keyed by its serde form.
#[derive(serde::Serialize)]
struct Settings {
    scale: i64,
}

#[node(output = "scaled")]
fn scale_with(x: i64, settings: &Settings) -> i64 {
    x * settings.scale
}

/// A resource with no key: nodes taking it always run.
struct Connection;

#[node(output = "fetched")]
fn fetch(x: i64, connection: &Connection) -> i64 {
    let _ = connection;
    x
}

#[test]
fn resources_are_keyed_by_what_they_declare() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let run = |node: Node, fixed: Inputs, xs: Inputs| -> usize {
            let rec = common::Recorder::new();
            let node_name = node.name().to_string();
            let p = Pipeline::new([node])
                .unwrap()
                .with_shared_engine(engine.clone())
                .with_cache(DiskCache::new(dir.path()))
                .with_callback(rec.clone())
                .bind(fixed)
                .unwrap();
            let over: Vec<String> = xs.names().map(String::from).collect();
            p.map(xs, over).unwrap();
            let end = format!(" node_end {node_name}");
            rec.take().iter().filter(|e| e.ends_with(&end)).count()
        };
        let model = |n: &str, token: &str| Model {
            name: n.into(),
            api_token: token.into(),
        };
        let texts = || Inputs::new().with("text", vec!["ab", "c"]);
        assert_eq!(
            run(
                embed::node(),
                Inputs::new().with("model", model("m1", "t1")),
                texts()
            ),
            2,
            "{name}"
        );
        assert_eq!(
            run(
                embed::node(),
                Inputs::new().with("model", model("m1", "t2")),
                texts()
            ),
            0,
            "{name}: new secret, same key"
        );
        assert_eq!(
            run(
                embed::node(),
                Inputs::new().with("model", model("m2", "t2")),
                texts()
            ),
            2,
            "{name}: new model"
        );

        let xs = || Inputs::new().with("x", vec![1i64, 2, 3]);
        assert_eq!(
            run(
                scale_with::node(),
                Inputs::new().with("settings", Settings { scale: 2 }),
                xs()
            ),
            3
        );
        assert_eq!(
            run(
                scale_with::node(),
                Inputs::new().with("settings", Settings { scale: 2 }),
                xs()
            ),
            0
        );
        assert_eq!(
            run(
                scale_with::node(),
                Inputs::new().with("settings", Settings { scale: 3 }),
                xs()
            ),
            3
        );

        assert_eq!(
            run(
                fetch::node(),
                Inputs::new().with("connection", Connection),
                xs()
            ),
            3
        );
        assert_eq!(
            run(
                fetch::node(),
                Inputs::new().with("connection", Connection),
                xs()
            ),
            3,
            "{name}: unkeyed"
        );
    }
}

#[test]
fn the_cache_explains_one_item() {
    use hypernodes::CacheOutcome;
    let dir = tempfile::tempdir().unwrap();
    let build = |c: &str| {
        Pipeline::new([node_a(), node_b("1", 2), node_c(c)])
            .unwrap()
            .with_cache(DiskCache::new(dir.path()))
    };
    let outcomes = |p: &Pipeline| -> Vec<(String, CacheOutcome)> {
        p.explain_cache(inputs! {"x" => 1i64})
            .unwrap()
            .into_iter()
            .map(|d| (d.node, d.outcome))
            .collect()
    };
    let new_inputs = CacheOutcome::Miss {
        reason: "no result for this signature: new input values, changed upstream values or a changed declared environment variable".into(),
    };
    let first = outcomes(&build("1"));
    assert_eq!(
        first,
        [
            ("a".into(), new_inputs.clone()),
            ("b".into(), new_inputs.clone()),
            ("c".into(), new_inputs)
        ]
    );
    let again = outcomes(&build("1"));
    assert_eq!(
        again,
        [
            ("a".into(), CacheOutcome::Hit),
            ("b".into(), CacheOutcome::Hit),
            ("c".into(), CacheOutcome::Hit)
        ]
    );
    let changed = outcomes(&build("2"));
    assert_eq!(changed[2].0, "c");
    assert_eq!(
        changed[2].1,
        CacheOutcome::Miss {
            // The declared version is the part that changed.
            reason: "code changed since the last cached version of this node: version".into()
        }
    );
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, hypernodes::ArrowValue)]
struct Point {
    x: i64,
    label: Option<String>,
}

/// A pipeline of one node taking `x: T` (and `y: i64`), counting its calls.
fn counting<
    T: hypernodes::ArrowValue + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
>(
    dir: &std::path::Path,
    engine: std::sync::Arc<dyn hypernodes::Engine>,
) -> (Pipeline, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let node = Node::builder("probe")
        .input::<T>("x")
        .input::<i64>("y")
        .output::<T>("seen")
        .version("1")
        .func(move |args| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(outs![args.get::<T>(0)?.clone()])
        });
    let p = Pipeline::new([node])
        .unwrap()
        .with_shared_engine(engine)
        .with_cache(DiskCache::new(dir));
    (p, calls)
}

/// Mapped elements are hashed from the whole list at once; single runs hash
/// each value alone. Both must give the same signatures, for every kind of
/// type and in zip and product mode.
fn mapped_and_single_values_share_entries<T>(values: Vec<T>)
where
    T: hypernodes::ArrowValue + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
{
    use std::sync::atomic::Ordering;
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let (p, calls) = counting::<T>(dir.path(), engine);
        let ys = vec![1i64, 2];
        for v in &values {
            for y in &ys {
                p.run(inputs! { "x" => v.clone(), "y" => *y }).unwrap();
            }
        }
        let singles = calls.swap(0, Ordering::SeqCst);
        assert_eq!(singles, values.len() * ys.len(), "{name}");
        let r = p
            .map(
                Inputs::new()
                    .with("x", values.clone())
                    .with("y", ys.clone()),
                MapOptions::over(["x", "y"]).product(),
            )
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{name}: product map after runs"
        );
        let product: Vec<T> = values
            .iter()
            .flat_map(|v| ys.iter().map(move |_| v.clone()))
            .collect();
        assert_eq!(r.values::<T>("seen").unwrap(), product, "{name}");
        let zipped: Vec<i64> = (0..values.len() as i64).map(|i| i % 2 + 1).collect();
        let r = p
            .map(
                Inputs::new().with("x", values.clone()).with("y", zipped),
                MapOptions::over(["x", "y"]),
            )
            .unwrap();
        assert_eq!(r.values::<T>("seen").unwrap(), values, "{name}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{name}: zip map after runs"
        );
    }
}

#[test]
fn mapped_elements_hash_like_single_values() {
    mapped_and_single_values_share_entries(vec!["a".to_string(), String::new(), "ü b".into()]);
    mapped_and_single_values_share_entries(vec![Some(3i64), None, Some(-1)]);
    mapped_and_single_values_share_entries(vec![
        vec!["x".to_string()],
        vec![],
        vec!["y".into(), "z".into()],
    ]);
    mapped_and_single_values_share_entries(vec![
        Point { x: 1, label: None },
        Point {
            x: 2,
            label: Some("two".into()),
        },
    ]);
    mapped_and_single_values_share_entries(vec![true, false]);
    mapped_and_single_values_share_entries(vec![1.5f64, -0.0, 2.25]);
}

/// A `DiskCache` seen through the `Cache` trait, which records the
/// `prepare` hints it gets and, as a full disk, can fail every write
/// (lookups and buffering still work).
struct Observed {
    inner: DiskCache,
    full_disk: bool,
    prepared: std::sync::Mutex<Vec<(String, usize)>>,
}

impl Observed {
    fn new(dir: &std::path::Path) -> Observed {
        Observed {
            inner: DiskCache::new(dir),
            full_disk: false,
            prepared: Default::default(),
        }
    }

    fn disk(&self) -> &DiskCache {
        &self.inner
    }
}

impl hypernodes::Cache for Observed {
    fn lookup(
        &self,
        key: &hypernodes::CacheKey,
        sigs: &[hypernodes::Signature],
    ) -> Result<hypernodes::Hits, hypernodes::CacheError> {
        self.disk().lookup(key, sigs)
    }
    fn store(
        &self,
        key: &hypernodes::CacheKey,
        rows: &hypernodes::CacheRows,
    ) -> Result<(), hypernodes::CacheError> {
        self.disk().store(key, rows)
    }
    fn flush(&self) -> Result<(), hypernodes::CacheError> {
        if self.full_disk {
            return Err(hypernodes::CacheError::Io {
                path: self.disk().root().to_path_buf(),
                source: std::io::Error::other("no space left on device"),
            });
        }
        self.disk().flush()
    }
    fn prepare(
        &self,
        key: &hypernodes::CacheKey,
        items: usize,
    ) -> Result<(), hypernodes::CacheError> {
        self.prepared
            .lock()
            .unwrap()
            .push((key.node.clone(), items));
        self.disk().prepare(key, items)
    }
}

#[test]
fn a_failing_background_write_is_reported_and_fails_only_a_strict_map() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new([node_a()])
            .unwrap()
            .with_shared_engine(engine)
            .with_cache(Observed {
                full_disk: true,
                ..Observed::new(dir.path())
            });
        let xs = || Inputs::new().with("x", (0..40i64).collect::<Vec<_>>());
        // By default the map keeps its results and reports the failure.
        let r = p
            .map(xs(), MapOptions::over(["x"]).flush_every(4))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            r.values::<i64>("a").unwrap(),
            (1..=40).collect::<Vec<i64>>()
        );
        let text = r.cache_errors()[0].to_string();
        assert!(text.contains("no space left on device"), "{name}: {text}");
        // A strict map fails with it.
        let err = p
            .map(xs(), MapOptions::over(["x"]).flush_every(4).strict_cache())
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("the cache failed") && text.contains("no space left on device"),
            "{name}: {text}"
        );
    }
}

#[test]
fn every_engine_prepares_the_cache_for_each_cached_node_of_a_map() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let cache = std::sync::Arc::new(Observed::new(dir.path()));
        // `c` sits in a nested pipeline; `b` is not cached.
        let inner = Pipeline::new([node_c("1")]).unwrap().as_node();
        let p = Pipeline::new([node_a(), node_b("1", 2).with_cache_enabled(false), inner])
            .unwrap()
            .with_shared_engine(engine)
            .with_shared_cache(cache.clone());
        let r = p
            .map(
                Inputs::new().with("x", (0..40i64).collect::<Vec<_>>()),
                ["x"],
            )
            .unwrap();
        assert_eq!(r.values::<i64>("c").unwrap()[39], (39 + 1) * 2 + 100);
        let mut hints = std::mem::take(&mut *cache.prepared.lock().unwrap());
        hints.sort();
        assert_eq!(
            hints,
            [("a".to_string(), 40), ("c".to_string(), 40)],
            "{name}"
        );
    }
}

#[test]
fn overlapping_background_writes_lose_nothing() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let xs: Vec<i64> = (0..300).collect();
        let build = || {
            Pipeline::new([node_a(), node_b("1", 2), node_c("1")])
                .unwrap()
                .with_shared_engine(engine.clone())
                .with_cache(DiskCache::new(dir.path()))
        };
        // Many small flushes: writes of the same node versions overlap.
        build()
            .map(
                Inputs::new().with("x", xs.clone()),
                MapOptions::over(["x"]).flush_every(3),
            )
            .unwrap();
        let segments = walk(dir.path()).len();
        assert!(segments >= 3 * 300 / 64, "{name}: {segments} segments");
        // A new instance finds every result of every node on disk.
        let (counts, c) = map_counts(&build(), xs.clone());
        assert_eq!(counts, (0, 0, 0), "{name}");
        assert_eq!(c, expected(&xs, 2), "{name}");
    }
}
