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
//!
//! Engines also learn, from the first event of each kind a callback gets,
//! whether its type leaves that event at its defaults (both the batch
//! method and the per-item one): the defaults record that they ran, for
//! which object and type. Such a callback is not called for that event
//! again, and when every callback leaves both timed events (node ends,
//! item ends) at their defaults, the row engines stop reading the clock:
//! an empty `impl Callback` costs almost nothing after the first item.
//! A callback that overrides either method, or forwards to another
//! callback, is called for every event, as before.

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

/// The per-item events whose defaults the engines detect (see the module
/// docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ItemEvent {
    /// [`Callback::on_node_starts`] and [`Callback::on_node_start`].
    NodeStarts = 0,
    /// [`Callback::on_node_ends`] and [`Callback::on_node_end`].
    NodeEnds = 1,
    /// [`Callback::on_map_item_starts`] and [`Callback::on_map_item_start`].
    ItemStarts = 2,
    /// [`Callback::on_map_item_ends`] and [`Callback::on_map_item_end`].
    ItemEnds = 3,
}

/// Which callback object a default method ran for: its address and its
/// type's name (a field at the start of a callback shares its address,
/// not its type). Not part of the API; see [`Callback::__identity`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackIdentity {
    addr: usize,
    type_name: &'static str,
}

impl CallbackIdentity {
    fn of<T: ?Sized>(this: &T) -> Self {
        CallbackIdentity {
            addr: (this as *const T).cast::<()>().addr(),
            type_name: std::any::type_name::<T>(),
        }
    }
}

/// A default event method ran: for which object, and which event.
type DefaultRan = Option<(CallbackIdentity, ItemEvent)>;

thread_local! {
    /// The last default batch method (`on_node_starts`, ...) that ran on
    /// this thread.
    static DEFAULT_BATCH: std::cell::Cell<DefaultRan> = const { std::cell::Cell::new(None) };
    /// The last default per-item method (`on_node_start`, ...) that ran on
    /// this thread.
    static DEFAULT_ITEM: std::cell::Cell<DefaultRan> = const { std::cell::Cell::new(None) };
}

/// Called by the default batch methods: records that `this`'s ran.
#[inline]
fn default_batch_ran<T: ?Sized>(this: &T, event: ItemEvent) {
    DEFAULT_BATCH.set(Some((CallbackIdentity::of(this), event)));
}

/// Called by the default per-item methods: records that `this`'s ran.
#[inline]
fn default_item_ran<T: ?Sized>(this: &T, event: ItemEvent) {
    DEFAULT_ITEM.set(Some((CallbackIdentity::of(this), event)));
}

