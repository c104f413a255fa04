//! `#[node]` cache settings: `version`, `env` and `cache = false`.

mod common;

use std::path::Path;
use std::process::Command;

use hypernodes::{DiskCache, Inputs, Pipeline, node};

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
    let p = Pipeline::new([scaled::node()])
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
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "settings_child_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(SCALE_VAR, scale)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no result in {stdout}"))
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
