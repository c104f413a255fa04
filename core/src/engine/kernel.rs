//! Cached execution over values: a batch of items runs node by node. This
//! is the path of runs and maps that cannot be planned as columns (a value
//! without an Arrow form); other cached runs and maps run the columnar
//! steps (`engine::columnar`). For each node the
//! items' signatures are computed from the value hashes of their inputs, looked
//! up in the cache at once, only the misses are called, and their results are
//! stored at once. Every value's hash is kept beside it, so a node whose code
//! changed but whose outputs did not leaves its dependents cached.
//!
//! A node is cached when all its outputs have an Arrow form and all its
//! inputs have a value hash (values without an Arrow form, such as
//! resources, have none yet); other nodes simply run.

use crate::cache::{Cache, CacheDecision, CacheOutcome, CacheRows, Hits};
use crate::engine::Exec;
use crate::error::Error;
use crate::node::{NodeFn, NodeKind};
use crate::signature::{NodeKey, Signature, hash_values};
use crate::value::{Value, ValueType};

/// Provides a row's lazily filled inputs: given the row's item index, writes
/// them into the row's slots.
pub(crate) type Fill<'f> = &'f (dyn Fn(usize, &mut [Option<Value>]) -> Result<(), Error> + Sync);

/// The items of one batch in flat row-major tables (`width` slots per row):
/// values, their hashes, and each row's failure. Inputs whose hashes are
/// known up front (mapped elements) are filled only when a node actually
/// runs on the row, so a fully cached item never materializes them.
pub(crate) struct Batch<'f> {
    width: usize,
    /// The item index of each row at the innermost map level (`None` in a run).
    index: Vec<Option<usize>>,
    slots: Vec<Option<Value>>,
    hashes: Vec<Option<Signature>>,
    errors: Vec<Option<Error>>,
    filled: Vec<bool>,
    fill: Option<Fill<'f>>,
}

impl<'f> Batch<'f> {
    /// An empty batch of rows with `width` slots; `fill` provides lazily
    /// filled inputs.
    pub fn new(width: usize, capacity: usize, fill: Option<Fill<'f>>) -> Self {
        Batch {
            width,
            index: Vec::with_capacity(capacity),
            slots: Vec::with_capacity(capacity * width),
            hashes: Vec::with_capacity(capacity * width),
            errors: Vec::with_capacity(capacity),
            filled: Vec::with_capacity(capacity),
            fill,
        }
    }

    /// Adds a row with the given slots (missing lazy inputs are `None`);
    /// `filled` says whether the lazy inputs are already there. Returns the row.
    pub fn push(&mut self, index: Option<usize>, slots: &[Option<Value>], filled: bool) -> usize {
        debug_assert_eq!(slots.len(), self.width);
        self.index.push(index);
        self.slots.extend_from_slice(slots);
        self.hashes.extend(std::iter::repeat_n(None, self.width));
        self.errors.push(None);
        self.filled.push(filled);
        self.index.len() - 1
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Records a failure of row `row`.
    pub fn fail(&mut self, row: usize, error: Error) {
        self.errors[row] = Some(error);
    }

    /// Fails every row that has not failed yet with `error()`.
    pub fn fail_unfailed(&mut self, error: impl Fn() -> Error) {
        for e in self.errors.iter_mut().filter(|e| e.is_none()) {
            *e = Some(error());
        }
    }

    /// Sets the known hash of a slot of a row.
    pub fn set_hash(&mut self, row: usize, slot: usize, hash: Signature) {
        self.hashes[row * self.width + slot] = Some(hash);
    }

    /// Row `row`'s slots.
    fn row(&self, row: usize) -> &[Option<Value>] {
        &self.slots[row * self.width..(row + 1) * self.width]
    }

    fn slot(&self, row: usize, slot: usize) -> &Option<Value> {
        &self.slots[row * self.width + slot]
    }

    fn hash(&self, row: usize, slot: usize) -> Option<Signature> {
        self.hashes[row * self.width + slot]
    }

    /// The item path of row `row` under `exec`.
    pub fn path(&self, exec: &Exec, row: usize) -> smallvec::SmallVec<[usize; 4]> {
        match self.index[row] {
            Some(item) => exec.item_path(item),
            None => exec.items.iter().copied().collect(),
        }
    }

    /// Rows that have not failed.
    fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&r| self.errors[r].is_none())
            .collect()
    }

    /// Makes sure row `row`'s lazy inputs are in its slots.
    pub fn ensure_filled(&mut self, row: usize) -> Result<(), Error> {
        if self.filled[row] {
            return Ok(());
        }
        if let (Some(fill), Some(index)) = (self.fill, self.index[row]) {
            fill(
                index,
                &mut self.slots[row * self.width..(row + 1) * self.width],
            )?;
        }
        self.filled[row] = true;
        Ok(())
    }

    /// Takes row `row`'s outcome: its failure, or the values of `slots`.
    pub fn take(
        &mut self,
        row: usize,
        slots: impl Iterator<Item = usize>,
    ) -> Result<smallvec::SmallVec<[Option<Value>; 4]>, Error> {
        if let Some(e) = self.errors[row].take() {
            return Err(e);
        }
        self.ensure_filled(row)?;
        let base = row * self.width;
        Ok(slots.map(|s| self.slots[base + s].take()).collect())
    }

    /// Takes all of row `row`'s slots, or its failure.
    pub fn take_row(&mut self, row: usize) -> Result<Vec<Option<Value>>, Error> {
        self.take(row, 0..self.width).map(|v| v.into_vec())
    }
}

