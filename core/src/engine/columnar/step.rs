//! The cached step over Arrow columns ([`ColumnarStep`]): what a columnar
//! engine runs for each node and batch of rows. It signs nothing itself (the
//! engine computes the signature column with
//! [`NodeKey`](crate::signature::NodeKey), as the row engines do), looks the
//! signatures up (lending stored batches in place where the store can),
//! reports each row's cache decision and cached event, calls only the
//! missing rows, hashes and stores their results, and merges hits and fresh
//! results into the batch's output columns.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, new_null_array};
use arrow_schema::DataType;

use crate::cache::{Cache, CacheKey, CacheRows};
use crate::engine::{MapJob, MapState};
use crate::error::{Error, NodeError};
use crate::kernels::RowPicks;
use crate::observe::callback::{ItemCounts, NodeCounts};
use crate::signature::{Signature, hash_column};
use crate::value::{Value, ValueType};

/// A result of the step.
type StepResult<T> = std::result::Result<T, Error>;

/// The rows a call computed, and per output their values (`None`: not
/// needed).
type Computed = (Vec<usize>, Vec<Option<ArrayRef>>);

/// A broken invariant of the step.
fn internal(message: String) -> Error {
    Error::Internal { message }
}

/// What calling a node for one row gave: each output port's value (`None`
/// for ports a nested pipeline did not compute), or the row's failure.
type RowOutcome = Result<Vec<Option<Value>>, Error>;

/// Where a node's argument comes from: the next value column of the batch,
/// or a constant fixed input.
#[derive(Clone, Debug)]
pub enum Arg {
    /// A column of the batch.
    Column {
        /// Its slot in the flat plan's slot table.
        slot: usize,
        /// Its type.
        ty: ValueType,
    },
    /// The same value for every row.
    Fixed {
        /// Its slot in the flat plan's slot table.
        slot: usize,
        /// Its type.
        ty: ValueType,
        /// The value.
        value: Value,
        /// Its value hash or resource key (`None`: a resource without a
        /// key, which leaves the node unsigned).
        hash: Option<Signature>,
    },
}

/// About how long one piece of a cached node's computation takes: its
/// results are stored after each, so a flush (at most every
/// [`MapOptions::FLUSH_INTERVAL`](crate::MapOptions::FLUSH_INTERVAL))
/// finds them while a long batch is still running.
pub const PIECE_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// The rows of a cached node's first piece, before its speed is known.
pub const FIRST_PIECE_ROWS: usize = 256;

/// What computing missing rows gives: the rows that succeeded, and per
/// output their values and their value hashes (`None`: not needed).
type Fresh = (Vec<usize>, Vec<Option<ArrayRef>>, Vec<Option<ArrayRef>>);

/// One node over a batch of rows, with its cache: the cached rows for the
/// batch's signatures are joined in from the store, only the other rows
/// call the node (its batch implementation, its typed row loop, or its row
/// function), and their results are hashed and stored, in pieces that each
/// take about [`PIECE_TIME`]. Every item's events and cache decisions are
/// reported through the map's job, failures recorded in its [`MapState`].
/// Built by a columnar engine for each step of a lowered map (from the
/// engine's own job, or, for a plan built in another process, from a job
/// around the step's node: [`MapJob::for_node`]).
pub struct ColumnarStep {
    /// The step's name (errors about its columns name it).
    pub name: String,
    /// Its index in the job's flat plan.
    pub step: usize,
    /// The map's job: events, errors, row calls, the cache's writes.
    pub job: Arc<MapJob>,
    /// The map's failures, stop policy and item times.
    pub state: Arc<MapState>,
    /// Whether a callback takes the map's per-item events.
    pub observed: bool,
    /// Whether a callback takes counts per batch instead.
    pub counted: bool,
    /// Where the map runs elsewhere (a decoded plan): the node name its
    /// counts per batch are tallied under in the map's state, for the plan
    /// to carry back as data ([`MapState::take_node_counts`]).
    pub tally: Option<String>,
    /// How many inlined pipelines the map has (for their start times).
    pub scopes: usize,
    /// The store and the node's key, when the step is cached.
    pub cache: Option<(Arc<dyn Cache>, CacheKey)>,
    /// Whether output hashes are computed (the map has a cache).
    pub hash_outputs: bool,
    /// Whether this is the first / last step (item events).
    pub first: bool,
    /// See `first`.
    pub last: bool,
    /// Slots per row of the job's flat plan.
    pub slot_count: usize,
    /// Where each of the node's arguments comes from.
    pub args: Vec<Arg>,
    /// Per output port: its slot (if needed) and type.
    pub outs: Vec<(Option<usize>, ValueType)>,
    /// The node's batch implementation, when it has one and every input
    /// has an Arrow form.
    pub batch: Option<crate::BatchFn>,
    /// The node's typed row loop (`#[node]` functions), used when it has
    /// no batch implementation.
    pub rows: Option<crate::node::rows::RowsFn>,
    /// The node's retries (for the row loop).
    pub retries: u32,
    /// The inlined pipelines that begin with this step (outermost first)
    /// and that end with it (innermost first): their events fire per row.
    pub opens: Vec<usize>,
    /// See `opens`.
    pub closes: Vec<usize>,
    /// How many missing rows one piece of a cached node's computation
    /// takes (see [`PIECE_TIME`]), learned as batches run.
    pub piece_rows: AtomicUsize,
}

