//! One cached step for every engine: with a cache, a map runs through the
//! columnar steps on the row engines as on `DataFusionEngine` — a node's
//! typed row loop is called once per batch of missing rows (never per row),
//! only for misses, and a node's batch implementation runs on every engine.
//! Without a cache the row engines walk values, calling the node per item.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hypernodes::deps::arrow_array::cast::AsArray;
use hypernodes::deps::arrow_array::types::Int64Type;
use hypernodes::deps::arrow_array::{ArrayRef, Int64Array};
use hypernodes::{BoxError, DiskCache, Inputs, Pipeline, node};

#[node(output = "tripled")]
fn triple(x: i64) -> i64 {
    x * 3
}

#[test]
fn cached_maps_call_the_row_loop_per_batch_of_misses_on_every_engine() {
    const N: usize = 1000;
    let xs: Vec<i64> = (0..N as i64).collect();
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let p = Pipeline::new([common::log_row_loop(triple::node(), &sizes)])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(dir.path()));
        let r = p.map(Inputs::new().with("x", xs.clone()), ["x"]).unwrap();
        assert_eq!(
            r.values::<i64>("tripled").unwrap(),
            xs.iter().map(|x| x * 3).collect::<Vec<_>>(),
            "{name}"
        );
        let cold = std::mem::take(&mut *sizes.lock().unwrap());
        assert_eq!(cold.iter().sum::<usize>(), N, "{name}: every item once");
        // At least four rows a call (the matrix runs DataFusion in batches of 4).
        assert!(cold.len() <= N / 4, "{name}: batches, not rows: {cold:?}");

        // Ten new items: one call of the row loop for them alone.
        let more: Vec<i64> = (0..N as i64 + 10).collect();
        p.map(Inputs::new().with("x", more), ["x"]).unwrap();
        let warm = std::mem::take(&mut *sizes.lock().unwrap());
        assert_eq!(warm.iter().sum::<usize>(), 10, "{name}: only the misses");

        // Without a cache the row engines call the node per item instead.
        let p = Pipeline::new([common::log_row_loop(triple::node(), &sizes)])
            .unwrap()
            .with_shared_engine(engine.clone());
        p.map(Inputs::new().with("x", xs.clone()), ["x"]).unwrap();
        let uncached = std::mem::take(&mut *sizes.lock().unwrap());
        if name == "datafusion" {
            assert_eq!(uncached.iter().sum::<usize>(), N, "{name}");
        } else {
            assert!(uncached.is_empty(), "{name}: {uncached:?}");
        }
    }
}

static BATCHES: AtomicUsize = AtomicUsize::new(0);

fn double_batch(arrays: &[ArrayRef]) -> Result<Vec<ArrayRef>, BoxError> {
    BATCHES.fetch_add(1, Ordering::SeqCst);
    let x = arrays[0].as_primitive::<Int64Type>();
    Ok(vec![Arc::new(
        x.iter().map(|v| v.map(|v| v * 2)).collect::<Int64Array>(),
    )])
}

#[node(output = "doubled", batch = double_batch)]
fn double(x: i64) -> i64 {
    x * 2
}

#[test]
fn cached_maps_run_a_nodes_batch_implementation_on_every_engine() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let before = BATCHES.load(Ordering::SeqCst);
        let r = Pipeline::new([double::node()])
            .unwrap()
            .with_shared_engine(engine.clone())
            .with_cache(DiskCache::new(dir.path()))
            .map(
                Inputs::new().with("x", (0..500i64).collect::<Vec<_>>()),
                ["x"],
            )
            .unwrap();
        assert_eq!(
            r.values::<i64>("doubled").unwrap(),
            (0..500i64).map(|x| x * 2).collect::<Vec<_>>(),
            "{name}"
        );
        assert!(
            BATCHES.load(Ordering::SeqCst) > before,
            "{name}: the batch implementation ran"
        );
    }
}
