//! The one graph walk every row engine shares: run the steps of a compiled
//! plan for one item, call nodes (with retries, panic capture and events),
//! and run nested pipelines through their engine.
//!
//! Engines decide only *how items are scheduled*: they cut the items into
//! ranges, run each with [`MapJob::run_chunk`] (in any order, on any
//! thread), and combine the pieces with [`MapJob::assemble`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::callback::{Callback, CallbackContext};
use crate::error::{Error, Location, NodeError};
use crate::io::{Inputs, Outputs};
use crate::map::{Column, ErrorPolicy, ItemFailure, MapMode, MapOptions, MapResult};
use crate::node::{Args, Mapping, Node, NodeFn, NodeKind, Outs};
use crate::pipeline::{Pipeline, Plan, Step};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::value::Value;
use smallvec::SmallVec;

/// The scope of one pipeline execution: plan, engine, callbacks, location.
pub struct Exec<'a> {
    pipeline: &'a Pipeline,
    plan: &'a Plan,
    engine: &'a dyn crate::engine::Engine,
    callbacks: Vec<std::sync::Arc<dyn Callback>>,
    pub(crate) cache: Option<std::sync::Arc<dyn crate::cache::Cache>>,
    path: Vec<String>,
    pub(crate) items: Vec<usize>,
    /// The full item path of each item of a map in this scope, when its
    /// items are not simply `items + [index]` (a nested `map_over` run for
    /// many outer items at once: item `k` is element `j` of outer item `i`).
    item_map: Option<std::sync::Arc<[SmallVec<[usize; 4]>]>>,
}

impl<'a> Exec<'a> {
    pub(crate) fn root(
        pipeline: &'a Pipeline,
        plan: &'a Plan,
        engine: &'a dyn crate::engine::Engine,
    ) -> Self {
        let mut callbacks = pipeline.callbacks.clone();
        if let Some(mode) = crate::observe::cache_log::Mode::from_env() {
            callbacks.push(std::sync::Arc::new(
                crate::observe::cache_log::CacheLogger::new(mode),
            ));
        }
        Exec {
            pipeline,
            plan,
            engine,
            callbacks,
            cache: pipeline.cache.clone(),
            path: vec![pipeline.name().to_string()],
            items: Vec::new(),
            item_map: None,
        }
    }

