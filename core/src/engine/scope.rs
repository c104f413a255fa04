//! The scope of one pipeline execution ([`Exec`]): its plan, engine,
//! cache, callbacks and place (pipeline path, item path), and the graph
//! walk that runs a plan's steps for one item.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use smallvec::SmallVec;

use crate::error::{Error, Location, NodeError};
use crate::node::{Node, NodeKind};
use crate::observe::callback::{
    Callback, CallbackContext, ItemBatch, ItemCounts, ItemEvent, NodeCounts,
};
use crate::observe::clock::Moment;
use crate::pipeline::{Pipeline, Plan, Step};
use crate::value::Value;

/// The scope of one pipeline execution: plan, engine, callbacks, location.
/// It owns what it refers to (shared, never copied), so a map job and the
/// plans engines build from it live as long as they need to.
#[derive(Clone)]
pub struct Exec {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) engine: Arc<dyn crate::engine::Engine>,
    pub(crate) callbacks: Vec<std::sync::Arc<dyn Callback>>,
    /// The callbacks split once by what they take: per-item events, or
    /// counts per batch (see [`Callback::item_events`]).
    pub(crate) listeners: Arc<Listeners>,
    pub(crate) cache: Option<std::sync::Arc<dyn crate::cache::Cache>>,
    pub(crate) path: Vec<String>,
    pub(crate) items: Vec<usize>,
    /// The full item path of each item of a map in this scope, when its
    /// items are not simply `items + [index]` (a nested `map_over` run for
    /// many outer items at once: item `k` is element `j` of outer item `i`).
    pub(crate) item_map: Option<std::sync::Arc<[SmallVec<[usize; 4]>]>>,
}

impl Exec {
    pub(crate) fn root(
        pipeline: Arc<Pipeline>,
        plan: Arc<Plan>,
        engine: Arc<dyn crate::engine::Engine>,
    ) -> Self {
        let mut callbacks = pipeline.callbacks.clone();
        if let Some(mode) = crate::observe::cache_log::Mode::from_env() {
            callbacks.push(std::sync::Arc::new(
                crate::observe::cache_log::CacheLogger::new(mode, Box::new(std::io::stderr())),
            ));
        }
        Exec {
            listeners: Listeners::of(&callbacks),
            cache: pipeline.cache.clone().map(crate::observe::trace::traced),
            path: vec![pipeline.name().to_string()],
            pipeline,
            plan,
            engine,
            callbacks,
            items: Vec::new(),
            item_map: None,
        }
    }

    /// The engine running this scope.
    pub fn engine(&self) -> &dyn crate::engine::Engine {
        self.engine.as_ref()
    }

