//! Events as plain values, in the order they were reported: what tests
//! assert on, and what engines that run elsewhere (other processes, other
//! machines) can send back as data.

use std::sync::Mutex;
use std::time::Duration;

use crate::cache::CacheDecision;
use crate::error::{Error, NodeError};
use crate::observe::callback::{Callback, CallbackContext};

/// One reported event: where it happened (`path`, pipeline names from the
/// outermost; `items`, one index per enclosing `map` level) and what.
/// Durations are left out, so equal runs record equal events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Pipeline names from the outermost pipeline to the current one.
    pub path: Vec<String>,
    /// Item indices, one per enclosing `map` level, outermost first.
    pub items: Vec<usize>,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A `run` or `map` of a pipeline started.
    PipelineStart,
    /// A `run` or `map` of a pipeline ended.
    PipelineEnd,
    /// A call of the named node started.
    NodeStart(String),
    /// A call of the named node ended successfully.
    NodeEnd(String),
    /// The named node's result came from the cache.
    NodeCached(String),
    /// What the cache did for a node and item, and why.
    CacheDecision(CacheDecision),
    /// A node attempt failed and will be retried.
    NodeRetry {
        /// The node.
        node: String,
        /// The attempt that failed (from 1).
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// A map over this many items started.
    MapStart(usize),
    /// A map ended.
    MapEnd,
    /// An item of a map started.
    MapItemStart,
    /// An item of a map ended.
    MapItemEnd,
    /// The named nested pipeline node started.
    NestedStart(String),
    /// The named nested pipeline node ended.
    NestedEnd(String),
    /// The cache failed (its message).
    CacheError(String),
    /// A node failed for good.
    Error {
        /// The failing node, when known.
        node: Option<String>,
        /// The error's message.
        error: String,
    },
}

/// A [`Callback`] that records every event as an [`Event`], in order.
///
/// ```
/// use std::sync::Arc;
/// use hypernodes_core::{Inputs, Pipeline, node};
/// use hypernodes_core::observe::{EventKind, Recorder};
///
/// #[node(output = "doubled")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// let recorder = Arc::new(Recorder::new());
/// Pipeline::new([double::node()]).unwrap()
///     .with_callback(recorder.clone())
///     .map(Inputs::new().with("x", vec![1i64, 2]), ["x"])
///     .unwrap();
/// let ends: Vec<Vec<usize>> = recorder
///     .events()
///     .into_iter()
///     .filter_map(|e| match e.kind {
///         EventKind::NodeEnd(_) => Some(e.items),
///         _ => None,
///     })
///     .collect();
/// assert_eq!(ends, [vec![0], vec![1]]);
/// ```
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The events so far, taken out (the recorder starts empty again).
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

impl Recorder {
    fn record(&self, ctx: &CallbackContext<'_>, kind: EventKind) {
        self.push(Event {
            path: ctx.path.to_vec(),
            items: ctx.items.to_vec(),
            kind,
        });
    }
}

impl Callback for Recorder {
    fn on_pipeline_start(&self, ctx: &CallbackContext<'_>) {
        self.record(ctx, EventKind::PipelineStart);
    }
    fn on_pipeline_end(&self, ctx: &CallbackContext<'_>, _: Duration) {
        self.record(ctx, EventKind::PipelineEnd);
    }
    fn on_node_start(&self, ctx: &CallbackContext<'_>, node: &str) {
        self.record(ctx, EventKind::NodeStart(node.to_string()));
    }
    fn on_node_end(&self, ctx: &CallbackContext<'_>, node: &str, _: Duration) {
        self.record(ctx, EventKind::NodeEnd(node.to_string()));
    }
    fn on_node_cached(&self, ctx: &CallbackContext<'_>, node: &str) {
        self.record(ctx, EventKind::NodeCached(node.to_string()));
    }
    fn on_cache_decision(&self, ctx: &CallbackContext<'_>, decision: &CacheDecision) {
        self.record(ctx, EventKind::CacheDecision(decision.clone()));
    }
    fn on_node_retry(
        &self,
        ctx: &CallbackContext<'_>,
        node: &str,
        attempt: u32,
        error: &NodeError,
    ) {
        let kind = EventKind::NodeRetry {
            node: node.to_string(),
            attempt,
            error: error.to_string(),
        };
        self.record(ctx, kind);
    }
    fn on_map_start(&self, ctx: &CallbackContext<'_>, len: usize) {
        self.record(ctx, EventKind::MapStart(len));
    }
    fn on_map_end(&self, ctx: &CallbackContext<'_>, _: Duration) {
        self.record(ctx, EventKind::MapEnd);
    }
    fn on_map_item_start(&self, ctx: &CallbackContext<'_>) {
        self.record(ctx, EventKind::MapItemStart);
    }
    fn on_map_item_end(&self, ctx: &CallbackContext<'_>, _: Duration) {
        self.record(ctx, EventKind::MapItemEnd);
    }
    fn on_nested_start(&self, ctx: &CallbackContext<'_>, node: &str) {
        self.record(ctx, EventKind::NestedStart(node.to_string()));
    }
    fn on_nested_end(&self, ctx: &CallbackContext<'_>, node: &str, _: Duration) {
        self.record(ctx, EventKind::NestedEnd(node.to_string()));
    }
    fn on_cache_error(&self, ctx: &CallbackContext<'_>, error: &Error) {
        self.record(ctx, EventKind::CacheError(error.to_string()));
    }
    fn on_error(&self, ctx: &CallbackContext<'_>, error: &Error) {
        let kind = EventKind::Error {
            node: error.node().map(str::to_string),
            error: error.to_string(),
        };
        self.record(ctx, kind);
    }
}