    /// The engine running this scope.
    pub fn engine(&self) -> &'a dyn crate::engine::Engine {
        self.engine
    }

    /// The pipeline being run.
    pub fn pipeline(&self) -> &'a Pipeline {
        self.pipeline
    }

    pub(crate) fn plan(&self) -> &'a Plan {
        self.plan
    }

    pub(crate) fn node(&self, step: &Step) -> &'a Node {
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

    pub(crate) fn has_callbacks(&self) -> bool {
        !self.callbacks.is_empty()
    }

    pub(crate) fn emit(&self, items: &[usize], f: impl Fn(&dyn Callback, &CallbackContext<'_>)) {
        let ctx = CallbackContext {
            path: &self.path,
            items,
        };
        for cb in &self.callbacks {
            f(cb.as_ref(), &ctx);
        }
    }

    /// Wraps a whole run or map in pipeline start/end events.
    pub(crate) fn pipeline_scope<T>(
        &self,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        if !self.has_callbacks() {
            return f();
        }
        let start = Instant::now();
        self.emit(&self.items, |cb, ctx| cb.on_pipeline_start(ctx));
        let out = f();
        self.emit(&self.items, |cb, ctx| {
            cb.on_pipeline_end(ctx, start.elapsed())
        });
        out
    }

    /// Runs every step of the plan on one item's slot table.
    fn run_steps(&self, slots: &mut [Option<Value>], items: &[usize]) -> Result<(), Error> {
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

    fn fail(&self, node: &Node, items: &[usize], attempts: u32, source: NodeError) -> Error {
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

    pub(crate) fn call_func(
        &self,
        node: &Node,
        f: &NodeFn,
        step: &Step,
        slots: &[Option<Value>],
        items: &[usize],
    ) -> Result<Outs, Error> {
        let f = match f {
            NodeFn::Sync(f) => f,
            NodeFn::Async(f) => {
                return crate::runtime::block_on(self.call_async(
                    node,
                    f.as_ref(),
                    step,
                    slots,
                    items,
                ));
            }
        };
        let args = Args::new(slots, &step.args, &node.inputs);
        let mut attempt = 1;
        loop {
            let start = self.attempt_started(node, items);
            let outcome = call_once(node, f.as_ref(), args);
            if let Some(done) = self.attempt_settled(node, items, &mut attempt, start, outcome) {
                return done;
            }
        }
    }

    /// Starts one attempt of `node`: the node-start event, and the time.
    fn attempt_started(&self, node: &Node, items: &[usize]) -> Option<Instant> {
        self.has_callbacks().then(|| {
            self.emit(items, |cb, ctx| cb.on_node_start(ctx, &node.name));
            Instant::now()
        })
    }

    /// Settles one attempt of `node` (started at `start`): its outputs
    /// (node-end event), `None` to try again (retry event, `attempt`
    /// counted up), or the failure once the retries are spent.
    fn attempt_settled(
        &self,
        node: &Node,
        items: &[usize],
        attempt: &mut u32,
        start: Option<Instant>,
        outcome: Result<Outs, NodeError>,
    ) -> Option<Result<Outs, Error>> {
        match outcome {
            Ok(outs) => {
                if let Some(start) = start {
                    let elapsed = start.elapsed();
                    self.emit(items, |cb, ctx| cb.on_node_end(ctx, &node.name, elapsed));
                }
                Some(Ok(outs))
            }
            Err(e) if *attempt <= node.retries => {
                let tried = *attempt;
                self.emit(items, |cb, ctx| {
                    cb.on_node_retry(ctx, &node.name, tried, &e)
                });
                *attempt += 1;
                None
            }
            Err(e) => Some(Err(self.fail(node, items, *attempt, e))),
        }
    }

    pub(crate) fn call_nested(
        &self,
        node: &Node,
        inner: &Pipeline,
        step: &Step,
        slots: &mut [Option<Value>],
        items: &[usize],
    ) -> Result<(), Error> {
        let start = Instant::now();
        self.emit(items, |cb, ctx| cb.on_nested_start(ctx, &node.name));
        let plan = step
            .inner
            .as_deref()
            .expect("nested step has an inner plan");
        let mut exec = self.inner_scope(node, inner, plan);
        exec.items = items.to_vec();
        exec.item_map = None;
        let mut inputs = Inputs::new();
        for (port, &slot) in node.inputs.iter().zip(&step.args) {
            let v = slots[slot].clone().expect("argument slot is filled");
            inputs.insert_value(port.inner.clone(), v);
        }
        let values = match &node.mapping {
            None => {
                exec.pipeline_scope(|| {
                    let slots = inner.resolve_inputs(plan, &inputs, &[])?;
                    exec.engine.run(RunJob::new(&exec, slots))
                })?
                .values
            }
            Some(mapping) => self.map_nested(node, mapping, &exec, inputs, items)?,
        };
        if inner.cache.is_some() {
            exec.flush_cache()?;
        }
        for (value, &port) in values.into_iter().zip(&step.inner_ports) {
            if let Some(slot) = step.outs[port] {
                slots[slot] = Some(value);
            }
        }
        let elapsed = start.elapsed();
        self.emit(items, |cb, ctx| cb.on_nested_end(ctx, &node.name, elapsed));
        Ok(())
    }

    /// The scope of nested pipeline `inner` (node `node`, compiled as
    /// `plan`) inside this one: its engine, cache and callbacks, its path,
    /// and this scope's item path (callers running it for one item append
    /// that item).
    pub(crate) fn inner_scope<'b>(
        &self,
        node: &Node,
        inner: &'b Pipeline,
        plan: &'b Plan,
    ) -> Exec<'b>
    where
        'a: 'b,
    {
        let mut path = self.path.clone();
        path.push(node.name.clone());
        let mut callbacks = self.callbacks.clone();
        callbacks.extend(inner.callbacks.iter().cloned());
        Exec {
            pipeline: inner,
            plan,
            engine: inner.engine_or(self.engine),
            cache: inner.cache.clone().or_else(|| self.cache.clone()),
            callbacks,
            path,
            items: self.items.clone(),
            item_map: self.item_map.clone(),
        }
    }

    /// [`Exec::call_func`] for an async function, as a future that does not
    /// block: the same events, retries and errors, with the node's future
    /// running on the shared async runtime. Each attempt first waits for
    /// the node's admission (a place among its calls in flight, and its
    /// turn under its rate limit), then fires its node-start event.
    async fn call_async(
        &self,
        node: &Node,
        f: &crate::node::AsyncFn,
        step: &Step,
        slots: &[Option<Value>],
        items: &[usize],
    ) -> Result<Outs, Error> {
        let mut attempt = 1;
        loop {
            let admitted = node.limits().admit().await;
            let start = self.attempt_started(node, items);
            let outcome =
                call_async_once(node, f, Args::new(slots, &step.args, &node.inputs)).await;
            drop(admitted);
            if let Some(done) = self.attempt_settled(node, items, &mut attempt, start, outcome) {
                return done;
            }
        }
    }

    /// Calls async node `node` (function `f`, step `step`) once per row of
    /// `rows` (each a slot table and an item path), with up to
    /// [`Node::concurrency`] calls in flight, and waits for all of them
    /// from this thread. Calls start in row order; a finished call makes
    /// room for the next one whatever the order they finish in. Outcomes
    /// come back in row order; events fire as calls start and end.
    pub(crate) fn call_async_rows(
        &self,
        node: &Node,
        f: &crate::node::AsyncFn,
        step: &Step,
        rows: &[(&[Option<Value>], &[usize])],
    ) -> Vec<Result<Outs, Error>> {
        use futures::StreamExt;
        let calls = rows
            .iter()
            .enumerate()
            .map(|(k, (slots, items))| async move {
                (k, self.call_async(node, f, step, slots, items).await)
            });
        let finished: Vec<(usize, Result<Outs, Error>)> = crate::runtime::block_on(
            futures::stream::iter(calls)
                .buffer_unordered(node.concurrency())
                .collect(),
        );
        let mut outcomes: Vec<Option<Result<Outs, Error>>> =
            (0..rows.len()).map(|_| None).collect();
        for (k, outcome) in finished {
            outcomes[k] = Some(outcome);
        }
        outcomes.into_iter().flatten().collect()
    }

    /// Runs a `map_over` node: splits the mapped lists, maps the inner
    /// pipeline over them, and regroups each output into a list.
    fn map_nested(
        &self,
        node: &Node,
        mapping: &Mapping,
        exec: &Exec<'_>,
        mut inputs: Inputs,
        items: &[usize],
    ) -> Result<Vec<Value>, Error> {
        let mut mapped = Vec::new();
        for (i, port) in node.inputs.iter().enumerate() {
            if mapping.mapped[i] {
                let list = inputs.remove(&port.inner).expect("mapped input given");
                let ty = mapping.inner_inputs[i];
                let len = ty.list_len(&list).ok_or_else(|| Error::NotAList {
                    name: port.name.clone(),
                    expected: ty.name(),
                    actual: list.type_name(),
                })?;
                mapped.push(MappedList {
                    name: port.inner.clone(),
                    slot: None,
                    ty,
                    list,
                    len,
                });
            }
        }
        let names: Vec<String> = mapped.iter().map(|m| m.name.clone()).collect();
        let options = MapOptions::over(names).mode(mapping.mode);
        let job = MapJob::new(exec, &inputs, mapped, &options).map_err(|e| match e {
            Error::LengthMismatch { .. } => self.fail(node, items, 1, NodeError::user(e)),
            other => other,
        })?;
        let result = exec.pipeline_scope(|| job.execute())?;
        let mut values = Vec::with_capacity(result.columns.len());
        for col in result.columns {
            let ty = col.ty;
            let elems: Vec<Value> = col.into_values().into_iter().flatten().collect();
            let list = ty.make_list(elems).ok_or_else(|| Error::Engine {
                message: format!("cannot build a list of `{}`", ty.name()),
            })?;
            values.push(list);
        }
        Ok(values)
    }
}

/// The slot table of an inlined step's own scope (`slot_count` slots),
/// its arguments taken from the flat table `slots`.
fn scope_table(
    slot_count: usize,
    s: &Step,
    fs: &crate::flat::FlatStep,
    slots: &[Option<Value>],
) -> Vec<Option<Value>> {
    let mut local = vec![None; slot_count];
    for (&at, &from) in s.args.iter().zip(&fs.args) {
        local[at] = slots[from].clone();
    }
    local
}

/// A fixed input's value hash (Arrow values) or cache key (resources).
fn fixed_hash(
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

/// What one row of a batched nested `map_over` gives: the inner outputs
/// (in the step's `inner_ports` order) as lists, or the row's failure.
type NestedRow = Result<Vec<Value>, Error>;

impl<'a> Exec<'a> {
    /// Runs `map_over` node `node` (inner pipeline `inner`, compiled as
    /// `plan`) for many outer items at once: every item's elements (its
    /// zipped or crossed lists, with its other inputs beside them) become
    /// the items of ONE inner map, whose results are regrouped into one list
    /// per outer item by the element counts. Each element keeps its own
    /// item path (`outer item, element`), signatures and cache entries, so
    /// results, errors and cache entries are those of running the node item
    /// by item. `rows` holds each outer item's path and argument values.
    /// `Ok(None)`: the values cannot be combined (a type without list
    /// operations); run the items one by one instead.
    pub(crate) fn map_nested_rows(
        &self,
        node: &Node,
        inner: &Pipeline,
        plan: &Plan,
        mapping: &Mapping,
        rows: &[(SmallVec<[usize; 4]>, Vec<Value>)],
    ) -> Result<Option<Vec<NestedRow>>, Error> {
        let ports = &node.inputs;
        // Inputs equal for every row stay fixed; the others repeat per element.
        let constant: Vec<bool> = (0..ports.len())
            .map(|i| !mapping.mapped[i] && rows.iter().all(|(_, v)| v[i].same(&rows[0].1[i])))
            .collect();
        let mut outcome: Vec<Option<Error>> = (0..rows.len()).map(|_| None).collect();
        let mut counts = vec![0usize; rows.len()];
        let mut columns: Vec<Vec<Value>> = vec![Vec::new(); ports.len()];
        let mut paths: Vec<SmallVec<[usize; 4]>> = Vec::new();
        for (r, (path, values)) in rows.iter().enumerate() {
            let mut lists: Vec<(usize, Vec<Value>)> = Vec::new();
            for (i, port) in ports.iter().enumerate() {
                if !mapping.mapped[i] {
                    continue;
                }
                let ty = mapping.inner_inputs[i];
                match ty.split_list(&values[i]) {
                    Some(items) => lists.push((i, items)),
                    None => {
                        outcome[r] = Some(Error::NotAList {
                            name: port.name.clone(),
                            expected: ty.name(),
                            actual: values[i].type_name(),
                        });
                        break;
                    }
                }
            }
            if outcome[r].is_some() {
                continue;
            }
            let count = match mapping.mode {
                MapMode::Zip => {
                    let first = lists.first().map_or(0, |l| l.1.len());
                    if lists.iter().any(|l| l.1.len() != first) {
                        let lengths = lists
                            .iter()
                            .map(|(i, l)| (ports[*i].inner.clone(), l.len()))
                            .collect();
                        let e = Error::LengthMismatch { lengths };
                        outcome[r] = Some(self.fail(node, path, 1, NodeError::user(e)));
                        continue;
                    }
                    first
                }
                MapMode::Product => lists.iter().map(|l| l.1.len()).product(),
            };
            for j in 0..count {
                // Element j of each list (last list fastest in product mode).
                let mut rem = j;
                let mut picks = vec![j; lists.len()];
                if mapping.mode == MapMode::Product {
                    for (pick, (_, l)) in picks.iter_mut().zip(&lists).rev() {
                        *pick = rem % l.len();
                        rem /= l.len();
                    }
                }
                for ((i, l), pick) in lists.iter().zip(&picks) {
                    columns[*i].push(l[*pick].clone());
                }
                for i in (0..ports.len()).filter(|&i| !mapping.mapped[i] && !constant[i]) {
                    columns[i].push(values[i].clone());
                }
                let mut p = path.clone();
                p.push(j);
                paths.push(p);
            }
            counts[r] = count;
        }
        let total: usize = counts.iter().sum();

        let mut fixed = Inputs::new();
        let mut mapped = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            if constant[i] {
                if let Some((_, values)) = rows.first() {
                    fixed.insert_value(port.inner.clone(), values[i].clone());
                }
                continue;
            }
            let ty = if mapping.mapped[i] {
                mapping.inner_inputs[i]
            } else {
                port.ty
            };
            let Some(list) = ty.make_list(std::mem::take(&mut columns[i])) else {
                return Ok(None);
            };
            mapped.push(MappedList {
                name: port.inner.clone(),
                slot: None,
                ty,
                list,
                len: total,
            });
        }
        // Per inner output, every element's value (none at all when every
        // row's lists are empty: each row then gets empty lists).
        let mut results: Vec<Vec<Option<Value>>> = vec![Vec::new(); plan.outputs.len()];
        let mut failures: Vec<ItemFailure> = Vec::new();
        if total > 0 {
            let mut scope = self.inner_scope(node, inner, plan);
            scope.item_map = Some(paths.into());
            let names: Vec<String> = mapped.iter().map(|m| m.name.clone()).collect();
            let options = MapOptions::over(names)
                .mode(MapMode::Zip)
                .on_error(ErrorPolicy::Continue);
            let job = MapJob::new(&scope, &fixed, mapped, &options)?;
            let result = job.execute()?;
            if inner.cache.is_some() {
                scope.flush_cache()?;
            }
            failures = result.failures;
            failures.sort_by_key(|f| f.index);
            results = result
                .columns
                .into_iter()
                .map(|col| col.into_values())
                .collect();
        }
        // Regroup: row r owns elements [start, start + counts[r]).
        let out_types: Vec<_> = plan.outputs.iter().map(|o| o.ty).collect();
        let mut failures = failures.into_iter().peekable();
        let mut start = 0;
        let mut out = Vec::with_capacity(rows.len());
        for (r, &count) in counts.iter().enumerate() {
            let end = start + count;
            let mut failed = outcome[r].take();
            while let Some(f) = failures.next_if(|f| f.index < end) {
                if failed.is_none() {
                    failed = Some(f.error);
                }
            }
            out.push(match failed {
                Some(e) => Err(e),
                None => results
                    .iter()
                    .zip(&out_types)
                    .map(|(values, ty)| {
                        let elements: Vec<Value> =
                            values[start..end].iter().flatten().cloned().collect();
                        if elements.len() != count {
                            return Err(Error::Engine {
                                message: format!("node `{}`: an element has no value", node.name),
                            });
                        }
                        ty.make_list(elements).ok_or_else(|| Error::Engine {
                            message: format!("cannot build a list of `{}`", ty.name()),
                        })
                    })
                    .collect(),
            });
            start = end;
        }
        Ok(Some(out))
    }
}

/// One call of a synchronous function; a panic inside it is an error.
fn call_once(node: &Node, f: &crate::node::SyncFn, args: Args<'_>) -> Result<Outs, NodeError> {
    let outs = match catch_unwind(AssertUnwindSafe(|| f(args))) {
        Ok(r) => r?,
        Err(payload) => return Err(NodeError::from_panic(payload)),
    };
    check_outs(node, outs)
}

/// One call of an async function: start it (a panic while starting is an
/// error) and await its future on the shared async runtime.
async fn call_async_once(
    node: &Node,
    f: &crate::node::AsyncFn,
    args: Args<'_>,
) -> Result<Outs, NodeError> {
    let fut = match catch_unwind(AssertUnwindSafe(|| f(args))) {
        Ok(r) => r?,
        Err(payload) => return Err(NodeError::from_panic(payload)),
    };
    check_outs(node, crate::runtime::run(fut).await??)
}

/// A node's returned outputs checked against its declared outputs.
fn check_outs(node: &Node, outs: Outs) -> Result<Outs, NodeError> {
    if outs.len() != node.outputs.len() {
        return Err(NodeError::OutputCount {
            expected: node.outputs.len(),
            actual: outs.len(),
        });
    }
    for (v, p) in outs.iter().zip(&node.outputs) {
        if !p.ty.matches(v) {
            return Err(NodeError::OutputType {
                output: p.inner.clone(),
                expected: p.ty.name(),
                actual: v.type_name(),
            });
        }
    }
    Ok(outs)
}

/// One `run`: an engine executes it (by default with [`RunJob::execute`]).
pub struct RunJob<'a> {
    exec: &'a Exec<'a>,
    slots: Vec<Option<Value>>,
}

