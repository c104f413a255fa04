//! More than 2 GiB of text in one mapped column (one Arrow string array
//! holds at most 2 GiB): the row engines map it with a cache, hashing and
//! storing in parts; where a limit remains (`DataFusionEngine` turns the
//! mapped input into one Arrow column), the error names the input and the
//! limit. Its own test binary: it needs a few GiB of memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes::{DiskCache, Engine, Inputs, Pipeline, SeqEngine, node};

static MEASURED: AtomicUsize = AtomicUsize::new(0);

#[node(output = "length")]
fn measure(text: &str) -> i64 {
    MEASURED.fetch_add(1, Ordering::SeqCst);
    text.len() as i64 + i64::from(text.as_bytes()[0])
}

/// 24 texts of 100 MB: 2.4 GB in all.
fn texts() -> Vec<String> {
    (0..24u8)
        .map(|i| {
            let mut t = "x".repeat(100_000_000);
            t.replace_range(0..1, &((b'a' + i) as char).to_string());
            t
        })
        .collect()
}

#[test]
fn more_than_two_gib_of_text_maps_with_a_cache() {
    let expected: Vec<i64> = (0..24).map(|i| 100_000_000 + i64::from(b'a' + i)).collect();
    // The row engines share this path (the batched cached step): one of
    // them is enough for gigabytes.
    let engines: Vec<(&str, std::sync::Arc<dyn Engine>)> =
        vec![("seq", std::sync::Arc::new(SeqEngine))];
    for (name, engine) in engines {
        let dir = tempfile::tempdir().unwrap();
        for run in ["cold", "warm"] {
            let before = MEASURED.load(Ordering::SeqCst);
            let r = Pipeline::new([measure::node()])
                .unwrap()
                .with_shared_engine(engine.clone())
                .with_cache(DiskCache::new(dir.path()))
                .map(Inputs::new().with("text", texts()), ["text"])
                .unwrap_or_else(|e| panic!("{name} {run}: {e}"));
            assert_eq!(r.values::<i64>("length").unwrap(), expected, "{name} {run}");
            assert!(
                r.cache_errors().is_empty(),
                "{name} {run}: {:?}",
                r.cache_errors()
            );
            let calls = MEASURED.load(Ordering::SeqCst) - before;
            assert_eq!(calls, if run == "cold" { 24 } else { 0 }, "{name} {run}");
        }
    }
}

#[cfg(feature = "datafusion")]
#[test]
fn the_columnar_engine_names_the_input_and_the_limit() {
    let err = Pipeline::new([measure::node()])
        .unwrap()
        .with_engine(hypernodes::engines::DataFusionEngine::new().with_small_map(0))
        .map(Inputs::new().with("text", texts()), ["text"])
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("input `text`"), "{message}");
    assert!(message.contains("2147483647"), "{message}");
    assert!(!message.contains("no Arrow form"), "{message}");
    // The conversion's own error is kept as the cause.
    let cause = std::error::Error::source(&err).expect("a cause");
    assert!(
        cause.downcast_ref::<hypernodes::ValueError>().is_some(),
        "{cause:?}"
    );
}
