//! The engine matrix shared by the integration tests: every behaviour is
//! checked on every engine. A new engine joins by adding one line here.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypernodes::{
    Callback, CallbackContext, Engine, Error, Node, NodeError, ParallelEngine, SeqEngine, node,
};

/// Every engine, with a name for assertion messages.
pub fn engines() -> Vec<(&'static str, Arc<dyn Engine>)> {
    #[allow(unused_mut)]
    let mut engines: Vec<(&'static str, Arc<dyn Engine>)> = vec![
        ("seq", Arc::new(SeqEngine)),
        (
            "parallel",
            Arc::new(ParallelEngine::with_threads(2).unwrap()),
        ),
    ];
    // Every map as a plan (small ones included: the plan path is what is
    // tested), then as it runs by default: small maps on the row path.
    #[cfg(feature = "datafusion")]
    engines.push((
        "datafusion",
        Arc::new(
            hypernodes::engines::DataFusionEngine::new()
                .with_target_partitions(2)
                .with_batch_size(4)
                .with_small_map(0),
        ),
    ));
    #[cfg(feature = "datafusion")]
    engines.push((
        "datafusion_small",
        Arc::new(hypernodes::engines::DataFusionEngine::new().with_target_partitions(2)),
    ));
    engines
}

/// Records events as strings, for comparison with an expected list.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.events.lock().unwrap())
    }

    fn push(&self, ctx: &CallbackContext<'_>, what: String) {
        let items: Vec<String> = ctx.items.iter().map(|i| i.to_string()).collect();
        let at = if items.is_empty() {
            String::new()
        } else {
            format!("[{}]", items.join(","))
        };
        self.events
            .lock()
            .unwrap()
            .push(format!("{}{} {}", ctx.path.join("/"), at, what));
    }
}

impl Callback for Recorder {
    fn on_pipeline_start(&self, ctx: &CallbackContext<'_>) {
        self.push(ctx, "pipeline_start".into());
    }
    fn on_pipeline_end(&self, ctx: &CallbackContext<'_>, _: Duration) {
        self.push(ctx, "pipeline_end".into());
    }
    fn on_node_start(&self, ctx: &CallbackContext<'_>, node: &str) {
        self.push(ctx, format!("node_start {node}"));
    }
    fn on_node_end(&self, ctx: &CallbackContext<'_>, node: &str, _: Duration) {
        self.push(ctx, format!("node_end {node}"));
    }
    fn on_node_cached(&self, ctx: &CallbackContext<'_>, node: &str) {
        self.push(ctx, format!("node_cached {node}"));
    }
    fn on_node_retry(
        &self,
        ctx: &CallbackContext<'_>,
        node: &str,
        attempt: u32,
        error: &NodeError,
    ) {
        self.push(ctx, format!("node_retry {node} {attempt} {error}"));
    }
    fn on_map_start(&self, ctx: &CallbackContext<'_>, items: usize) {
        self.push(ctx, format!("map_start {items}"));
    }
    fn on_map_end(&self, ctx: &CallbackContext<'_>, _: Duration) {
        self.push(ctx, "map_end".into());
    }
    fn on_map_item_start(&self, ctx: &CallbackContext<'_>) {
        self.push(ctx, "item_start".into());
    }
    fn on_map_item_end(&self, ctx: &CallbackContext<'_>, _: Duration) {
        self.push(ctx, "item_end".into());
    }
    fn on_nested_start(&self, ctx: &CallbackContext<'_>, node: &str) {
        self.push(ctx, format!("nested_start {node}"));
    }
    fn on_nested_end(&self, ctx: &CallbackContext<'_>, node: &str, _: Duration) {
        self.push(ctx, format!("nested_end {node}"));
    }
    fn on_error(&self, ctx: &CallbackContext<'_>, error: &Error) {
        self.push(ctx, format!("error {}", error.node().unwrap_or("?")));
    }
}

/// Fails on multiples of 3: for error policies and failure caching.
#[node(output = "checked")]
pub fn check(x: i64) -> Result<i64, String> {
    if x % 3 == 0 {
        Err(format!("{x} is a multiple of 3"))
    } else {
        Ok(x)
    }
}

/// An `i64` output of a map, one entry per item: `None` where the item failed.
pub fn optional_i64s(r: &hypernodes::MapResult, name: &str) -> Vec<Option<i64>> {
    r.column::<i64>(name)
        .unwrap()
        .iter()
        .map(|v| v.copied())
        .collect()
}

/// `node` with its typed row loop wrapped to record, in `sizes`, how many
/// rows each call was given (columnar engines call it once per batch).
pub fn log_row_loop(node: Node, sizes: &Arc<Mutex<Vec<usize>>>) -> Node {
    let inner = node.rows().expect("the node has a row loop").clone();
    let sizes = sizes.clone();
    node.with_rows(Arc::new(move |args, n, retries| {
        sizes.lock().unwrap().push(n);
        inner(args, n, retries)
    }))
}

/// Runs `f` on a thread of its own and returns what it returns; fails the
/// test (naming `what`) if it has not returned within `secs` seconds, so a
/// hang fails CI instead of stalling it. A panic inside `f` fails the test
/// with the same message.
pub fn deadline<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("deadline: {what}"))
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(out);
        })
        .expect("a thread for the deadline");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: no answer within {secs} s (hung)"),
    }
}