impl<'a> RunJob<'a> {
    pub(crate) fn new(exec: &'a Exec<'a>, slots: Vec<Option<Value>>) -> Self {
        RunJob { exec, slots }
    }

    /// The execution scope.
    pub fn exec(&self) -> &Exec<'a> {
        self.exec
    }

    /// Runs every node once, in topological order.
    pub fn execute(mut self) -> Result<Outputs, Error> {
        let items = self.exec.items.clone();
        if let Some(cache) = &self.exec.cache {
            let mut batch = crate::cached::Batch::new(self.slots.len(), 1, None);
            batch.push(None, &self.slots, true);
            let report = |node: Option<&str>, e| self.exec.cache_failed(node, e);
            crate::cached::run_batch(self.exec, Some(cache.as_ref()), &mut batch, true, &report)?;
            self.slots = batch.take_row(0)?;
        } else {
            self.exec.run_steps(&mut self.slots, &items)?;
        }
        let plan = self.exec.plan;
        let names = plan.outputs.iter().map(|o| o.name.clone()).collect();
        let values = plan
            .outputs
            .iter()
            .map(|o| self.slots[o.slot].clone().expect("output computed"))
            .collect();
        Ok(Outputs::new(names, values))
    }
}

/// The outputs of a contiguous range of items, produced by
/// [`MapJob::run_chunk`] and combined by [`MapJob::assemble`].
pub struct Chunk {
    start: usize,
    columns: Vec<Vec<Option<Value>>>,
    failures: Vec<ItemFailure>,
    error: Option<Error>,
}

