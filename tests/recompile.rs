//! Code-aware invalidation across real recompiles: a small crate using
//! HyperNodes is built, run, edited (a node's body, a helper only one node
//! calls, a doc comment), rebuilt and run again against the same cache
//! directory, and the test checks exactly which nodes executed.
//!
//! The small crate builds into `<target dir>/recompile-test` (a sibling of
//! the workspace's own build, so the two never wait on each other's lock);
//! its dependencies compile once and are reused by later runs.

use std::path::{Path, PathBuf};
use std::process::Command;

const MAIN: &str = r#"
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use hypernodes::{Callback, CallbackContext, DiskCache, Inputs, Pipeline, node};

#[derive(Default)]
struct Runs(Mutex<Vec<String>>);

impl Callback for Runs {
    fn on_node_end(&self, _ctx: &CallbackContext<'_>, node: &str, _elapsed: Duration) {
        self.0.lock().unwrap().push(node.to_string());
    }
}

fn helper(x: i64) -> i64 {
    x + HELPER_DELTA
}

#[node(output = "a")]
fn node_a(x: i64) -> i64 {
    x * 2 + [x].iter().count() as i64 - 1
}

/// DOC_B
#[node(output = "b")]
fn node_b(a: i64) -> i64 {
    helper(a)
}

#[node(output = "c")]
fn node_c(b: i64) -> i64 {
    b + C_DELTA
}

fn main() {
    let dir = std::env::args().nth(1).expect("cache dir");
    let runs = Arc::new(Runs::default());
    let p = Pipeline::new([node_a::node(), node_b::node(), node_c::node()])
        .unwrap()
        .with_cache(DiskCache::new(dir))
        .with_callback(runs.clone());
    let r = p.map(Inputs::new().with("x", (0..5i64).collect::<Vec<_>>()), ["x"]).unwrap();
    let runs = runs.0.lock().unwrap();
    let n = |name: &str| runs.iter().filter(|r| r.as_str() == name).count();
    println!("RUNS a={} b={} c={} values={:?}", n("node_a"), n("node_b"), n("node_c"), r.values::<i64>("c").unwrap());
}
"#;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_crate(dir: &Path, helper_delta: i64, c_delta: i64, doc: &str) {
    let manifest = format!(
        r#"[package]
name = "recompile-probe"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
hypernodes = {{ path = "{}" }}

[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
debug = false

[workspace]
"#,
        workspace().display()
    );
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    // Same dependency versions as the workspace, so nothing new is resolved.
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let main = MAIN
        .replace("HELPER_DELTA", &helper_delta.to_string())
        .replace("C_DELTA", &c_delta.to_string())
        .replace("DOC_B", doc);
    std::fs::write(dir.join("src/main.rs"), main).unwrap();
}

/// A second binary of the probe package, defining functions named like the
/// main binary's helper (`helper`) and like a method its nodes call
/// (`count`).
fn write_tool(dir: &Path, delta: i64) {
    std::fs::create_dir_all(dir.join("src/bin")).unwrap();
    let tool = format!(
        "fn helper(x: i64) -> i64 {{ x - {delta} }}\n\
         fn count() -> i64 {{ {delta} }}\n\
         fn main() {{ println!(\"{{}}\", helper(count())); }}\n"
    );
    std::fs::write(dir.join("src/bin/tool.rs"), tool).unwrap();
}

fn build_and_run(dir: &Path, cache: &Path) -> String {
    build_and_run_logged(dir, cache).0
}

/// Builds and runs the probe with `LOG_HYPERNODES_CACHE=items`: its result line
/// and the cache log lines.
fn build_and_run_logged(dir: &Path, cache: &Path) -> (String, Vec<String>) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("recompile-test");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--offline"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "the probe crate builds");
    let out = Command::new(target.join("debug/recompile-probe"))
        .arg(cache)
        .env("LOG_HYPERNODES_CACHE", "items")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let log = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("hypernodes cache: "))
        .map(String::from)
        .collect();
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RUNS ").map(str::to_string))
        .unwrap_or_else(|| panic!("no result in {stdout}"));
    (result, log)
}

fn misses<'a>(log: &'a [String], node: &str) -> Vec<&'a String> {
    let tag = format!("miss node={node} ");
    log.iter().filter(|l| l.contains(&tag)).collect()
}

#[test]
fn edits_recompute_exactly_the_changed_nodes() {
    let src = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let crate_dir = src.path().join("probe");

    write_crate(&crate_dir, 1, 100, "Adds one.");
    assert_eq!(
        build_and_run(&crate_dir, cache.path()),
        "a=5 b=5 c=5 values=[101, 103, 105, 107, 109]"
    );
    assert_eq!(
        build_and_run(&crate_dir, cache.path()),
        "a=0 b=0 c=0 values=[101, 103, 105, 107, 109]"
    );

    // The last node's body changed: only it runs.
    write_crate(&crate_dir, 1, 200, "Adds one.");
    let (runs, log) = build_and_run_logged(&crate_dir, cache.path());
    assert_eq!(runs, "a=0 b=0 c=5 values=[201, 203, 205, 207, 209]");
    let c = misses(&log, "node_c");
    assert_eq!(c.len(), 5, "{log:#?}");
    assert!(
        c.iter().all(|l| l.ends_with("(code changed since the last cached version of this node: body)")),
        "{log:#?}"
    );

    // A helper only `node_b` calls changed: b and (its values changed) c run, a does not.
    write_crate(&crate_dir, 2, 200, "Adds one.");
    let (runs, log) = build_and_run_logged(&crate_dir, cache.path());
    assert_eq!(runs, "a=0 b=5 c=5 values=[202, 204, 206, 208, 210]");
    let b = misses(&log, "node_b");
    assert_eq!(b.len(), 5, "{log:#?}");
    assert!(
        b.iter().all(|l| l.ends_with(
            "(code changed since the last cached version of this node: helper `helper`)"
        )),
        "{log:#?}"
    );
    // c's code did not change: its misses come from new input values.
    assert!(
        misses(&log, "node_c")
            .iter()
            .all(|l| l.contains("new input values")),
        "{log:#?}"
    );

    // Only a doc comment changed: nothing runs.
    write_crate(&crate_dir, 2, 200, "Adds two, as documented now.");
    let (runs, log) = build_and_run_logged(&crate_dir, cache.path());
    assert_eq!(runs, "a=0 b=0 c=0 values=[202, 204, 206, 208, 210]");
    assert!(log.iter().all(|l| l.contains(" hit ")), "{log:#?}");

    // Another binary of the package, with a `helper` and a `count` of its
    // own, is another crate target: adding and editing it changes nothing
    // here (`node_b` calls this binary's `helper`; `node_a` calls the
    // method `Iterator::count`, never a free `fn count`).
    write_tool(&crate_dir, 1);
    assert_eq!(
        build_and_run(&crate_dir, cache.path()),
        "a=0 b=0 c=0 values=[202, 204, 206, 208, 210]"
    );
    write_tool(&crate_dir, 7);
    assert_eq!(
        build_and_run(&crate_dir, cache.path()),
        "a=0 b=0 c=0 values=[202, 204, 206, 208, 210]"
    );
}
