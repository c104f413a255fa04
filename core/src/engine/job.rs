//! A `map` as a job ([`MapJob`]): its items (mapped lists, zip or
//! product), its error policy and result, and running items in chunks with
//! or without a cache; engines decide only how chunks are scheduled.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::error::Error;
use crate::io::Inputs;
use crate::map::{Column, ErrorPolicy, ItemFailure, MapMode, MapOptions, MapResult};
use crate::pipeline::Step;
use crate::value::Value;

use super::*;

/// The outputs of a contiguous range of items, produced by
/// [`MapJob::run_chunk`] and combined by [`MapJob::assemble`].
pub struct Chunk {
    pub(crate) start: usize,
    pub(crate) columns: Vec<Vec<Option<Value>>>,
    /// The outputs as Arrow columns instead (a chunk run through the
    /// columnar steps).
    pub(crate) arrow: Option<Vec<arrow_array::ArrayRef>>,
    /// Whether it stopped at a failure (stop policy).
    pub(crate) stopped: bool,
}

impl Chunk {
    /// Whether the chunk stopped at a failure (stop policy).
    pub fn failed(&self) -> bool {
        self.stopped
    }

    /// Records item `index`'s outputs, or its failure in `state`. Returns
    /// `false` when the chunk must stop (a failure under the stop policy).
    fn record<I>(&mut self, index: usize, outcome: Result<I, Error>, state: &MapState) -> bool
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
            Err(error) => {
                state.fail(index, error);
                for c in self.columns.iter_mut() {
                    c.push(None);
                }
                self.stopped = state.policy() == ErrorPolicy::Stop;
                !self.stopped
            }
        }
    }
}

/// A mapped input: the whole list, read element by element as items run.
pub(crate) struct MappedList {
    pub(crate) name: String,
    pub(crate) slot: Option<usize>,
    pub(crate) ty: crate::value::ValueType,
    /// The list as a value (`Vec<T>`); for elements given as an Arrow
    /// array, made from it when a row engine first asks.
    list: std::sync::OnceLock<Result<Value, crate::value::ValueError>>,
    /// The elements as given in one Arrow array (of the element type's
    /// data type), if they were: columnar engines take it as it is.
    array: Option<arrow_array::ArrayRef>,
    pub(crate) len: usize,
}

impl MappedList {
    /// A mapped input given as a list value (`Vec<T>`) of `len` elements.
    pub(crate) fn of_values(
        name: String,
        ty: crate::value::ValueType,
        list: Value,
        len: usize,
    ) -> Self {
        MappedList {
            name,
            slot: None,
            ty,
            list: std::sync::OnceLock::from(Ok(list)),
            array: None,
            len,
        }
    }

    /// A mapped input whose elements are the rows of `array`.
    pub(crate) fn of_array(
        name: String,
        ty: crate::value::ValueType,
        array: arrow_array::ArrayRef,
    ) -> Self {
        MappedList {
            name,
            slot: None,
            ty,
            list: std::sync::OnceLock::new(),
            len: array.len(),
            array: Some(array),
        }
    }

    /// The list as a value (`Vec<T>`).
    pub(crate) fn list(&self) -> Result<&Value, Error> {
        self.list
            .get_or_init(|| match &self.array {
                Some(array) => self.ty.list_from_array(array),
                None => Err(crate::value::ValueError::new::<Value>("no list")),
            })
            .as_ref()
            .map_err(|e| Error::External {
                what: format!("reading the elements of mapped input `{}`", self.name),
                source: Box::new(e.clone()),
            })
    }
}

/// A mapped input's elements as one Arrow array, and, when the map has a
/// cache, their value hashes as a `FixedSizeBinary(32)` array.
pub(crate) type MappedElements = (arrow_array::ArrayRef, Option<arrow_array::ArrayRef>);

/// The outputs of one item, in plan output order.
pub struct ItemOutput(SmallVec<[Value; 4]>);