/// Explains cache decisions for one node over a batch to callbacks
/// ([`Callback::on_cache_decision`](crate::Callback::on_cache_decision);
/// `LOG_HYPERNODES_CACHE` is one of them, see `observe::cache_log`).
pub(crate) struct CacheLog {
    /// Whether anyone listens; nothing is computed otherwise.
    on: bool,
    why_miss: String,
    why_not_cached: &'static str,
}

impl CacheLog {
    pub(crate) fn new(
        cache: Option<&dyn Cache>,
        node: &crate::node::Node,
        callbacks: bool,
    ) -> Self {
        let Some(cache) = cache else {
            // No cache, no decisions.
            return CacheLog {
                on: false,
                why_miss: String::new(),
                why_not_cached: "",
            };
        };
        if node.cache_enabled && !node.outputs.iter().all(|p| p.ty.is_arrow()) {
            warn_not_storable_once(node);
        }
        if !callbacks {
            return CacheLog {
                on: false,
                why_miss: String::new(),
                why_not_cached: "",
            };
        }
        let versions = cache.versions(&node.name);
        let why_miss = match versions.last() {
            Some(last) if !versions.contains(&node.code_hash) => {
                let changed = cache
                    .version_parts(&node.name, last)
                    .map(|old| changed_parts(&old, &node.code_parts))
                    .filter(|c| !c.is_empty());
                match changed {
                    Some(c) => format!("code changed since the last cached version of this node: {}", c.join(", ")),
                    None => "code changed since the last cached version of this node".to_string(),
                }
            }
            _ => "no result for this signature: new input values, changed upstream values or a changed declared environment variable".to_string(),
        };
        let why_not_cached = if !node.cache_enabled {
            node.not_cached_because
                .unwrap_or("the node has cache = false")
        } else if !node.outputs.iter().all(|p| p.ty.is_arrow()) {
            "an output has no Arrow form"
        } else {
            "an input is a resource without a cache key (implement ResourceKey or Serialize)"
        };
        CacheLog {
            on: true,
            why_miss,
            why_not_cached,
        }
    }

    pub(crate) fn report(
        &self,
        exec: &Exec,
        node: &str,
        item: &[usize],
        sig: Option<Signature>,
        hit: bool,
    ) {
        if !self.on {
            return;
        }
        let outcome = match sig {
            None => CacheOutcome::NotCached {
                reason: self.why_not_cached.to_string(),
            },
            Some(_) if hit => CacheOutcome::Hit,
            Some(_) => CacheOutcome::Miss {
                reason: self.why_miss.clone(),
            },
        };
        let decision = CacheDecision {
            node: node.to_string(),
            items: item.to_vec(),
            signature: sig,
            outcome,
        };
        exec.emit_items(item, |cb, ctx| cb.on_cache_decision(ctx, &decision));
    }
}

/// Names of the parts whose hash differs between two versions (or that only
/// one has).
fn changed_parts(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| !old.iter().any(|(ok, ov)| ok == k && ov == v))
        .map(|(k, _)| k.clone())
        .collect();
    for (k, _) in old {
        if !new.iter().any(|(nk, _)| nk == k) {
            changed.push(format!("{k} (removed)"));
        }
    }
    changed
}