impl std::fmt::Debug for ColumnarStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnarStep")
            .field("name", &self.name)
            .finish()
    }
}

impl ColumnarStep {
    /// Runs the step over a batch of `n` rows: `items` holds each row's
    /// map item, `sigs` the signature column (a cached step), `values` the
    /// value column of every [`Arg::Column`] in order. Returns, per needed
    /// output (slot `Some`), its values and value hashes, failed rows null.
    pub fn run(
        &self,
        n: usize,
        items: Vec<usize>,
        sigs: Option<&FixedSizeBinaryArray>,
        values: Vec<ArrayRef>,
    ) -> StepResult<Vec<ArrayRef>> {
        let live: Vec<usize> = (0..n).filter(|&r| !self.state.skip(items[r])).collect();
        let span = self
            .job
            .span
            .get()
            .cloned()
            .unwrap_or_default()
            .node_batch(|| self.job.step_name(self.step), n);
        let _span = span.enter();
        if self.counted {
            if self.first {
                self.job.report_items_batch(ItemCounts {
                    started: n,
                    ended: 0,
                });
            }
            for &scope in &self.opens {
                let started = live.len();
                self.job
                    .report_runs_batch(scope, ItemCounts { started, ended: 0 });
            }
        }
        // One reading of the clock stamps the whole batch.
        if self.observed && (self.first || !self.opens.is_empty()) {
            let times = self.state.times(self.scopes);
            let now = crate::observe::clock::Moment::now();
            if self.first {
                for &item in &items {
                    times.start_at(item, now);
                }
                self.job.report_item_starts(&items);
            }
            for &scope in &self.opens {
                for &r in &live {
                    times.enter_at(scope, items[r], now);
                }
                self.job
                    .report_scope_starts(scope, live.iter().map(|&r| items[r]));
            }
        }

        // Join in the cached rows: per row, the stored source it comes from
        // and its row there; per source, each output's values and hashes.
        let mut hit_row: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut hit_sources: Vec<(Vec<ArrayRef>, Vec<ArrayRef>)> = Vec::new();
        if let (Some((cache, key)), Some(sigs)) = (&self.cache, sigs) {
            // The live rows with a signature (`None`: every row, when all
            // are live and signed: the column is looked up in place), and
            // their signatures.
            let in_place = (live.len() == n)
                .then(|| Signature::slice_of(sigs))
                .flatten();
            let (wanted, keys): (Option<Vec<usize>>, std::borrow::Cow<'_, [Signature]>) =
                match in_place {
                    Some(all) => (None, std::borrow::Cow::Borrowed(all)),
                    None => {
                        let mut wanted = Vec::with_capacity(live.len());
                        let mut keys = Vec::with_capacity(live.len());
                        for &r in &live {
                            if let (true, Ok(sig)) = (sigs.is_valid(r), sigs.value(r).try_into()) {
                                wanted.push(r);
                                keys.push(Signature(sig));
                            }
                        }
                        (Some(wanted), std::borrow::Cow::Owned(keys))
                    }
                };
            // Stored batches lent in place when the store can (each hit is
            // then copied once, into the result), else the gathered hits. A
            // failing store is a miss for every row (or, for a strict map,
            // the map's error).
            let looked_up = match cache.locate(key, &keys) {
                Ok(Some(located)) => Ok((
                    located.columns.into_iter().zip(located.hashes).collect(),
                    located.rows,
                )),
                Ok(None) => cache.lookup(key, &keys).map(|hits| {
                    let rows = hits.rows.iter().map(|at| at.map(|at| (0, at))).collect();
                    (vec![(hits.found.columns, hits.found.hashes)], rows)
                }),
                Err(e) => Err(e),
            };
            let found: Vec<Option<(usize, usize)>> = match looked_up {
                Ok((sources, rows)) => {
                    hit_sources = sources;
                    rows
                }
                Err(e) => {
                    self.job
                        .cache_failed(Some(&key.node), e)
                        .map_err(|e| self.fail_map(e))?;
                    vec![None; keys.len()]
                }
            };
            let outputs = self.outs.len();
            if let Some((values, hashes)) = hit_sources
                .iter()
                .find(|(v, h)| v.len() != outputs || h.len() != outputs)
            {
                return Err(internal(format!(
                    "the cache returned {} value and {} hash columns for node `{}`'s {outputs} outputs",
                    values.len(),
                    hashes.len(),
                    key.node
                )));
            }
            for (k, at) in found.iter().enumerate().take(keys.len()) {
                let r = wanted.as_ref().map_or(k, |w| w[k]);
                hit_row[r] = *at;
            }
        }
        // What the cache did for each live row, and the hits' events, as
        // the row engines report them (nothing to report when the map has
        // no cache; a node the cache cannot hold still reports why).
        if self.observed && self.job.cache().is_some() {
            self.job.report_lookups(
                self.step,
                live.iter().map(|&r| {
                    let sig = sigs
                        .filter(|s| s.is_valid(r))
                        .and_then(|s| s.value(r).try_into().ok().map(Signature));
                    (items[r], sig, hit_row[r].is_some())
                }),
            );
        }

        // Call the node for the other live rows, and store their results.
        let misses: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&r| hit_row[r].is_none())
            .collect();
        let (fresh_rows, fresh_arrays, fresh_hashes) =
            self.compute_misses(&misses, &values, &items, sigs)?;
        span.record_counts(live.len() - misses.len(), misses.len());
        if self.counted || self.tally.is_some() {
            let computed = misses
                .iter()
                .filter(|&&r| !self.state.failed(items[r]))
                .count();
            let cached = live.len() - misses.len();
            let counts = NodeCounts { computed, cached };
            if self.counted {
                self.job.report_node_batch(self.step, counts);
            }
            if let Some(node) = &self.tally {
                self.state.tally(node, counts);
            }
        }

        // Combine hits and fresh results in row order; failed rows are null.
        // Hits of one run of stored rows, in order (a warm batch): a slice
        // of them. Fresh rows only, in order (a cold batch): the fresh
        // arrays as they are. Otherwise one set of picks serves every output
        // column, copying each row once.
        let one_run = match hit_row.first() {
            Some(&Some((s, r0))) => hit_row
                .iter()
                .enumerate()
                .all(|(r, at)| *at == Some((s, r0 + r)))
                .then_some((s, r0)),
            _ => None,
        };
        let all_fresh =
            fresh_rows.len() == n && fresh_rows.iter().enumerate().all(|(k, &r)| k == r);
        let fresh_source = hit_sources.len();
        let picks = (one_run.is_none() && !all_fresh).then(|| {
            let mut fresh_pos: Vec<Option<usize>> = vec![None; n];
            for (k, &r) in fresh_rows.iter().enumerate() {
                fresh_pos[r] = Some(k);
            }
            RowPicks::new(
                (0..n)
                    .map(|r| match (hit_row[r], fresh_pos[r]) {
                        (Some(h), _) => Some(h),
                        (None, Some(f)) => Some((fresh_source, f)),
                        _ => None,
                    })
                    .collect(),
            )
        });
        let merge = Merge {
            one_run,
            all_fresh,
            picks: picks.as_ref(),
            rows: n,
            fresh_len: fresh_rows.len(),
        };
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (o, (slot, ty)) in self.outs.iter().enumerate() {
            if slot.is_none() {
                continue;
            }
            let dt = ty.data_type().unwrap_or(DataType::Null);
            let values: Vec<&ArrayRef> = hit_sources.iter().map(|(v, _)| &v[o]).collect();
            let hashes: Vec<&ArrayRef> = hit_sources.iter().map(|(_, h)| &h[o]).collect();
            arrays.push(merge.column(&dt, &values, fresh_arrays[o].clone())?);
            arrays.push(merge.column(
                &DataType::FixedSizeBinary(32),
                &hashes,
                fresh_hashes[o].clone(),
            )?);
        }
        // One reading of the clock ends the batch's scopes and items, read
        // only when someone listens.
        let now = self.observed.then(crate::observe::clock::Moment::now);
        if let Some(now) = now {
            let times = self.state.times(self.scopes);
            for &scope in &self.closes {
                self.job
                    .report_scope_ends(scope, items.iter().copied(), |item| {
                        let entered = times.entered(scope, item)?;
                        Some((now - entered, !self.state.failed(item)))
                    });
            }
        }
        if self.counted {
            // Runs of a nested pipeline that end here: the items still live
            // (a run that failed inside the pipeline is counted by its
            // error).
            let ended = (0..n).filter(|&r| !self.state.skip(items[r])).count();
            for &scope in &self.closes {
                self.job
                    .report_runs_batch(scope, ItemCounts { started: 0, ended });
            }
            if self.last {
                self.job.report_items_batch(ItemCounts {
                    started: 0,
                    ended: n,
                });
            }
        }
        if let (true, Some(now)) = (self.last, now) {
            let times = self.state.times(self.scopes);
            self.job.report_item_ends(&items, |item| {
                times.started(item).map(|s| now - s).unwrap_or_default()
            });
        }
        Ok(arrays)
    }
}