/// One `map`: an engine runs [`MapJob::run_chunk`] over ranges covering
/// every item (in any order, on any thread) and hands the chunks to
/// [`MapJob::assemble`].
pub struct MapJob {
    pub(crate) exec: Arc<Exec>,
    pub(crate) template: Vec<Option<Value>>,
    pub(crate) mapped: Vec<MappedList>,
    /// Failures, the stop policy and item times, for every engine.
    pub(crate) state: Arc<MapState>,
    /// The columnar plan the row engines run cached chunks through.
    pub(crate) local: std::sync::Mutex<crate::engine::columnar::local::LocalPlan>,
    /// Whether its items fire map-item events (not a single run's item).
    pub(crate) item_events: bool,
    /// The map's `tracing` span, made when it starts (inside its
    /// pipeline's span): the parent of what its workers do.
    pub(crate) span: std::sync::OnceLock<crate::observe::trace::Span>,
    pub(crate) mode: MapMode,
    pub(crate) policy: ErrorPolicy,
    pub(crate) len: usize,
    pub(crate) flush_every: usize,
    /// Per mapped input, the value hash of every element, computed once
    /// from the whole list when a cache needs it (`None` when the element
    /// type has no Arrow form).
    pub(crate) mapped_hashes:
        std::sync::OnceLock<Vec<Result<MappedElements, crate::value::ValueError>>>,
    /// When the cache was last flushed, and how many new results it has
    /// received since.
    pub(crate) unflushed: std::sync::Mutex<(Instant, usize)>,
    /// The steps with nested pipelines inlined (columnar engines only).
    pub(crate) flat: std::sync::OnceLock<crate::engine::flat::Flat>,
    /// The cache writes running in the background, oldest first.
    pub(crate) flusher: std::sync::Mutex<std::collections::VecDeque<Flusher>>,
    /// Whether a cache failure fails the map ([`MapOptions::strict_cache`]).
    pub(crate) strict_cache: bool,
    /// The cache failures so far (the map went on without the cache).
    pub(crate) cache_errors: std::sync::Mutex<Vec<Error>>,
    /// Whether this is the map a caller asked for (`Pipeline::map`), not
    /// one a nested `map_over` runs inside it: only that one prepares the
    /// cache, keeps a flush ticker and flushes at its end (nested maps share
    /// its cache and its writes).
    pub(crate) top_level: bool,
    /// Per flat step, what explains its cache decisions (made once, when a
    /// columnar engine first reports one).
    pub(crate) cache_logs: std::sync::Mutex<
        std::collections::HashMap<usize, std::sync::Arc<crate::engine::kernel::CacheLog>>,
    >,
}

impl Drop for MapJob {
    /// A job dropped without `execute` finishing still waits for its write.
    fn drop(&mut self) {
        let _ = self.wait_for_flush();
    }
}

impl MapJob {
    /// Checks user inputs for a top-level map.
    pub(crate) fn from_inputs(
        exec: Arc<Exec>,
        inputs: &Inputs,
        options: &MapOptions,
    ) -> Result<Arc<Self>, Error> {
        let pipeline = exec.pipeline.clone();
        if options.over.is_empty() {
            return Err(Error::NothingToMap);
        }
        let mut fixed = inputs.clone();
        let mut mapped = Vec::new();
        for name in &options.over {
            let info = pipeline.known_input(name)?;
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
            if let Some(crate::io::ArrowList(array)) = list.downcast_ref() {
                mapped.push(MappedList::of_array(
                    name.clone(),
                    info.ty,
                    crate::io::elements_as(info, array)?,
                ));
                continue;
            }
            let len = info.ty.list_len(&list).ok_or_else(|| Error::NotAList {
                name: name.clone(),
                expected: info.ty.name(),
                actual: list.type_name(),
            })?;
            mapped.push(MappedList::of_values(name.clone(), info.ty, list, len));
        }
        let mut job = Self::build(exec, &fixed, mapped, options, None)?;
        job.top_level = true;
        Ok(Arc::new(job))
    }