/// Calls `deliver` (which hands a non-empty batch of `event` to `cb`) and
/// tells whether `cb`'s type leaves `event` at its defaults: its own
/// default batch method ran, and so did its own default per-item method.
/// Neither can run for the object itself once overridden (Rust has no
/// call to an overridden default), so a `true` holds for every later event
/// of this kind; anything else (an override, a forward to another
/// callback, a nested run in between) gives `false`.
pub(crate) fn leaves_default(cb: &dyn Callback, event: ItemEvent, deliver: impl FnOnce()) -> bool {
    DEFAULT_BATCH.set(None);
    DEFAULT_ITEM.set(None);
    deliver();
    let me = Some((cb.__identity(), event));
    DEFAULT_BATCH.get() == me && DEFAULT_ITEM.get() == me
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
    fn on_node_start(&self, _ctx: &CallbackContext<'_>, _node: &str) {
        default_item_ran(self, ItemEvent::NodeStarts);
    }
    /// Node `node` starts for every item of `batch`: how columnar engines
    /// report a batch of rows, one call per batch. The default calls
    /// [`on_node_start`](Self::on_node_start) for each item, so implement
    /// this only to take the batch at once; a callback that leaves the
    /// per-item method empty then pays nothing per item.
    fn on_node_starts(&self, batch: &ItemBatch<'_>, node: &str) {
        default_batch_ran(self, ItemEvent::NodeStarts);
        batch.for_each(|_, ctx| self.on_node_start(ctx, node));
    }
    /// A node call ended successfully.
    fn on_node_end(&self, _ctx: &CallbackContext<'_>, _node: &str, _elapsed: Duration) {
        default_item_ran(self, ItemEvent::NodeEnds);
    }
    /// Node `node` ended successfully for every item of `batch`, after
    /// `elapsed` (the batch call's time). The default calls
    /// [`on_node_end`](Self::on_node_end) for each item (see
    /// [`on_node_starts`](Self::on_node_starts)).
    fn on_node_ends(&self, batch: &ItemBatch<'_>, node: &str, elapsed: Duration) {
        default_batch_ran(self, ItemEvent::NodeEnds);
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
    fn on_map_item_start(&self, _ctx: &CallbackContext<'_>) {
        default_item_ran(self, ItemEvent::ItemStarts);
    }
    /// One item of a map ended (successfully or not).
    fn on_map_item_end(&self, _ctx: &CallbackContext<'_>, _elapsed: Duration) {
        default_item_ran(self, ItemEvent::ItemEnds);
    }
    /// Every item of `batch` starts. The default calls
    /// [`on_map_item_start`](Self::on_map_item_start) for each item (see
    /// [`on_node_starts`](Self::on_node_starts)).
    fn on_map_item_starts(&self, batch: &ItemBatch<'_>) {
        default_batch_ran(self, ItemEvent::ItemStarts);
        batch.for_each(|_, ctx| self.on_map_item_start(ctx));
    }
    /// Every item of `batch` ended, item `k` of the batch after
    /// `elapsed[k]`. The default calls
    /// [`on_map_item_end`](Self::on_map_item_end) for each item (see
    /// [`on_node_starts`](Self::on_node_starts)).
    fn on_map_item_ends(&self, batch: &ItemBatch<'_>, elapsed: &[Duration]) {
        default_batch_ran(self, ItemEvent::ItemEnds);
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
    /// Not part of the API, and not to be overridden: which object this
    /// is, for the engines to learn which per-item events a callback
    /// leaves at their defaults (see the module docs).
    #[doc(hidden)]
    fn __identity(&self) -> CallbackIdentity {
        CallbackIdentity::of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Silent;
    impl Callback for Silent {}

    /// Overrides the per-item form and forwards to a silent first field.
    #[repr(C)]
    struct Forwards(Silent);
    impl Callback for Forwards {
        fn on_node_start(&self, ctx: &CallbackContext<'_>, node: &str) {
            self.0.on_node_start(ctx, node);
        }
    }

    /// Overrides the batch form and calls its own per-item default.
    struct OwnDefault;
    impl Callback for OwnDefault {
        fn on_node_starts(&self, batch: &ItemBatch<'_>, node: &str) {
            batch.for_each(|_, ctx| self.on_node_start(ctx, node));
        }
    }

    fn learns(cb: &dyn Callback, event: ItemEvent) -> bool {
        let path = ["p".to_string()];
        let one = ItemBatch::one(&path, &[3]);
        leaves_default(cb, event, || match event {
            ItemEvent::NodeStarts => cb.on_node_starts(&one, "n"),
            ItemEvent::NodeEnds => cb.on_node_ends(&one, "n", Duration::ZERO),
            ItemEvent::ItemStarts => cb.on_map_item_starts(&one),
            ItemEvent::ItemEnds => cb.on_map_item_ends(&one, &[Duration::ZERO]),
        })
    }

    #[test]
    fn only_a_type_leaving_both_forms_of_an_event_at_their_defaults_is_silent() {
        for event in [
            ItemEvent::NodeStarts,
            ItemEvent::NodeEnds,
            ItemEvent::ItemStarts,
            ItemEvent::ItemEnds,
        ] {
            assert!(learns(&Silent, event), "{event:?}");
        }
        assert!(!learns(&Forwards(Silent), ItemEvent::NodeStarts));
        assert!(learns(&Forwards(Silent), ItemEvent::NodeEnds));
        assert!(!learns(&OwnDefault, ItemEvent::NodeStarts));
        assert!(learns(&OwnDefault, ItemEvent::ItemEnds));
        // A delivery of another event teaches nothing about this one.
        let path = ["p".to_string()];
        let one = ItemBatch::one(&path, &[0]);
        assert!(!leaves_default(&Silent, ItemEvent::ItemEnds, || {
            Silent.on_node_starts(&one, "n")
        }));
    }
}