impl ColumnarStep {
    /// Records `error` as the failure of the whole map (a cache failure
    /// under a strict map, say) and ends the plan with its message.
    fn fail_map(&self, error: Error) -> Error {
        let message = error.to_string();
        self.state.fail_map(error);
        Error::Engine { message }
    }

    /// Calls the node for the rows `misses` and stores their results (for
    /// a cached node): in pieces that each take about
    /// [`PIECE_TIME`] (learned from the node's earlier pieces), so results
    /// reach the cache, and a flush, while a long batch is still running.
    /// Returns the rows that succeeded and, per output, their values and
    /// value hashes.
    fn compute_misses(
        &self,
        misses: &[usize],
        values: &[ArrayRef],
        items: &[usize],
        sigs: Option<&FixedSizeBinaryArray>,
    ) -> StepResult<Fresh> {
        if misses.is_empty() {
            let none = vec![None; self.outs.len()];
            return Ok((Vec::new(), none.clone(), none));
        }
        if self.cache.is_none() {
            return self.compute_piece(misses, values, items, None);
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < misses.len() {
            let rows = self.piece_rows.load(Ordering::Relaxed).max(1);
            let end = (at + rows).min(misses.len());
            let began = std::time::Instant::now();
            pieces.push(self.compute_piece(&misses[at..end], values, items, sigs)?);
            // Rows that take about PIECE_TIME, from this piece's speed
            // (growing at most fourfold at a time).
            let secs = began.elapsed().as_secs_f64().max(1e-6);
            let fit = ((end - at) as f64 * PIECE_TIME.as_secs_f64() / secs) as usize;
            self.piece_rows.store(
                fit.clamp(1, (end - at).saturating_mul(4).max(1)),
                Ordering::Relaxed,
            );
            at = end;
        }
        if pieces.len() == 1 {
            return Ok(pieces.pop().expect("one piece"));
        }
        let mut rows = Vec::with_capacity(misses.len());
        let outputs = self.outs.len();
        let mut arrays: Vec<Vec<ArrayRef>> = vec![Vec::new(); outputs];
        let mut hashes: Vec<Vec<ArrayRef>> = vec![Vec::new(); outputs];
        let mut complete = vec![true; outputs];
        for (piece_rows, piece_arrays, piece_hashes) in pieces {
            rows.extend(piece_rows);
            for o in 0..outputs {
                match (&piece_arrays[o], &piece_hashes[o]) {
                    (Some(a), h) => {
                        arrays[o].push(a.clone());
                        if let Some(h) = h {
                            hashes[o].push(h.clone());
                        }
                    }
                    (None, _) => complete[o] = false,
                }
            }
        }
        let concat = |parts: &[ArrayRef]| -> StepResult<Option<ArrayRef>> {
            let refs: Vec<&dyn arrow_array::Array> = parts.iter().map(|a| a.as_ref()).collect();
            Ok(Some(arrow_select::concat::concat(&refs)?))
        };
        let mut fresh_arrays = Vec::with_capacity(outputs);
        let mut fresh_hashes = Vec::with_capacity(outputs);
        for o in 0..outputs {
            if !complete[o] {
                fresh_arrays.push(None);
                fresh_hashes.push(None);
                continue;
            }
            fresh_arrays.push(concat(&arrays[o])?);
            fresh_hashes.push(if hashes[o].len() == arrays[o].len() {
                concat(&hashes[o])?
            } else {
                None
            });
        }
        Ok((rows, fresh_arrays, fresh_hashes))
    }

    /// One piece of [`ColumnarStep::compute_misses`]: calls the node for
    /// `misses`, hashes the outputs and stores the rows that have a
    /// signature.
    fn compute_piece(
        &self,
        misses: &[usize],
        values: &[ArrayRef],
        items: &[usize],
        sigs: Option<&FixedSizeBinaryArray>,
    ) -> StepResult<Fresh> {
        let miss_rows =
            arrow_array::UInt32Array::from_iter_values(misses.iter().map(|&r| r as u32));
        let (fresh_rows, fresh_arrays) = match (&self.batch, &self.rows) {
            (Some(f), _) => self.call_batch(f, misses, &miss_rows, values, items)?,
            (None, Some(f)) => self.call_row_loop(f, misses, &miss_rows, values, items)?,
            (None, None) => self.call_rows(misses, &miss_rows, values, items)?,
        };
        // Each fresh output's value hashes, as one column (stored, and
        // passed on for the dependents' signatures).
        let mut fresh_hashes: Vec<Option<ArrayRef>> = Vec::with_capacity(self.outs.len());
        for array in &fresh_arrays {
            fresh_hashes.push(match array {
                Some(array) if self.hash_outputs => {
                    Some(hash_column(array).map_err(|source| Error::Arrow {
                        column: self.name.clone(),
                        source,
                    })?)
                }
                _ => None,
            });
        }
        if let (Some((cache, key)), Some(sigs)) = (&self.cache, sigs) {
            let storable = fresh_arrays.iter().all(Option::is_some)
                && fresh_hashes.iter().all(Option::is_some);
            // Rows without a signature (an input without a hash) are not stored.
            let keep: Vec<u32> = (0..fresh_rows.len())
                .filter(|&k| sigs.is_valid(fresh_rows[k]))
                .map(|k| k as u32)
                .collect();
            if storable && !keep.is_empty() {
                let keep_all = keep.len() == fresh_rows.len();
                let keep = arrow_array::UInt32Array::from(keep);
                let pick = |a: &ArrayRef| -> StepResult<ArrayRef> {
                    if keep_all {
                        Ok(a.clone())
                    } else {
                        Ok(arrow_select::take::take(a.as_ref(), &keep, None)?)
                    }
                };
                let rows = CacheRows {
                    signatures: keep
                        .values()
                        .iter()
                        .filter_map(|&k| {
                            sigs.value(fresh_rows[k as usize])
                                .try_into()
                                .ok()
                                .map(Signature)
                        })
                        .collect(),
                    columns: fresh_arrays
                        .iter()
                        .flatten()
                        .map(pick)
                        .collect::<StepResult<_>>()?,
                    hashes: fresh_hashes
                        .iter()
                        .flatten()
                        .map(pick)
                        .collect::<StepResult<_>>()?,
                };
                if rows.signatures.len() == keep.len() {
                    // A failing store leaves the results uncached (or, for a
                    // strict map, fails it); the rows keep their values.
                    let stored = match cache.store(key, &rows) {
                        Ok(()) => self.job.stored(rows.len()),
                        Err(e) => self.job.cache_failed(Some(&key.node), e),
                    };
                    stored.map_err(|e| self.fail_map(e))?;
                }
            }
        }
        Ok((fresh_rows, fresh_arrays, fresh_hashes))
    }

    /// Calls the row function for each missing row; returns the rows that
    /// succeeded and, per output, their values as one array.
    fn call_rows(
        &self,
        misses: &[usize],
        miss_rows: &arrow_array::UInt32Array,
        values: &[ArrayRef],
        items: &[usize],
    ) -> StepResult<(Vec<usize>, Vec<Option<ArrayRef>>)> {
        let columns = self.miss_columns(misses, miss_rows, values)?;
        if let Some(done) = self.call_map_over(misses, &columns, items)? {
            return Ok(done);
        }
        let mut decoded: Vec<Option<Vec<Value>>> = Vec::with_capacity(self.args.len());
        let mut columns_of_args = columns.iter();
        for arg in &self.args {
            match arg {
                Arg::Column { ty, .. } => {
                    let column = columns_of_args
                        .next()
                        .ok_or_else(|| internal("missing argument column".into()))?;
                    let vals = ty
                        .from_array(column.as_ref())
                        .map_err(|source| Error::Arrow {
                            column: self.name.clone(),
                            source,
                        })?;
                    decoded.push(Some(vals));
                }
                Arg::Fixed { .. } => decoded.push(None),
            }
        }
        // All rows in one call: async nodes run up to their concurrency at
        // once, and a nested `map_over` runs one inner map over the
        // elements of every row.
        let rows = (0..misses.len())
            .map(|k| {
                let mut slots: Vec<Option<Value>> = vec![None; self.slot_count];
                for (arg, vals) in self.args.iter().zip(&decoded) {
                    match (arg, vals) {
                        (Arg::Column { slot, .. }, Some(vals)) => {
                            slots[*slot] = Some(vals[k].clone())
                        }
                        (Arg::Fixed { slot, value, .. }, _) => slots[*slot] = Some(value.clone()),
                        _ => {}
                    }
                }
                (items[misses[k]], slots)
            })
            .collect();
        let outcomes: Vec<RowOutcome> = self
            .job
            .call_step_rows(self.step, rows)
            .map_err(|e| self.fail_map(e))?;
        let mut fresh_rows = Vec::new();
        let mut fresh_values: Vec<Vec<Value>> = vec![Vec::new(); self.outs.len()];
        for (k, outcome) in outcomes.into_iter().enumerate() {
            let r = misses[k];
            match outcome {
                Ok(values) => {
                    for (o, v) in values.into_iter().enumerate() {
                        if let Some(v) = v {
                            fresh_values[o].push(v);
                        }
                    }
                    fresh_rows.push(r);
                }
                Err(e) => self.state.fail(items[r], e),
            }
        }
        let mut fresh_arrays: Vec<Option<ArrayRef>> = Vec::with_capacity(self.outs.len());
        for ((slot, ty), vals) in self.outs.iter().zip(&fresh_values) {
            if (slot.is_none() && self.cache.is_none()) || vals.len() != fresh_rows.len() {
                // Not needed, or an output nobody needs of a nested pipeline.
                fresh_arrays.push(None);
                continue;
            }
            let refs: Vec<&Value> = vals.iter().collect();
            let array = ty.to_array(&refs).map_err(|e| Error::Arrow {
                column: self.name.clone(),
                source: e,
            })?;
            fresh_arrays.push(Some(array));
        }
        Ok((fresh_rows, fresh_arrays))
    }

    /// A `map_over` step run straight over its list columns, no value
    /// converted (see `Exec::map_over_columns`): the rows that succeeded and,
    /// per output, their lists. `None`: the step or its columns do not
    /// qualify; [`call_rows`](Self::call_rows) goes on the general way.
    fn call_map_over(
        &self,
        misses: &[usize],
        columns: &[ArrayRef],
        items: &[usize],
    ) -> StepResult<Option<Computed>> {
        use crate::engine::nested::NestedArg;
        use arrow_array::cast::AsArray;
        let Ok((exec, s, _)) = self.job.step_at(self.step) else {
            return Ok(None);
        };
        let node = exec.node(s);
        if node.mapping.is_none() || misses.is_empty() {
            return Ok(None);
        }
        let mut columns_of_args = columns.iter();
        let mut args = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            match arg {
                Arg::Column { .. } => {
                    let Some(list) = columns_of_args.next().and_then(|c| c.as_list_opt::<i32>())
                    else {
                        return Ok(None);
                    };
                    args.push(NestedArg::List(list));
                }
                Arg::Fixed { value, .. } => args.push(NestedArg::Fixed(value)),
            }
        }
        // The outputs anything needs (all of them, to be stored, with a cache).
        let outputs: Vec<(usize, ValueType)> = self
            .outs
            .iter()
            .enumerate()
            .filter(|(_, (slot, _))| slot.is_some() || self.cache.is_some())
            .map(|(port, (_, ty))| (port, *ty))
            .collect();
        let paths: Vec<_> = misses.iter().map(|&r| exec.item_path(items[r])).collect();
        // An inner map that fails as a whole is run again the general way,
        // which reports it per item.
        let Ok(Some((failed, lists))) = exec.map_over_columns(node, s, &paths, &args, &outputs)
        else {
            return Ok(None);
        };
        let mut fresh_rows = Vec::with_capacity(misses.len());
        for (&r, failure) in misses.iter().zip(failed) {
            match failure {
                Some(e) => self.state.fail(items[r], e),
                None => fresh_rows.push(r),
            }
        }
        let mut fresh_arrays: Vec<Option<ArrayRef>> = vec![None; self.outs.len()];
        for (port, list) in lists {
            if let Some(slot) = fresh_arrays.get_mut(port) {
                *slot = Some(list);
            }
        }
        Ok(Some((fresh_rows, fresh_arrays)))
    }