    /// A top-level map over the rows of the files of `scan`, whose engine
    /// reads the mapped inputs from the files itself
    /// ([`Engine::map_scan`](crate::Engine::map_scan)): the job holds no
    /// elements, only their types.
    pub(crate) fn for_scan(
        exec: Arc<Exec>,
        fixed: &Inputs,
        scan: &crate::engine::columnar::TableScan,
        options: &MapOptions,
    ) -> Result<Arc<Self>, Error> {
        let pipeline = exec.pipeline.clone();
        let mut mapped = Vec::new();
        for feed in &scan.feeds {
            let info = pipeline.known_input(&feed.input)?;
            let empty = arrow_array::new_empty_array(&feed.data_type);
            mapped.push(MappedList::of_array(feed.input.clone(), info.ty, empty));
        }
        let mut job = Self::build(exec, fixed, mapped, options, Some(scan.rows))?;
        job.top_level = true;
        Ok(Arc::new(job))
    }

    /// A map (nested in another one) of the pipeline of `exec` over
    /// `mapped`, with `fixed` beside.
    pub(crate) fn new(
        exec: Arc<Exec>,
        fixed: &Inputs,
        mapped: Vec<MappedList>,
        options: &MapOptions,
    ) -> Result<Arc<Self>, Error> {
        Self::build(exec, fixed, mapped, options, None).map(Arc::new)
    }

    /// A job over `mapped`: of `len` items if given, else as many as the
    /// lists make in the map's mode.
    fn build(
        exec: Arc<Exec>,
        fixed: &Inputs,
        mut mapped: Vec<MappedList>,
        options: &MapOptions,
        len: Option<usize>,
    ) -> Result<Self, Error> {
        let lists: Vec<(String, usize)> = mapped.iter().map(|m| (m.name.clone(), m.len)).collect();
        let len = match len {
            Some(len) => len,
            None => options.mode.items(&lists)?,
        };
        let names: Vec<String> = mapped.iter().map(|m| m.name.clone()).collect();
        let template = exec.pipeline.resolve_inputs(&exec.plan, fixed, &names)?;
        for m in mapped.iter_mut() {
            m.slot = exec
                .plan
                .inputs
                .iter()
                .find(|i| i.name == m.name)
                .map(|i| i.slot);
        }
        Ok(Self::from_parts(exec, template, mapped, len, options))
    }

