//! The nodes the demo cluster binaries link (and the tests that start
//! them): the README's pipeline, whose `clean` calls are counted in files
//! when `HYPERNODES_DEMO_CALLS` names a directory (one line per call, in a
//! file per process), so a test can count what executors computed.

use hypernodes_core::node::NodeRegistry;
use hypernodes_core::{Pipeline, node};

/// Counts a call of `node` in `$HYPERNODES_DEMO_CALLS/<node>-<pid>`, after
/// sleeping `$HYPERNODES_DEMO_SLEEP_MS` milliseconds if set (slow items).
fn record_call(node: &str) {
    use std::io::Write;
    if let Some(ms) = std::env::var("HYPERNODES_DEMO_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let Ok(dir) = std::env::var("HYPERNODES_DEMO_CALLS") else {
        return;
    };
    let path = std::path::Path::new(&dir).join(format!("{node}-{}", std::process::id()));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(b"1\n");
    }
}

/// Trims and lowercases a text; fails on texts containing "poison".
#[node(output = "cleaned")]
pub fn clean(text: &str) -> Result<String, String> {
    record_call("clean");
    if text.contains("poison") {
        return Err(format!("cannot clean {text:?}"));
    }
    Ok(text.trim().to_lowercase())
}

/// Counts the words of a cleaned text.
#[node(output = "word_count")]
pub fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

/// `clean` then `count`.
pub fn pipeline() -> Pipeline {
    Pipeline::new([clean::node(), count::node()]).expect("the demo pipeline is valid")
}

/// The demo nodes, for a scheduler or an executor.
pub fn registry() -> NodeRegistry {
    NodeRegistry::new().with_pipeline(&pipeline())
}