    /// Fires the node-start event of each of `rows` when the map is
    /// observed; returns whether it is.
    fn node_started(&self, rows: &[usize], items: &[usize]) -> bool {
        let observed = self.observed;
        if observed {
            self.job
                .report_node_starts(self.step, &rows_items(rows, items));
        }
        observed
    }

    /// Fires the node-end event of each of `rows`.
    fn node_ended(&self, rows: &[usize], items: &[usize], elapsed: std::time::Duration) {
        self.job
            .report_node_ends(self.step, &rows_items(rows, items), elapsed);
    }

    /// The missing rows' value of every column argument, in argument order.
    fn miss_columns(
        &self,
        misses: &[usize],
        miss_rows: &arrow_array::UInt32Array,
        values: &[ArrayRef],
    ) -> StepResult<Vec<ArrayRef>> {
        values
            .iter()
            .map(|column| {
                if misses.len() == column.len() {
                    // Every row misses: the column as it is.
                    Ok(column.clone())
                } else {
                    Ok(arrow_select::take::take(column.as_ref(), miss_rows, None)?)
                }
            })
            .collect()
    }

    /// Fails every missing row with `problem` (a whole call went wrong).
    fn fail_all(&self, misses: &[usize], items: &[usize], problem: NodeError) -> StepResult<()> {
        let text = problem.to_string();
        for &r in misses {
            let error = {
                self.job
                    .step_error(self.step, items[r], 1, NodeError::User(text.clone().into()))
            };
            self.state.fail(items[r], error);
        }
        Ok(())
    }

