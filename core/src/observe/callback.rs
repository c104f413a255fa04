//! Callbacks: the lifecycle events every engine reports.
//!
//! Implement [`Callback`] (every method has a no-op default, so implement
//! only the events you need) and attach it with
//! [`Pipeline::with_callback`](crate::Pipeline::with_callback). Nested
//! pipelines report to their parent's callbacks too. Events of parallel
//! engines arrive from several threads at once.
//!
//! What events cost: nothing without a callback. With one, columnar
//! engines fire a batch's node starts and ends and item starts and ends
//! as one call per callback ([`ItemBatch`], [`Callback::on_node_starts`]
//! and its siblings), whose defaults call the per-item methods in a loop
//! compiled into the callback's own code: a per-item method left empty
//! costs nothing per item. Item paths are written in place, never built
//! per event, and the clock is read once per batch: a node's time is its
//! batch call's. Row engines read the clock
//! once between consecutive events of an item (one node's end is the
//! next one's start). A callback that only counts
//! ([`Callback::item_events`] `false`) gets counts per batch and no
//! clock reading at all.

use std::time::Duration;

use smallvec::SmallVec;

use crate::error::{Error, NodeError};

/// Where an event happened.
#[derive(Clone, Copy, Debug)]
pub struct CallbackContext<'a> {
    /// Pipeline names from the outermost pipeline to the current one.
    pub path: &'a [String],
    /// Item indices, one per enclosing `map` level, outermost first.
    pub items: &'a [usize],
}

impl CallbackContext<'_> {
    /// The current pipeline's name.
    pub fn pipeline(&self) -> &str {
        self.path.last().map(String::as_str).unwrap_or("")
    }

    /// Nesting depth: 0 for the outermost pipeline.
    pub fn depth(&self) -> usize {
        self.path.len().saturating_sub(1)
    }

    /// The innermost item index, inside `map`.
    pub fn item(&self) -> Option<usize> {
        self.items.last().copied()
    }
}

/// The items of one batch of per-item events (see
/// [`Callback::on_node_starts`] and the other batch methods): each item's
/// [`CallbackContext`] in turn, its item path written into one buffer as
/// it goes. Columnar engines report a batch of rows at once; row engines a
/// batch of one item.
#[derive(Clone, Copy, Debug)]
pub struct ItemBatch<'a> {
    path: &'a [String],
    items: BatchItems<'a>,
}

#[derive(Clone, Copy, Debug)]
enum BatchItems<'a> {
    /// One event whose context has this item path (empty for a `run`).
    One(&'a [usize]),
    /// Items of a map: their paths are `enclosing` followed by the item,
    /// or `paths[item]` when given.
    Many {
        enclosing: &'a [usize],
        items: &'a [usize],
        paths: Option<&'a [SmallVec<[usize; 4]>]>,
    },
}

impl<'a> ItemBatch<'a> {
    /// `items` of a map inside the pipeline at `path` (see `BatchItems`).
    pub(crate) fn new(
        path: &'a [String],
        enclosing: &'a [usize],
        items: &'a [usize],
        paths: Option<&'a [SmallVec<[usize; 4]>]>,
    ) -> Self {
        ItemBatch {
            path,
            items: BatchItems::Many {
                enclosing,
                items,
                paths,
            },
        }
    }

    /// One event, whose context has item path `items`.
    pub(crate) fn one(path: &'a [String], items: &'a [usize]) -> Self {
        ItemBatch {
            path,
            items: BatchItems::One(items),
        }
    }

    /// How many items the batch has.
    pub fn len(&self) -> usize {
        match self.items {
            BatchItems::One(_) => 1,
            BatchItems::Many { items, .. } => items.len(),
        }
    }

    /// Whether the batch has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with each item's position in the batch and its context,
    /// in order.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize, &CallbackContext<'_>)) {
        let (enclosing, items, paths) = match self.items {
            BatchItems::One(items) => {
                f(
                    0,
                    &CallbackContext {
                        path: self.path,
                        items,
                    },
                );
                return;
            }
            BatchItems::Many {
                enclosing,
                items,
                paths,
            } => (enclosing, items, paths),
        };
        if enclosing.is_empty() && paths.is_none() {
            // A top-level map: each item's path is the item alone (and a
            // callback whose per-item method is empty compiles this loop
            // away).
            for (k, item) in items.iter().enumerate() {
                f(
                    k,
                    &CallbackContext {
                        path: self.path,
                        items: std::slice::from_ref(item),
                    },
                );
            }
            return;
        }
        let mut buffer: SmallVec<[usize; 4]> = enclosing.iter().copied().collect();
        buffer.push(0);
        for (k, &item) in items.iter().enumerate() {
            let items: &[usize] = match paths.and_then(|p| p.get(item)) {
                Some(mapped) => mapped,
                None => {
                    if let Some(last) = buffer.last_mut() {
                        *last = item;
                    }
                    &buffer
                }
            };
            f(
                k,
                &CallbackContext {
                    path: self.path,
                    items,
                },
            );
        }
    }
}

