//! The cache in an object store: a real S3-compatible server on 127.0.0.1
//! (`hypernodes-testkit`), several "machines" (caches with separate local
//! mirrors) sharing it, on every engine, with exact execution counts.

#![cfg(feature = "s3")]

mod common;

use std::path::Path;
use std::time::Duration;

use hypernodes::{DiskCache, Inputs, Node, Pipeline, outs};
use hypernodes_testkit::S3Server;

fn node(name: &'static str, input: &'static str, version: &str, add: i64) -> Node {
    Node::builder(name)
        .input::<i64>(input)
        .output::<i64>(name)
        .version(version)
        .func(move |args| Ok(outs![args.get::<i64>(0)? + add]))
}

fn pipeline(c_version: &str) -> Pipeline {
    Pipeline::new([
        node("a", "x", "1", 1),
        node("b", "a", "1", 10),
        node("c", "b", c_version, 100),
    ])
    .unwrap()
}

/// A cache at `url` on `server`, mirrored in `mirror` (one machine).
fn machine(server: &S3Server, url: &str, mirror: &Path) -> DiskCache {
    let options = server.options();
    DiskCache::object_store_at(url, mirror, &hypernodes_testkit::borrowed(&options)).unwrap()
}

/// How many times a, b and c executed, and c's values.
type Counted = ((usize, usize, usize), Vec<i64>);

/// Maps `xs`; returns how many times a, b and c executed, and c's values.
/// A failure of the cache is an error here (its `Debug` text).
fn map_counts(p: &Pipeline, xs: Vec<i64>) -> Result<Counted, String> {
    let rec = common::Recorder::new();
    let p = p.clone().with_callback(rec.clone());
    let r = p
        .map(Inputs::new().with("x", xs), ["x"])
        .map_err(|e| format!("{e:?}"))?;
    if let Some(e) = r.cache_errors().first() {
        return Err(format!("{e:?}"));
    }
    let events = rec.take();
    let n = |node: &str| {
        let end = format!(" node_end {node}");
        events.iter().filter(|e| e.ends_with(&end)).count()
    };
    Ok(((n("a"), n("b"), n("c")), r.values::<i64>("c").unwrap()))
}

fn expected(xs: &[i64]) -> Vec<i64> {
    xs.iter().map(|x| x + 111).collect()
}

fn segment_objects(server: &S3Server, prefix: &str) -> Vec<String> {
    server
        .objects("cache", prefix)
        .iter()
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("/seg-") && p.ends_with(".parquet"))
        .collect()
}

#[test]
fn machines_with_separate_mirrors_share_one_cache_on_every_engine() {
    common::deadline(300, "the object store scenarios", || {
        let server = S3Server::start(&["cache"]).unwrap();
        for (name, engine) in common::engines() {
            let url = format!("s3://cache/{name}");
            let mirrors: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let on = |m: usize, c_version: &str| {
                pipeline(c_version)
                    .with_shared_engine(engine.clone())
                    .with_cache(machine(&server, &url, mirrors[m].path()))
            };
            let first: Vec<i64> = (0..1_000).collect();
            let more: Vec<i64> = (0..1_005).collect();
            assert_eq!(
                map_counts(&on(0, "1"), first.clone()).unwrap(),
                ((1_000, 1_000, 1_000), expected(&first)),
                "{name}: cold on machine 0"
            );
            let stored = segment_objects(&server, name);
            for node in ["a", "b", "c"] {
                assert!(
                    stored
                        .iter()
                        .any(|p| p.starts_with(&format!("{name}/{node}/"))),
                    "{name}: no segment of {node} in the store: {stored:?}"
                );
            }
            // Another machine, its mirror empty: 5 new items compute.
            assert_eq!(
                map_counts(&on(1, "1"), more.clone()).unwrap(),
                ((5, 5, 5), expected(&more)),
                "{name}: 5 new items on machine 1"
            );
            // Machine 0 sees what machine 1 stored, and an edit of the
            // last node recomputes only that node.
            assert_eq!(
                map_counts(&on(0, "2"), more.clone()).unwrap(),
                ((0, 0, 1_005), expected(&more)),
                "{name}: c edited on machine 0"
            );
            // A third machine finds everything.
            assert_eq!(
                map_counts(&on(2, "2"), more.clone()).unwrap(),
                ((0, 0, 0), expected(&more)),
                "{name}: warm on machine 2"
            );
        }
    });
}