    /// Calls the node's typed row loop once for all missing rows: a plain
    /// loop over the decoded columns, no dynamic call per row. Rows that
    /// fail are recorded with their attempts.
    fn call_row_loop(
        &self,
        f: &crate::node::rows::RowsFn,
        misses: &[usize],
        miss_rows: &arrow_array::UInt32Array,
        values: &[ArrayRef],
        items: &[usize],
    ) -> StepResult<(Vec<usize>, Vec<Option<ArrayRef>>)> {
        use crate::node::rows::RowsArg;
        let columns = self.miss_columns(misses, miss_rows, values)?;
        let mut columns_of_args = columns.iter();
        let mut args = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            args.push(match arg {
                Arg::Column { .. } => RowsArg::Column(
                    columns_of_args
                        .next()
                        .ok_or_else(|| internal("missing argument column".into()))?,
                ),
                Arg::Fixed { value, .. } => RowsArg::Fixed(value),
            });
        }
        // Node events per row, as the row path fires them (the time is the
        // loop's).
        let observed = self.node_started(misses, items);
        let start = crate::observe::clock::Moment::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&args, misses.len(), self.retries)
        }));
        let elapsed = start.elapsed();
        let out = match outcome {
            Ok(Ok(out))
                if out.columns.len() == self.outs.len()
                    && out
                        .columns
                        .iter()
                        .all(|c| c.len() + out.failures.len() == misses.len()) =>
            {
                out
            }
            Ok(Ok(out)) => {
                let lengths: Vec<usize> = out.columns.iter().map(|c| c.len()).collect();
                let problem = NodeError::User(
                    format!(
                        "the row loop returned arrays of lengths {lengths:?} and {} failures \
                         for {} outputs and {} rows",
                        out.failures.len(),
                        self.outs.len(),
                        misses.len()
                    )
                    .into(),
                );
                self.fail_all(misses, items, problem)?;
                return Ok((Vec::new(), vec![None; self.outs.len()]));
            }
            Ok(Err(problem)) => {
                self.fail_all(misses, items, problem)?;
                return Ok((Vec::new(), vec![None; self.outs.len()]));
            }
            Err(panic) => {
                self.fail_all(misses, items, NodeError::from_panic(panic))?;
                return Ok((Vec::new(), vec![None; self.outs.len()]));
            }
        };
        if observed {
            for retry in &out.retries {
                // As on the row path: each attempt after a retry starts anew.
                if let Some(&r) = misses.get(retry.row) {
                    {
                        self.job
                            .report_retry(self.step, items[r], retry.attempt, &retry.error);
                        self.job.report_node_start(self.step, items[r]);
                    };
                }
            }
        }
        let mut failed = out.failures.iter().map(|f| f.row).peekable();
        let mut fresh_rows = Vec::with_capacity(misses.len() - out.failures.len());
        for (k, &r) in misses.iter().enumerate() {
            if failed.peek() == Some(&k) {
                failed.next();
            } else {
                fresh_rows.push(r);
            }
        }
        if observed {
            self.node_ended(&fresh_rows, items, elapsed);
        }
        for failure in out.failures {
            let r = misses[failure.row];
            let error = self
                .job
                .step_error(self.step, items[r], failure.attempts, failure.error);
            self.state.fail(items[r], error);
        }
        Ok((fresh_rows, out.columns.into_iter().map(Some).collect()))
    }

    /// Calls the node's batch implementation once for all missing rows. If
    /// it fails (or panics, or returns arrays of the wrong shape), every
    /// one of those rows fails with that error.
    fn call_batch(
        &self,
        f: &crate::BatchFn,
        misses: &[usize],
        miss_rows: &arrow_array::UInt32Array,
        values: &[ArrayRef],
        items: &[usize],
    ) -> StepResult<(Vec<usize>, Vec<Option<ArrayRef>>)> {
        let n = misses.len();
        let mut inputs = Vec::with_capacity(self.args.len());
        let mut columns = self.miss_columns(misses, miss_rows, values)?.into_iter();
        for arg in &self.args {
            match arg {
                Arg::Column { .. } => {
                    inputs.push(
                        columns
                            .next()
                            .ok_or_else(|| internal("missing argument column".into()))?,
                    );
                }
                Arg::Fixed { value, ty, .. } => {
                    let one = ty.to_array(&[value]).map_err(|source| Error::Arrow {
                        column: self.name.clone(),
                        source,
                    })?;
                    let zeros = arrow_array::UInt32Array::from(vec![0u32; n]);
                    inputs.push(arrow_select::take::take(one.as_ref(), &zeros, None)?);
                }
            }
        }
        // Node events per row, as the row path fires them (the time is the
        // batch's).
        let observed = self.node_started(misses, items);
        let start = crate::observe::clock::Moment::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&inputs)));
        let problem = match outcome {
            Ok(Ok(arrays)) => {
                let shape_ok = arrays.len() == self.outs.len()
                    && arrays.iter().zip(&self.outs).all(|(a, (_, ty))| {
                        a.len() == n && Some(a.data_type().clone()) == ty.data_type()
                    });
                if shape_ok {
                    if observed {
                        self.node_ended(misses, items, start.elapsed());
                    }
                    return Ok((misses.to_vec(), arrays.into_iter().map(Some).collect()));
                }
                let plural = |k: usize, one: &str, many: &str| {
                    format!("{k} {}", if k == 1 { one } else { many })
                };
                let expected: Vec<String> = self
                    .outs
                    .iter()
                    .map(|(_, ty)| match ty.data_type() {
                        Some(dt) => dt.to_string(),
                        None => ty.name().to_string(),
                    })
                    .collect();
                let got: Vec<String> = arrays
                    .iter()
                    .map(|a| format!("{} of {}", plural(a.len(), "row", "rows"), a.data_type()))
                    .collect();
                let (first, last) = (
                    misses.first().map_or(0, |&r| items[r]),
                    misses.last().map_or(0, |&r| items[r]),
                );
                NodeError::User(
                    format!(
                        "its batch implementation broke its contract for a whole batch of {} (items {first} to {last}, each failed with this error): it must return one array per output, each of {} ({}), but it returned {}{}",
                        plural(n, "row", "rows"),
                        plural(n, "row", "rows"),
                        expected.join(", "),
                        plural(arrays.len(), "array", "arrays"),
                        if got.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", got.join(", "))
                        }
                    )
                    .into(),
                )
            }
            Ok(Err(e)) => NodeError::User(e),
            Err(panic) => NodeError::from_panic(panic),
        };
        self.fail_all(misses, items, problem)?;
        Ok((Vec::new(), vec![None; self.outs.len()]))
    }
}