    /// A job of `len` items in `exec` with `template` (the fixed inputs
    /// filled in) and `mapped` lists, as `options` say; nested in another
    /// map (not top level), firing map-item events. Every constructor
    /// builds its job here.
    pub(crate) fn from_parts(
        exec: Arc<Exec>,
        template: Vec<Option<Value>>,
        mapped: Vec<MappedList>,
        len: usize,
        options: &MapOptions,
    ) -> MapJob {
        MapJob {
            span: std::sync::OnceLock::new(),
            exec,
            template,
            mapped,
            state: Arc::new(MapState::new(len, options.on_error)),
            local: Default::default(),
            item_events: true,
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
        }
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

    /// What the map knows of its items as it runs: failures, the stop
    /// policy, start times. Engines record into it from any thread.
    pub fn state(&self) -> &Arc<MapState> {
        &self.state
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
    pub fn exec(&self) -> &Exec {
        &self.exec
    }

    /// Runs the map on the scope's engine, with map start/end events.
    pub(crate) fn execute(self: &Arc<Self>) -> Result<MapResult, Error> {
        let mut result = self.execute_with(|job| job.exec.engine.map(job))?;
        result.cache_errors = self.take_cache_errors();
        Ok(result)
    }

    /// Runs the map as `run` says (an engine's `map`, or its `map_scan`),
    /// inside what every map does around it: its span, map start/end
    /// events, preparing the cache, flushing it as it goes and at the end.
    pub(crate) fn execute_with<T>(
        self: &Arc<Self>,
        run: impl FnOnce(&Arc<Self>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _span = self
            .span
            .get_or_init(|| {
                let exec = &self.exec;
                crate::observe::trace::Span::map(&exec.path, self.len, exec.engine.name())
            })
            .enter();
        let exec = &self.exec;
        let start = exec.has_callbacks().then(|| {
            exec.emit(&exec.items, |cb, ctx| cb.on_map_start(ctx, self.len));
            crate::observe::clock::Moment::now()
        });
        self.prepare_cache();
        let result = if exec.cache.is_some() && self.top_level {
            // A top-level map with a cache: a ticker flushes what waits to
            // be written at least every FLUSH_INTERVAL, even while every
            // worker is busy with a long batch.
            let stop = (std::sync::Mutex::new(false), std::sync::Condvar::new());
            std::thread::scope(|s| {
                let ticker = s.spawn(|| self.flush_by_time(&stop));
                let result = run(self);
                self.drop_local_plan();
                *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
                stop.1.notify_all();
                let ticked = ticker.join().unwrap_or(Ok(()));
                result.and_then(|r| ticked.map(|()| r))
            })
        } else {
            let result = run(self);
            self.drop_local_plan();
            result
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
        let result = result?;
        written?;
        Ok(result)
    }

    /// Tells the cache which node versions this map will look up, and for
    /// how many items: every cached node's stored results load at once, one
    /// thread each, rather than one after the other at each node's first
    /// lookup. Failures are left to that first lookup to report.
    pub(crate) fn prepare_cache(&self) {
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
    pub(crate) fn element_indices(&self, index: usize) -> SmallVec<[usize; 4]> {
        if self.mode == MapMode::Zip {
            // Every list's element `index` (per item on the hot path: no
            // lengths gathered).
            return SmallVec::from_elem(index, self.mapped.len());
        }
        let lens: SmallVec<[usize; 4]> = self.mapped.iter().map(|m| m.len).collect();
        self.mode.elements(&lens, index)
    }

    /// Writes item `index`'s element of every mapped input into `slots`.
    pub(crate) fn fill_mapped(
        &self,
        index: usize,
        slots: &mut [Option<Value>],
    ) -> Result<(), Error> {
        for (m, i) in self.mapped.iter().zip(self.element_indices(index)) {
            if let Some(slot) = m.slot {
                let value = m.ty.list_item(m.list()?, i).ok_or_else(|| Error::Engine {
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
    pub(crate) fn mapped_hashes(&self) -> &[Result<MappedElements, crate::value::ValueError>] {
        self.mapped_hashes.get_or_init(|| {
            self.mapped
                .iter()
                .map(|m| {
                    let no_form = || crate::value::ValueError {
                        type_name: m.ty.name(),
                        message: "its elements have no Arrow form".into(),
                    };
                    // Hashes feed signatures only: without a cache none.
                    let hash = |elements: &arrow_array::ArrayRef| {
                        self.exec
                            .cache
                            .as_ref()
                            .map(|_| crate::signature::hash_column(elements))
                            .transpose()
                    };
                    if let Some(array) = &m.array {
                        return Ok((array.clone(), hash(array)?));
                    }
                    let list = match m.list.get() {
                        Some(Ok(list)) => list,
                        _ => return Err(no_form()),
                    };
                    let array = m.ty.list_type().ok_or_else(no_form)?.to_array(&[list])?;
                    let list = arrow_array::cast::AsArray::as_list_opt::<i32>(array.as_ref())
                        .ok_or_else(no_form)?;
                    let offsets = list.value_offsets();
                    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
                    let elements = list.values().slice(first, last - first);
                    if Some(elements.data_type().clone()) != m.ty.data_type() {
                        return Err(no_form());
                    }
                    if elements.len() != m.len {
                        return Err(no_form());
                    }
                    let hashes = hash(&elements)?;
                    Ok((elements, hashes))
                })
                .collect()
        })
    }

    /// Whether a step of the map runs a nested pipeline over lists
    /// (`map_over`): its work then grows with the lists' elements, not
    /// with the map's items.
    pub fn maps_over_lists(&self) -> bool {
        let flat = self.flat();
        (0..flat.steps.len()).any(|index| {
            flat.step(&self.exec, index)
                .is_some_and(|(scope, s, _)| scope.node(s).mapping.is_some())
        })
    }

    /// Step `step` of the flat plan with its scope.
    pub(crate) fn step_at(
        &self,
        step: usize,
    ) -> Result<(&Exec, &Step, &crate::engine::flat::FlatStep), Error> {
        self.flat()
            .step(&self.exec, step)
            .ok_or_else(|| Error::Internal {
                message: format!("no step {step}"),
            })
    }

    /// The steps with nested pipelines inlined (see [`crate::flat`]).
    pub(crate) fn flat(&self) -> &crate::engine::flat::Flat {
        self.flat
            .get_or_init(|| crate::engine::flat::Flat::new(&self.exec))
    }

    /// Runs a chunk node by node: per node, with a cache, the items'
    /// signatures are looked up at once, only misses run, and their results
    /// are stored at once; an async node's calls run together, up to its
    /// concurrency at once (with or without a cache).
    pub(crate) fn run_chunk_batched(
        &self,
        cache: Option<&dyn crate::cache::Cache>,
        range: Range<usize>,
        chunk: &mut Chunk,
    ) {
        let exec = &self.exec;
        let stop_on_error = self.policy == ErrorPolicy::Stop;
        // Mapped elements whose hashes are known are filled only for rows
        // on which some node runs.
        let hashes: &[Result<MappedElements, crate::value::ValueError>] = match cache {
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
                    .and_then(|(_, h)| h.as_ref())
                    .map(|h| arrow_array::cast::AsArray::as_fixed_size_binary(h.as_ref()))
            })
            .collect();
        let fill = |index: usize, slots: &mut [Option<Value>]| self.fill_mapped(index, slots);
        let mut batch =
            crate::engine::kernel::Batch::new(self.template.len(), range.len(), Some(&fill));
        for index in range.clone() {
            let row = batch.push(Some(index), &self.template, false);
            if exec.has_callbacks() {
                exec.map_item(&batch.path(exec, row), None);
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
        let start = crate::observe::clock::Moment::now();
        let report = |node: Option<&str>, e| self.cache_failed(node, e);
        let result =
            crate::engine::kernel::run_batch(exec, cache, &mut batch, stop_on_error, &report)
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
                exec.map_item(&batch.path(exec, row), Some(elapsed));
            }
            let outcome = batch.take(row, outputs.iter().copied());
            if !chunk.record(index, outcome, &self.state) {
                return;
            }
        }
    }

    /// Assembles chunks of Arrow columns (sorted by start) into the result.
    fn assemble_arrow(&self, chunks: Vec<Chunk>) -> Result<MapResult, Error> {
        if self.policy == ErrorPolicy::Stop && self.state.stopped_before(self.len) {
            let mut failures = self.state.take_failures();
            return Err(failures.swap_remove(0).1);
        }
        let outputs = self.exec.plan.outputs.len();
        let mut next = 0;
        let mut parts: Vec<Vec<arrow_array::ArrayRef>> = vec![Vec::new(); outputs];
        for chunk in chunks {
            let Some(arrays) = chunk.arrow.filter(|a| a.len() == outputs) else {
                break;
            };
            let len = arrays
                .first()
                .map_or(0, |a| arrow_array::Array::len(a.as_ref()));
            if chunk.start != next {
                break;
            }
            next += len;
            for (part, array) in parts.iter_mut().zip(arrays) {
                part.push(array);
            }
        }
        let columns = parts
            .iter()
            .map(|part| {
                let refs: Vec<&dyn arrow_array::Array> = part.iter().map(|a| a.as_ref()).collect();
                Ok(arrow_select::concat::concat(&refs)?)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // Lengths are checked there: a missing chunk is an error naming the engine.
        self.finish(columns)
    }

    /// Whether a step of this map's plan calls an async function: its items
    /// then run in batches, node by node, so the async calls of many items
    /// can wait at once.
    pub(crate) fn has_async_step(&self) -> bool {
        let exec = &self.exec;
        exec.plan.steps.iter().any(|s| exec.node(s).is_async())
    }

    /// Runs item `index`: every needed node, in topological order.
    pub fn run_item(&self, index: usize) -> Result<ItemOutput, Error> {
        let exec = &self.exec;
        let items = exec.item_path(index);
        let observed = exec.has_callbacks();
        if observed {
            exec.map_item(&items, None);
        }
        // The clock is read only for per-item events that may want times
        // (counts need none, see `Exec::wants_times`); the previous item's
        // end, this item's start and its first node's start share one
        // reading.
        let start = exec.wants_times().then(crate::engine::invoke::pass_stamp);
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
        if observed {
            // The last node's end reading, when it left one.
            let elapsed: Duration = start
                .map(|s| crate::engine::invoke::pass_stamp() - s)
                .unwrap_or_default();
            exec.map_item(&items, Some(elapsed));
        }
        result
    }

    /// Runs the items of `range` in order and gathers their outputs as
    /// column pieces; failures go to the job's [`MapState`]. Under
    /// [`ErrorPolicy::Stop`] a chunk skips the items after the earliest
    /// failure any chunk has seen, and stops at its own first failure, so
    /// the earliest failure is always found and little work is wasted
    /// after it.
    pub fn run_chunk(self: &Arc<Self>, range: Range<usize>) -> Chunk {
        let _span = self.span.get().map(|s| s.enter());
        let outputs = self.exec.plan.outputs.len();
        let mut chunk = Chunk {
            start: range.start,
            columns: (0..outputs)
                .map(|_| Vec::with_capacity(range.len()))
                .collect(),
            arrow: None,
            stopped: false,
        };
        if self.state.stopped_before(range.start) {
            chunk.stopped = true;
            return chunk;
        }
        if let Some(plan) = self.local_plan() {
            return self.run_chunk_columnar(&plan, range);
        }
        if let Some(cache) = &self.exec.cache {
            self.run_chunk_batched(Some(cache.as_ref()), range, &mut chunk);
            return chunk;
        }
        if self.has_async_step() {
            self.run_chunk_batched(None, range, &mut chunk);
            return chunk;
        }
        // Counts for counting callbacks are gathered over the chunk; its
        // first item shares no clock reading with what ran before.
        let _tally = self.exec.tally();
        crate::engine::invoke::clear_stamp();
        for index in range {
            if self.state.stopped_before(index) {
                chunk.stopped = true;
                break;
            }
            let outcome = self
                .run_item(index)
                .map(|ItemOutput(values)| values.into_iter().map(Some));
            if !chunk.record(index, outcome, &self.state) {
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
        if let Some(error) = self.state.take_map_failure() {
            return Err(error);
        }
        if chunks.iter().any(|c| c.arrow.is_some()) {
            return self.assemble_arrow(chunks);
        }
        let mut failures = self.state.take_failures();
        if self.policy == ErrorPolicy::Stop && !failures.is_empty() {
            return Err(failures.swap_remove(0).1);
        }
        let plan = &self.exec.plan;
        let mut values: Vec<Vec<Option<Value>>> = plan
            .outputs
            .iter()
            .map(|_| Vec::with_capacity(self.len))
            .collect();
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
            failures: failures
                .into_iter()
                .map(|(index, error)| ItemFailure { index, error })
                .collect(),
            cache_errors: Vec::new(),
        })
    }
}