impl Chunk {
    /// Whether the chunk stopped at a failure (stop policy).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Records item `index`'s outputs or failure. Returns `false` when the
    /// chunk must stop (a failure under the stop policy, which also lowers
    /// `first_failure`).
    fn record<I>(
        &mut self,
        index: usize,
        outcome: Result<I, Error>,
        stop_on_error: bool,
        first_failure: &AtomicUsize,
    ) -> bool
    where
        I: IntoIterator<Item = Option<Value>>,
    {
        match outcome {
            Ok(values) => {
                for (c, v) in self.columns.iter_mut().zip(values) {
                    c.push(v);
                }
                true
            }
            Err(error) if stop_on_error => {
                first_failure.fetch_min(index, Ordering::Relaxed);
                self.error = Some(error);
                false
            }
            Err(error) => {
                self.failures.push(ItemFailure { index, error });
                for c in self.columns.iter_mut() {
                    c.push(None);
                }
                true
            }
        }
    }
}

/// A mapped input: the whole list, read element by element as items run.
struct MappedList {
    name: String,
    slot: Option<usize>,
    ty: crate::value::ValueType,
    list: Value,
    len: usize,
}

/// A mapped input's elements as one Arrow array, and their value hashes as a
/// `FixedSizeBinary(32)` array.
type MappedElements = (arrow_array::ArrayRef, arrow_array::ArrayRef);

/// The outputs of one item, in plan output order.
pub struct ItemOutput(SmallVec<[Value; 4]>);

/// One `map`: an engine runs [`MapJob::run_chunk`] over ranges covering
/// every item (in any order, on any thread) and hands the chunks to
/// [`MapJob::assemble`].
pub struct MapJob<'a> {
    exec: &'a Exec<'a>,
    template: Vec<Option<Value>>,
    mapped: Vec<MappedList>,
    mode: MapMode,
    policy: ErrorPolicy,
    len: usize,
    flush_every: usize,
    /// Per mapped input, the value hash of every element, computed once
    /// from the whole list when a cache needs it (`None` when the element
    /// type has no Arrow form).
    mapped_hashes: std::sync::OnceLock<Vec<Result<MappedElements, String>>>,
    /// When the cache was last flushed, and how many new results it has
    /// received since.
    unflushed: std::sync::Mutex<(Instant, usize)>,
    /// The steps with nested pipelines inlined (columnar engines only).
    flat: std::sync::OnceLock<crate::flat::Flat<'a>>,
    /// The cache writes running in the background, oldest first.
    flusher: std::sync::Mutex<std::collections::VecDeque<Flusher>>,
    /// Whether a cache failure fails the map ([`MapOptions::strict_cache`]).
    strict_cache: bool,
    /// The cache failures so far (the map went on without the cache).
    cache_errors: std::sync::Mutex<Vec<Error>>,
    /// Whether this is the map a caller asked for (`Pipeline::map`), not
    /// one a nested `map_over` runs inside it: only that one prepares the
    /// cache, keeps a flush ticker and flushes at its end (nested maps share
    /// its cache and its writes).
    top_level: bool,
    /// Per flat step, what explains its cache decisions (made once, when a
    /// columnar engine first reports one).
    cache_logs:
        std::sync::Mutex<std::collections::HashMap<usize, std::sync::Arc<crate::cached::CacheLog>>>,
}

/// A background cache write.
type Flusher = std::thread::JoinHandle<Result<(), crate::cache::CacheError>>;

/// How many background cache writes of one `map` may run at once. Two let
/// one write wait for the disk (fsync) while the next one encodes.
const WRITES_IN_FLIGHT: usize = 2;

/// The outcome of a finished background cache write.
fn flushed(writer: Flusher) -> Result<(), crate::cache::CacheError> {
    match writer.join() {
        Ok(done) => done,
        Err(_) => Err(crate::cache::CacheError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other("the cache writer panicked"),
        }),
    }
}

impl Drop for MapJob<'_> {
    /// A job dropped without `execute` finishing still waits for its write.
    fn drop(&mut self) {
        let _ = self.wait_for_flush();
    }
}

impl<'a> MapJob<'a> {
    /// Checks user inputs for a top-level map.
    pub(crate) fn from_inputs(
        exec: &'a Exec<'a>,
        inputs: &Inputs,
        options: &MapOptions,
    ) -> Result<Self, Error> {
        let pipeline = exec.pipeline;
        if options.over.is_empty() {
            return Err(Error::NothingToMap);
        }
        let mut fixed = inputs.clone();
        let mut mapped = Vec::new();
        for name in &options.over {
            let info = pipeline
                .inputs()
                .iter()
                .find(|i| &i.name == name)
                .ok_or_else(|| Error::UnknownInput {
                    name: name.clone(),
                    available: pipeline.inputs().iter().map(|i| i.name.clone()).collect(),
                })?;
            // Given with the inputs, or a list bound to the pipeline.
            let list = fixed
                .remove(name)
                .or_else(|| {
                    pipeline
                        .bound_value(name)
                        .filter(|v| info.ty.list_len(v).is_some())
                        .cloned()
                })
                .ok_or_else(|| Error::MissingInput {
                    name: name.clone(),
                    needed_by: info.consumers.clone(),
                })?;
            let len = info.ty.list_len(&list).ok_or_else(|| Error::NotAList {
                name: name.clone(),
                expected: info.ty.name(),
                actual: list.type_name(),
            })?;
            mapped.push(MappedList {
                name: name.clone(),
                slot: None,
                ty: info.ty,
                list,
                len,
            });
        }
        let mut job = Self::new(exec, &fixed, mapped, options)?;
        job.top_level = true;
        Ok(job)
    }