/// Results of one node over a batch of items (see
/// [`Callback::item_events`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Items the node ran for successfully.
    pub computed: usize,
    /// Items whose result came from the cache.
    pub cached: usize,
}

/// How many items (or nested runs) of a batch started and ended (see
/// [`Callback::item_events`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemCounts {
    /// How many started.
    pub started: usize,
    /// How many ended (successfully or not).
    pub ended: usize,
}

/// How far a map's job on a cluster has come, as the cluster's scheduler
/// counts it (see [`Callback::on_job_progress`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Tasks that finished successfully (a retried task counts once per
    /// successful attempt).
    pub tasks_done: usize,
    /// Tasks of every stage of the job planned so far.
    pub tasks_total: usize,
    /// Stages that finished.
    pub stages_done: usize,
    /// Stages of the job.
    pub stages_total: usize,
}

/// Receives lifecycle events from engines. All methods default to no-ops,
/// so a callback implements only what it needs.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use hypernodes_core::{Callback, CallbackContext, Inputs, Pipeline, node};
///
/// #[derive(Default)]
/// struct Finished(Mutex<Vec<(Vec<usize>, String)>>);
///
/// impl Callback for Finished {
///     fn on_node_end(&self, ctx: &CallbackContext<'_>, node: &str, _: std::time::Duration) {
///         self.0.lock().unwrap().push((ctx.items.to_vec(), node.to_string()));
///     }
/// }
///
/// #[node(output = "doubled")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// let seen = Arc::new(Finished::default());
/// Pipeline::new([double::node()]).unwrap()
///     .with_callback(seen.clone())
///     .map(Inputs::new().with("x", vec![1i64, 2]), ["x"])
///     .unwrap();
/// assert_eq!(
///     *seen.0.lock().unwrap(),
///     [(vec![0], "double".to_string()), (vec![1], "double".to_string())]
/// );
/// ```
pub trait Callback: Send + Sync {
    /// Whether this callback takes one event per item (the default). A
    /// callback that only counts — a progress bar — returns `false`: it
    /// then gets counts instead ([`on_node_batch`](Self::on_node_batch),
    /// [`on_items_batch`](Self::on_items_batch),
    /// [`on_runs_batch`](Self::on_runs_batch)), one per batch of rows on
    /// columnar engines; row engines gather a chunk's counts and report
    /// them every 10 ms and at the chunk's end (runs of nested pipelines:
    /// one each). They get none of
    /// the per-item events (node start, end, cached and retry, map item
    /// start and end, cache decisions, and the start and end of nested
    /// pipelines inside a map's items). Pipeline, map, error and cache
    /// error events reach every callback. This is what lets a callback
    /// follow a map of millions of items at almost no cost.
    fn item_events(&self) -> bool {
        true
    }
    /// Counts of one node over a batch of items (callbacks without
    /// [`item_events`](Self::item_events) only). Failures arrive through
    /// [`on_error`](Self::on_error).
    fn on_node_batch(&self, _ctx: &CallbackContext<'_>, _node: &str, _counts: NodeCounts) {}
    /// Items of a map of the pipeline at `ctx.path` that started and ended
    /// in a batch (callbacks without [`item_events`](Self::item_events)
    /// only).
    fn on_items_batch(&self, _ctx: &CallbackContext<'_>, _counts: ItemCounts) {}
    /// Runs of the nested pipeline at `ctx.path` (one per item of the map
    /// around it) that started and ended in a batch (callbacks without
    /// [`item_events`](Self::item_events) only).
    fn on_runs_batch(&self, _ctx: &CallbackContext<'_>, _counts: ItemCounts) {}
    /// While a map runs on a cluster (`BallistaEngine` with a remote
    /// scheduler): how far its job is, each time the scheduler's count
    /// changes (polled a few times a second). Reaches every callback. The
    /// per-node counts of what ran arrive with the results
    /// ([`on_node_batch`](Self::on_node_batch)).
    fn on_job_progress(&self, _ctx: &CallbackContext<'_>, _progress: JobProgress) {}
    /// A `run` or `map` of a pipeline starts.
    fn on_pipeline_start(&self, _ctx: &CallbackContext<'_>) {}
    /// A `run` or `map` of a pipeline ends (successfully or not).
    fn on_pipeline_end(&self, _ctx: &CallbackContext<'_>, _elapsed: Duration) {}
    /// A node call starts.
    fn on_node_start(&self, _ctx: &CallbackContext<'_>, _node: &str) {}
    /// Node `node` starts for every item of `batch`: how columnar engines
    /// report a batch of rows, one call per batch. The default calls
    /// [`on_node_start`](Self::on_node_start) for each item, so implement
    /// this only to take the batch at once; a callback that leaves the
    /// per-item method empty then pays nothing per item.
    fn on_node_starts(&self, batch: &ItemBatch<'_>, node: &str) {
        batch.for_each(|_, ctx| self.on_node_start(ctx, node));
    }
    /// A node call ended successfully.
    fn on_node_end(&self, _ctx: &CallbackContext<'_>, _node: &str, _elapsed: Duration) {}
    /// Node `node` ended successfully for every item of `batch`, after
    /// `elapsed` (the batch call's time). The default calls
    /// [`on_node_end`](Self::on_node_end) for each item (see
    /// [`on_node_starts`](Self::on_node_starts)).
    fn on_node_ends(&self, batch: &ItemBatch<'_>, node: &str, elapsed: Duration) {
        batch.for_each(|_, ctx| self.on_node_end(ctx, node, elapsed));
    }
    /// A node's result was found in the cache, so it did not run.
    fn on_node_cached(&self, _ctx: &CallbackContext<'_>, _node: &str) {}
    /// What the cache did for a node and item, and why (only with a cache).
    fn on_cache_decision(
        &self,
        _ctx: &CallbackContext<'_>,
        _decision: &crate::cache::CacheDecision,
    ) {
    }
    /// A node attempt failed and will be retried (`attempt` counts from 1).
    fn on_node_retry(
        &self,
        _ctx: &CallbackContext<'_>,
        _node: &str,
        _attempt: u32,
        _error: &NodeError,
    ) {
    }
    /// A map over `items` items starts.
    fn on_map_start(&self, _ctx: &CallbackContext<'_>, _items: usize) {}
    /// A map ends.
    fn on_map_end(&self, _ctx: &CallbackContext<'_>, _elapsed: Duration) {}
    /// One item of a map starts (`ctx.item()` is its index).
    fn on_map_item_start(&self, _ctx: &CallbackContext<'_>) {}
    /// One item of a map ended (successfully or not).
    fn on_map_item_end(&self, _ctx: &CallbackContext<'_>, _elapsed: Duration) {}
    /// Every item of `batch` starts. The default calls
    /// [`on_map_item_start`](Self::on_map_item_start) for each item (see
    /// [`on_node_starts`](Self::on_node_starts)).
    fn on_map_item_starts(&self, batch: &ItemBatch<'_>) {
        batch.for_each(|_, ctx| self.on_map_item_start(ctx));
    }
    /// Every item of `batch` ended, item `k` of the batch after
    /// `elapsed[k]`. The default calls
    /// [`on_map_item_end`](Self::on_map_item_end) for each item (see
    /// [`on_node_starts`](Self::on_node_starts)).
    fn on_map_item_ends(&self, batch: &ItemBatch<'_>, elapsed: &[Duration]) {
        batch.for_each(|k, ctx| {
            self.on_map_item_end(ctx, elapsed.get(k).copied().unwrap_or_default())
        });
    }
    /// A nested pipeline node starts (`ctx` is the outer pipeline's).
    fn on_nested_start(&self, _ctx: &CallbackContext<'_>, _node: &str) {}
    /// A nested pipeline node ends.
    fn on_nested_end(&self, _ctx: &CallbackContext<'_>, _node: &str, _elapsed: Duration) {}
    /// The cache failed (a write to a full disk or a read-only directory,
    /// say): reported once per `map`, at the first failure; the map goes on
    /// without the cache unless it is strict (see
    /// [`MapOptions::strict_cache`](crate::MapOptions::strict_cache)).
    fn on_cache_error(&self, _ctx: &CallbackContext<'_>, _error: &Error) {}
    /// A node failed for good (after its retries).
    fn on_error(&self, _ctx: &CallbackContext<'_>, _error: &Error) {}
}
