//! The standalone cluster: results, failures and the shared cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypernodes_ballista::BallistaEngine;
use hypernodes_core::node::NodeRegistry;
use hypernodes_core::node::RegistryError;
use hypernodes_core::{
    DiskCache, Error, ErrorPolicy, Inputs, MapOptions, Pipeline, SeqEngine, node,
};

static CLEANS: AtomicUsize = AtomicUsize::new(0);

/// The tests count `clean`'s calls: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[node(output = "cleaned")]
fn clean(text: &str) -> Result<String, String> {
    CLEANS.fetch_add(1, Ordering::SeqCst);
    if text.contains("poison") {
        return Err(format!("cannot clean {text:?}"));
    }
    Ok(text.trim().to_lowercase())
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("  Text {i} Has {} WORDS ", i % 7))
        .collect()
}

fn nodes() -> Pipeline {
    Pipeline::new([clean::node(), count::node()]).unwrap()
}

/// The word counts of `t` mapped by `pipeline`.
fn counts_on(pipeline: Pipeline, t: &[String]) -> Vec<i64> {
    pipeline
        .map(Inputs::new().with("text", t.to_vec()), ["text"])
        .unwrap()
        .values::<i64>("word_count")
        .unwrap()
}

#[test]
fn a_map_runs_on_a_standalone_cluster_like_on_seq_and_shares_its_cache() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let registry = NodeRegistry::new().with_pipeline(&nodes());
    let engine = Arc::new(BallistaEngine::standalone(registry));
    let t = texts(2000);
    let want = counts_on(nodes().with_engine(SeqEngine), &t);

    // Half of them computed by SeqEngine into the cache first.
    CLEANS.store(0, Ordering::SeqCst);
    nodes()
        .with_engine(SeqEngine)
        .with_cache(DiskCache::new(dir.path()))
        .map(Inputs::new().with("text", t[..1000].to_vec()), ["text"])
        .unwrap();
    assert_eq!(CLEANS.swap(0, Ordering::SeqCst), 1000);

    // On the cluster: the same results, and only the other half computed.
    let on_cluster = nodes()
        .with_shared_engine(engine.clone())
        .with_cache(DiskCache::new(dir.path()));
    let r = on_cluster
        .map(Inputs::new().with("text", t.clone()), ["text"])
        .unwrap();
    assert_eq!(r.values::<i64>("word_count").unwrap(), want);
    assert_eq!(CLEANS.swap(0, Ordering::SeqCst), 1000);

    // And again: nothing computed.
    let r = on_cluster
        .map(Inputs::new().with("text", t.clone()), ["text"])
        .unwrap();
    assert_eq!(r.values::<i64>("word_count").unwrap(), want);
    assert_eq!(CLEANS.swap(0, Ordering::SeqCst), 0);
}

#[test]
fn failed_items_come_back_named_under_the_continue_policy() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = nodes();
    let registry = NodeRegistry::new().with_pipeline(&nodes);
    let mut t = texts(300);
    t[17] = "poison pill".into();
    t[250] = "more poison".into();
    let r = nodes
        .with_engine(BallistaEngine::standalone(registry))
        .map(
            Inputs::new().with("text", t),
            MapOptions::over(["text"]).on_error(ErrorPolicy::Continue),
        )
        .unwrap();
    let failed: Vec<(usize, String)> = r
        .failures()
        .iter()
        .map(|f| (f.index, f.node().to_string()))
        .collect();
    assert_eq!(
        failed,
        [(17, "clean".to_string()), (250, "clean".to_string())]
    );
    assert_eq!(r.len(), 300);
}

#[test]
fn twenty_thousand_items_finish_with_seq_results() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let registry = NodeRegistry::new().with_pipeline(&nodes());
    let t = texts(20_000);
    let want = counts_on(nodes().with_engine(SeqEngine), &t);
    let got = counts_on(
        nodes().with_engine(BallistaEngine::standalone(registry)),
        &t,
    );
    assert_eq!(got, want);
}

#[test]
fn a_node_the_cluster_does_not_know_is_an_error_naming_it() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = nodes();
    // The cluster knows `clean` only.
    let registry = NodeRegistry::new().with_node(clean::node());
    let err = nodes
        .with_engine(BallistaEngine::standalone(registry))
        .map(Inputs::new().with("text", texts(10)), ["text"])
        .unwrap_err();
    assert!(
        matches!(&err, Error::Registry(RegistryError::UnknownNode { node, .. }) if node == "count"),
        "{err:?}"
    );
}