#[test]
fn concurrent_writers_on_separate_machines_lose_nothing() {
    common::deadline(300, "concurrent writers", || {
        let server = S3Server::start(&["cache"]).unwrap();
        let url = "s3://cache/shared";
        std::thread::scope(|s| {
            for w in 0..4i64 {
                let server = &server;
                s.spawn(move || {
                    let mirror = tempfile::tempdir().unwrap();
                    let p = pipeline("1").with_cache(machine(server, url, mirror.path()));
                    let xs: Vec<i64> = (w * 2_500..(w + 1) * 2_500).collect();
                    assert_eq!(
                        map_counts(&p, xs.clone()).unwrap(),
                        ((2_500, 2_500, 2_500), expected(&xs))
                    );
                });
            }
        });
        let segments = segment_objects(&server, "shared");
        for node in ["a", "b", "c"] {
            let of_node = segments
                .iter()
                .filter(|p| p.starts_with(&format!("shared/{node}/")))
                .count();
            assert!(of_node >= 4, "{node}: {of_node} segments: {segments:?}");
        }
        let mirror = tempfile::tempdir().unwrap();
        let p = pipeline("1").with_cache(machine(&server, url, mirror.path()));
        let all: Vec<i64> = (0..10_000).collect();
        assert_eq!(
            map_counts(&p, all.clone()).unwrap(),
            ((0, 0, 0), expected(&all))
        );
    });
}

#[test]
fn an_unreachable_store_fails_the_flush_naming_it_and_loses_nothing() {
    common::deadline(300, "an unreachable store", || {
        let port = {
            let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            free.local_addr().unwrap().port()
        };
        let url = "s3://cache/later";
        let options = hypernodes_testkit::options(&hypernodes_testkit::env_for(&format!(
            "http://127.0.0.1:{port}"
        )));
        let options = hypernodes_testkit::borrowed(&options);
        let mirror = tempfile::tempdir().unwrap();
        let cache = DiskCache::object_store_at(url, mirror.path(), &options).unwrap();
        let p = pipeline("1").with_cache(cache);
        let xs: Vec<i64> = (0..100).collect();
        // The results are right; the cache failure is reported with them.
        let err = map_counts(&p, xs.clone()).unwrap_err();
        assert!(
            err.contains("Remote") && err.contains(&format!("location: \"{url}\"")),
            "{err}"
        );
        // The rows stayed in the mirror: the same machine computes nothing
        // again, and once the store is up its next flush pushes them.
        let server = S3Server::start_on(port, &["cache"]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            map_counts(&p, xs.clone()).unwrap(),
            ((0, 0, 0), expected(&xs))
        );
        assert!(!segment_objects(&server, "later").is_empty());
        let other = tempfile::tempdir().unwrap();
        let q = pipeline("1").with_cache(machine(&server, url, other.path()));
        assert_eq!(
            map_counts(&q, xs.clone()).unwrap(),
            ((0, 0, 0), expected(&xs))
        );
    });
}

#[test]
fn clearing_a_store_removes_its_objects_and_stats_read_the_store() {
    common::deadline(120, "clear", || {
        let server = S3Server::start(&["cache"]).unwrap();
        let url = "s3://cache/clear";
        let writer = tempfile::tempdir().unwrap();
        let p = pipeline("1").with_cache(machine(&server, url, writer.path()));
        let xs: Vec<i64> = (0..50).collect();
        map_counts(&p, xs.clone()).unwrap();
        // Another machine's statistics come from the store.
        let reader = tempfile::tempdir().unwrap();
        let stats = machine(&server, url, reader.path()).stats().unwrap();
        let rows: Vec<(String, usize)> = stats.iter().map(|s| (s.node.clone(), s.rows)).collect();
        assert_eq!(rows, [("a".into(), 50), ("b".into(), 50), ("c".into(), 50)]);
        machine(&server, url, reader.path()).clear().unwrap();
        assert_eq!(
            server.objects("cache", "clear"),
            Vec::<std::path::PathBuf>::new()
        );
        let fresh = tempfile::tempdir().unwrap();
        let q = pipeline("1").with_cache(machine(&server, url, fresh.path()));
        assert_eq!(
            map_counts(&q, xs.clone()).unwrap(),
            ((50, 50, 50), expected(&xs))
        );
    });
}

#[test]
fn locations_parse_and_open_s3_urls() {
    let at = hypernodes::cache::CacheLocation::parse("s3://bucket/prefix").unwrap();
    assert_eq!(at.url(), "s3://bucket/prefix");
    let err = hypernodes::cache::CacheLocation::parse("s3:///prefix")
        .unwrap()
        .open()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no bucket"), "{err}");
}
