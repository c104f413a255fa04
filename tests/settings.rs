//! `#[node]` cache settings: `version`, `env` and `cache = false`.

mod common;

use std::path::Path;
use std::process::Command;

use hypernodes::{DiskCache, Inputs, Node, Pipeline, node, outs};

mod v1 {
    use hypernodes::node;

    #[node(output = "v", version = "1")]
    pub fn versioned(x: i64) -> i64 {
        x
    }
}

mod v2 {
    use hypernodes::node;

    #[node(output = "v", version = "2")]
    pub fn versioned(x: i64) -> i64 {
        x
    }
}

#[test]
fn the_version_salt_is_part_of_the_fingerprint() {
    assert_ne!(
        v1::versioned::node().code_hash(),
        v2::versioned::node().code_hash()
    );
}

#[node(output = "noise", cache = false)]
fn noise(x: i64) -> i64 {
    x * 3
}

#[node(output = "parity")]
fn parity(noise: i64) -> String {
    if noise % 2 == 0 {
        "even".into()
    } else {
        "odd".into()
    }
}

#[test]
fn uncached_nodes_always_run_and_their_dependents_still_cache() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let rec = common::Recorder::new();
        let p = Pipeline::new([noise::node(), parity::node()])
            .unwrap()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(rec.clone());
        assert!(!noise::node().cache_enabled());
        for round in 0..2 {
            let r = p
                .map(Inputs::new().with("x", vec![1i64, 2, 3, 4]), ["x"])
                .unwrap();
            assert_eq!(
                r.values::<String>("parity").unwrap(),
                ["odd", "even", "odd", "even"],
                "{name} round {round}: {:?}",
                rec.take()
            );
        }
        let events = rec.take();
        let count = |what: &str| events.iter().filter(|e| e.ends_with(what)).count();
        assert_eq!(count("node_end noise"), 8, "{name}: never cached");
        assert_eq!(count("node_end parity"), 4, "{name}: first map only");
        assert_eq!(count("node_cached parity"), 4, "{name}: second map");
    }
}

const SCALE_VAR: &str = "HYPERNODES_TEST_SCALE";
const DIR_VAR: &str = "HYPERNODES_SETTINGS_CHILD_DIR";
const VERSION_VAR: &str = "HYPERNODES_SETTINGS_VERSION";

#[node(output = "scaled", env = ["HYPERNODES_TEST_SCALE"])]
fn scaled(x: i64) -> i64 {
    let factor: i64 = std::env::var(SCALE_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    x * factor
}

/// Not a test on its own: the child of `declared_env_vars_are_part_of_the_signature`,
/// run with `HYPERNODES_SETTINGS_CHILD_DIR` set; prints how many times `scaled` ran.
#[test]
fn settings_child_helper() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let rec = common::Recorder::new();
    // The version of the closure node, chosen by the parent.
    let version = std::env::var(VERSION_VAR).unwrap_or_else(|_| "1".into());
    let shift = Node::builder("shift")
        .input::<i64>("scaled")
        .output::<i64>("shifted")
        .version(version)
        .func(|args| Ok(outs![args.get::<i64>(0)? + 1]));
    let p = Pipeline::new([scaled::node(), shift])
        .unwrap()
        .with_cache(DiskCache::new(Path::new(&dir)))
        .with_callback(rec.clone());
    let r = p
        .map(Inputs::new().with("x", vec![1i64, 2, 3]), ["x"])
        .unwrap();
    let runs = rec
        .take()
        .iter()
        .filter(|e| e.ends_with("node_end scaled"))
        .count();
    println!(
        "RESULT runs={runs} values={:?}",
        r.values::<i64>("scaled").unwrap()
    );
}

fn child(dir: &Path, scale: &str) -> String {
    child_with(dir, scale, "1", None).0
}

/// Runs the child (with `LOG_HYPERNODES_CACHE` set to `log`, if given);
/// returns its result line and its stderr.
fn child_with(dir: &Path, scale: &str, version: &str, log: Option<&str>) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "settings_child_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DIR_VAR, dir)
    .env(SCALE_VAR, scale)
    .env(VERSION_VAR, version);
    if let Some(log) = log {
        cmd.env("LOG_HYPERNODES_CACHE", log);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let result = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no result in {stdout}"));
    (result, stderr)
}

#[test]
fn the_cache_log_explains_hits_and_misses() {
    let dir = tempfile::tempdir().unwrap();
    let lines = |stderr: &str, what: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.starts_with("hypernodes cache: ") && l.contains(what))
            .map(String::from)
            .collect()
    };
    let (_, log) = child_with(dir.path(), "2", "1", Some("items"));
    let misses = lines(&log, "miss node=scaled");
    assert_eq!(misses.len(), 3, "{log}");
    assert!(
        misses[0].contains("item=0 ") && misses[0].contains("new input values"),
        "{}",
        misses[0]
    );
    let (_, log) = child_with(dir.path(), "2", "1", Some("items"));
    assert_eq!(lines(&log, "hit node=scaled").len(), 3, "{log}");
    assert_eq!(lines(&log, "hit node=shift").len(), 3, "{log}");
    // The closure's version changed: the log says so.
    let (_, log) = child_with(dir.path(), "2", "2", Some("items"));
    let misses = lines(&log, "miss node=shift");
    assert_eq!(misses.len(), 3, "{log}");
    assert!(
        misses
            .iter()
            .all(|l| l.contains("code changed since the last cached version")),
        "{log}"
    );
    // Without the variable, nothing is logged.
    let (_, log) = child_with(dir.path(), "2", "2", None);
    assert!(lines(&log, "node=").is_empty(), "{log}");
}

#[test]
fn the_cache_log_sums_up_each_node_per_map_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let summary = |stderr: &str| -> Vec<String> {
        let lines: Vec<String> = stderr
            .lines()
            .filter(|l| l.starts_with("hypernodes cache: "))
            .map(String::from)
            .collect();
        assert!(
            lines.iter().all(|l| l.contains(" summary ")),
            "only summary lines: {lines:#?}"
        );
        lines
    };
    let (_, log) = child_with(dir.path(), "2", "1", Some("1"));
    let lines = summary(&log);
    assert_eq!(lines.len(), 2, "one line per node: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with(
            "hypernodes cache: summary node=scaled hits=0 misses=3 [3: no result for this signature"
        )),
        "{lines:#?}"
    );
    let (_, log) = child_with(dir.path(), "2", "1", Some("1"));
    let lines = summary(&log);
    assert_eq!(
        lines,
        [
            "hypernodes cache: summary node=scaled hits=3 misses=0",
            "hypernodes cache: summary node=shift hits=3 misses=0"
        ]
    );
    let (_, log) = child_with(dir.path(), "2", "2", Some("1"));
    assert!(
        summary(&log).iter().any(|l| l.starts_with("hypernodes cache: summary node=shift hits=0 misses=3 [3: code changed since the last cached version of this node: version]")),
        "{log}"
    );
}

#[test]
fn declared_env_vars_are_part_of_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(scaled::node().env(), [SCALE_VAR]);
    assert_eq!(child(dir.path(), "2"), "runs=3 values=[2, 4, 6]");
    assert_eq!(child(dir.path(), "2"), "runs=0 values=[2, 4, 6]");
    assert_eq!(child(dir.path(), "10"), "runs=3 values=[10, 20, 30]");
    assert_eq!(child(dir.path(), "2"), "runs=0 values=[2, 4, 6]");
}
