//! The cache never returns a wrong value and never loses computed work:
//! segments altered on disk are detected, moved aside and recomputed;
//! closures never share results they cannot tell apart; a cache that
//! cannot be written (a file where its directory should be, a full disk)
//! leaves the map's results intact and reports what failed, once; failed
//! writes leave nothing behind; equal resources key equally. Every engine.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::{
    CacheError, CacheOutcome, Callback, CallbackContext, DiskCache, Error, Inputs, MapOptions,
    Node, Pipeline, node, outs,
};

/// Every `seg-` file under `dir`.
fn segments(dir: &Path) -> Vec<PathBuf> {
    files(dir, |n| n.starts_with("seg-") && n.ends_with(".parquet"))
}

/// Every file under `dir` whose name `keep` accepts.
fn files(dir: &Path, keep: impl Fn(&str) -> bool + Copy) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path, keep));
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(keep) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `ITEM-<x>`.
#[node(output = "tag")]
fn tag(x: i64) -> String {
    format!("ITEM-{x}")
}

/// Counts the items a pipeline's nodes computed (not those from the cache).
/// Per pipeline, so tests running at the same time do not count each
/// other's calls.
#[derive(Default)]
struct Computed(AtomicUsize);

impl Callback for Computed {
    fn on_node_end(&self, _: &CallbackContext<'_>, _: &str, _: std::time::Duration) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Maps `tag` over 0..1000 with a new cache on `dir`: the tags, how many
/// times `tag` ran, and the cache.
fn tag_map(
    engine: &Arc<dyn hypernodes::Engine>,
    dir: &Path,
) -> (Vec<String>, usize, Arc<DiskCache>) {
    let cache = Arc::new(DiskCache::new(dir));
    let computed = Arc::new(Computed::default());
    let p = Pipeline::new([tag::node()])
        .unwrap()
        .with_shared_engine(engine.clone())
        .with_shared_cache(cache.clone())
        .with_callback(computed.clone());
    let r = p
        .map(
            Inputs::new().with("x", (0..1000i64).collect::<Vec<_>>()),
            ["x"],
        )
        .unwrap();
    let calls = computed.0.load(Ordering::SeqCst);
    (r.values::<String>("tag").unwrap(), calls, cache)
}

#[test]
fn values_altered_inside_a_segment_are_detected_and_recomputed_on_every_engine() {
    let expected: Vec<String> = (0..1000).map(|x| format!("ITEM-{x}")).collect();
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let (tags, calls, _) = tag_map(&engine, dir.path());
        assert_eq!(tags, expected, "{name}");
        assert_eq!(calls, 1000, "{name}");
        // Alter one stored value in place (the footer stays intact).
        let segs = segments(dir.path());
        let seg = segs
            .iter()
            .find(|p| {
                let bytes = std::fs::read(p).unwrap();
                bytes.windows(8).any(|w| w == b"ITEM-777")
            })
            .unwrap_or_else(|| panic!("{name}: a segment holds ITEM-777"))
            .clone();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = bytes.windows(8).position(|w| w == b"ITEM-777").unwrap();
        bytes[at..at + 8].copy_from_slice(b"ITEM-999");
        std::fs::write(&seg, &bytes).unwrap();

        // A new process (a new cache) sees the damage: the right values,
        // the altered segment's items computed again, one warning naming
        // the file, and the segment moved aside.
        let cache = Arc::new(DiskCache::new(dir.path()));
        let computed = Arc::new(Computed::default());
        let r = Pipeline::new([tag::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_shared_cache(cache.clone())
            .with_callback(computed.clone())
            .map(
                Inputs::new().with("x", (0..1000i64).collect::<Vec<_>>()),
                ["x"],
            )
            .unwrap();
        assert_eq!(r.values::<String>("tag").unwrap(), expected, "{name}");
        let recomputed = computed.0.load(Ordering::SeqCst);
        assert!(recomputed > 0, "{name}: the altered segment was trusted");
        let warnings = cache.warnings();
        assert_eq!(warnings.len(), 1, "{name}: {warnings:?}");
        assert!(warnings[0].contains("corrupt"), "{}", warnings[0]);
        assert!(
            warnings[0].contains(&seg.display().to_string()),
            "{}",
            warnings[0]
        );
        assert!(!seg.exists(), "{name}: the corrupt segment was moved aside");
        let aside = PathBuf::from(format!("{}.corrupt", seg.display()));
        assert!(aside.exists(), "{name}");

        // Later runs neither warn nor read it again, and find everything.
        let (tags, calls, cache) = tag_map(&engine, dir.path());
        assert_eq!(tags, expected, "{name}");
        assert_eq!(calls, 0, "{name}");
        assert!(cache.warnings().is_empty(), "{name}");
        let stats = cache.stats().unwrap();
        assert_eq!(
            stats.iter().map(|s| s.quarantined).sum::<usize>(),
            1,
            "{name}"
        );
    }
}

/// Records cache decisions and cache errors.
#[derive(Default)]
struct Watch {
    decisions: std::sync::Mutex<Vec<hypernodes::CacheDecision>>,
    cache_errors: std::sync::Mutex<Vec<String>>,
}

impl Callback for Watch {
    fn on_cache_decision(&self, _: &CallbackContext<'_>, d: &hypernodes::CacheDecision) {
        self.decisions.lock().unwrap().push(d.clone());
    }
    fn on_cache_error(&self, _: &CallbackContext<'_>, e: &Error) {
        self.cache_errors.lock().unwrap().push(e.to_string());
    }
}

/// A closure node multiplying by a captured `k`, counting its calls.
fn times(k: i64, calls: &Arc<AtomicUsize>, declare: bool) -> Node {
    let calls = calls.clone();
    let mut builder = Node::builder("times").input::<i64>("x").output::<i64>("y");
    if declare {
        builder = builder.state(&k);
    }
    builder.func(move |args| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(outs![args.get::<i64>(0)? * k])
    })
}

#[test]
fn closure_nodes_never_return_another_closures_results() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let run = |node: Node| {
            let watch = Arc::new(Watch::default());
            let before = calls.load(Ordering::SeqCst);
            let r = Pipeline::new([node])
                .unwrap()
                .with_shared_engine(engine.clone())
                .with_cache(DiskCache::new(dir.path()))
                .with_callback(watch.clone())
                .map(Inputs::new().with("x", vec![1i64, 2, 3]), ["x"])
                .unwrap();
            let ys = r.values::<i64>("y").unwrap();
            let decisions = watch.decisions.lock().unwrap().clone();
            (ys, calls.load(Ordering::SeqCst) - before, decisions)
        };
        // Neither version nor state: never cached, never stale.
        let (ys, n, decisions) = run(times(2, &calls, false));
        assert_eq!((ys, n), (vec![2, 4, 6], 3), "{name}");
        let (ys, n, decisions_again) = run(times(3, &calls, false));
        assert_eq!((ys, n), (vec![3, 6, 9], 3), "{name}: a stale result");
        {
            for d in decisions.iter().chain(&decisions_again) {
                match &d.outcome {
                    CacheOutcome::NotCached { reason } => {
                        assert!(reason.contains("neither a version nor"), "{reason}")
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
            assert_eq!(decisions.len(), 3, "{name}");
        }
        // Declared state: a hit when equal, a miss when different.
        let (ys, n, _) = run(times(2, &calls, true));
        assert_eq!((ys, n), (vec![2, 4, 6], 3), "{name}");
        let (ys, n, _) = run(times(2, &calls, true));
        assert_eq!((ys, n), (vec![2, 4, 6], 0), "{name}: equal state hits");
        let (ys, n, _) = run(times(5, &calls, true));
        assert_eq!((ys, n), (vec![5, 10, 15], 3), "{name}: other state misses");
    }
}

#[test]
fn a_cache_that_cannot_be_written_keeps_the_results_and_says_why() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the cache's directory should be: every write fails
        // with the OS's error.
        let root = dir.path().join("not-a-directory");
        std::fs::write(&root, b"a file").unwrap();
        let watch = Arc::new(Watch::default());
        let p = Pipeline::new([tag::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(&root))
            .with_callback(watch.clone());
        let xs = || Inputs::new().with("x", (0..300i64).collect::<Vec<_>>());
        let r = p.map(xs(), ["x"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            r.values::<String>("tag").unwrap(),
            (0..300).map(|x| format!("ITEM-{x}")).collect::<Vec<_>>(),
            "{name}"
        );
        assert!(!r.cache_errors().is_empty(), "{name}");
        for e in r.cache_errors() {
            let Error::Cache { source, .. } = e else {
                panic!("{name}: {e:?}")
            };
            let CacheError::Io { path, source } = source else {
                panic!("{name}: {source:?}")
            };
            assert!(path.starts_with(&root), "{name}: {}", path.display());
            assert!(source.raw_os_error().is_some(), "{name}: {source}");
        }
        // The chain of causes reaches the OS error.
        let mut cause: &dyn std::error::Error = &r.cache_errors()[0];
        while let Some(next) = cause.source() {
            cause = next;
        }
        assert!(
            cause.downcast_ref::<std::io::Error>().is_some(),
            "{name}: {cause}"
        );
        assert_eq!(
            watch.cache_errors.lock().unwrap().len(),
            1,
            "{name}: reported once per map"
        );
        // Strict: the same failure fails the map (a new cache: the first
        // one still holds the results it could not write, in memory).
        let err = Pipeline::new([tag::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(&root))
            .map(xs(), MapOptions::over(["x"]).strict_cache())
            .unwrap_err();
        assert!(matches!(err, Error::Cache { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains("not-a-directory"), "{name}: {err}");
    }
}

/// A small tmpfs, unmounted when dropped; `None` where this process may not
/// mount (not root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, kib: usize) -> Option<SmallDisk> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A long text, so a few items fill a small disk.
#[node(output = "page")]
fn page(x: i64) -> String {
    format!("{x:08}").repeat(8 * 1024)
}

#[test]
fn a_full_disk_keeps_the_results_and_leaves_no_temporary_files() {
    let base = tempfile::tempdir().unwrap();
    for (name, engine) in common::engines() {
        let mount = base.path().join(name);
        std::fs::create_dir_all(&mount).unwrap();
        let Some(_disk) = SmallDisk::mount(&mount, 256) else {
            eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
            return;
        };
        let p = Pipeline::new([page::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(&mount));
        // 64 pages of 64 KiB: far more than the 256 KiB disk holds.
        let r = p
            .map(
                Inputs::new().with("x", (0..64i64).collect::<Vec<_>>()),
                ["x"],
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let pages = r.values::<String>("page").unwrap();
        assert_eq!(pages.len(), 64);
        assert!(
            pages
                .iter()
                .enumerate()
                .all(|(x, p)| p.starts_with(&format!("{x:08}")))
        );
        let full = r.cache_errors().iter().any(|e| {
            matches!(e, Error::Cache { source: CacheError::Io { source, .. }, .. }
                if source.raw_os_error() == Some(28))
        });
        assert!(full, "{name}: {:?}", r.cache_errors());
        let message = r.cache_errors()[0].to_string();
        assert!(message.contains(&mount.display().to_string()), "{message}");
        let left = files(&mount, |n| n.starts_with(".tmp-"));
        assert!(left.is_empty(), "{name}: {left:?} left behind");
    }
}

#[test]
fn stale_temporary_files_are_removed_when_a_dataset_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, _) = tag_map(&common::engines()[0].1, dir.path());
    let seg = segments(dir.path()).remove(0);
    let version_dir = seg.parent().unwrap();
    let old = version_dir.join(".tmp-00000000000000000001-1-0.parquet");
    let fresh = version_dir.join(".tmp-99999999999999999999-1-0.parquet");
    std::fs::write(&old, b"left by a crashed writer").unwrap();
    std::fs::write(&fresh, b"a write in progress").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let (_, calls, _) = tag_map(&common::engines()[0].1, dir.path());
    assert_eq!(calls, 0);
    assert!(
        !old.exists(),
        "a temporary file older than an hour is removed"
    );
    assert!(
        fresh.exists(),
        "a recent one may still be written: it stays"
    );
}

/// A configuration resource keyed by its serde form, holding a map.
#[derive(serde::Serialize)]
struct Lookup {
    weights: HashMap<String, i64>,
}

static WEIGHED: AtomicUsize = AtomicUsize::new(0);

#[node(output = "weight")]
fn weigh(x: i64, lookup: &Lookup) -> i64 {
    WEIGHED.fetch_add(1, Ordering::SeqCst);
    x * lookup.weights.len() as i64
}

#[test]
fn equal_resources_holding_maps_key_equally() {
    let dir = tempfile::tempdir().unwrap();
    let before = WEIGHED.load(Ordering::SeqCst);
    for _ in 0..30 {
        // A new HashMap each time: its iteration order differs.
        let weights: HashMap<String, i64> = (0..40).map(|i| (format!("w{i}"), i)).collect();
        let p = Pipeline::new([weigh::node()])
            .unwrap()
            .with_cache(DiskCache::new(dir.path()))
            .bind(Inputs::new().with("lookup", Lookup { weights }))
            .unwrap();
        let r = p
            .map(Inputs::new().with("x", vec![1i64, 2]), ["x"])
            .unwrap();
        assert_eq!(r.values::<i64>("weight").unwrap(), vec![40, 80]);
    }
    assert_eq!(WEIGHED.load(Ordering::SeqCst) - before, 2, "computed once");
}

/// The cache decisions of a cold and a warm map, one line each, sorted.
#[cfg(feature = "datafusion")]
fn decisions(engine: Arc<dyn hypernodes::Engine>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for _ in 0..2 {
        let watch = Arc::new(Watch::default());
        Pipeline::new([tag::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(watch.clone())
            .map(
                Inputs::new().with("x", (0..20i64).collect::<Vec<_>>()),
                ["x"],
            )
            .unwrap();
        lines.extend(
            watch
                .decisions
                .lock()
                .unwrap()
                .iter()
                .map(|d| d.to_string()),
        );
    }
    lines.sort();
    lines
}

#[cfg(feature = "datafusion")]
#[test]
fn the_columnar_engine_reports_the_same_cache_decisions() {
    let seq = decisions(Arc::new(hypernodes::SeqEngine));
    assert_eq!(seq.len(), 40);
    let datafusion = decisions(Arc::new(
        hypernodes::engines::DataFusionEngine::new().with_small_map(0),
    ));
    assert_eq!(datafusion, seq);
}