    /// The pipeline being run.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    pub(crate) fn node(&self, step: &Step) -> &Node {
        &self.pipeline.graph.nodes[step.node]
    }

    /// Makes what this scope's cache buffered durable (at the end of a
    /// top-level `run`/`map`, and of a nested pipeline with its own cache).
    /// A failure is reported ([`Exec::cache_failed`]) and the results stand.
    pub(crate) fn flush_cache(&self) -> Result<(), Error> {
        if let Some(cache) = &self.cache
            && let Err(e) = cache.flush()
        {
            self.cache_failed(None, e)?;
        }
        Ok(())
    }

    /// A cache failure outside a `map` (a `run`, a nested pipeline's own
    /// cache): reported to the callbacks; the results stand without it.
    pub(crate) fn cache_failed(
        &self,
        node: Option<&str>,
        source: crate::cache::CacheError,
    ) -> Result<(), Error> {
        let error = Error::cache(node, source);
        self.emit(&self.items, |cb, ctx| cb.on_cache_error(ctx, &error));
        Ok(())
    }

    /// The item path of item `item` of a map in this scope.
    pub(crate) fn item_path(&self, item: usize) -> SmallVec<[usize; 4]> {
        if let Some(path) = self.item_map.as_ref().and_then(|m| m.get(item)) {
            return path.clone();
        }
        let mut path: SmallVec<[usize; 4]> = self.items.iter().copied().collect();
        path.push(item);
        path
    }

    #[inline]
    pub(crate) fn has_callbacks(&self) -> bool {
        !self.callbacks.is_empty()
    }

    /// `items` (items of a map in this scope) as a batch of per-item
    /// events: each item's path borrowed from the scope's item map or
    /// written into one buffer, never built per item.
    pub(crate) fn item_batch<'a>(&'a self, items: &'a [usize]) -> ItemBatch<'a> {
        ItemBatch::new(&self.path, &self.items, items, self.item_map.as_deref())
    }

    /// Calls `f` with each of `items` and its item path (see
    /// [`Exec::item_batch`]).
    pub(crate) fn each_path(
        &self,
        items: impl IntoIterator<Item = usize>,
        mut f: impl FnMut(usize, &[usize]),
    ) {
        let items: SmallVec<[usize; 16]> = items.into_iter().collect();
        self.item_batch(&items)
            .for_each(|k, ctx| f(items[k], ctx.items));
    }

    /// Fires a batch of per-item events for `items` to the callbacks that
    /// take them: one call per callback (see [`ItemBatch`]), none to a
    /// callback known to leave `event` at its defaults (see
    /// [`Exec::send_batch`]).
    pub(crate) fn emit_item_batch(
        &self,
        event: Option<ItemEvent>,
        items: &[usize],
        f: impl Fn(&dyn Callback, &ItemBatch<'_>),
    ) {
        self.send_batch(event, self.item_batch(items), f);
    }

    /// Fires the batch event of one item (item path `items`) to the
    /// callbacks that take per-item events: how the row walk reports node
    /// and item starts and ends, through the same batch methods as
    /// columnar engines.
    #[inline]
    pub(crate) fn emit_one(
        &self,
        event: ItemEvent,
        items: &[usize],
        f: impl Fn(&dyn Callback, &ItemBatch<'_>),
    ) {
        self.send_batch(Some(event), ItemBatch::one(&self.path, items), f);
    }

    /// Hands `batch` of `event` to each callback that takes per-item
    /// events, except those known to leave `event` at its defaults (the
    /// first non-empty batch to each callback finds out, see
    /// [`Listeners`]). Other per-item events (`event` `None`: cached,
    /// decisions) reach every such callback.
    #[inline]
    fn send_batch(
        &self,
        event: Option<ItemEvent>,
        batch: ItemBatch<'_>,
        f: impl Fn(&dyn Callback, &ItemBatch<'_>),
    ) {
        if event.is_some_and(|e| self.listeners.silent(e)) {
            return;
        }
        for (i, cb) in self.listeners.items.iter().enumerate() {
            let Some(event) = event else {
                f(cb.as_ref(), &batch);
                continue;
            };
            match self.listeners.hears(i, event) {
                Some(true) => f(cb.as_ref(), &batch),
                Some(false) => {}
                None if batch.is_empty() => f(cb.as_ref(), &batch),
                None => {
                    let silent =
                        crate::observe::callback::leaves_default(cb.as_ref(), event, || {
                            f(cb.as_ref(), &batch)
                        });
                    self.listeners.learn(i, event, silent);
                }
            }
        }
    }

    /// Whether the row walk should read the clock for per-item events: a
    /// callback takes them, and not every one is known to leave both
    /// timed events (node ends, item ends) at their defaults.
    #[inline]
    pub(crate) fn wants_times(&self) -> bool {
        self.listeners.wants_times()
    }

    /// Fires an event every callback takes (pipeline, map, errors).
    pub(crate) fn emit(&self, items: &[usize], f: impl Fn(&dyn Callback, &CallbackContext<'_>)) {
        let ctx = CallbackContext {
            path: &self.path,
            items,
        };
        for cb in &self.callbacks {
            f(cb.as_ref(), &ctx);
        }
    }

    /// Whether a callback takes per-item events.
    #[inline]
    pub(crate) fn has_item_callbacks(&self) -> bool {
        !self.listeners.items.is_empty()
    }

    /// Whether a callback takes counts instead of per-item events.
    pub(crate) fn has_batch_callbacks(&self) -> bool {
        !self.listeners.counts.is_empty()
    }

    /// Fires a per-item event (see [`Callback::item_events`]) to the
    /// callbacks that take them.
    pub(crate) fn emit_items(
        &self,
        items: &[usize],
        f: impl Fn(&dyn Callback, &CallbackContext<'_>),
    ) {
        self.emit_where(items, true, f);
    }

    /// Fires counts to the callbacks that take counts instead of per-item
    /// events.
    pub(crate) fn emit_batch(
        &self,
        items: &[usize],
        f: impl Fn(&dyn Callback, &CallbackContext<'_>),
    ) {
        self.emit_where(items, false, f);
    }

    fn emit_where(
        &self,
        items: &[usize],
        item_events: bool,
        f: impl Fn(&dyn Callback, &CallbackContext<'_>),
    ) {
        let listeners = match item_events {
            true => &self.listeners.items,
            false => &self.listeners.counts,
        };
        if listeners.is_empty() {
            return;
        }
        let ctx = CallbackContext {
            path: &self.path,
            items,
        };
        for cb in listeners {
            f(cb.as_ref(), &ctx);
        }
    }

    /// A node's call for one item ended after `elapsed`: the node-end
    /// event, and a count of one (gathered while a chunk of this scope's
    /// items runs, see [`Exec::tally`]).
    #[inline]
    pub(crate) fn node_ended(&self, items: &[usize], node: &str, elapsed: std::time::Duration) {
        self.emit_one(ItemEvent::NodeEnds, items, |cb, one| {
            cb.on_node_ends(one, node, elapsed)
        });
        self.count_node(
            items,
            node,
            NodeCounts {
                computed: 1,
                cached: 0,
            },
        );
    }

    /// A node's result for one item came from the cache: the node-cached
    /// event, and a count of one.
    pub(crate) fn node_cached(&self, items: &[usize], node: &str) {
        self.emit_items(items, |cb, ctx| cb.on_node_cached(ctx, node));
        self.count_node(
            items,
            node,
            NodeCounts {
                computed: 0,
                cached: 1,
            },
        );
    }

    /// Counts `counts` of `node` for the callbacks that take counts (a
    /// check inlined into the row walk; the counting itself is not).
    #[inline]
    fn count_node(&self, items: &[usize], node: &str, counts: NodeCounts) {
        if !self.listeners.counts.is_empty() {
            self.count_node_for_counters(items, node, counts);
        }
    }

    /// [`Exec::count_node`] once a callback takes counts: gathered in the
    /// chunk's tally, or reported at once outside one.
    #[inline(never)]
    fn count_node_for_counters(&self, items: &[usize], node: &str, counts: NodeCounts) {
        if !self.tallied(false, |t| t.node(node, counts)) {
            self.emit_batch(items, |cb, ctx| cb.on_node_batch(ctx, node, counts));
        }
    }

    /// An item of a map in this scope started (`ended: false`) or ended
    /// after `elapsed`: the map-item event, and a count of one.
    #[inline]
    pub(crate) fn map_item(&self, items: &[usize], ended: Option<std::time::Duration>) {
        match ended {
            None => self.emit_one(ItemEvent::ItemStarts, items, |cb, one| {
                cb.on_map_item_starts(one)
            }),
            Some(elapsed) => self.emit_one(ItemEvent::ItemEnds, items, |cb, one| {
                cb.on_map_item_ends(one, &[elapsed])
            }),
        }
        if !self.listeners.counts.is_empty() {
            self.count_item_for_counters(ended.is_some());
        }
    }

    /// [`Exec::map_item`]'s count once a callback takes counts (see
    /// [`Exec::count_node_for_counters`]).
    #[inline(never)]
    fn count_item_for_counters(&self, ended: bool) {
        let counts = ItemCounts {
            started: usize::from(!ended),
            ended: usize::from(ended),
        };
        if !self.tallied(ended, |t| t.items(counts)) {
            self.emit_batch(&self.items, |cb, ctx| cb.on_items_batch(ctx, counts));
        }
    }

    /// Gathers the counts this scope reports on this thread (nodes
    /// computed and cached, items started and ended) and reports them at
    /// most every [`TALLY_EVERY`] (checked as items end) and when the
    /// guard is dropped: a row engine's chunk gives counting callbacks one
    /// report per node and interval, not one per item. Scopes nested inside
    /// report as before.
    pub(crate) fn tally(&self) -> TallyGuard<'_> {
        let active = !self.listeners.counts.is_empty();
        if active {
            TALLIES.with_borrow_mut(|t| {
                t.push(Tally {
                    exec: self as *const Exec,
                    since: Moment::now(),
                    counts: Counts::default(),
                    unchecked: 0,
                    check_every: 1,
                })
            });
        }
        TallyGuard { exec: self, active }
    }

    /// Adds to this scope's open tally on this thread, if it has one
    /// (`false`: none), and reports what it holds when `check` and the
    /// interval has passed.
    fn tallied(&self, check: bool, add: impl FnOnce(&mut Counts)) -> bool {
        let mut due = None;
        let tallied = TALLIES.with_borrow_mut(|t| match t.last_mut() {
            Some(tally) if std::ptr::eq(tally.exec, self) => {
                add(&mut tally.counts);
                // The clock is read every `check_every` ended items: each
                // one for slow items, rarely for quick ones.
                if check {
                    tally.unchecked += 1;
                }
                if check && tally.unchecked >= tally.check_every {
                    tally.unchecked = 0;
                    if tally.since.elapsed() >= TALLY_EVERY {
                        tally.since = Moment::now();
                        let counts = std::mem::take(&mut tally.counts);
                        tally.check_every = (counts.items.ended / 4).max(1);
                        due = Some(counts);
                    } else {
                        tally.check_every = tally.check_every.saturating_mul(2);
                    }
                }
                true
            }
            _ => false,
        });
        // Reported outside the borrow: a callback may run a pipeline.
        if let Some(counts) = due {
            self.report_counts(&counts);
        }
        tallied
    }

    /// Reports gathered counts to the callbacks that take counts.
    fn report_counts(&self, counts: &Counts) {
        for (node, c) in &counts.nodes {
            self.emit_batch(&self.items, |cb, ctx| cb.on_node_batch(ctx, node, *c));
        }
        if counts.items != ItemCounts::default() {
            self.emit_batch(&self.items, |cb, ctx| cb.on_items_batch(ctx, counts.items));
        }
    }

    /// Wraps a whole run or map in pipeline start/end events.
    pub(crate) fn pipeline_scope<T>(
        &self,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _span = crate::observe::trace::Span::pipeline(&self.path, &self.items).enter();
        if !self.has_callbacks() {
            return f();
        }
        let start = Moment::now();
        // A nested run inside a map's item is a per-item event (a count of
        // one run for counting callbacks); the outermost run reaches all.
        let nested = !self.items.is_empty();
        let counts = |started, ended| ItemCounts { started, ended };
        if nested {
            self.emit_items(&self.items, |cb, ctx| cb.on_pipeline_start(ctx));
            self.emit_batch(&self.items, |cb, ctx| cb.on_runs_batch(ctx, counts(1, 0)));
        } else {
            self.emit(&self.items, |cb, ctx| cb.on_pipeline_start(ctx));
        }
        let out = f();
        if nested {
            self.emit_items(&self.items, |cb, ctx| {
                cb.on_pipeline_end(ctx, start.elapsed())
            });
            self.emit_batch(&self.items, |cb, ctx| cb.on_runs_batch(ctx, counts(0, 1)));
        } else {
            self.emit(&self.items, |cb, ctx| {
                cb.on_pipeline_end(ctx, start.elapsed())
            });
        }
        out
    }

    /// Runs every step of the plan on one item's slot table.
    pub(crate) fn run_steps(
        &self,
        slots: &mut [Option<Value>],
        items: &[usize],
    ) -> Result<(), Error> {
        for step in &self.plan.steps {
            let node = &self.pipeline.graph.nodes[step.node];
            match &node.kind {
                NodeKind::Func(f) => {
                    let outs = self.call_func(node, f, step, slots, items)?;
                    for (v, slot) in outs.into_iter().zip(&step.outs) {
                        if let Some(slot) = slot {
                            slots[*slot] = Some(v);
                        }
                    }
                }
                NodeKind::Nested(inner) => self.call_nested(node, inner, step, slots, items)?,
            }
        }
        Ok(())
    }

    pub(crate) fn fail(
        &self,
        node: &Node,
        items: &[usize],
        attempts: u32,
        source: NodeError,
    ) -> Error {
        let err = Error::NodeFailed {
            node: node.name.clone(),
            location: Box::new(Location {
                path: self.path.clone(),
                items: items.to_vec(),
            }),
            attempts,
            source,
        };
        self.emit(items, |cb, ctx| cb.on_error(ctx, &err));
        err
    }

    /// The scope of nested pipeline `inner` (node `node`, compiled as
    /// `plan`) inside this one: its engine, cache and callbacks, its path,
    /// and this scope's item path (callers running it for one item append
    /// that item).
    pub(crate) fn inner_scope(&self, node: &Node, inner: &Arc<Pipeline>, plan: &Arc<Plan>) -> Exec {
        let mut path = self.path.clone();
        path.push(node.name.clone());
        let mut callbacks = self.callbacks.clone();
        callbacks.extend(inner.callbacks.iter().cloned());
        Exec {
            listeners: match inner.callbacks.is_empty() {
                true => self.listeners.clone(),
                false => Listeners::of(&callbacks),
            },
            pipeline: inner.clone(),
            plan: plan.clone(),
            engine: inner.engine.clone().unwrap_or_else(|| self.engine.clone()),
            cache: inner
                .cache
                .clone()
                .map(crate::observe::trace::traced)
                .or_else(|| self.cache.clone()),
            callbacks,
            path,
            items: self.items.clone(),
            item_map: self.item_map.clone(),
        }
    }
}

/// How often a row engine's chunk reports the counts it gathered (see
/// [`Exec::tally`]): often enough for a progress bar, rarely enough that
/// counting costs nothing next to the items.
pub(crate) const TALLY_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Counts of one scope gathered on one thread (see [`Exec::tally`]). The
/// scope is known by its address, only compared, never followed.
pub(crate) struct Tally {
    exec: *const Exec,
    since: Moment,
    counts: Counts,
    /// Items ended since the clock was last read, and how many may end
    /// before it is read again.
    unchecked: usize,
    check_every: usize,
}

/// What a [`Tally`] holds: per node, and for the items.
#[derive(Default)]
pub(crate) struct Counts {
    nodes: SmallVec<[(String, NodeCounts); 8]>,
    items: ItemCounts,
}

impl Counts {
    fn node(&mut self, node: &str, counts: NodeCounts) {
        match self.nodes.iter_mut().find(|(n, _)| n == node) {
            Some((_, c)) => {
                c.computed += counts.computed;
                c.cached += counts.cached;
            }
            None => self.nodes.push((node.to_string(), counts)),
        }
    }

    fn items(&mut self, counts: ItemCounts) {
        self.items.started += counts.started;
        self.items.ended += counts.ended;
    }
}

thread_local! {
    /// The open tallies of this thread, innermost last (a rayon worker
    /// waiting inside one chunk may run another).
    static TALLIES: std::cell::RefCell<Vec<Tally>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reports a tally when dropped (see [`Exec::tally`]).
pub(crate) struct TallyGuard<'a> {
    exec: &'a Exec,
    active: bool,
}

impl Drop for TallyGuard<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let Some(tally) = TALLIES.with_borrow_mut(|t| t.pop()) else {
            return;
        };
        // Unwinding: the counts are dropped, no callback is called.
        if std::thread::panicking() {
            return;
        }
        self.exec.report_counts(&tally.counts);
    }
}

/// A scope's callbacks split by what they take (see
/// [`Callback::item_events`]), once when the scope is made.
#[derive(Default)]
pub(crate) struct Listeners {
    /// Those that take per-item events.
    pub(crate) items: Vec<Arc<dyn Callback>>,
    /// Those that take counts per batch instead.
    pub(crate) counts: Vec<Arc<dyn Callback>>,
    /// For each of `items`, what its first non-empty batch of each
    /// [`ItemEvent`] taught (two bits an event, see [`Listeners::hears`]).
    /// Learned once per scope and thread at most (a race learns the same
    /// thing twice), never unlearned: a type's methods do not change.
    heard: Vec<AtomicU8>,
    /// Bit `1 << event` set once every one of `items` is known to leave
    /// that event at its defaults (all four when there are none): the one
    /// check a skipped event costs.
    silent: AtomicU8,
}

/// `heard`: whether an event was learned, and whether it is left at its
/// defaults (shifted by twice the event's number).
const LEARNED: u8 = 1;
const DEFAULTS: u8 = 2;

impl Listeners {
    fn of(callbacks: &[Arc<dyn Callback>]) -> Arc<Self> {
        let (items, counts): (Vec<_>, Vec<_>) =
            callbacks.iter().cloned().partition(|cb| cb.item_events());
        let heard = items.iter().map(|_| AtomicU8::new(0)).collect();
        let silent = AtomicU8::new(if items.is_empty() { 0b1111 } else { 0 });
        Arc::new(Listeners {
            items,
            counts,
            heard,
            silent,
        })
    }

    /// Whether every item listener is known to leave `event` at its
    /// defaults.
    #[inline]
    fn silent(&self, event: ItemEvent) -> bool {
        self.silent.load(Ordering::Relaxed) & (1 << event as u8) != 0
    }

    /// Whether item listener `i` takes `event`: `None` until its first
    /// non-empty batch of it, then `false` if it leaves the event at its
    /// defaults.
    #[inline]
    fn hears(&self, i: usize, event: ItemEvent) -> Option<bool> {
        let bits = self.heard[i].load(Ordering::Relaxed) >> (2 * event as u8);
        (bits & LEARNED != 0).then_some(bits & DEFAULTS == 0)
    }

    fn learn(&self, i: usize, event: ItemEvent, defaults: bool) {
        let bits = LEARNED | if defaults { DEFAULTS } else { 0 };
        self.heard[i].fetch_or(bits << (2 * event as u8), Ordering::Relaxed);
        if defaults && (0..self.items.len()).all(|j| self.hears(j, event) == Some(false)) {
            self.silent.fetch_or(1 << event as u8, Ordering::Relaxed);
        }
    }

    /// See [`Exec::wants_times`].
    #[inline]
    fn wants_times(&self) -> bool {
        let ends_silent = self.silent(ItemEvent::NodeEnds) && self.silent(ItemEvent::ItemEnds);
        !(self.items.is_empty() || ends_silent)
    }
}

/// The slot table of an inlined step's own scope (`slot_count` slots),
/// its arguments taken from the flat table `slots`.
pub(crate) fn scope_table(
    slot_count: usize,
    s: &Step,
    fs: &crate::engine::flat::FlatStep,
    slots: &[Option<Value>],
) -> Vec<Option<Value>> {
    let mut local = vec![None; slot_count];
    for (&at, &from) in s.args.iter().zip(&fs.args) {
        local[at] = slots[from].clone();
    }
    local
}

/// A fixed input's value hash (Arrow values) or cache key (resources).
pub(crate) fn fixed_hash(
    name: &str,
    ty: crate::value::ValueType,
    value: &Value,
) -> Result<Option<crate::signature::Signature>, Error> {
    if ty.is_arrow() {
        Ok(crate::signature::hash_values(&ty, &[value])
            .map_err(|source| Error::Arrow {
                column: name.to_string(),
                source,
            })?
            .first()
            .copied())
    } else {
        Ok(ty.resource_hash(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Silent;
    impl Callback for Silent {}

    #[test]
    fn listeners_learn_each_event_once_and_stop_wanting_times_when_both_timed_ones_are_silent() {
        let listeners = Listeners::of(&[Arc::new(Silent) as Arc<dyn Callback>]);
        assert_eq!(listeners.hears(0, ItemEvent::NodeEnds), None);
        assert!(listeners.wants_times(), "unknown: times are read");
        listeners.learn(0, ItemEvent::NodeEnds, true);
        assert_eq!(listeners.hears(0, ItemEvent::NodeEnds), Some(false));
        assert_eq!(listeners.hears(0, ItemEvent::ItemEnds), None);
        assert!(listeners.wants_times(), "item ends still unknown");
        listeners.learn(0, ItemEvent::ItemEnds, true);
        assert!(!listeners.wants_times());
        listeners.learn(0, ItemEvent::NodeStarts, false);
        assert_eq!(listeners.hears(0, ItemEvent::NodeStarts), Some(true));
        assert!(listeners.silent(ItemEvent::NodeEnds) && listeners.silent(ItemEvent::ItemEnds));
        assert!(
            !listeners.silent(ItemEvent::NodeStarts),
            "it takes node starts"
        );
        assert!(!listeners.silent(ItemEvent::ItemStarts), "not learned yet");
        assert!(!Listeners::of(&[]).wants_times(), "no listener: no times");
        assert!(!Listeners::default().wants_times());
        let two = Listeners::of(&[
            Arc::new(Silent) as Arc<dyn Callback>,
            Arc::new(Silent) as Arc<dyn Callback>,
        ]);
        for event in [ItemEvent::NodeEnds, ItemEvent::ItemEnds] {
            two.learn(0, event, true);
        }
        assert!(!two.silent(ItemEvent::NodeEnds), "the second is unknown");
        two.learn(1, ItemEvent::NodeEnds, true);
        assert!(two.silent(ItemEvent::NodeEnds), "both leave node ends");
        two.learn(1, ItemEvent::ItemEnds, false);
        assert!(!two.silent(ItemEvent::ItemEnds));
        assert!(two.wants_times(), "one listener takes item ends");
    }
}