/// Fresh results of node `node` (per output, a value per signature) as rows
/// to store: one part, or several when the values are too large for one
/// Arrow array together (more than 2 GiB of text, say). A single value too
/// large for an array is an error naming the node and output.
fn cache_rows(
    node: &str,
    key: &crate::cache::CacheKey,
    sigs: &[Signature],
    values: &[&[Value]],
) -> Result<Vec<CacheRows>, crate::cache::CacheError> {
    let columns = key
        .outputs
        .iter()
        .zip(values)
        .map(|((name, ty), values)| {
            let refs: Vec<&Value> = values.iter().collect();
            ty.to_array(&refs).map_err(|e| encode_error(node, name, e))
        })
        .collect::<Result<Vec<_>, _>>();
    match columns {
        Ok(columns) => Ok(vec![CacheRows::from_columns(key, sigs.to_vec(), columns)?]),
        Err(_) if sigs.len() > 1 => {
            let half = sigs.len() / 2;
            let (a, b): (Vec<&[Value]>, Vec<&[Value]>) =
                values.iter().map(|v| v.split_at(half)).unzip();
            let mut parts = cache_rows(node, key, &sigs[..half], &a)?;
            parts.extend(cache_rows(node, key, &sigs[half..], &b)?);
            Ok(parts)
        }
        Err(e) => Err(e),
    }
}

/// A value of output `output` of node `node` that cannot be stored.
fn encode_error(node: &str, output: &str, e: crate::value::ValueError) -> crate::cache::CacheError {
    crate::cache::CacheError::Encode {
        node: node.to_string(),
        output: output.to_string(),
        message: e.to_string(),
    }
}

/// Says once per process and node that a node's results cannot be cached.
fn warn_not_storable_once(node: &crate::node::Node) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .map(|mut w| w.insert(node.name.clone()))
        .unwrap_or(false);
    if first {
        let outputs: Vec<String> = node
            .outputs
            .iter()
            .filter(|p| !p.ty.is_arrow())
            .map(|p| format!("`{}` ({})", p.name, p.ty.name()))
            .collect();
        log::warn!(
            "hypernodes cache: node `{}` is not cached: output {} has no Arrow form",
            node.name,
            outputs.join(", ")
        );
    }
}

/// Hashes slot `slot` of the live rows that have a value and no hash for it
/// yet (cache hits, fresh results of cached nodes and mapped elements come
/// with theirs); a value shared by every row (a fixed input) is hashed once.
fn hash_slot(
    batch: &mut Batch<'_>,
    slot: usize,
    ty: ValueType,
) -> Result<(), crate::value::ValueError> {
    let rows: Vec<usize> = (0..batch.len())
        .filter(|&r| {
            batch.errors[r].is_none()
                && batch.hash(r, slot).is_none()
                && batch.slot(r, slot).is_some()
        })
        .collect();
    let Some(&first) = rows.first() else {
        return Ok(());
    };
    if !ty.is_arrow() {
        // Resources: hashed by their declared key, if they have one.
        let mut last: Option<(Value, Option<Signature>)> = None;
        for &r in &rows {
            let v = batch.slot(r, slot).clone().expect("a value");
            let h = match &last {
                Some((seen, h)) if seen.same(&v) => *h,
                _ => {
                    let h = ty.resource_hash(&v);
                    last = Some((v, h));
                    h
                }
            };
            if let Some(h) = h {
                batch.set_hash(r, slot, h);
            }
        }
        return Ok(());
    }
    let first_value = batch.slot(first, slot).clone().expect("a value");
    let shared = rows.iter().all(|&r| {
        batch
            .slot(r, slot)
            .as_ref()
            .is_some_and(|v| v.same(&first_value))
    });
    if shared {
        let h = hash_values(&ty, &[&first_value])?[0];
        for &r in &rows {
            batch.set_hash(r, slot, h);
        }
        return Ok(());
    }
    let refs: Vec<&Value> = rows
        .iter()
        .map(|&r| batch.slot(r, slot).as_ref().expect("a value"))
        .collect();
    let hashes = hash_values(&ty, &refs)?;
    for (&r, h) in rows.iter().zip(hashes) {
        batch.set_hash(r, slot, h);
    }
    Ok(())
}

/// What a batch does when the cache fails (for a node, when known): `Ok`
/// to go on without the cache for what failed, or the error to stop with.
pub(crate) type OnCacheError<'r> =
    &'r dyn Fn(Option<&str>, crate::cache::CacheError) -> Result<(), Error>;