/// The items of `rows` of a batch whose rows are `items`: the batch's own
/// slice when `rows` is every row in order (no copy), else gathered.
fn rows_items<'a>(rows: &[usize], items: &'a [usize]) -> std::borrow::Cow<'a, [usize]> {
    if rows.len() == items.len() && rows.iter().enumerate().all(|(k, &r)| k == r) {
        std::borrow::Cow::Borrowed(items)
    } else {
        std::borrow::Cow::Owned(rows.iter().map(|&r| items[r]).collect())
    }
}

/// How one batch's output columns are put together from the stored
/// sources of its hits and its fresh results (see `invoke_with_args`).
struct Merge<'a> {
    /// Every row a hit, from one source, in order from this row.
    one_run: Option<(usize, usize)>,
    /// Every row fresh, in order.
    all_fresh: bool,
    /// Otherwise: each row's source (the hit sources, then the fresh
    /// results) and row there.
    picks: Option<&'a RowPicks>,
    rows: usize,
    fresh_len: usize,
}

impl Merge<'_> {
    /// One output column: from the hit `sources` (each whole, as stored or
    /// gathered) and the `fresh` results (nulls where there are none).
    fn column(
        &self,
        dt: &DataType,
        sources: &[&ArrayRef],
        fresh: Option<ArrayRef>,
    ) -> StepResult<ArrayRef> {
        if let Some((s, r0)) = self.one_run {
            let source = sources
                .get(s)
                .ok_or_else(|| internal(format!("the cache named no hit source {s}")))?;
            if r0 + self.rows > source.len() {
                return Err(internal(format!(
                    "the cache placed hits past its source's {} rows",
                    source.len()
                )));
            }
            return Ok(source.slice(r0, self.rows));
        }
        let fresh = fresh.unwrap_or_else(|| new_null_array(dt, self.fresh_len));
        let Some(picks) = self.picks.filter(|_| !self.all_fresh) else {
            return Ok(fresh);
        };
        let mut all: Vec<&dyn Array> = sources.iter().map(|a| a.as_ref()).collect();
        all.push(fresh.as_ref());
        Ok(picks.apply(&all)?)
    }
}
