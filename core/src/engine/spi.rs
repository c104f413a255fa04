//! What columnar engines call while they run a map (the engine SPI): the
//! map column by column, one step for many rows, and the events and cache
//! decisions of rows they computed or found.

use smallvec::SmallVec;

use crate::error::{Error, NodeError};
use crate::map::{Column, ErrorPolicy, ItemFailure, MapResult};
use crate::node::{NodeFn, NodeKind};
use crate::observe::callback::ItemEvent;
use crate::value::Value;

use super::*;

impl MapJob {
    /// This map column by column, for columnar engines (see
    /// [`crate::columnar`]). Fails, naming the input, when a mapped input's
    /// elements have no Arrow form.
    pub fn columnar(&self) -> Result<crate::engine::columnar::ColumnarMap<'_>, Error> {
        use crate::engine::columnar::{
            ColumnarMap, FixedInput, MappedColumn, OutputInfo, StepInfo,
        };
        let exec = &self.exec;
        let mut mapped = Vec::new();
        for (m, elements) in self.mapped.iter().zip(self.mapped_hashes()) {
            let (elements, hashes) = match elements {
                Ok(found) => found,
                Err(why) => {
                    return Err(Error::External {
                        what: format!(
                            "engine `{}` cannot map over input `{}`",
                            exec.engine.name(),
                            m.name,
                        ),
                        source: Box::new(why.clone()),
                    });
                }
            };
            mapped.push(MappedColumn {
                name: m.name.clone(),
                slot: m.slot,
                ty: m.ty,
                elements: elements.clone(),
                hashes: hashes.clone(),
            });
        }
        let mut fixed = Vec::new();
        for input in &exec.plan.inputs {
            let Some(value) = self.template[input.slot].clone() else {
                continue;
            };
            let hash = fixed_hash(&input.name, input.ty, &value)?;
            fixed.push(FixedInput {
                name: input.name.clone(),
                slot: input.slot,
                ty: input.ty,
                value,
                hash,
            });
        }
        let flat = self.flat();
        for f in &flat.fixed {
            fixed.push(FixedInput {
                name: f.name.clone(),
                slot: f.slot,
                ty: f.ty,
                value: f.value.clone(),
                hash: fixed_hash(&f.name, f.ty, &f.value)?,
            });
        }
        let mut steps = Vec::with_capacity(flat.steps.len());
        for index in 0..flat.steps.len() {
            let (scope, s, fs) = flat.step(exec, index).ok_or_else(|| Error::Internal {
                message: format!("no step {index}"),
            })?;
            steps.push(StepInfo {
                index,
                node: scope.node(s),
                args: &fs.args,
                outs: &fs.outs,
            });
        }
        Ok(ColumnarMap {
            len: self.len,
            mode: self.mode,
            slot_count: flat.slot_count,
            mapped,
            fixed,
            steps,
            outputs: exec
                .plan
                .outputs
                .iter()
                .map(|o| OutputInfo {
                    name: o.name.clone(),
                    slot: o.slot,
                    ty: o.ty,
                })
                .collect(),
        })
    }

    /// Runs step `step` (an index into [`ColumnarMap::steps`]) for item
    /// `item` on a slot table holding its arguments, and writes the outputs
    /// that are needed into `slots`: the row engines' semantics (retries,
    /// panics as errors naming node and item, node events). For a function
    /// node it also returns every output port's value, needed or not (what
    /// a cache stores).
    ///
    /// [`ColumnarMap::steps`]: crate::engine::columnar::ColumnarMap::steps
    pub fn call_step(
        &self,
        step: usize,
        slots: &mut [Option<Value>],
        item: usize,
    ) -> Result<Option<Vec<Value>>, Error> {
        let (exec, s, fs) = self.step_at(step)?;
        // The step reads and writes its scope's slot table: the flat slots
        // moved in and out (the identity for the map's own steps).
        let inlined = fs.scope != 0;
        let mut local: Vec<Option<Value>> = Vec::new();
        let table: &mut [Option<Value>] = if inlined {
            local = scope_table(exec.plan.slot_count, s, fs, slots);
            &mut local
        } else {
            slots
        };
        let node = exec.node(s);
        let path = exec.item_path(item);
        let outs = match &node.kind {
            NodeKind::Func(f) => {
                let outs: Vec<Value> = exec
                    .call_func(node, f, s, table, &path)?
                    .into_iter()
                    .collect();
                for (v, slot) in outs.iter().zip(&s.outs) {
                    if let Some(slot) = slot {
                        table[*slot] = Some(v.clone());
                    }
                }
                Some(outs)
            }
            NodeKind::Nested(inner) => {
                exec.call_nested(node, inner, s, table, &path)?;
                None
            }
        };
        if inlined {
            for (at, to) in s.outs.iter().zip(&fs.outs) {
                if let (Some(at), Some(to)) = (at, to) {
                    slots[*to] = local[*at].take();
                }
            }
        }
        Ok(outs)
    }

    /// Runs step `step` for many rows at once: `rows` holds each row's
    /// item and slot table (its arguments filled). Returns per row each
    /// output port's value (`None` for ports nothing needs) or the row's
    /// failure. A nested `map_over` step runs as one inner map over the
    /// elements of every row (see `Exec::map_nested_rows`) unless someone
    /// listens to events; every other step runs row by row as
    /// [`MapJob::call_step`] does.
    #[allow(clippy::type_complexity)]
    pub fn call_step_rows(
        &self,
        step: usize,
        rows: Vec<(usize, Vec<Option<Value>>)>,
    ) -> Result<Vec<Result<Vec<Option<Value>>, Error>>, Error> {
        let (exec, s, fs) = self.step_at(step)?;
        let node = exec.node(s);
        if let NodeKind::Func(NodeFn::Async(f)) = &node.kind {
            // Up to the node's concurrency in flight, awaited from this thread.
            let tables: Vec<(Vec<Option<Value>>, SmallVec<[usize; 4]>)> = rows
                .into_iter()
                .map(|(item, slots)| {
                    let table = if fs.scope == 0 {
                        slots
                    } else {
                        scope_table(exec.plan.slot_count, s, fs, &slots)
                    };
                    (table, exec.item_path(item))
                })
                .collect();
            let refs: Vec<(&[Option<Value>], &[usize])> = tables
                .iter()
                .map(|(t, p)| (t.as_slice(), p.as_slice()))
                .collect();
            let outcomes = exec.call_async_rows(node, f.as_ref(), s, &refs);
            return Ok(outcomes
                .into_iter()
                .map(|r| r.map(|outs| outs.into_iter().map(Some).collect()))
                .collect());
        }
        if node.is_pipeline() && rows.len() > 1 {
            let args: Vec<(SmallVec<[usize; 4]>, Vec<Value>)> = rows
                .iter()
                .map(|(item, slots)| {
                    let values = fs
                        .args
                        .iter()
                        .map(|&a| slots[a].clone())
                        .collect::<Option<Vec<Value>>>();
                    (exec.item_path(*item), values.unwrap_or_default())
                })
                .collect();
            if let Some(results) = exec.map_over_rows(node, s, &args) {
                return Ok(results
                    .into_iter()
                    .map(|r| {
                        r.map(|lists| {
                            let mut outs: Vec<Option<Value>> = vec![None; fs.outs.len()];
                            for (port, list) in lists {
                                if fs.outs[port].is_some() {
                                    outs[port] = Some(list);
                                }
                            }
                            outs
                        })
                    })
                    .collect());
            }
        }
        Ok(rows
            .into_iter()
            .map(|(item, mut slots)| {
                self.call_step(step, &mut slots, item).map(|all| match all {
                    Some(all) => all.into_iter().map(Some).collect(),
                    None => fs
                        .outs
                        .iter()
                        .map(|o| o.and_then(|o| slots[o].take()))
                        .collect(),
                })
            })
            .collect())
    }

    /// The error of step `step` failing for item `item` with `source` after
    /// `attempts` attempts (names node, pipeline path and item; fires the
    /// `on_error` event), for engines that call a node's batch
    /// implementation themselves.
    pub fn step_error(&self, step: usize, item: usize, attempts: u32, source: NodeError) -> Error {
        match self.flat().step(&self.exec, step) {
            Some((exec, s, _)) => exec.fail(exec.node(s), &exec.item_path(item), attempts, source),
            None => Error::Internal {
                message: format!("no step {step}"),
            },
        }
    }

    /// Reports what the cache did for step `step` and item `item` (the
    /// `on_cache_decision` event, with the same reasons the row engines
    /// give): `sig` is the item's signature (`None`: the node is not
    /// cached), `hit` whether its result came from the cache. Nothing
    /// happens for a map without a cache, or when nobody listens.
    pub fn report_cache_decision(
        &self,
        step: usize,
        item: usize,
        sig: Option<crate::signature::Signature>,
        hit: bool,
    ) {
        if !self.exec.has_item_callbacks() || self.exec.cache.is_none() {
            return;
        }
        let Some((exec, s, _)) = self.flat().step(&self.exec, step) else {
            return;
        };
        let node = exec.node(s);
        let log = self.cache_log(step, exec, node);
        exec.each_path([item], |_, path| {
            log.report(exec, &node.name, path, sig, hit)
        });
    }

    /// The cache log of step `step` (scope `exec`), made on first use.
    fn cache_log(
        &self,
        step: usize,
        exec: &Exec,
        node: &crate::node::Node,
    ) -> std::sync::Arc<crate::engine::kernel::CacheLog> {
        self.cache_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(step)
            .or_insert_with(|| {
                std::sync::Arc::new(crate::engine::kernel::CacheLog::new(
                    exec.cache.as_deref(),
                    node,
                    true,
                ))
            })
            .clone()
    }

    /// The name of step `step`'s node.
    pub(crate) fn step_name(&self, step: usize) -> String {
        self.flat()
            .step(&self.exec, step)
            .map(|(exec, s, _)| exec.node(s).name.clone())
            .unwrap_or_default()
    }

    /// The pipeline path of step `step` (the map's pipeline, then each
    /// nested pipeline node it is inlined from): what its errors and events
    /// name.
    pub fn step_path(&self, step: usize) -> Result<Vec<String>, Error> {
        self.step_at(step).map(|(exec, _, _)| exec.path.clone())
    }

    /// Reports what the cache did for step `step` and each row of a batch
    /// (item, signature, hit): per row its decision and, for a hit, its
    /// node-cached event, as the row engines fire them.
    pub(crate) fn report_lookups(
        &self,
        step: usize,
        rows: impl IntoIterator<Item = (usize, Option<crate::signature::Signature>, bool)>,
    ) {
        if !self.exec.has_item_callbacks() {
            return;
        }
        let Some((exec, s, _)) = self.flat().step(&self.exec, step) else {
            return;
        };
        let node = exec.node(s);
        let name = &node.name;
        let log = self
            .exec
            .cache
            .as_ref()
            .map(|_| self.cache_log(step, exec, node));
        let rows: Vec<_> = rows.into_iter().collect();
        let mut next = rows.iter();
        exec.each_path(rows.iter().map(|r| r.0), |_, path| {
            let Some(&(_, sig, hit)) = next.next() else {
                return;
            };
            if let Some(log) = &log {
                log.report(exec, name, path, sig, hit);
            }
            if hit {
                exec.emit_items(path, |cb, ctx| cb.on_node_cached(ctx, name));
            }
        });
    }

    /// Reports that step `step`'s result for item `item` came from the cache
    /// (the `on_node_cached` event).
    pub fn report_cached(&self, step: usize, item: usize) {
        self.step_events(step, [item], |cb, ctx, name| cb.on_node_cached(ctx, name));
    }

    /// Fires one event of step `step` for each of `items` in the step's
    /// scope (its pipeline path), with the node's name, when anyone
    /// listens (see [`MapJob::step_batch`]).
    pub(crate) fn step_events(
        &self,
        step: usize,
        items: impl IntoIterator<Item = usize>,
        f: impl Fn(
            &dyn crate::observe::callback::Callback,
            &crate::observe::callback::CallbackContext<'_>,
            &str,
        ),
    ) {
        if self.exec.has_item_callbacks() {
            let items: smallvec::SmallVec<[usize; 16]> = items.into_iter().collect();
            self.step_batch(None, step, &items, |cb, batch, name| {
                batch.for_each(|_, ctx| f(cb, ctx, name))
            });
        }
    }

    /// Fires one batch event of step `step` for `items` in the step's
    /// scope, with the node's name, when anyone listens: the step and its
    /// scope are looked up once, and each callback is called once (see
    /// [`ItemBatch`](crate::observe::callback::ItemBatch)).
    pub(crate) fn step_batch(
        &self,
        event: Option<ItemEvent>,
        step: usize,
        items: &[usize],
        f: impl Fn(
            &dyn crate::observe::callback::Callback,
            &crate::observe::callback::ItemBatch<'_>,
            &str,
        ),
    ) {
        if !self.exec.has_item_callbacks() {
            return;
        }
        if let Some((exec, s, _)) = self.flat().step(&self.exec, step) {
            let name = &exec.node(s).name;
            exec.emit_item_batch(event, items, |cb, batch| f(cb, batch, name));
        }
    }

    /// Reports that step `step` starts for item `item` (the `on_node_start`
    /// event), for engines that call a node's batch implementation.
    pub fn report_node_start(&self, step: usize, item: usize) {
        self.report_node_starts(step, &[item]);
    }

    /// [`report_node_start`](Self::report_node_start) for each of `items`.
    pub fn report_node_starts(&self, step: usize, items: &[usize]) {
        let event = Some(ItemEvent::NodeStarts);
        self.step_batch(event, step, items, |cb, batch, name| {
            cb.on_node_starts(batch, name)
        });
    }

    /// Reports that step `step` ended for item `item` after `elapsed` (the
    /// `on_node_end` event; for a batch call, the batch's time).
    pub fn report_node_end(&self, step: usize, item: usize, elapsed: std::time::Duration) {
        self.report_node_ends(step, &[item], elapsed);
    }

    /// [`report_node_end`](Self::report_node_end) for each of `items`,
    /// all after `elapsed` (one call for the batch).
    pub fn report_node_ends(&self, step: usize, items: &[usize], elapsed: std::time::Duration) {
        let event = Some(ItemEvent::NodeEnds);
        self.step_batch(event, step, items, |cb, batch, name| {
            cb.on_node_ends(batch, name, elapsed)
        });
    }

    /// The inlined pipelines (scope numbers) that begin with step `step`,
    /// outermost first: before the step runs for an item, an engine
    /// reports each with [`report_scope_start`](Self::report_scope_start).
    pub fn scopes_opening(&self, step: usize) -> Vec<usize> {
        self.flat().opening(step)
    }

    /// The inlined pipelines that end with step `step`, innermost first:
    /// after the step ran for an item, an engine reports each with
    /// [`report_scope_end`](Self::report_scope_end).
    pub fn scopes_closing(&self, step: usize) -> Vec<usize> {
        self.flat().closing(step)
    }

    /// How many inlined pipelines the map has (scopes are numbered
    /// `1..=count`).
    pub fn scope_count(&self) -> usize {
        self.flat().nesting.len()
    }

    /// Reports that inlined pipeline `scope` starts for item `item`: the
    /// nested-start event of its node, then its pipeline-start event, as
    /// the row engines fire them around a nested run.
    pub fn report_scope_start(&self, scope: usize, item: usize) {
        self.report_scope_starts(scope, [item]);
    }

    /// [`report_scope_start`](Self::report_scope_start) for each of
    /// `items`, each item's two events together.
    pub fn report_scope_starts(&self, scope: usize, items: impl IntoIterator<Item = usize>) {
        let Some((node, outer, inner)) = self.inlined(scope) else {
            return;
        };
        // The inner scope's items are the outer one's (it is inlined).
        outer.each_path(items, |_, path| {
            outer.emit_items(path, |cb, ctx| cb.on_nested_start(ctx, node));
            inner.emit_items(path, |cb, ctx| cb.on_pipeline_start(ctx));
        });
    }

    /// Inlined pipeline `scope` when anyone listens: its node's name, the
    /// scope it is nested in and its own.
    pub(crate) fn inlined(&self, scope: usize) -> Option<(&str, &Exec, &Exec)> {
        if !self.exec.has_item_callbacks() {
            return None;
        }
        let flat = self.flat();
        let nest = flat.nesting.get(scope.checked_sub(1)?)?;
        Some((
            nest.node.as_str(),
            flat.scope(&self.exec, nest.parent)?,
            flat.scope(&self.exec, scope)?,
        ))
    }

    /// Reports that inlined pipeline `scope` ended for item `item` after
    /// `elapsed`: its pipeline-end event and, when the item did not fail
    /// in it (`completed`), its node's nested-end event (a failed nested
    /// run ends its pipeline but not its node, as on the row engines).
    pub fn report_scope_end(
        &self,
        scope: usize,
        item: usize,
        elapsed: std::time::Duration,
        completed: bool,
    ) {
        self.report_scope_ends(scope, [item], |_| Some((elapsed, completed)));
    }

    /// [`report_scope_end`](Self::report_scope_end) for each of `items`
    /// that `ended` gives a time and completion for (`None`: the item did
    /// not enter the scope).
    pub(crate) fn report_scope_ends(
        &self,
        scope: usize,
        items: impl IntoIterator<Item = usize>,
        ended: impl Fn(usize) -> Option<(std::time::Duration, bool)>,
    ) {
        let Some((node, outer, inner)) = self.inlined(scope) else {
            return;
        };
        outer.each_path(items, |item, path| {
            let Some((elapsed, completed)) = ended(item) else {
                return;
            };
            inner.emit_items(path, |cb, ctx| cb.on_pipeline_end(ctx, elapsed));
            if completed {
                outer.emit_items(path, |cb, ctx| cb.on_nested_end(ctx, node, elapsed));
            }
        });
    }

    /// Reports that attempt `attempt` (counting from 1) of step `step`
    /// failed for item `item` with `error` and will be tried again (the
    /// `on_node_retry` event).
    pub fn report_retry(&self, step: usize, item: usize, attempt: u32, error: &NodeError) {
        self.step_events(step, [item], |cb, ctx, name| {
            cb.on_node_retry(ctx, name, attempt, error)
        });
    }

    /// Whether a callback takes this map's per-item events: engines may
    /// skip gathering what only those events need.
    pub fn observed(&self) -> bool {
        self.exec.has_item_callbacks()
    }

    /// Whether a callback takes counts per batch instead of per-item
    /// events (see [`Callback::item_events`](crate::Callback::item_events)).
    pub fn counted(&self) -> bool {
        self.exec.has_batch_callbacks()
    }

    /// Reports what step `step` did for a batch of items (to callbacks
    /// that take counts). A nested pipeline's step reports nothing: its
    /// own nodes and runs are counted, as on the row engines.
    pub fn report_node_batch(&self, step: usize, counts: crate::observe::callback::NodeCounts) {
        if let Some((exec, s, _)) = self.flat().step(&self.exec, step) {
            let node = exec.node(s);
            if node.is_pipeline() {
                return;
            }
            let name = &node.name;
            exec.emit_batch(&exec.items, |cb, ctx| cb.on_node_batch(ctx, name, counts));
        }
    }

    /// Reports what node `node` (by name) computed and found cached in a
    /// batch run elsewhere (a decoded plan's counts, carried back as data),
    /// to callbacks that take counts.
    pub fn report_node_counts(&self, node: &str, counts: crate::observe::callback::NodeCounts) {
        let exec = &self.exec;
        if exec.has_callbacks() {
            exec.emit_batch(&exec.items, |cb, ctx| cb.on_node_batch(ctx, node, counts));
        }
    }

    /// Reports how far the map's job on a cluster has come (to every
    /// callback).
    pub fn report_job_progress(&self, progress: crate::observe::callback::JobProgress) {
        let exec = &self.exec;
        if exec.has_callbacks() {
            exec.emit(&exec.items, |cb, ctx| cb.on_job_progress(ctx, progress));
        }
    }

    /// Reports how many of the map's items started and ended in a batch
    /// (to callbacks that take counts).
    pub fn report_items_batch(&self, counts: crate::observe::callback::ItemCounts) {
        if self.item_events {
            let exec = &self.exec;
            exec.emit_batch(&exec.items, |cb, ctx| cb.on_items_batch(ctx, counts));
        }
    }

    /// Reports how many runs of inlined pipeline `scope` started and ended
    /// in a batch (to callbacks that take counts).
    pub fn report_runs_batch(&self, scope: usize, counts: crate::observe::callback::ItemCounts) {
        let flat = self.flat();
        if let Some(inner) = flat.scope(&self.exec, scope) {
            inner.emit_batch(&inner.items, |cb, ctx| cb.on_runs_batch(ctx, counts));
        }
    }

    /// Reports that item `item` starts (the `on_map_item_start` event).
    pub fn report_item_start(&self, item: usize) {
        self.report_item_starts(&[item]);
    }

    /// [`report_item_start`](Self::report_item_start) for each of `items`.
    pub fn report_item_starts(&self, items: &[usize]) {
        if self.item_events {
            self.exec
                .emit_item_batch(Some(ItemEvent::ItemStarts), items, |cb, batch| {
                    cb.on_map_item_starts(batch)
                });
        }
    }

    /// Reports that item `item` ended after `elapsed` (the
    /// `on_map_item_end` event).
    pub fn report_item_end(&self, item: usize, elapsed: std::time::Duration) {
        self.report_item_ends(&[item], |_| elapsed);
    }

    /// [`report_item_end`](Self::report_item_end) for each of `items`,
    /// `elapsed` giving each one's time.
    pub fn report_item_ends(
        &self,
        items: &[usize],
        elapsed: impl Fn(usize) -> std::time::Duration,
    ) {
        if self.item_events {
            let elapsed: Vec<std::time::Duration> = items.iter().map(|&i| elapsed(i)).collect();
            self.exec
                .emit_item_batch(Some(ItemEvent::ItemEnds), items, |cb, batch| {
                    cb.on_map_item_ends(batch, &elapsed)
                });
        }
    }

    /// The cache of this map's scope, if any.
    pub fn cache(&self) -> Option<&std::sync::Arc<dyn crate::cache::Cache>> {
        self.exec.cache.as_ref()
    }

    /// Tells the job that `stored` new results went to the cache; flushes
    /// it when enough results or time have accumulated (the policy of
    /// [`MapOptions::flush_every`](crate::MapOptions::flush_every)).
    pub fn stored(&self, stored: usize) -> Result<(), Error> {
        match &self.exec.cache {
            Some(_) => self.maybe_flush(stored),
            None => Ok(()),
        }
    }

    /// Builds the result from whole Arrow columns (one per requested output,
    /// in [`ColumnarMap::outputs`] order, row `i` holding item `i`, failed
    /// items null) and the failed items, applying the error policy: under
    /// [`ErrorPolicy::Stop`] the failure of the earliest item is returned.
    /// Values are decoded only when the caller asks for them.
    ///
    /// [`ColumnarMap::outputs`]: crate::engine::columnar::ColumnarMap::outputs
    pub fn finish(&self, columns: Vec<arrow_array::ArrayRef>) -> Result<MapResult, Error> {
        if let Some(error) = self.state.take_map_failure() {
            return Err(error);
        }
        let mut failures = self.state.take_failures();
        if self.policy == ErrorPolicy::Stop && !failures.is_empty() {
            return Err(failures.swap_remove(0).1);
        }
        let plan = &self.exec.plan;
        if columns.len() != plan.outputs.len() || columns.iter().any(|c| c.len() != self.len) {
            return Err(Error::Engine {
                message: format!(
                    "engine `{}` returned {} columns for {} outputs of {} items",
                    self.exec.engine.name(),
                    columns.len(),
                    plan.outputs.len(),
                    self.len
                ),
            });
        }
        let mut failed = vec![false; self.len];
        for (i, _) in &failures {
            if let Some(f) = failed.get_mut(*i) {
                *f = true;
            }
        }
        let failed = std::sync::Arc::new(failed);
        Ok(MapResult {
            len: self.len,
            columns: plan
                .outputs
                .iter()
                .zip(columns)
                .map(|(o, array)| Column::from_arrow(o.name.clone(), o.ty, array, failed.clone()))
                .collect(),
            failures: failures
                .into_iter()
                .map(|(index, error)| ItemFailure { index, error })
                .collect(),
            cache_errors: Vec::new(),
        })
    }
}