    fn new(
        exec: &'a Exec<'a>,
        fixed: &Inputs,
        mut mapped: Vec<MappedList>,
        options: &MapOptions,
    ) -> Result<Self, Error> {
        let len = match options.mode {
            MapMode::Zip => {
                let first = mapped[0].len;
                if mapped.iter().any(|m| m.len != first) {
                    return Err(Error::LengthMismatch {
                        lengths: mapped.iter().map(|m| (m.name.clone(), m.len)).collect(),
                    });
                }
                first
            }
            MapMode::Product => mapped.iter().map(|m| m.len).product(),
        };
        let names: Vec<String> = mapped.iter().map(|m| m.name.clone()).collect();
        let template = exec.pipeline.resolve_inputs(exec.plan, fixed, &names)?;
        for m in mapped.iter_mut() {
            m.slot = exec
                .plan
                .inputs
                .iter()
                .find(|i| i.name == m.name)
                .map(|i| i.slot);
        }
        Ok(MapJob {
            exec,
            template,
            mapped,
            mode: options.mode,
            policy: options.on_error,
            flush_every: options
                .flush_every
                .unwrap_or(MapOptions::DEFAULT_FLUSH_EVERY),
            len,
            mapped_hashes: std::sync::OnceLock::new(),
            unflushed: std::sync::Mutex::new((Instant::now(), 0)),
            flat: std::sync::OnceLock::new(),
            flusher: std::sync::Mutex::new(std::collections::VecDeque::new()),
            strict_cache: options.strict_cache,
            cache_errors: std::sync::Mutex::new(Vec::new()),
            cache_logs: std::sync::Mutex::new(std::collections::HashMap::new()),
            top_level: false,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What to do when an item fails.
    pub fn policy(&self) -> ErrorPolicy {
        self.policy
    }

    /// For a worker running chunks one after another: the size of its next
    /// chunk, given its previous one (size and time). Without a cache,
    /// everything at once. With a cache, chunks start small and adapt so
    /// that each takes about a quarter of a second (bounded by
    /// [`MapOptions::flush_every`]): a chunk's results are stored when it
    /// ends, and written at least every [`MapOptions::FLUSH_INTERVAL`], so
    /// an interrupted run loses little whatever an item costs.
    pub fn next_chunk_size(&self, previous: Option<(usize, std::time::Duration)>) -> usize {
        if self.exec.cache.is_none() {
            return self.len.max(1);
        }
        const TARGET: f64 = 0.25;
        let size = match previous {
            None => 64,
            Some((size, elapsed)) => {
                let secs = elapsed.as_secs_f64().max(1e-6);
                ((size as f64 * TARGET / secs) as usize).clamp(size / 4, size * 4)
            }
        };
        size.clamp(1, self.flush_every)
    }

    /// The largest chunk an engine should hand to [`MapJob::run_chunk`] for
    /// `workers` parallel workers: a few chunks per worker, and, when results
    /// are cached, at most the flush size so results reach the cache as the
    /// map goes.
    pub fn chunk_size(&self, workers: usize) -> usize {
        let balanced = if workers <= 1 {
            self.len.max(1)
        } else {
            self.len.div_ceil(workers * 4).max(1)
        };
        if self.exec.cache.is_some() {
            balanced.min(self.flush_every)
        } else {
            balanced
        }
    }

    /// The execution scope.
    pub fn exec(&self) -> &Exec<'a> {
        self.exec
    }

    /// Runs the map on the scope's engine, with map start/end events.
    pub(crate) fn execute(&self) -> Result<MapResult, Error> {
        let exec = self.exec;
        let start = exec.has_callbacks().then(|| {
            exec.emit(&exec.items, |cb, ctx| cb.on_map_start(ctx, self.len));
            Instant::now()
        });
        self.prepare_cache();
        let result = if exec.cache.is_some() && self.top_level {
            // A top-level map with a cache: a ticker flushes what waits to
            // be written at least every FLUSH_INTERVAL, even while every
            // worker is busy with a long batch.
            let stop = (std::sync::Mutex::new(false), std::sync::Condvar::new());
            std::thread::scope(|s| {
                let ticker = s.spawn(|| self.flush_by_time(&stop));
                let result = exec.engine.map(self);
                *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
                stop.1.notify_all();
                let ticked = ticker.join().unwrap_or(Ok(()));
                result.and_then(|r| ticked.map(|()| r))
            })
        } else {
            exec.engine.map(self)
        };
        let mut written = self.wait_for_flush();
        // What was stored after the last flush (a nested map leaves that to
        // the map it runs in).
        if written.is_ok()
            && self.top_level
            && let Some(cache) = &exec.cache
            && let Err(e) = cache.flush()
        {
            written = self.cache_failed(None, e);
        }
        if let Some(start) = start {
            exec.emit(&exec.items, |cb, ctx| cb.on_map_end(ctx, start.elapsed()));
        }
        let mut result = result?;
        written?;
        result.cache_errors = self.take_cache_errors();
        Ok(result)
    }

    /// The flush ticker of a map with a cache: until `stop` is set, flushes
    /// what the cache holds unwritten once the last flush is
    /// [`MapOptions::FLUSH_INTERVAL`] old. A strict map's cache failure
    /// ends it with that error.
    fn flush_by_time(
        &self,
        stop: &(std::sync::Mutex<bool>, std::sync::Condvar),
    ) -> Result<(), Error> {
        let mut stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (guard, _) = stop
                .1
                .wait_timeout(stopped, MapOptions::FLUSH_INTERVAL / 8)
                .unwrap_or_else(|e| e.into_inner());
            stopped = guard;
            if *stopped {
                return Ok(());
            }
            self.flush_if_stale()?;
        }
    }

    /// Tells the cache which node versions this map will look up, and for
    /// how many items: every cached node's stored results load at once, one
    /// thread each, rather than one after the other at each node's first
    /// lookup. Failures are left to that first lookup to report.
    fn prepare_cache(&self) {
        // The top-level map prepares every node of its flat plan, nested
        // pipelines' included.
        if self.exec.cache.is_none() || !self.top_level {
            return;
        }
        // The flat plan: nodes of inlined nested pipelines too.
        let keys: Vec<_> = (0..self.flat().steps.len())
            .filter_map(|i| {
                let (exec, step, _) = self.step_at(i).ok()?;
                let node = exec.node(step);
                let key = node.cache_key();
                if !node.caching() {
                    return None;
                }
                Some((exec.cache.clone()?, key))
            })
            .collect();
        std::thread::scope(|s| {
            for (cache, key) in &keys {
                s.spawn(move || cache.prepare(key, self.len));
            }
        });
    }

    /// Which element of each mapped input (in mapped order) item `index` takes.
    fn element_indices(&self, index: usize) -> SmallVec<[usize; 4]> {
        let mut out: SmallVec<[usize; 4]> = SmallVec::from_elem(index, self.mapped.len());
        if self.mode == MapMode::Product {
            let mut rem = index;
            for (m, e) in self.mapped.iter().zip(out.iter_mut()).rev() {
                *e = rem % m.len;
                rem /= m.len;
            }
        }
        out
    }

    /// Writes item `index`'s element of every mapped input into `slots`.
    fn fill_mapped(&self, index: usize, slots: &mut [Option<Value>]) -> Result<(), Error> {
        for (m, i) in self.mapped.iter().zip(self.element_indices(index)) {
            if let Some(slot) = m.slot {
                let value = m.ty.list_item(&m.list, i).ok_or_else(|| Error::Engine {
                    message: format!("mapped input `{}` has no element {i}", m.name),
                })?;
                slots[slot] = Some(value);
            }
        }
        Ok(())
    }

    /// The elements and element hashes of every mapped input (see
    /// `mapped_hashes`).
    /// (`Err`: why the elements have no Arrow column.)
    fn mapped_hashes(&self) -> &[Result<MappedElements, String>] {
        self.mapped_hashes.get_or_init(|| {
            self.mapped
                .iter()
                .map(|m| {
                    let no_form = || format!("its elements ({}) have no Arrow form", m.ty.name());
                    let array =
                        m.ty.list_type()
                            .ok_or_else(no_form)?
                            .to_array(&[&m.list])
                            .map_err(|e| e.to_string())?;
                    let list = arrow_array::cast::AsArray::as_list_opt::<i32>(array.as_ref())
                        .ok_or_else(no_form)?;
                    let offsets = list.value_offsets();
                    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
                    let elements = list.values().slice(first, last - first);
                    if Some(elements.data_type().clone()) != m.ty.data_type() {
                        return Err(no_form());
                    }
                    let hashes =
                        crate::signature::hash_column(&elements).map_err(|e| e.to_string())?;
                    if hashes.len() != m.len {
                        return Err(no_form());
                    }
                    Ok((elements, hashes))
                })
                .collect()
        })
    }

    /// Step `step` of the flat plan with its scope.
    fn step_at(&self, step: usize) -> Result<(&Exec<'a>, &Step, &crate::flat::FlatStep), Error> {
        self.flat()
            .step(self.exec, step)
            .ok_or_else(|| Error::Internal {
                message: format!("no step {step}"),
            })
    }

    /// The steps with nested pipelines inlined (see [`crate::flat`]).
    fn flat(&self) -> &crate::flat::Flat<'a> {
        self.flat.get_or_init(|| crate::flat::Flat::new(self.exec))
    }

