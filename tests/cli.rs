//! The `hypernodes cache` command, run as a separate process against a
//! cache made by real maps (feature `cli`).

#![cfg(feature = "cli")]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use hypernodes::observe::{EventKind, Recorder};
use hypernodes::{DiskCache, Inputs, Pipeline, node};

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

mod v1 {
    use hypernodes::node;

    #[node(output = "word_count", version = "1")]
    pub fn count(cleaned: &str) -> i64 {
        cleaned.split_whitespace().count() as i64
    }
}

mod v2 {
    use hypernodes::node;

    #[node(output = "word_count", version = "2")]
    pub fn count(cleaned: &str) -> i64 {
        cleaned.split_whitespace().count() as i64 * 10
    }
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!(" Text number {i} ")).collect()
}

/// Maps `texts` with `count` (v1 or v2) over a cache in `dir`; returns how
/// many results were computed and the signatures `count` was looked up by.
fn map(dir: &Path, count: hypernodes::Node, texts: Vec<String>) -> (usize, Vec<String>) {
    let recorder = Arc::new(Recorder::new());
    Pipeline::new([clean::node(), count])
        .unwrap()
        .with_cache(DiskCache::new(dir))
        .with_callback(recorder.clone())
        .map(Inputs::new().with("text", texts), ["text"])
        .unwrap();
    let events = recorder.events();
    let computed = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::NodeEnd(_)))
        .count();
    let sigs = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CacheDecision(d) if d.node == "count" => d.signature.map(|s| s.to_hex()),
            _ => None,
        })
        .collect();
    (computed, sigs)
}