/// Runs every step of `exec`'s plan over `batch`. Failures of nodes are
/// recorded per item; with `stop_on_error` the batch stops after the step
/// in which the first failure happened. Returns how many new results were
/// stored. A failure of the cache goes to `on_cache_error`: a failed
/// lookup counts as misses, a failed store leaves results uncached.
pub(crate) fn run_batch(
    exec: &Exec,
    cache: Option<&dyn Cache>,
    batch: &mut Batch<'_>,
    stop_on_error: bool,
    on_cache_error: OnCacheError<'_>,
) -> Result<usize, Error> {
    let mut stored = 0;
    let plan = exec.plan();
    // Only values some node takes need a hash: final outputs do not.
    let consumed: std::collections::HashSet<usize> = plan
        .steps
        .iter()
        .flat_map(|s| s.args.iter().copied())
        .collect();
    // A value that cannot be hashed leaves its rows unsigned: the nodes
    // that take it run and are not cached for them.
    let unhashable = |column: String, e: crate::value::ValueError| {
        on_cache_error(
            None,
            crate::cache::CacheError::Hash {
                column,
                message: e.to_string(),
            },
        )
    };
    if cache.is_some() {
        for input in &plan.inputs {
            if let Err(e) = hash_slot(batch, input.slot, input.ty) {
                unhashable(format!("input `{}`", input.name), e)?;
            }
        }
    }
    for step in &plan.steps {
        let node = exec.node(step);
        let live = batch.live();
        match &node.kind {
            NodeKind::Func(f) => {
                let key = node.cache_key();
                let salt = node.salt();
                let cached = cache.is_some() && node.caching();
                let signer = NodeKey::new(&node.code_hash, step.args.len(), &salt);
                let sigs: Vec<Option<Signature>> = if cached {
                    signer.sign_rows(live.len(), |k, inputs| {
                        step.args.iter().all(|&s| match batch.hash(live[k], s) {
                            Some(h) => {
                                inputs.push(h);
                                true
                            }
                            None => false,
                        })
                    })
                } else {
                    vec![None; live.len()]
                };
                let log = CacheLog::new(cache, node, exec.has_callbacks());
                let mut sigs = sigs;
                let wanted: Vec<Signature> = sigs.iter().flatten().copied().collect();
                let looked_up = match cache {
                    Some(cache) if !wanted.is_empty() => {
                        cache.lookup(&key, &wanted).and_then(|hits| {
                            // Hits arrive in request order: decode the
                            // outputs someone uses, then hand them out in turn.
                            let values = step
                                .outs
                                .iter()
                                .enumerate()
                                .map(|(o, slot)| match slot {
                                    Some(_) if !hits.found.is_empty() => hits.found.values(&key, o),
                                    _ => Ok(Vec::new()),
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            Ok((hits, values))
                        })
                    }
                    _ => Ok((Hits::none(&key, 0), vec![Vec::new(); step.outs.len()])),
                };
                let (hits, hit_values) = match looked_up {
                    Ok(found) => found,
                    Err(e) => {
                        // Without the cache: every row is computed, nothing stored.
                        on_cache_error(Some(&node.name), e)?;
                        sigs = vec![None; live.len()];
                        (Hits::none(&key, 0), vec![Vec::new(); step.outs.len()])
                    }
                };
                let mut hit_values: Vec<std::vec::IntoIter<Value>> =
                    hit_values.into_iter().map(Vec::into_iter).collect();
                let mut requested = hits.rows.iter();
                let mut fresh_sigs = Vec::new();
                let mut fresh_items = Vec::new();
                let mut fresh_values: Vec<Vec<Value>> = vec![Vec::new(); step.outs.len()];
                // A call's outcome into the batch (and, for cached nodes,
                // into what is stored).
                let mut settle =
                    |batch: &mut Batch<'_>,
                     i: usize,
                     sig: Option<Signature>,
                     outcome: Result<crate::node::Outs, Error>| {
                        match outcome {
                            Ok(outs) => {
                                for ((o, v), slot) in outs.into_iter().enumerate().zip(&step.outs) {
                                    if sig.is_some() {
                                        fresh_values[o].push(v.clone());
                                    }
                                    if let Some(slot) = *slot {
                                        batch.slots[i * batch.width + slot] = Some(v);
                                    }
                                }
                                if let Some(sig) = sig {
                                    fresh_sigs.push(sig);
                                    fresh_items.push(i);
                                }
                            }
                            Err(e) => batch.fail(i, e),
                        }
                    };
                // Async calls wait until every row is sorted out, then run
                // together, up to the node's concurrency at once.
                let mut deferred: Vec<(usize, Option<Signature>, smallvec::SmallVec<[usize; 4]>)> =
                    Vec::new();
                for (&i, sig) in live.iter().zip(&sigs) {
                    let row = sig.and_then(|_| requested.next().copied().flatten());
                    let path = batch.path(exec, i);
                    log.report(exec, &node.name, &path, *sig, row.is_some());
                    if let Some(row) = row {
                        exec.node_cached(&path, &node.name);
                        for (o, slot) in step.outs.iter().enumerate() {
                            if let Some(slot) = *slot {
                                batch.slots[i * batch.width + slot] = hit_values[o].next();
                                batch.set_hash(i, slot, hits.found.hash(o, row));
                            }
                        }
                        continue;
                    }
                    if let Err(e) = batch.ensure_filled(i) {
                        batch.fail(i, e);
                        continue;
                    }
                    if matches!(f, NodeFn::Async(_)) {
                        deferred.push((i, *sig, path));
                        continue;
                    }
                    let outcome = exec.call_func(node, f, step, batch.row(i), &path);
                    settle(batch, i, *sig, outcome);
                }
                if let NodeFn::Async(f) = f
                    && !deferred.is_empty()
                {
                    let rows: Vec<(&[Option<Value>], &[usize])> = deferred
                        .iter()
                        .map(|(i, _, path)| (batch.row(*i), path.as_slice()))
                        .collect();
                    let outcomes = exec.call_async_rows(node, f.as_ref(), step, &rows);
                    for ((i, sig, _), outcome) in deferred.into_iter().zip(outcomes) {
                        settle(batch, i, sig, outcome);
                    }
                }
                if let Some(cache) = cache
                    && !fresh_sigs.is_empty()
                {
                    let values: Vec<&[Value]> = fresh_values.iter().map(Vec::as_slice).collect();
                    match cache_rows(&node.name, &key, &fresh_sigs, &values) {
                        Ok(parts) => {
                            let mut at = 0;
                            for rows in parts {
                                for (k, &i) in fresh_items[at..at + rows.len()].iter().enumerate() {
                                    for (o, slot) in step.outs.iter().enumerate() {
                                        if let Some(slot) = *slot {
                                            batch.set_hash(i, slot, rows.hash(o, k));
                                        }
                                    }
                                }
                                at += rows.len();
                                match cache.store(&key, &rows) {
                                    Ok(()) => stored += rows.len(),
                                    Err(e) => on_cache_error(Some(&node.name), e)?,
                                }
                            }
                        }
                        // The values stay in the batch; only storing failed.
                        Err(e) => on_cache_error(Some(&node.name), e)?,
                    }
                }
            }
            NodeKind::Nested(inner) => {
                let mut handled = false;
                // A `map_over` node runs ONE inner map over the elements of
                // every live row (as columnar engines do), unless someone
                // listens to events (they come per item) or the values cannot
                // be combined; then it runs row by row below.
                if node.mapping.is_some() && live.len() > 1 {
                    let mut args = Vec::with_capacity(live.len());
                    for &i in &live {
                        if let Err(e) = batch.ensure_filled(i) {
                            batch.fail(i, e);
                        }
                        let values: Option<Vec<Value>> = step
                            .args
                            .iter()
                            .map(|&a| batch.slot(i, a).clone())
                            .collect();
                        args.push((batch.path(exec, i), values.unwrap_or_default()));
                    }
                    if let Some(results) = exec.map_over_rows(node, step, &args) {
                        let w = batch.width;
                        for (&i, result) in live.iter().zip(results) {
                            match result {
                                Ok(lists) => {
                                    for (port, list) in lists {
                                        if let Some(slot) = step.outs[port] {
                                            batch.slots[i * w + slot] = Some(list);
                                        }
                                    }
                                }
                                Err(e) => batch.fail(i, e),
                            }
                        }
                        handled = true;
                    }
                }
                for &i in live.iter().filter(|_| !handled) {
                    let path = batch.path(exec, i);
                    let w = batch.width;
                    let result = batch.ensure_filled(i).and_then(|()| {
                        exec.call_nested(
                            node,
                            inner,
                            step,
                            &mut batch.slots[i * w..(i + 1) * w],
                            &path,
                        )
                    });
                    if let Err(e) = result {
                        batch.fail(i, e);
                    }
                }
            }
        }
        for (port, slot) in node.outputs.iter().zip(&step.outs) {
            if let Some(slot) = slot.filter(|s| cache.is_some() && consumed.contains(s))
                && let Err(e) = hash_slot(batch, slot, port.ty)
            {
                unhashable(format!("output `{}` of node `{}`", port.name, node.name), e)?;
            }
        }
        if stop_on_error && batch.errors.iter().any(Option::is_some) {
            break;
        }
    }
    Ok(stored)
}