    /// This map column by column, for columnar engines (see
    /// [`crate::columnar`]). Fails, naming the input, when a mapped input's
    /// elements have no Arrow form.
    pub fn columnar(&self) -> Result<crate::columnar::ColumnarMap<'_>, Error> {
        use crate::columnar::{ColumnarMap, FixedInput, MappedColumn, OutputInfo, StepInfo};
        let exec = self.exec;
        let mut mapped = Vec::new();
        for (m, elements) in self.mapped.iter().zip(self.mapped_hashes()) {
            let (elements, hashes) = match elements {
                Ok(found) => found,
                Err(why) => {
                    return Err(Error::Engine {
                        message: format!(
                            "engine `{}` cannot map over input `{}`: {why}",
                            exec.engine.name(),
                            m.name,
                        ),
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
    /// [`ColumnarMap::steps`]: crate::columnar::ColumnarMap::steps
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
        if let (NodeKind::Nested(inner), Some(mapping), Some(plan)) =
            (&node.kind, &node.mapping, s.inner.as_deref())
            && rows.len() > 1
            && !exec.has_callbacks()
            && inner.callbacks.is_empty()
        {
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
            // Values that cannot be combined, or a failure of the combined
            // map as a whole (before any element ran: a plan error), run
            // item by item below, which reports them per item.
            if args.iter().all(|(_, v)| v.len() == fs.args.len())
                && let Ok(Some(results)) = exec.map_nested_rows(node, inner, plan, mapping, &args)
            {
                return Ok(results
                    .into_iter()
                    .map(|r| {
                        r.map(|lists| {
                            let mut outs: Vec<Option<Value>> = vec![None; fs.outs.len()];
                            for (list, &port) in lists.into_iter().zip(&s.inner_ports) {
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
        match self.flat().step(self.exec, step) {
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
        if !self.exec.has_callbacks() || self.exec.cache.is_none() {
            return;
        }
        let Some((exec, s, _)) = self.flat().step(self.exec, step) else {
            return;
        };
        let node = exec.node(s);
        let log = self
            .cache_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(step)
            .or_insert_with(|| {
                std::sync::Arc::new(crate::cached::CacheLog::new(
                    exec.cache.as_deref(),
                    node,
                    true,
                ))
            })
            .clone();
        log.report(exec, &node.name, &exec.item_path(item), sig, hit);
    }

    /// Reports that step `step`'s result for item `item` came from the cache
    /// (the `on_node_cached` event).
    pub fn report_cached(&self, step: usize, item: usize) {
        self.step_event(step, item, |cb, ctx, name| cb.on_node_cached(ctx, name));
    }

    /// Fires one event of step `step` for item `item` in the step's scope
    /// (its pipeline path), with the node's name, when anyone listens.
    fn step_event(
        &self,
        step: usize,
        item: usize,
        f: impl Fn(&dyn crate::callback::Callback, &crate::callback::CallbackContext<'_>, &str),
    ) {
        if !self.exec.has_callbacks() {
            return;
        }
        if let Some((exec, s, _)) = self.flat().step(self.exec, step) {
            let name = &exec.node(s).name;
            exec.emit(&exec.item_path(item), |cb, ctx| f(cb, ctx, name));
        }
    }

    /// Reports that step `step` starts for item `item` (the `on_node_start`
    /// event), for engines that call a node's batch implementation.
    pub fn report_node_start(&self, step: usize, item: usize) {
        self.step_event(step, item, |cb, ctx, name| cb.on_node_start(ctx, name));
    }

    /// Reports that step `step` ended for item `item` after `elapsed` (the
    /// `on_node_end` event; for a batch call, the batch's time).
    pub fn report_node_end(&self, step: usize, item: usize, elapsed: std::time::Duration) {
        self.step_event(step, item, |cb, ctx, name| {
            cb.on_node_end(ctx, name, elapsed)
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
        let Some((node, outer, inner)) = self.inlined(scope) else {
            return;
        };
        outer.emit(&outer.item_path(item), |cb, ctx| {
            cb.on_nested_start(ctx, node)
        });
        inner.emit(&inner.item_path(item), |cb, ctx| cb.on_pipeline_start(ctx));
    }

    /// Inlined pipeline `scope` when anyone listens: its node's name, the
    /// scope it is nested in and its own.
    fn inlined(&self, scope: usize) -> Option<(&str, &Exec<'a>, &Exec<'a>)> {
        if !self.exec.has_callbacks() {
            return None;
        }
        let flat = self.flat();
        let nest = flat.nesting.get(scope.checked_sub(1)?)?;
        Some((
            nest.node.as_str(),
            flat.scope(self.exec, nest.parent)?,
            flat.scope(self.exec, scope)?,
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
        let Some((node, outer, inner)) = self.inlined(scope) else {
            return;
        };
        inner.emit(&inner.item_path(item), |cb, ctx| {
            cb.on_pipeline_end(ctx, elapsed)
        });
        if completed {
            outer.emit(&outer.item_path(item), |cb, ctx| {
                cb.on_nested_end(ctx, node, elapsed)
            });
        }
    }

    /// Reports that attempt `attempt` (counting from 1) of step `step`
    /// failed for item `item` with `error` and will be tried again (the
    /// `on_node_retry` event).
    pub fn report_retry(&self, step: usize, item: usize, attempt: u32, error: &NodeError) {
        self.step_event(step, item, |cb, ctx, name| {
            cb.on_node_retry(ctx, name, attempt, error)
        });
    }

    /// Whether anyone listens to this map's events (callbacks): engines may
    /// skip gathering what only events need.
    pub fn observed(&self) -> bool {
        self.exec.has_callbacks()
    }

    /// Reports that item `item` starts (the `on_map_item_start` event).
    pub fn report_item_start(&self, item: usize) {
        let exec = self.exec;
        if exec.has_callbacks() {
            let path = exec.item_path(item);
            exec.emit(&path, |cb, ctx| cb.on_map_item_start(ctx));
        }
    }

    /// Reports that item `item` ended after `elapsed` (the
    /// `on_map_item_end` event).
    pub fn report_item_end(&self, item: usize, elapsed: std::time::Duration) {
        let exec = self.exec;
        if exec.has_callbacks() {
            let path = exec.item_path(item);
            exec.emit(&path, |cb, ctx| cb.on_map_item_end(ctx, elapsed));
        }
    }

    /// The cache of this map's scope, if any.
    pub fn cache(&self) -> Option<&std::sync::Arc<dyn crate::cache::Cache>> {
        self.exec.cache.as_ref()
    }

    /// Tells the job that `stored` new results went to the cache; flushes
    /// it when enough results or time have accumulated (the policy of
    /// [`MapOptions::flush_every`]).
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
    /// [`ColumnarMap::outputs`]: crate::columnar::ColumnarMap::outputs
    pub fn finish(
        &self,
        columns: Vec<arrow_array::ArrayRef>,
        mut failures: Vec<(usize, Error)>,
    ) -> Result<MapResult, Error> {
        failures.sort_by_key(|(i, _)| *i);
        if self.policy == ErrorPolicy::Stop && !failures.is_empty() {
            return Err(failures.swap_remove(0).1);
        }
        let plan = self.exec.plan;
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

    /// Runs a chunk node by node: per node, with a cache, the items'
    /// signatures are looked up at once, only misses run, and their results
    /// are stored at once; an async node's calls run together, up to its
    /// concurrency at once (with or without a cache).
    fn run_chunk_batched(
        &self,
        cache: Option<&dyn crate::cache::Cache>,
        range: Range<usize>,
        first_failure: &AtomicUsize,
        chunk: &mut Chunk,
    ) {
        let exec = self.exec;
        let stop_on_error = self.policy == ErrorPolicy::Stop;
        // Mapped elements whose hashes are known are filled only for rows
        // on which some node runs.
        let hashes: &[Result<MappedElements, String>] = match cache {
            Some(_) => self.mapped_hashes(),
            None => &[],
        };
        let lazy = cache.is_some()
            && self
                .mapped
                .iter()
                .zip(hashes)
                .all(|(m, h)| m.slot.is_none() || h.is_ok());
        let hashes: Vec<Option<&arrow_array::FixedSizeBinaryArray>> = hashes
            .iter()
            .map(|h| {
                h.as_ref()
                    .ok()
                    .map(|(_, h)| arrow_array::cast::AsArray::as_fixed_size_binary(h.as_ref()))
            })
            .collect();
        let fill = |index: usize, slots: &mut [Option<Value>]| self.fill_mapped(index, slots);
        let mut batch = crate::cached::Batch::new(self.template.len(), range.len(), Some(&fill));
        for index in range.clone() {
            let row = batch.push(Some(index), &self.template, false);
            if exec.has_callbacks() {
                exec.emit(&batch.path(exec, row), |cb, ctx| cb.on_map_item_start(ctx));
            }
            if lazy {
                let elements = self.element_indices(index);
                for ((m, h), e) in self.mapped.iter().zip(&hashes).zip(elements) {
                    if let (Some(slot), Some(h)) = (m.slot, h) {
                        batch.set_hash(row, slot, crate::cache::signature_at(h, e));
                    }
                }
            } else if let Err(e) = batch.ensure_filled(row) {
                batch.fail(row, e);
            }
        }
        let start = std::time::Instant::now();
        let report = |node: Option<&str>, e| self.cache_failed(node, e);
        let result = crate::cached::run_batch(exec, cache, &mut batch, stop_on_error, &report)
            .and_then(|stored| self.maybe_flush(stored));
        if let Err(e) = result {
            let shared = std::sync::Arc::new(e);
            batch.fail_unfailed(|| Error::Batch {
                source: shared.clone(),
            });
        }
        let elapsed = start.elapsed();
        let outputs: SmallVec<[usize; 4]> = exec.plan.outputs.iter().map(|o| o.slot).collect();
        for (row, index) in range.enumerate() {
            if exec.has_callbacks() {
                exec.emit(&batch.path(exec, row), |cb, ctx| {
                    cb.on_map_item_end(ctx, elapsed)
                });
            }
            let outcome = batch.take(row, outputs.iter().copied());
            if !chunk.record(index, outcome, stop_on_error, first_failure) {
                return;
            }
        }
    }

    /// Whether a step of this map's plan calls an async function: its items
    /// then run in batches, node by node, so the async calls of many items
    /// can wait at once.
    fn has_async_step(&self) -> bool {
        let exec = self.exec;
        exec.plan.steps.iter().any(|s| exec.node(s).is_async())
    }

    /// Counts `stored` new results and flushes the cache when enough of them
    /// or enough time has accumulated (see [`MapOptions::flush_every`]).
    fn maybe_flush(&self, stored: usize) -> Result<(), Error> {
        let Some(cache) = &self.exec.cache else {
            return Ok(());
        };
        let mut state = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += stored;
        let due = state.1 >= self.flush_every
            || (state.1 > 0 && state.0.elapsed() >= MapOptions::FLUSH_INTERVAL);
        if !due {
            return Ok(());
        }
        self.start_flush(cache, &mut state)
    }

    /// Flushes when the last flush is [`MapOptions::FLUSH_INTERVAL`] old and
    /// the cache holds results not yet written (this map's, or those of the
    /// maps nested in it).
    fn flush_if_stale(&self) -> Result<(), Error> {
        let Some(cache) = &self.exec.cache else {
            return Ok(());
        };
        let mut state = self.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.elapsed() < MapOptions::FLUSH_INTERVAL
            || (state.1 == 0 && cache.unwritten_rows() == 0)
        {
            return Ok(());
        }
        self.start_flush(cache, &mut state)
    }

    /// Starts a background write of what the cache buffered (see
    /// `maybe_flush`); `state` is the job's unflushed count, locked.
    fn start_flush(
        &self,
        cache: &std::sync::Arc<dyn crate::cache::Cache>,
        state: &mut (Instant, usize),
    ) -> Result<(), Error> {
        // What is buffered now is written in the background while the
        // items keep running, at most WRITES_IN_FLIGHT writes at a time: a
        // flush first waits for the oldest write beyond that.
        let mut writers = self.flusher.lock().unwrap_or_else(|e| e.into_inner());
        while writers.len() >= WRITES_IN_FLIGHT {
            if let Some(done) = writers.pop_front()
                && let Err(e) = flushed(done)
            {
                self.cache_failed(None, e)?;
            }
        }
        *state = (Instant::now(), 0);
        writers.push_back(std::thread::spawn(cache.clone().begin_flush()));
        Ok(())
    }

    /// Waits for the background writes still running. A failed write is a
    /// cache failure (see [`MapJob::cache_failed`]).
    fn wait_for_flush(&self) -> Result<(), Error> {
        let writers: Vec<Flusher> = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        // Every write is waited for, even after one failed.
        let mut first = Ok(());
        for writer in writers {
            if let Err(e) = flushed(writer) {
                let reported = self.cache_failed(None, e);
                if first.is_ok() {
                    first = reported;
                }
            }
        }
        first
    }

    /// Reports a failure of the cache (for node `node`, when known): under
    /// [`MapOptions::strict_cache`] it is returned as the map's error;
    /// otherwise it is kept for [`MapResult::cache_errors`] (the first one
    /// also fires [`Callback::on_cache_error`]) and the map goes on without
    /// the cache for what failed.
    pub fn cache_failed(
        &self,
        node: Option<&str>,
        source: crate::cache::CacheError,
    ) -> Result<(), Error> {
        let error = Error::cache(node, source);
        if self.strict_cache {
            return Err(error);
        }
        let exec = self.exec;
        let mut errors = self.cache_errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.is_empty() && exec.has_callbacks() {
            exec.emit(&exec.items, |cb, ctx| cb.on_cache_error(ctx, &error));
        }
        if errors.len() < MapResult::MAX_CACHE_ERRORS {
            errors.push(error);
        }
        Ok(())
    }

    /// The cache failures kept so far, taken out.
    fn take_cache_errors(&self) -> Vec<Error> {
        std::mem::take(&mut *self.cache_errors.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs item `index`: every needed node, in topological order.
    pub fn run_item(&self, index: usize) -> Result<ItemOutput, Error> {
        let exec = self.exec;
        let items = exec.item_path(index);
        let start = exec.has_callbacks().then(|| {
            exec.emit(&items, |cb, ctx| cb.on_map_item_start(ctx));
            Instant::now()
        });
        let mut slots: SmallVec<[Option<Value>; 8]> = self.template.iter().cloned().collect();
        self.fill_mapped(index, &mut slots)?;
        let result = exec.run_steps(&mut slots, &items).map(|()| {
            ItemOutput(
                exec.plan
                    .outputs
                    .iter()
                    .map(|o| slots[o.slot].take().expect("output computed"))
                    .collect(),
            )
        });
        if let Some(start) = start {
            let elapsed: Duration = start.elapsed();
            exec.emit(&items, |cb, ctx| cb.on_map_item_end(ctx, elapsed));
        }
        result
    }

    /// Runs the items of `range` in order and gathers their outputs as
    /// column pieces. Under [`ErrorPolicy::Stop`], `first_failure` (shared
    /// by all chunks of the job, starting at `usize::MAX`) holds the lowest
    /// failing index seen so far: a chunk skips items after it and lowers it
    /// on failure, so the earliest failure is always found and little work
    /// is wasted after it.
    pub fn run_chunk(&self, range: Range<usize>, first_failure: &AtomicUsize) -> Chunk {
        let outputs = self.exec.plan.outputs.len();
        let mut chunk = Chunk {
            start: range.start,
            columns: (0..outputs)
                .map(|_| Vec::with_capacity(range.len()))
                .collect(),
            failures: Vec::new(),
            error: None,
        };
        let stop_on_error = self.policy == ErrorPolicy::Stop;
        if let Some(cache) = &self.exec.cache {
            self.run_chunk_batched(Some(cache.as_ref()), range, first_failure, &mut chunk);
            return chunk;
        }
        if self.has_async_step() {
            self.run_chunk_batched(None, range, first_failure, &mut chunk);
            return chunk;
        }
        for index in range {
            if stop_on_error && index > first_failure.load(Ordering::Relaxed) {
                break;
            }
            let outcome = self
                .run_item(index)
                .map(|ItemOutput(values)| values.into_iter().map(Some));
            if !chunk.record(index, outcome, stop_on_error, first_failure) {
                break;
            }
        }
        chunk
    }

    /// Assembles chunks (in any order) into a [`MapResult`], applying the
    /// error policy: under [`ErrorPolicy::Stop`] the failure of the earliest
    /// chunk that failed is returned; otherwise every item must be present.
    pub fn assemble(&self, mut chunks: Vec<Chunk>) -> Result<MapResult, Error> {
        chunks.sort_by_key(|c| c.start);
        if let Some(at) = chunks.iter().position(|c| c.error.is_some())
            && let Some(error) = chunks.swap_remove(at).error
        {
            return Err(error);
        }
        let plan = self.exec.plan;
        let mut values: Vec<Vec<Option<Value>>> = plan
            .outputs
            .iter()
            .map(|_| Vec::with_capacity(self.len))
            .collect();
        let mut failures = Vec::new();
        let mut next = 0;
        for chunk in chunks {
            let len = chunk.columns.first().map_or(0, Vec::len);
            if chunk.start != next {
                break;
            }
            next += len;
            for (c, piece) in values.iter_mut().zip(chunk.columns) {
                c.extend(piece);
            }
            failures.extend(chunk.failures);
        }
        let columns: Vec<Column> = plan
            .outputs
            .iter()
            .zip(values)
            .map(|(o, v)| Column::from_values(o.name.clone(), o.ty, v))
            .collect();
        if next != self.len && !columns.is_empty() {
            return Err(Error::Engine {
                message: format!(
                    "engine `{}` returned no result for item {next}",
                    self.exec.engine.name()
                ),
            });
        }
        Ok(MapResult {
            len: self.len,
            columns,
            failures,
            cache_errors: Vec::new(),
        })
    }
}