/// Runs `hypernodes cache --dir DIR ARGS...`: exit code, stdout, stderr.
fn cache(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hypernodes"))
        .arg("cache")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("HYPERNODES_CACHE_DIR")
        .output()
        .expect("the hypernodes binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = cache(dir, &all);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Per version key: (rows, distinct, segments).
fn counts(stats: &serde_json::Value) -> Vec<(String, u64, u64, u64)> {
    stats["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let node = v["node"].as_str().unwrap().to_string();
            (
                node,
                v["rows"].as_u64().unwrap(),
                v["distinct_signatures"].as_u64().unwrap(),
                v["segments"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A cache with `clean`, `count` v1 (150 rows in two segments) and
/// `count` v2 (100 rows), written in that order. Returns a signature
/// stored for `count` v1.
fn filled(dir: &Path) -> String {
    let (computed, sigs) = map(dir, v1::count::node(), texts(100));
    assert_eq!(computed, 200);
    let (computed, _) = map(dir, v1::count::node(), texts(150));
    assert_eq!(computed, 100, "50 new texts, two nodes");
    // Written a moment later, so v2 is the latest by its write time.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (computed, _) = map(dir, v2::count::node(), texts(100));
    assert_eq!(computed, 100, "only the new count version runs");
    sigs[0].clone()
}

#[test]
fn stats_and_ls_describe_every_node_version() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let stats = json(dir.path(), &["stats"]);
    // Versions are listed by node, then code hash: `clean`, then the two
    // `count` versions in the order of their hashes.
    let mut all = counts(&stats);
    assert_eq!(all.remove(0), ("clean".to_string(), 150, 150, 2));
    all.sort_by_key(|c| c.1);
    assert_eq!(
        all,
        [
            ("count".to_string(), 100, 100, 1),
            ("count".to_string(), 150, 150, 2)
        ]
    );
    let first = &stats["versions"][0];
    assert_eq!(first["outputs"][0]["name"], "cleaned");
    assert_eq!(first["outputs"][0]["type"], "Utf8");
    assert_eq!(first["quarantined"], 0);
    assert!(first["bytes"].as_u64().unwrap() > 0);
    assert!(first["last_written"].as_str().unwrap().starts_with("20"));
    let key = first["key"].as_str().unwrap();
    assert!(key.starts_with("clean/") && key.len() == "clean/".len() + 12);

    // The table for people: a header and one line per version.
    let (code, table, _) = cache(dir.path(), &["stats"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KEY") && lines[0].contains("DISTINCT"));
    assert_eq!(lines.len(), 4);
    assert!(lines[1].starts_with(key));

    // `ls` takes a node's name or a version's key.
    let ls = json(dir.path(), &["ls", "count"]);
    assert_eq!(ls["versions"].as_array().unwrap().len(), 2);
    let one = ls["versions"][0]["key"].as_str().unwrap().to_string();
    let ls = json(dir.path(), &["ls", &one]);
    assert_eq!(ls["versions"].as_array().unwrap().len(), 1);
    let files = ls["versions"][0]["segment_files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .all(|f| f["file"].as_str().unwrap().starts_with("seg-"))
    );
    let (code, text, _) = cache(dir.path(), &["ls", "count"]);
    assert_eq!(code, 0);
    assert!(text.contains("outputs: word_count: Int64"), "{text}");
}

#[test]
fn why_shows_what_is_stored_under_a_signature() {
    let dir = tempfile::tempdir().unwrap();
    let sig = filled(dir.path());
    let why = json(dir.path(), &["why", "count", "--signature", &sig]);
    let stored = why["stored"].as_array().unwrap();
    // Text 0, " Text number 0 ", has three words (v1 stored it).
    assert_eq!(stored.len(), 1, "{why}");
    assert_eq!(stored[0]["values"][0]["output"], "word_count");
    assert_eq!(stored[0]["values"][0]["value"], "3");
    let (code, text, _) = cache(dir.path(), &["why", "count", "--signature", &sig]);
    assert_eq!(code, 0);
    assert!(text.contains("word_count = 3"), "{text}");
    // A signature nothing is stored under, and one that is not hex.
    let (code, text, _) = cache(
        dir.path(),
        &["why", "count", "--signature", &"0".repeat(64)],
    );
    assert_eq!(code, 0);
    assert!(text.starts_with("nothing stored under"));
    let (code, _, err) = cache(dir.path(), &["why", "count", "--signature", "xyz"]);
    assert_eq!(code, 2);
    assert!(err.contains("`xyz` is not a signature"), "{err}");
}

#[test]
fn compact_merges_segments_and_keeps_every_result() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let done = json(dir.path(), &["compact"]);
    let merged: Vec<u64> = done["compacted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["merged_segments"].as_u64().unwrap())
        .collect();
    assert_eq!(merged, [2, 2], "clean and count v1 had two segments each");
    let stats = json(dir.path(), &["stats"]);
    for (node, rows, distinct, segments) in counts(&stats) {
        assert_eq!(segments, 1, "{node}");
        assert_eq!(rows, distinct, "{node}");
    }
    // Every result is still there: a rerun of either version computes
    // nothing.
    assert_eq!(map(dir.path(), v1::count::node(), texts(150)).0, 0);
    assert_eq!(map(dir.path(), v2::count::node(), texts(100)).0, 0);
    let (code, text, _) = cache(dir.path(), &["compact"]);
    assert_eq!((code, text.trim()), (0, "nothing to compact"));
}

#[test]
fn gc_lists_superseded_versions_and_removes_them_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let plan = json(dir.path(), &["gc"]);
    assert_eq!(plan["removed"], false);
    let doomed: Vec<(String, u64)> = plan["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["node"].as_str().unwrap().to_string(),
                v["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        doomed,
        [("count".to_string(), 150)],
        "count v1 is superseded"
    );
    let (code, text, _) = cache(dir.path(), &["gc"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("would remove 1 node versions"), "{text}");
    assert!(text.contains("run again with --yes"));
    // Nothing was removed by the dry runs.
    assert_eq!(counts(&json(dir.path(), &["stats"])).len(), 3);
    // Old enough? Not yet: everything was written just now.
    let young = json(
        dir.path(),
        &["gc", "--older-than", "1d", "--keep-superseded"],
    );
    assert_eq!(young["versions"].as_array().unwrap().len(), 0);

    let done = json(dir.path(), &["gc", "--yes"]);
    assert_eq!(done["removed"], true);
    let left: Vec<(String, u64)> = counts(&json(dir.path(), &["stats"]))
        .into_iter()
        .map(|c| (c.0, c.1))
        .collect();
    assert_eq!(
        left,
        [("clean".to_string(), 150), ("count".to_string(), 100)]
    );
    // v2 is still cached; v1 runs again.
    assert_eq!(map(dir.path(), v2::count::node(), texts(100)).0, 0);
    assert_eq!(map(dir.path(), v1::count::node(), texts(100)).0, 100);
}

#[test]
fn clear_removes_one_node_or_everything() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let (code, text, _) = cache(dir.path(), &["clear", "count"]);
    assert_eq!((code, text.trim()), (0, "cleared `count`"));
    let left: Vec<String> = counts(&json(dir.path(), &["stats"]))
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(left, ["clean"]);
    let (code, _, _) = cache(dir.path(), &["clear"]);
    assert_eq!(code, 0);
    let (code, _, err) = cache(dir.path(), &["stats"]);
    assert_eq!(code, 3, "the cache directory is gone: {err}");
}

#[test]
fn missing_caches_unknown_nodes_and_corrupt_segments_are_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let (code, _, err) = cache(&missing, &["stats"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("nowhere") && err.contains("no cache directory"),
        "{err}"
    );

    filled(dir.path());
    let (code, _, err) = cache(dir.path(), &["ls", "kount"]);
    assert_eq!(code, 4);
    assert!(
        err.contains("`kount`") && err.contains("clean, count"),
        "{err}"
    );
    let (code, _, err) = cache(dir.path(), &["gc", "--older-than", "3 weeks"]);
    assert_eq!(code, 2, "{err}");

    // One segment of `clean` altered on disk: counted as corrupt, left in
    // place (inspecting never changes the cache), the rest still listed.
    let clean_dir = std::fs::read_dir(dir.path().join("clean"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let seg = std::fs::read_dir(&clean_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let stats = json(dir.path(), &["stats"]);
    let clean = &stats["versions"][0];
    assert_eq!(clean["node"], "clean");
    assert_eq!(clean["corrupt"], 1);
    assert_eq!(clean["segments"], 2);
    assert!(seg.exists());
}
