//! The cache store: batch-first lookups and stores of node results keyed by
//! [`Signature`], and [`DiskCache`], a directory of Parquet segments.
//!
//! Layout of a [`DiskCache`] at `root` (one dataset per node version):
//!
//! ```text
//! root/<node name>/<code hash, 64 hex>/seg-<nanos>-<pid>-<n>.parquet   complete segments
//! root/<node name>/<code hash, 64 hex>/.tmp-<nanos>-<pid>-<n>.parquet  writes in progress
//! ```
//!
//! A segment holds a `signature` column (`FixedSizeBinary(32)`, not null),
//! one column per node output, named and typed as the output's Arrow form,
//! and one `<output>.hash` column per output holding each value's hash, so
//! that a hit also brings the hashes its dependents' signatures need.
//! Segments are written to a `.tmp-` file, synced, then renamed, so a `seg-`
//! file is complete or absent; readers ignore every other file. A segment
//! that cannot be read or whose schema differs is reported once and skipped:
//! its items are computed again, never trusted.
//!
//! The API is columnar ([`CacheRows`], [`Hits`]): rows go in and come out as
//! Arrow arrays, so row engines and columnar engines share one store, and a
//! [`DiskCache`] keeps loaded segments as Arrow batches with an index from
//! signature to row.
//!
//! The full format and its guarantees are specified in `docs/cache-format.md`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, new_empty_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::EnabledStatistics;

use crate::signature::{Signature, hash_column, signature_array};
use crate::value::{Value, ValueType};

/// An error of the cache store.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file system operation failed.
    #[error("cache I/O on `{path}`: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Values could not be hashed, so the nodes taking them cannot be
    /// signed (they run, uncached).
    #[error("cannot hash {column}: {message}")]
    Hash {
        /// Which values: an input, or a node's output.
        column: String,
        /// What went wrong.
        message: String,
    },
    /// Values could not be encoded for storage.
    #[error("cannot encode output `{output}` of node `{node}`: {message}")]
    Encode {
        /// The node.
        node: String,
        /// The output.
        output: String,
        /// What went wrong.
        message: String,
    },
}

/// What identifies one node version's results: its name, code fingerprint
/// and outputs (names and types, in order).
#[derive(Clone, Debug)]
pub struct CacheKey {
    /// The node's name.
    pub node: String,
    /// The node's code fingerprint.
    pub code: Signature,
    /// The node's outputs.
    pub outputs: Vec<(String, ValueType)>,
    /// Named hashes of the parts of the code fingerprint (see
    /// [`Node::code_parts`](crate::Node::code_parts)), kept to explain misses.
    pub parts: Vec<(String, String)>,
}

impl CacheKey {
    /// Whether every output has an Arrow form (only then can it be stored).
    pub fn storable(&self) -> bool {
        self.outputs.iter().all(|(_, t)| t.is_arrow())
    }
}

/// What the cache did for one node and item, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDecision {
    /// The node.
    pub node: String,
    /// Item indices, one per enclosing `map` level (empty for `run`).
    pub items: Vec<usize>,
    /// The node's signature for the item, when it has one.
    pub signature: Option<Signature>,
    /// Hit, miss (with why) or not cached (with why).
    pub outcome: CacheOutcome,
}

/// The outcome of a [`CacheDecision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The result came from the cache.
    Hit,
    /// The node ran; `reason` says why no result was cached.
    Miss {
        /// Why: code changed (and which parts), or new input values.
        reason: String,
    },
    /// The node is never cached; `reason` says why.
    NotCached {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for CacheDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let item = if self.items.is_empty() {
            "run".to_string()
        } else {
            self.items
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("/")
        };
        let sig = self
            .signature
            .map(|s| s.to_hex()[..16].to_string())
            .unwrap_or_default();
        match &self.outcome {
            CacheOutcome::Hit => write!(
                f,
                "hypernodes cache: hit node={} item={item} sig={sig}",
                self.node
            ),
            CacheOutcome::Miss { reason } => write!(
                f,
                "hypernodes cache: miss node={} item={item} sig={sig} ({reason})",
                self.node
            ),
            CacheOutcome::NotCached { reason } => {
                write!(
                    f,
                    "hypernodes cache: skip node={} item={item} ({reason})",
                    self.node
                )
            }
        }
    }
}

/// Rows of one node version's results, column by column: what
/// [`Cache::store`] takes and what [`Cache::lookup`] returns.
#[derive(Clone, Debug)]
pub struct CacheRows {
    /// One node signature per row.
    pub signatures: Vec<Signature>,
    /// One array per output (in the key's output order), one row per signature.
    pub columns: Vec<ArrayRef>,
    /// Per output, the value hash of each row (as [`hash_array`](crate::signature::hash_array)
    /// computes it), as a `FixedSizeBinary(32)` array.
    pub hashes: Vec<ArrayRef>,
}

impl CacheRows {
    /// No rows, with the key's output types (`Null` for outputs with no
    /// Arrow form).
    pub fn empty(key: &CacheKey) -> Self {
        let columns = key
            .outputs
            .iter()
            .map(|(_, ty)| new_empty_array(&ty.data_type().unwrap_or(DataType::Null)))
            .collect();
        CacheRows {
            signatures: Vec::new(),
            columns,
            hashes: (0..key.outputs.len())
                .map(|_| signature_array(&[]))
                .collect(),
        }
    }

    /// The value hash of output `output` in row `row`.
    pub fn hash(&self, output: usize, row: usize) -> Signature {
        signature_at(self.hashes[output].as_fixed_size_binary(), row)
    }

    /// Rows from per-output arrays; the value hashes are computed here.
    pub fn from_columns(
        key: &CacheKey,
        signatures: Vec<Signature>,
        columns: Vec<ArrayRef>,
    ) -> Result<Self, CacheError> {
        let hashes = columns
            .iter()
            .zip(&key.outputs)
            .map(|(c, (name, _))| hash_column(c).map_err(|e| encode_error(key, name, e)))
            .collect::<Result<_, _>>()?;
        let rows = CacheRows {
            signatures,
            columns,
            hashes,
        };
        rows.check(key)?;
        Ok(rows)
    }

    /// Rows from values: each entry is a signature and the outputs in order.
    pub fn from_values(
        key: &CacheKey,
        entries: &[(Signature, Vec<Value>)],
    ) -> Result<Self, CacheError> {
        let columns = key
            .outputs
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                let values = entries
                    .iter()
                    .map(|(_, v)| {
                        v.get(i)
                            .ok_or_else(|| encode_error(key, name, "missing from an entry"))
                    })
                    .collect::<Result<Vec<&Value>, _>>()?;
                ty.to_array(&values).map_err(|e| encode_error(key, name, e))
            })
            .collect::<Result<_, _>>()?;
        Self::from_columns(key, entries.iter().map(|(s, _)| *s).collect(), columns)
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }

    /// Decodes output `output` of every row into values.
    pub fn values(&self, key: &CacheKey, output: usize) -> Result<Vec<Value>, CacheError> {
        let (name, ty) = key
            .outputs
            .get(output)
            .ok_or_else(|| encode_error(key, "?", format!("no output number {output}")))?;
        let column = self
            .columns
            .get(output)
            .ok_or_else(|| encode_error(key, name, "no such column"))?;
        ty.from_array(column.as_ref())
            .map_err(|e| encode_error(key, name, e))
    }

    /// Checks the shape against the key: one column and one hash array per
    /// output, of the output's data type and of the right length.
    fn check(&self, key: &CacheKey) -> Result<(), CacheError> {
        if self.columns.len() != key.outputs.len() || self.hashes.len() != key.outputs.len() {
            return Err(encode_error(
                key,
                "*",
                format!(
                    "{} columns and {} hash arrays for {} outputs",
                    self.columns.len(),
                    self.hashes.len(),
                    key.outputs.len()
                ),
            ));
        }
        for ((column, hashes), (name, ty)) in
            self.columns.iter().zip(&self.hashes).zip(&key.outputs)
        {
            if Some(column.data_type().clone()) != ty.data_type() {
                return Err(encode_error(
                    key,
                    name,
                    format!(
                        "column of type {} for an output of type {}",
                        column.data_type(),
                        ty.name()
                    ),
                ));
            }
            if hashes.data_type() != &DataType::FixedSizeBinary(32) {
                return Err(encode_error(
                    key,
                    name,
                    format!("hashes of type {}", hashes.data_type()),
                ));
            }
            if column.len() != self.len() || hashes.len() != self.len() {
                return Err(encode_error(
                    key,
                    name,
                    format!(
                        "{} values and {} hashes for {} signatures",
                        column.len(),
                        hashes.len(),
                        self.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Stored rows lent in place by [`Cache::locate`].
#[derive(Clone, Debug, Default)]
pub struct Located {
    /// Per lent batch, one array per output (in the key's output order),
    /// whole, as stored.
    pub columns: Vec<Vec<ArrayRef>>,
    /// Per lent batch, each output's value hashes (`FixedSizeBinary(32)`).
    pub hashes: Vec<Vec<ArrayRef>>,
    /// Per requested signature, its lent batch and row there, if stored.
    pub rows: Vec<Option<(usize, usize)>>,
}

/// What [`Cache::lookup`] found.
#[derive(Clone, Debug)]
pub struct Hits {
    /// For each requested signature, its row in `found`, if cached.
    pub rows: Vec<Option<usize>>,
    /// The cached rows, in the order they were requested.
    pub found: CacheRows,
}

impl Hits {
    /// Nothing found for `n` signatures.
    pub fn none(key: &CacheKey, n: usize) -> Self {
        Hits {
            rows: vec![None; n],
            found: CacheRows::empty(key),
        }
    }

    /// For each requested signature, its outputs decoded into values, if
    /// cached (convenient for inspection; engines use the columns).
    pub fn values(&self, key: &CacheKey) -> Result<Vec<Option<Vec<Value>>>, CacheError> {
        let columns = (0..key.outputs.len())
            .map(|o| self.found.values(key, o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .rows
            .iter()
            .map(|r| r.map(|r| columns.iter().map(|c| c[r].clone()).collect()))
            .collect())
    }
}

fn encode_error(key: &CacheKey, output: &str, message: impl ToString) -> CacheError {
    CacheError::Encode {
        node: key.node.clone(),
        output: output.to_string(),
        message: message.to_string(),
    }
}

/// The writing half of [`Cache::begin_flush`].
pub type PendingWrite = Box<dyn FnOnce() -> Result<(), CacheError> + Send>;

/// A content-addressed store of node results, batch-first and columnar.
pub trait Cache: Send + Sync {
    /// Looks up many signatures of one node version at once.
    fn lookup(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Hits, CacheError>;

    /// Where the stored rows of `sigs` lie, for engines that merge hits
    /// with fresh results themselves: the store lends whole stored batches
    /// and gives each found signature's batch and row, so each hit is
    /// copied once, into the merged result, instead of first being gathered
    /// into a new array. `None` (the default): the store cannot lend its
    /// rows, and engines use [`Cache::lookup`].
    fn locate(&self, _key: &CacheKey, _sigs: &[Signature]) -> Result<Option<Located>, CacheError> {
        Ok(None)
    }

    /// Stores rows of one node version (nothing happens for no rows).
    fn store(&self, key: &CacheKey, rows: &CacheRows) -> Result<(), CacheError>;

    /// Makes everything stored so far durable. A store may buffer stored
    /// rows until then ([`DiskCache`] does, writing one segment per node
    /// version per flush). Engines flush during a `map` by count and by time
    /// (see [`MapOptions::flush_every`](crate::MapOptions::flush_every)) and
    /// at the end of every `run` and `map`.
    fn flush(&self) -> Result<(), CacheError> {
        Ok(())
    }

    /// How many stored rows wait to be made durable by a flush (0 for a
    /// store that writes at once, the default).
    fn unwritten_rows(&self) -> usize {
        0
    }

    /// Starts a flush whose writing can run on another thread: takes what
    /// is buffered *now* (so what each flush holds does not depend on
    /// timing) and returns the work that makes it durable. Engines run it in
    /// the background while items keep running, a bounded number of
    /// writes at a time, which may overlap. The default flushes at once.
    fn begin_flush(self: Arc<Self>) -> PendingWrite {
        let done = self.flush();
        Box::new(move || done)
    }

    /// Called before a `map` of `items` items runs node version `key`: a
    /// store may load what it holds of that version now, and size its
    /// structures once for about `items` results (growing an index step by
    /// step rehashes it many times over). Only a hint: lookups and stores
    /// stay correct without it, and the default does nothing.
    fn prepare(&self, _key: &CacheKey, _items: usize) -> Result<(), CacheError> {
        Ok(())
    }

    /// The code versions of the node named `node` that have results, oldest
    /// first, if the store can tell (used to explain misses).
    fn versions(&self, _node: &str) -> Vec<Signature> {
        Vec::new()
    }

    /// The code parts recorded for one version of a node, if known.
    fn version_parts(&self, _node: &str, _code: &Signature) -> Option<Vec<(String, String)>> {
        None
    }
}

/// A dataset's index: where each stored signature's row is, rows counted
/// over all of the dataset's batches in order. Open addressing with linear
/// probing over a power-of-two table of 8-byte slots, at most half full:
/// the high 32 bits of the signature's first 8 bytes (its *tag*) and its
/// row + 1 (`0`: empty). The slot a signature probes from comes from the low
/// bits of the same 8 bytes (a uniformly random signature's bytes are their
/// own hash), so a slot matches on 32 + log2(slots) bits; every match is
/// confirmed against the full stored signature by the caller's `same`. Two
/// signatures sharing a tag are both kept; a later insert of the same
/// signature replaces the earlier row. Lookups come in batches, so the slot
/// of a key a few positions ahead is prefetched while the current one is
/// probed: a million-row index does not fit in cache, and this hides most of
/// the memory latency of random probes.
#[derive(Default)]
struct SigIndex {
    slots: Vec<u64>,
    len: usize,
}

/// The most rows a dataset indexes (row + 1 must fit a slot's 32 bits);
/// rows beyond are not loaded, and their items are recomputed.
const MAX_ROWS: usize = u32::MAX as usize - 1;

/// The most index entries [`DiskCache`]'s `prepare` reserves room for
/// (4M entries: a 64 MiB table).
const PREPARE_LIMIT: usize = 1 << 22;

/// How far ahead lookups prefetch.
const PREFETCH: usize = 16;

#[inline]
fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is
        // only a hint: it reads nothing and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at as *const T as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

impl SigIndex {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn tag(key: u64) -> u64 {
        key >> 32
    }

    fn pack(key: u64, row: u32) -> u64 {
        Self::tag(key) << 32 | (row as u64 + 1)
    }

    /// The row of a full slot.
    fn row(slot: u64) -> u32 {
        ((slot & 0xffff_ffff) - 1) as u32
    }

    /// The table size that holds `len + more` entries at most half full, if
    /// the current one does not (the caller then re-inserts everything).
    fn grown(&self, more: usize) -> Option<usize> {
        let need = (self.len + more)
            .saturating_mul(2)
            .next_power_of_two()
            .max(16);
        (need > self.slots.len()).then_some(need)
    }

    /// An empty index of `slots` slots (a power of two).
    fn with_slots(slots: usize) -> SigIndex {
        SigIndex {
            slots: vec![0; slots],
            len: 0,
        }
    }

    /// Where key `key` would start probing, for prefetching.
    fn home(&self, key: u64) -> &u64 {
        &self.slots[key as usize & self.mask()]
    }

    /// Inserts `row` under `key`; `same(other)` tells whether row `other`,
    /// found under the same tag, holds the same signature (it is replaced).
    /// The table must have room (see [`SigIndex::grown`]).
    fn insert(&mut self, key: u64, row: u32, same: impl Fn(u32) -> bool) {
        let mask = self.mask();
        let tag = Self::tag(key);
        let mut i = key as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                self.slots[i] = Self::pack(key, row);
                self.len += 1;
                return;
            }
            if slot >> 32 == tag && same(Self::row(slot)) {
                self.slots[i] = Self::pack(key, row);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The row under `key` for which `matches` holds.
    fn find(&self, key: u64, matches: impl Fn(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let tag = Self::tag(key);
        let mut i = key as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag && matches(Self::row(slot)) {
                return Some(Self::row(slot));
            }
            i = (i + 1) & mask;
        }
    }

    /// For each key, the row of the first slot with its tag (a candidate
    /// to confirm; `None`: not stored), prefetching ahead.
    fn candidates(&self, keys: &[u64]) -> Vec<Option<u32>> {
        if self.slots.is_empty() {
            return vec![None; keys.len()];
        }
        let mut out = Vec::with_capacity(keys.len());
        for (n, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(n + PREFETCH) {
                prefetch(self.home(ahead));
            }
            out.push(self.find(key, |_| true));
        }
        out
    }

    /// Every indexed row.
    fn rows(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .filter(|&&s| s != 0)
            .map(|&s| Self::row(s))
    }
}

/// The first 8 bytes of a signature, the key of a dataset's index.
fn prefix(sig: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&sig[..8]);
    u64::from_le_bytes(word)
}

/// One node version's loaded segments: Arrow batches laid out as on disk
/// (signature, outputs, hashes) and an index of their signatures (see
/// [`SigIndex`]: every hit is confirmed against the full signature in its
/// batch, so a lookup never returns another signature's row). The index
/// costs about 16 bytes a row.
#[derive(Default)]
struct Dataset {
    batches: Vec<RecordBatch>,
    /// The first row (counted over all batches) of each batch.
    starts: Vec<u32>,
    /// Rows over all batches.
    rows: usize,
    index: SigIndex,
    segments: HashSet<PathBuf>,
    /// When the directory was last listed for new segments.
    listed: Option<std::time::Instant>,
}

/// How long a dataset's directory listing is trusted: segments written by
/// other cache instances or processes become visible within this time (and
/// until then their items are only recomputed, never wrong). Batches of a
/// map look up many times a second; listing the directory for each cost
/// more than the lookups themselves.
const LISTING_TTL: std::time::Duration = std::time::Duration::from_millis(100);

/// The signature column of each batch.
fn signature_columns(batches: &[RecordBatch]) -> Vec<&FixedSizeBinaryArray> {
    batches
        .iter()
        .map(|b| b.column(0).as_fixed_size_binary())
        .collect()
}

/// Batch and row of row `row` counted over all batches (`starts`: the
/// first row of each batch), trying batch `hint` first.
fn batch_row(starts: &[u32], row: u32, hint: usize) -> (usize, usize) {
    let within = |b: usize| starts[b] <= row && starts.get(b + 1).is_none_or(|&next| row < next);
    let b = if hint < starts.len() && within(hint) {
        hint
    } else {
        starts.partition_point(|&s| s <= row).saturating_sub(1)
    };
    (b, (row - starts[b]) as usize)
}

impl Dataset {
    /// Adds a batch and indexes its rows (a batch that would take the
    /// dataset past [`MAX_ROWS`] is left out: its items are recomputed).
    fn add(&mut self, batch: RecordBatch) {
        let n = batch.num_rows();
        if self.rows + n > MAX_ROWS {
            return;
        }
        let start = self.rows as u32;
        self.starts.push(start);
        self.batches.push(batch);
        self.rows += n;
        match self.index.grown(n) {
            Some(slots) => self.reindex(slots),
            None => self.index_rows(self.batches.len() - 1),
        }
    }

    /// Makes room in the index for `more` rows.
    fn reserve(&mut self, more: usize) {
        if let Some(slots) = self.index.grown(more) {
            self.reindex(slots);
        }
    }

    /// Rebuilds the index with `slots` slots, every batch in order.
    fn reindex(&mut self, slots: usize) {
        self.index = SigIndex::with_slots(slots);
        for b in 0..self.batches.len() {
            self.index_rows(b);
        }
    }

    /// Indexes batch `b`'s rows, prefetching ahead.
    fn index_rows(&mut self, b: usize) {
        let Dataset {
            batches,
            starts,
            index,
            ..
        } = self;
        let columns = signature_columns(batches);
        let sigs = columns[b];
        let stored = |row: u32| {
            let (b, r) = batch_row(starts, row, b);
            columns[b].value(r)
        };
        for r in 0..sigs.len() {
            if r + PREFETCH < sigs.len() {
                prefetch(index.home(prefix(sigs.value(r + PREFETCH))));
            }
            let sig = sigs.value(r);
            index.insert(prefix(sig), starts[b] + r as u32, |other| {
                stored(other) == sig
            });
        }
    }

    /// [`Dataset::find_each`], collected.
    #[cfg(test)]
    fn find_many(&self, sigs: &[Signature]) -> Vec<Option<(usize, usize)>> {
        let mut out = Vec::with_capacity(sigs.len());
        self.find_each(sigs, |_, at| out.push(at));
        out
    }

    /// Where each of `sigs` is stored (batch, row), if it is, handed to
    /// `found` in order: the index gives a candidate row per signature,
    /// confirmed against the full stored signature (prefetched ahead, as the
    /// index slots are); a candidate that is another signature sharing the
    /// tag sends the lookup on.
    fn find_each(&self, sigs: &[Signature], mut found: impl FnMut(usize, Option<(usize, usize)>)) {
        let keys: Vec<u64> = sigs.iter().map(|s| prefix(&s.0)).collect();
        let candidates = self.index.candidates(&keys);
        let columns = signature_columns(&self.batches);
        let mut hint = 0;
        let mut at = |row: u32| {
            let (b, r) = batch_row(&self.starts, row, hint);
            hint = b;
            (b, r)
        };
        let mut ahead_hint = 0;
        for (n, (sig, candidate)) in sigs.iter().zip(&candidates).enumerate() {
            if let Some(Some(ahead)) = candidates.get(n + PREFETCH) {
                let (b, r) = batch_row(&self.starts, *ahead, ahead_hint);
                ahead_hint = b;
                prefetch(&columns[b].value(r)[0]);
            }
            let Some(row) = *candidate else {
                found(n, None);
                continue;
            };
            let (b, r) = at(row);
            if columns[b].value(r) == sig.0 {
                found(n, Some((b, r)));
                continue;
            }
            // Another signature with the same tag: probe on.
            let other = self.index.find(keys[n], |row| {
                let (b, r) = batch_row(&self.starts, row, 0);
                columns[b].value(r) == sig.0
            });
            found(n, other.map(&mut at));
        }
    }

    /// The rows at `positions` (batch, row) as [`CacheRows`].
    fn gather(
        &self,
        key: &CacheKey,
        signatures: Vec<Signature>,
        positions: &[(usize, usize)],
    ) -> Result<CacheRows, CacheError> {
        if positions.is_empty() {
            return Ok(CacheRows::empty(key));
        }
        let n = key.outputs.len();
        let (b0, r0) = positions[0];
        let contiguous = positions
            .iter()
            .enumerate()
            .all(|(i, &(b, r))| b == b0 && r == r0 + i);
        // Most lookups read rows of one or two batches (items come in about
        // the order they were stored): slice (a warm batch, with nothing
        // else to work out), take from one batch, or pick from only the
        // batches involved.
        let scattered = (!contiguous).then(|| {
            let mut used: Vec<usize> = positions.iter().map(|&(b, _)| b).collect();
            used.sort_unstable();
            used.dedup();
            // Rows of several batches, or in runs with gaps (hits in stored
            // order around a few new items): picked (copied run by run
            // where they come in runs). Rows scattered over one batch: taken.
            let picks = crate::columnar::RowPicks::new(
                positions
                    .iter()
                    .map(|&(b, r)| Some((used.binary_search(&b).unwrap_or(0), r)))
                    .collect(),
            );
            let rows_of_one = (used.len() == 1 && !picks.in_runs()).then(|| {
                arrow_array::UInt32Array::from_iter_values(positions.iter().map(|&(_, r)| r as u32))
            });
            (used, picks, rows_of_one)
        });
        let column = |c: usize| -> Result<ArrayRef, CacheError> {
            let fail = |e: arrow_schema::ArrowError| encode_error(key, "*", e);
            let Some((used, picks, rows_of_one)) = &scattered else {
                return Ok(self.batches[b0].column(c).slice(r0, positions.len()));
            };
            if let Some(rows) = rows_of_one {
                return arrow_select::take::take(self.batches[b0].column(c).as_ref(), rows, None)
                    .map_err(fail);
            }
            let arrays: Vec<&dyn Array> = used
                .iter()
                .map(|&b| self.batches[b].column(c).as_ref())
                .collect();
            picks.apply(&arrays).map_err(fail)
        };
        let columns = (1..=n).map(column).collect::<Result<Vec<_>, _>>()?;
        let hashes = (n + 1..=2 * n).map(column).collect::<Result<Vec<_>, _>>()?;
        Ok(CacheRows {
            signatures,
            columns,
            hashes,
        })
    }
}

pub(crate) fn signature_at(array: &FixedSizeBinaryArray, row: usize) -> Signature {
    let mut sig = [0u8; 32];
    sig.copy_from_slice(array.value(row));
    Signature(sig)
}

/// The schema of a node version's segments.
fn segment_schema(key: &CacheKey) -> Result<SchemaRef, CacheError> {
    let mut fields = vec![Field::new(
        "signature",
        DataType::FixedSizeBinary(32),
        false,
    )];
    for (name, ty) in &key.outputs {
        fields.push(
            ty.field(name)
                .ok_or_else(|| encode_error(key, name, "no Arrow form"))?,
        );
    }
    for (name, _) in &key.outputs {
        fields.push(Field::new(
            format!("{name}.hash"),
            DataType::FixedSizeBinary(32),
            false,
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The default store: Parquet segments under a directory (see the module docs).
///
/// ```
/// use hypernodes_core::{DiskCache, Inputs, Pipeline, node};
///
/// #[node(output = "doubled")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// let dir = tempfile::tempdir().unwrap();
/// let p = Pipeline::new([double::node()]).unwrap().with_cache(DiskCache::new(dir.path()));
/// p.map(Inputs::new().with("x", vec![1i64, 2]), ["x"]).unwrap();
/// p.map(Inputs::new().with("x", vec![3i64]), ["x"]).unwrap();
///
/// let cache = DiskCache::new(dir.path()); // another process would open it the same way
/// let stats = cache.stats().unwrap();
/// assert_eq!((stats[0].node.as_str(), stats[0].rows, stats[0].segments), ("double", 3, 2));
/// let key = double::node().cache_key();
/// assert_eq!(cache.compact(&key).unwrap(), 2); // two segments merged into one
/// assert_eq!(cache.stats().unwrap()[0].segments, 1);
/// cache.clear().unwrap();
/// assert!(cache.stats().unwrap().is_empty());
/// ```
pub struct DiskCache {
    root: PathBuf,
    /// Loaded datasets; each behind its own lock, so lookups of several
    /// threads (partitions of a columnar plan) run concurrently.
    datasets: Mutex<HashMap<PathBuf, Arc<RwLock<Dataset>>>>,
    pending: Mutex<HashMap<PathBuf, Pending>>,
    warnings: Mutex<Vec<String>>,
    warned: Mutex<HashSet<PathBuf>>,
}

/// Rows of one node version stored but not yet written as a segment.
struct Pending {
    key: CacheKey,
    batches: Vec<RecordBatch>,
}

impl DiskCache {
    /// A cache rooted at `root` (created on first store).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DiskCache {
            root: root.into(),
            datasets: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Vec::new()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The loaded dataset of the node version in `dir` (empty at first).
    fn dataset(&self, dir: &Path) -> Arc<RwLock<Dataset>> {
        self.datasets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dir.to_path_buf())
            .or_default()
            .clone()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The warnings reported so far (each unreadable segment once).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// The directory of one node version's dataset.
    pub fn dataset_dir(&self, key: &CacheKey) -> PathBuf {
        self.root.join(safe_name(&key.node)).join(key.code.to_hex())
    }

    fn warn(&self, path: &Path, message: String) {
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert(path.to_path_buf()))
            .unwrap_or(false);
        if first {
            log::warn!("hypernodes cache: {message}");
            if let Ok(mut w) = self.warnings.lock() {
                w.push(message);
            }
        }
    }

    /// Loads the segments among `files` (the dataset's segment files, as
    /// listed by the caller) not seen before into the in-memory dataset.
    fn refresh(&self, key: &CacheKey, data: &mut Dataset, files: Vec<PathBuf>) {
        let paths: Vec<PathBuf> = files
            .into_iter()
            .filter(|p| !data.segments.contains(p))
            .collect();
        // Segments are read on all cores (decoding dominates loading).
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(paths.len());
        type Read = Result<Vec<RecordBatch>, SegmentFault>;
        let read: Vec<(PathBuf, Read)> = if workers > 1 {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let results: Mutex<Vec<(usize, Read)>> = Mutex::new(Vec::with_capacity(paths.len()));
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(path) = paths.get(i) else { break };
                            let r = read_segment(path, key);
                            results
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((i, r));
                        }
                    });
                }
            });
            let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
            results.sort_by_key(|(i, _)| *i);
            paths
                .into_iter()
                .zip(results)
                .map(|(p, (_, r))| (p, r))
                .collect()
        } else {
            paths
                .into_iter()
                .map(|p| {
                    let r = read_segment(&p, key);
                    (p, r)
                })
                .collect()
        };
        let mut loaded = Vec::with_capacity(read.len());
        for (path, batches) in read {
            match batches {
                Ok(batches) => loaded.push((path, batches)),
                Err(SegmentFault::Unreadable(message)) => self.warn(
                    &path,
                    format!(
                        "ignoring unreadable segment `{}` of node `{}`: {message}; its items will be recomputed",
                        path.display(),
                        key.node
                    ),
                ),
                Err(SegmentFault::Corrupt(message)) => {
                    let aside = quarantined_name(&path);
                    let moved = match std::fs::rename(&path, &aside) {
                        Ok(()) => format!("moved aside to `{}`", aside.display()),
                        Err(e) => format!("could not be moved aside ({e})"),
                    };
                    self.warn(
                        &path,
                        format!(
                            "ignoring corrupt segment `{}` of node `{}`: {message}; it was {moved}, and its items will be recomputed",
                            path.display(),
                            key.node
                        ),
                    )
                }
            }
        }
        // One reservation for all new rows: growing the index row by row
        // rehashes it many times over.
        let rows: usize = loaded
            .iter()
            .flat_map(|(_, b)| b.iter().map(RecordBatch::num_rows))
            .sum();
        data.reserve(rows);
        for (path, batches) in loaded {
            for batch in batches {
                data.add(batch);
            }
            data.segments.insert(path);
        }
    }
}

/// Entry counts and sizes of one node version's dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetStats {
    /// The node's directory name.
    pub node: String,
    /// The code version (64 hex characters).
    pub code: String,
    /// Complete segments.
    pub segments: usize,
    /// Rows over all segments (a signature stored twice counts twice).
    pub rows: usize,
    /// Bytes on disk.
    pub bytes: u64,
    /// Segments found corrupt and moved aside (`*.corrupt`), never read.
    pub quarantined: usize,
}

impl DiskCache {
    /// The dataset of `key`, with the segments that appeared since its
    /// directory was last listed (at most [`LISTING_TTL`] ago) loaded.
    fn listed(&self, key: &CacheKey) -> Arc<RwLock<Dataset>> {
        let dir = self.dataset_dir(key);
        let dataset = self.dataset(&dir);
        let fresh = {
            let data = dataset.read().unwrap_or_else(|e| e.into_inner());
            data.listed.is_some_and(|t| t.elapsed() < LISTING_TTL)
        };
        if !fresh {
            let first = {
                let data = dataset.read().unwrap_or_else(|e| e.into_inner());
                data.listed.is_none()
            };
            if first {
                remove_stale_temporaries(&dir);
            }
            let files = segment_files(&dir);
            let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
            if files.iter().any(|p| !data.segments.contains(p)) {
                self.refresh(key, &mut data, files);
            }
            data.listed = Some(std::time::Instant::now());
        }
        dataset
    }

    /// Whether `sig` is cached for `key`.
    pub fn is_cached(&self, key: &CacheKey, sig: &Signature) -> Result<bool, CacheError> {
        Ok(self.lookup(key, std::slice::from_ref(sig))?.rows[0].is_some())
    }

    /// Counts and sizes per node version, sorted by node and code.
    pub fn stats(&self) -> Result<Vec<DatasetStats>, CacheError> {
        let mut out = Vec::new();
        for node_dir in sorted_dirs(&self.root)? {
            for version_dir in sorted_dirs(&node_dir)? {
                let mut stats = DatasetStats {
                    node: file_name(&node_dir),
                    code: file_name(&version_dir),
                    segments: 0,
                    rows: 0,
                    bytes: 0,
                    quarantined: count_files(&version_dir, |n| n.ends_with(QUARANTINE_SUFFIX)),
                };
                for seg in segment_files(&version_dir) {
                    stats.segments += 1;
                    stats.bytes += std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
                    stats.rows += File::open(&seg)
                        .ok()
                        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
                        .map(|b| b.metadata().file_metadata().num_rows() as usize)
                        .unwrap_or(0);
                }
                out.push(stats);
            }
        }
        Ok(out)
    }

    /// Removes every cached result of the node named `node` (all versions).
    pub fn clear_node(&self, node: &str) -> Result<(), CacheError> {
        let dir = self.root.join(safe_name(node));
        self.forget(&dir);
        remove_dir(&dir)
    }

    /// Removes everything in the cache.
    pub fn clear(&self) -> Result<(), CacheError> {
        self.forget(&self.root);
        remove_dir(&self.root)
    }

    fn forget(&self, under: &Path) {
        let mut datasets = self.datasets.lock().unwrap_or_else(|e| e.into_inner());
        datasets.retain(|dir, _| !dir.starts_with(under));
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|dir, _| !dir.starts_with(under));
    }

    /// Rewrites one node version's segments as a single segment (the new
    /// segment is complete on disk before the old ones are removed, so a
    /// crash leaves duplicates at worst). Returns how many segments it merged.
    pub fn compact(&self, key: &CacheKey) -> Result<usize, CacheError> {
        let dir = self.dataset_dir(key);
        let old = segment_files(&dir);
        if old.len() < 2 {
            return Ok(0);
        }
        let dataset = self.dataset(&dir);
        let rows = {
            let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
            self.refresh(key, &mut data, old.clone());
            let mut positions: Vec<(usize, usize)> = data
                .index
                .rows()
                .map(|row| batch_row(&data.starts, row, 0))
                .collect();
            positions.sort_unstable();
            let sigs = positions
                .iter()
                .map(|&(b, r)| signature_at(data.batches[b].column(0).as_fixed_size_binary(), r))
                .collect();
            data.gather(key, sigs, &positions)?
        };
        self.flush()?;
        let batch = segment_batch(key, &rows)?;
        let seg = self.write_segment(key, std::slice::from_ref(&batch))?;
        dataset
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .segments
            .insert(seg);
        for seg in &old {
            std::fs::remove_file(seg).map_err(|source| CacheError::Io {
                path: seg.clone(),
                source,
            })?;
        }
        let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
        for seg in &old {
            data.segments.remove(seg);
        }
        Ok(old.len())
    }
}

/// Where a corrupt segment is moved: its name with [`QUARANTINE_SUFFIX`].
fn quarantined_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(QUARANTINE_SUFFIX);
    PathBuf::from(name)
}

/// The file beside a version's segments naming its code parts, one
/// `part<TAB>hash` line each.
const MANIFEST: &str = "manifest.tsv";

fn safe_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CacheError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// How old a `.tmp-` file must be before a cache that opens its dataset
/// deletes it: no writer takes that long to write one segment, so such a
/// file is what a crashed or failed writer left.
pub const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes the `.tmp-` files in `dir` last modified more than
/// [`STALE_TEMPORARY_AGE`] ago (failures are ignored: another process may
/// have deleted them first).
fn remove_stale_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".tmp-"))
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMPORARY_AGE);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How many files in `dir` have a name `keep` accepts.
fn count_files(dir: &Path, keep: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .count()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".parquet"))
        })
        .collect();
    files.sort();
    files
}

fn remove_dir(dir: &Path) -> Result<(), CacheError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CacheError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Why a segment could not be used.
#[derive(Debug)]
enum SegmentFault {
    /// The file could not be read (it may be readable later): skipped.
    Unreadable(String),
    /// Its content is wrong (altered bytes, no checksum, another layout):
    /// skipped and moved aside, never read again.
    Corrupt(String),
}

impl std::fmt::Display for SegmentFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentFault::Unreadable(m) | SegmentFault::Corrupt(m) => f.write_str(m),
        }
    }
}

/// The key-value metadata entry of a segment that holds its checksums.
const CHECKSUM_KEY: &str = "hypernodes.crc32";

/// The suffix a corrupt segment's name gets when it is moved aside.
const QUARANTINE_SUFFIX: &str = ".corrupt";

/// A segment writer's sink: passes bytes to `inner` and keeps the CRC-32
/// (IEEE) of consecutive regions of them, cut where row groups end.
struct ChecksumWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
    /// Each region's end offset (exclusive) and CRC, in order; the first
    /// region starts at 0.
    regions: Vec<(u64, u32)>,
}

impl<W> ChecksumWriter<W> {
    fn new(inner: W) -> Self {
        ChecksumWriter {
            inner,
            crc: crc32fast::Hasher::new(),
            written: 0,
            regions: Vec::new(),
        }
    }

    /// Ends the current region at what was written so far (nothing
    /// happens if it is empty).
    fn cut(&mut self) {
        let start = self.regions.last().map_or(0, |r| r.0);
        if self.written > start {
            let crc = std::mem::take(&mut self.crc).finalize();
            self.regions.push((self.written, crc));
        }
    }

    /// The regions as stored under [`CHECKSUM_KEY`]: `end:crc` pairs (end
    /// in decimal, CRC as 8 hex digits) joined by commas.
    fn regions(&self) -> String {
        self.regions
            .iter()
            .map(|(end, crc)| format!("{end}:{crc:08x}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A Parquet error while writing segment `path`: the OS error when there
/// is one underneath (a full disk, a vanished directory), else an encoding
/// error of the node's outputs.
fn write_error(key: &CacheKey, path: &Path, e: parquet::errors::ParquetError) -> CacheError {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(io) => CacheError::Io {
                    path: path.to_path_buf(),
                    source: *io,
                },
                Err(other) => encode_error(key, "*", other),
            }
        }
        e => encode_error(key, "*", e),
    }
}

/// Checks a segment's bytes against the checksums its footer records
/// (see [`CHECKSUM_KEY`]): every byte before the footer is covered.
fn verify_checksums(
    metadata: &parquet::file::metadata::ParquetMetaData,
    bytes: &[u8],
) -> Result<(), SegmentFault> {
    let corrupt = |m: String| SegmentFault::Corrupt(m);
    let recorded = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == CHECKSUM_KEY))
        .and_then(|e| e.value.as_deref())
        .ok_or_else(|| {
            corrupt(
                "it has no checksums (written by an older version of hypernodes or by another tool)"
                    .into(),
            )
        })?;
    let mut start = 0u64;
    for region in recorded.split(',') {
        let parsed = region.split_once(':').and_then(|(end, crc)| {
            Some((end.parse::<u64>().ok()?, u32::from_str_radix(crc, 16).ok()?))
        });
        let Some((end, crc)) = parsed.filter(|(end, _)| *end > start && *end <= bytes.len() as u64)
        else {
            return Err(corrupt(format!(
                "its checksum entry `{region}` is malformed"
            )));
        };
        if crc32fast::hash(&bytes[start as usize..end as usize]) != crc {
            return Err(corrupt(format!(
                "its bytes {start}..{end} do not match their checksum: the file was altered after it was written"
            )));
        }
        start = end;
    }
    // Nothing between the last region and the footer goes unchecked.
    let footer_start = bytes
        .len()
        .checked_sub(8)
        .and_then(|at| {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
            at.checked_sub(len)
        })
        .ok_or_else(|| corrupt("its footer is malformed".into()))?;
    if start != footer_start as u64 {
        return Err(corrupt(format!(
            "its bytes {start}..{footer_start} are not covered by its checksums"
        )));
    }
    Ok(())
}

/// Reads one segment as Arrow batches laid out as [`segment_schema`],
/// after checking its bytes against their checksums.
fn read_segment(path: &Path, key: &CacheKey) -> Result<Vec<RecordBatch>, SegmentFault> {
    let corrupt = |m: String| SegmentFault::Corrupt(m);
    let expected = segment_schema(key).map_err(|e| corrupt(e.to_string()))?;
    let bytes = bytes::Bytes::from(
        std::fs::read(path).map_err(|e| SegmentFault::Unreadable(e.to_string()))?,
    );
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(|e| corrupt(e.to_string()))?;
    verify_checksums(builder.metadata(), &bytes)?;
    let rows = builder.metadata().file_metadata().num_rows().max(1) as usize;
    // Batches of at most about 1 GiB of values, so no column exceeds what
    // one Arrow array holds (2 GiB of text).
    let bytes_decoded: i64 = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.total_byte_size())
        .sum();
    let per_row = (bytes_decoded.max(1) as usize).div_ceil(rows);
    let fit = ((1usize << 30) / per_row.max(1)).max(1);
    let reader = builder
        .with_batch_size(rows.min(1 << 20).min(fit))
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let schema = batch.schema();
        if schema.fields().len() != expected.fields().len() {
            return Err(corrupt(format!(
                "{} columns where {} were expected",
                schema.fields().len(),
                expected.fields().len()
            )));
        }
        for (i, (got, want)) in schema.fields().iter().zip(expected.fields()).enumerate() {
            if got.name() != want.name() || got.data_type() != want.data_type() {
                return Err(corrupt(format!(
                    "column {i} is `{}` ({}) where `{}` ({}) was expected",
                    got.name(),
                    got.data_type(),
                    want.name(),
                    want.data_type()
                )));
            }
        }
        if batch.column(0).null_count() > 0 {
            return Err(corrupt("null signatures".into()));
        }
        // Same columns under the expected schema, so batches of all segments
        // can be gathered together.
        let batch = RecordBatch::try_new(expected.clone(), batch.columns().to_vec())
            .map_err(|e| corrupt(e.to_string()))?;
        out.push(batch);
    }
    Ok(out)
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:020}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Cache for DiskCache {
    fn versions(&self, node: &str) -> Vec<Signature> {
        let mut dirs: Vec<(Option<SystemTime>, PathBuf)> =
            sorted_dirs(&self.root.join(safe_name(node)))
                .unwrap_or_default()
                .into_iter()
                .filter(|d| !segment_files(d).is_empty())
                .map(|d| (std::fs::metadata(&d).and_then(|m| m.modified()).ok(), d))
                .collect();
        dirs.sort();
        dirs.iter()
            .filter_map(|(_, d)| Signature::from_hex(&file_name(d)))
            .collect()
    }

    fn version_parts(&self, node: &str, code: &Signature) -> Option<Vec<(String, String)>> {
        let path = self
            .root
            .join(safe_name(node))
            .join(code.to_hex())
            .join(MANIFEST);
        let text = std::fs::read_to_string(path).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn lookup(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Hits, CacheError> {
        if !key.storable() {
            return Ok(Hits::none(key, sigs.len()));
        }
        let dataset = self.listed(key);
        let data = dataset.read().unwrap_or_else(|e| e.into_inner());
        let mut rows = Vec::with_capacity(sigs.len());
        let mut found = Vec::with_capacity(sigs.len());
        let mut positions = Vec::with_capacity(sigs.len());
        data.find_each(sigs, |n, at| match at {
            Some(at) => {
                rows.push(Some(found.len()));
                found.push(sigs[n]);
                positions.push(at);
            }
            None => rows.push(None),
        });
        let found = data.gather(key, found, &positions)?;
        Ok(Hits { rows, found })
    }

    fn locate(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Option<Located>, CacheError> {
        if !key.storable() {
            return Ok(None);
        }
        let dataset = self.listed(key);
        let data = dataset.read().unwrap_or_else(|e| e.into_inner());
        let outputs = key.outputs.len();
        // The dataset's batches that hold hits, in the order they are lent
        // (hits mostly come in runs from one batch: the last is tried first).
        let mut lent: Vec<usize> = Vec::new();
        let mut last: Option<(usize, usize)> = None;
        let mut located = Located {
            rows: Vec::with_capacity(sigs.len()),
            ..Located::default()
        };
        data.find_each(sigs, |_, at| {
            located.rows.push(at.map(|(b, r)| {
                let k = match last {
                    Some((lb, k)) if lb == b => k,
                    _ => match lent.iter().position(|&l| l == b) {
                        Some(k) => k,
                        None => {
                            let batch = &data.batches[b];
                            located
                                .columns
                                .push((0..outputs).map(|o| batch.column(1 + o).clone()).collect());
                            located.hashes.push(
                                (0..outputs)
                                    .map(|o| batch.column(1 + outputs + o).clone())
                                    .collect(),
                            );
                            lent.push(b);
                            lent.len() - 1
                        }
                    },
                };
                last = Some((b, k));
                (k, r)
            }));
        });
        Ok(Some(located))
    }

    fn prepare(&self, key: &CacheKey, items: usize) -> Result<(), CacheError> {
        if !key.storable() {
            return Ok(());
        }
        let dataset = self.listed(key);
        let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
        // A hint, so capped: a product map can promise far more items than
        // ever get stored, and the index then grows as usual.
        let more = items.min(PREPARE_LIMIT).saturating_sub(data.index.len);
        data.reserve(more);
        Ok(())
    }

    fn store(&self, key: &CacheKey, rows: &CacheRows) -> Result<(), CacheError> {
        if rows.is_empty() || !key.storable() {
            return Ok(());
        }
        let batch = segment_batch(key, rows)?;
        let dir = self.dataset_dir(key);
        self.dataset(&dir)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(batch.clone());
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dir)
            .or_insert_with(|| Pending {
                key: key.clone(),
                batches: Vec::new(),
            })
            .batches
            .push(batch);
        Ok(())
    }

    fn flush(&self) -> Result<(), CacheError> {
        let all = self.take_pending();
        self.write_all(all)
    }

    fn begin_flush(self: Arc<Self>) -> PendingWrite {
        let all = self.take_pending();
        Box::new(move || self.write_all(all))
    }

    fn unwritten_rows(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|p| p.batches.iter().map(RecordBatch::num_rows))
            .sum()
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::warn!("hypernodes cache: results not written at exit: {e}");
        }
    }
}

/// Rows as a batch laid out as [`segment_schema`].
fn segment_batch(key: &CacheKey, rows: &CacheRows) -> Result<RecordBatch, CacheError> {
    rows.check(key)?;
    let mut columns = vec![signature_array(&rows.signatures)];
    columns.extend(rows.columns.iter().cloned());
    columns.extend(rows.hashes.iter().cloned());
    RecordBatch::try_new(segment_schema(key)?, columns).map_err(|e| encode_error(key, "*", e))
}

impl DiskCache {
    /// Writes buffered rows as one segment (their rows are in memory already).
    /// Everything buffered, per dataset directory.
    fn take_pending(&self) -> Vec<(PathBuf, Pending)> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    }

    /// Writes one segment per dataset, the datasets in parallel (encoding
    /// a segment is single-threaded, and a cold `map` produces rows faster
    /// than one thread writes them); the first error, after trying all.
    fn write_all(&self, all: Vec<(PathBuf, Pending)>) -> Result<(), CacheError> {
        let results: Vec<Result<(), CacheError>> = if all.len() > 1 {
            std::thread::scope(|s| {
                let writes: Vec<_> = all
                    .into_iter()
                    .map(|(dir, p)| s.spawn(move || self.write_pending(dir, p)))
                    .collect();
                writes
                    .into_iter()
                    .map(|w| {
                        w.join().unwrap_or_else(|_| {
                            Err(CacheError::Io {
                                path: self.root.clone(),
                                source: std::io::Error::other("a segment write panicked"),
                            })
                        })
                    })
                    .collect()
            })
        } else {
            all.into_iter()
                .map(|(dir, p)| self.write_pending(dir, p))
                .collect()
        };
        results.into_iter().collect()
    }

    fn write_pending(&self, dir: PathBuf, p: Pending) -> Result<(), CacheError> {
        // The buffered batches go to the writer one after another (it fills
        // row groups across batches), not concatenated into a copy first.
        let seg = self.write_segment(&p.key, &p.batches)?;
        self.dataset(&dir)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .segments
            .insert(seg);
        Ok(())
    }

    /// Writes one complete segment atomically (see the module docs) and
    /// returns its path.
    fn write_segment(
        &self,
        key: &CacheKey,
        batches: &[RecordBatch],
    ) -> Result<PathBuf, CacheError> {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => segment_schema(key)?,
        };
        let dir = self.dataset_dir(key);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = unique_name();
        let tmp = dir.join(format!(".tmp-{name}.parquet"));
        let seg = dir.join(format!("seg-{name}.parquet"));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        // Segments are written on the hot path of every cold run and read
        // whole, never filtered: no dictionaries (signatures and hashes are
        // random bytes, and typical outputs are mostly distinct, so building
        // a dictionary costs more than it saves), and no min/max statistics
        // on the signature and hash columns (random bytes: nothing to prune).
        // No page indexes either (nothing reads them), so every byte before
        // the footer lies in a checksummed region.
        let mut props = parquet::file::properties::WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_offset_index_disabled(true)
            .set_column_statistics_enabled("signature".into(), EnabledStatistics::None);
        for (name, _) in &key.outputs {
            props = props.set_column_statistics_enabled(
                format!("{name}.hash").into(),
                EnabledStatistics::None,
            );
        }
        let written = (|| {
            let parquet = |e: parquet::errors::ParquetError| write_error(key, &tmp, e);
            let mut writer =
                ArrowWriter::try_new(ChecksumWriter::new(file), schema, Some(props.build()))
                    .map_err(parquet)?;
            let mut groups = 0;
            for batch in batches {
                writer.write(batch).map_err(parquet)?;
                // A row group just written ends a checksummed region.
                if writer.flushed_row_groups().len() != groups {
                    groups = writer.flushed_row_groups().len();
                    writer.sync().map_err(io(&tmp))?;
                    writer.inner_mut().cut();
                }
            }
            writer.flush().map_err(parquet)?;
            writer.sync().map_err(io(&tmp))?;
            writer.inner_mut().cut();
            let regions = writer.inner().regions();
            writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                CHECKSUM_KEY.to_string(),
                regions,
            ));
            let mut file = writer.into_inner().map_err(parquet)?.into_inner();
            file.flush().map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
            drop(file);
            std::fs::rename(&tmp, &seg).map_err(io(&seg))
        })();
        if let Err(e) = written {
            // Nothing half-written stays behind (a full disk stays full
            // otherwise).
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let manifest = dir.join(MANIFEST);
        if !key.parts.is_empty() && !manifest.exists() {
            let text: String = key
                .parts
                .iter()
                .map(|(k, v)| format!("{k}\t{v}\n"))
                .collect();
            let tmp = dir.join(format!(".tmp-{}.manifest", unique_name()));
            std::fs::write(&tmp, text).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &manifest).map_err(io(&manifest))?;
        }
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of only a signature column.
    fn signature_batch(sigs: &[[u8; 32]]) -> RecordBatch {
        let column: ArrayRef = Arc::new(FixedSizeBinaryArray::new(32, sigs.concat().into(), None));
        RecordBatch::try_from_iter([("signature", column)]).unwrap()
    }

    #[test]
    fn dataset_index_finds_rows_across_batches_and_keeps_shared_tags_apart() {
        // The first 8 bytes are `key`, the rest `rest`.
        let sig = |key: u64, rest: u8| {
            let mut s = [rest; 32];
            s[..8].copy_from_slice(&key.to_le_bytes());
            s
        };
        // Keys sharing their low bits probe past each other.
        let close: Vec<[u8; 32]> = (0..1000u64).map(|k| sig(k << 40 | 5, 0)).collect();
        // The same first 8 bytes (tag and slot) as ten of them, then differing.
        let twins: Vec<[u8; 32]> = (0..10u64).map(|k| sig(k << 40 | 5, 1)).collect();
        let spread: Vec<[u8; 32]> = (0..5000u64)
            .map(|k| Signature::of_bytes("spread", &k.to_le_bytes()).0)
            .collect();
        let mut data = Dataset::default();
        assert_eq!(data.find_many(&[Signature(close[0])]), [None]);
        data.add(signature_batch(&close));
        data.add(signature_batch(&[]));
        data.add(signature_batch(&twins));
        // Grown batch by batch: the index is rebuilt on the way.
        for part in spread.chunks(700) {
            data.add(signature_batch(part));
        }
        // A signature stored again moves to its later row.
        data.add(signature_batch(&[close[10]]));
        let last = data.batches.len() - 1;
        let check = |data: &Dataset| {
            let found = |s: &[u8; 32]| data.find_many(&[Signature(*s)])[0];
            for (r, s) in close.iter().enumerate() {
                let want = if r == 10 { (last, 0) } else { (0, r) };
                assert_eq!(found(s), Some(want), "close {r}");
            }
            for (r, s) in twins.iter().enumerate() {
                assert_eq!(found(s), Some((2, r)), "twin {r}");
            }
            for (r, s) in spread.iter().enumerate() {
                assert_eq!(found(s), Some((3 + r / 700, r % 700)), "spread {r}");
            }
            // Unknown: a third signature on the same first 8 bytes, and others.
            assert_eq!(found(&sig(5, 2)), None);
            assert_eq!(found(&sig(3 << 40 | 5, 2)), None);
            assert_eq!(found(&sig(6, 0)), None);
            // Batched lookups give the same as one by one.
            let all: Vec<Signature> = close.iter().chain(&twins).map(|s| Signature(*s)).collect();
            let one_by_one: Vec<_> = all.iter().map(|s| found(&s.0)).collect();
            assert_eq!(data.find_many(&all), one_by_one);
            assert_eq!(data.index.len, 1000 + 10 + 5000);
        };
        check(&data);
        // Rebuilt larger, the same.
        let before = data.index.slots.len();
        data.reserve(100_000);
        assert!(data.index.slots.len() > before);
        check(&data);
    }

    fn key() -> CacheKey {
        CacheKey {
            node: "count words".into(),
            code: Signature::of_bytes("test", b"count"),
            outputs: vec![
                ("word_count".into(), ValueType::arrow::<i64>()),
                ("words".into(), ValueType::arrow::<Vec<String>>()),
            ],
            parts: vec![("body".into(), "abc".into())],
        }
    }

    fn sig(i: u8) -> Signature {
        Signature::of_bytes("item", &[i])
    }

    fn entry(i: u8) -> (Signature, Vec<Value>) {
        (
            sig(i),
            vec![Value::new(i as i64), Value::new(vec![format!("w{i}")])],
        )
    }

    fn rows(k: &CacheKey, entries: &[(Signature, Vec<Value>)]) -> CacheRows {
        CacheRows::from_values(k, entries).unwrap()
    }

    /// Stores and writes at once.
    fn put(cache: &DiskCache, k: &CacheKey, entries: &[(Signature, Vec<Value>)]) {
        cache.store(k, &rows(k, entries)).unwrap();
        cache.flush().unwrap();
    }

    fn get(cache: &DiskCache, k: &CacheKey, sigs: &[Signature]) -> Vec<Option<Vec<Value>>> {
        cache.lookup(k, sigs).unwrap().values(k).unwrap()
    }

    fn counts(found: &[Option<Vec<Value>>]) -> Vec<Option<i64>> {
        found
            .iter()
            .map(|o| o.as_ref().map(|v| *v[0].downcast_ref::<i64>().unwrap()))
            .collect()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stored_results_are_found_by_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let writer = DiskCache::new(dir.path());
        writer.store(&k, &rows(&k, &[entry(1), entry(2)])).unwrap();
        // Buffered: visible to the writer, on disk only once flushed (here
        // by dropping the writer).
        assert_eq!(counts(&get(&writer, &k, &[sig(1)])), [Some(1)]);
        assert!(!writer.dataset_dir(&k).exists());
        drop(writer);
        let cache = DiskCache::new(dir.path());
        let found = get(&cache, &k, &[sig(2), sig(3), sig(1)]);
        assert_eq!(counts(&found), [Some(2), None, Some(1)]);
        assert_eq!(
            found[0].as_ref().unwrap()[1].downcast_ref::<Vec<String>>(),
            Some(&vec!["w2".to_string()])
        );
        assert!(cache.warnings().is_empty());
        // Another code version is another dataset.
        let mut k2 = k.clone();
        k2.code = Signature::of_bytes("test", b"count v2");
        assert_eq!(counts(&get(&cache, &k2, &[sig(1)])), [None]);
    }

    #[test]
    fn segments_record_checksums_that_cover_every_byte_before_the_footer() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        put(&cache, &key(), &[entry(7), entry(8)]);
        let seg = segments(&cache.dataset_dir(&key())).remove(0);
        let bytes = std::fs::read(&seg).unwrap();
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone())).unwrap();
        let recorded = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == CHECKSUM_KEY).cloned())
            .and_then(|e| e.value)
            .unwrap();
        let regions: Vec<(u64, u32)> = recorded
            .split(',')
            .map(|r| {
                let (end, crc) = r.split_once(':').unwrap();
                (end.parse().unwrap(), u32::from_str_radix(crc, 16).unwrap())
            })
            .collect();
        // The regions cover the file from its start to the footer.
        let footer_len =
            u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
        let footer_start = bytes.len() as u64 - 8 - footer_len as u64;
        assert_eq!(regions.last().unwrap().0, footer_start);
        let mut start = 0;
        for (end, crc) in regions {
            assert_eq!(crc32fast::hash(&bytes[start as usize..end as usize]), crc);
            start = end;
        }
        // Any altered byte before the footer is caught.
        for at in [
            0usize,
            4,
            footer_start as usize / 2,
            footer_start as usize - 1,
        ] {
            let mut altered = bytes.clone();
            altered[at] ^= 0x20;
            let meta = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()))
                .unwrap()
                .metadata()
                .clone();
            assert!(
                matches!(
                    verify_checksums(&meta, &altered),
                    Err(SegmentFault::Corrupt(_))
                ),
                "byte {at}"
            );
        }
    }

    #[test]
    fn a_segment_without_checksums_is_not_trusted_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        let k = key();
        // A segment of the right layout written by another tool.
        let batch = segment_batch(&k, &rows(&k, &[entry(7)])).unwrap();
        let version_dir = cache.dataset_dir(&k);
        std::fs::create_dir_all(&version_dir).unwrap();
        let seg = version_dir.join("seg-00000000000000000001-1-0.parquet");
        let mut writer =
            ArrowWriter::try_new(File::create(&seg).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        assert_eq!(counts(&get(&cache, &k, &[sig(7)])), [None]);
        let warnings = cache.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("no checksums"), "{}", warnings[0]);
        assert!(!seg.exists());
        assert!(quarantined_name(&seg).exists());
        let stats = cache.stats().unwrap();
        assert_eq!(stats[0].quarantined, 1);
        assert_eq!(stats[0].segments, 0);
    }

    #[test]
    fn segments_are_plain_parquet_with_a_signature_column() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        put(&cache, &key(), &[entry(7)]);
        let segs = segments(&cache.dataset_dir(&key()));
        assert_eq!(segs.len(), 1);
        let batch = ParquetRecordBatchReaderBuilder::try_new(File::open(&segs[0]).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "signature",
                "word_count",
                "words",
                "word_count.hash",
                "words.hash"
            ]
        );
        assert_eq!(schema.field(0).data_type(), &DataType::FixedSizeBinary(32));
        // The stored hashes are the values' hashes.
        let count_hash = crate::signature::hash_array(batch.column(1)).unwrap();
        assert_eq!(
            batch.column(3).as_fixed_size_binary().value(0),
            count_hash[0].as_bytes()
        );
        // Written plain, without dictionaries, and without statistics on
        // the random signature and hash columns.
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&segs[0]).unwrap())
            .unwrap()
            .metadata()
            .clone();
        for column in meta.row_group(0).columns() {
            let name = column.column_path().string();
            assert!(
                !column
                    .encodings()
                    .any(|e| e == parquet::basic::Encoding::RLE_DICTIONARY),
                "{name} has a dictionary"
            );
            let random = name == "signature" || name.ends_with(".hash");
            assert_eq!(column.statistics().is_some(), !random, "{name}");
        }
    }

    #[test]
    fn stores_before_one_flush_make_one_segment_in_store_order() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let cache = DiskCache::new(dir.path());
        let many: Vec<_> = (0..9u8).map(entry).collect();
        for part in [&many[..2], &many[2..3], &many[3..]] {
            cache.store(&k, &rows(&k, part)).unwrap();
        }
        cache.flush().unwrap();
        let segs = segments(&cache.dataset_dir(&k));
        assert_eq!(segs.len(), 1);
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&segs[0]).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 1);
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let stored: Vec<Signature> = batches
            .iter()
            .flat_map(|b| {
                let sigs = b.column(0).as_fixed_size_binary();
                (0..b.num_rows())
                    .map(|r| signature_at(sigs, r))
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<Signature> = many.iter().map(|(s, _)| *s).collect();
        assert_eq!(stored, want);
        // A new instance reads every row back.
        let fresh = DiskCache::new(dir.path());
        let found = get(&fresh, &k, &want);
        assert_eq!(counts(&found), (0..9).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn locate_lends_the_stored_batches_that_hold_hits() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let cache = DiskCache::new(dir.path());
        let many: Vec<_> = (0..9u8).map(entry).collect();
        // Two segments: two stored batches.
        put(&cache, &k, &many[..4]);
        put(&cache, &k, &many[4..]);
        let fresh = DiskCache::new(dir.path());
        let asked = [sig(6), sig(1), sig(200), sig(7), sig(2)];
        let located = fresh.locate(&k, &asked).unwrap().unwrap();
        assert_eq!(located.rows.len(), asked.len());
        assert_eq!(located.rows[2], None, "never stored");
        // Only the batches holding hits are lent, numbered as first used.
        assert_eq!(located.columns.len(), 2);
        assert_eq!(located.hashes.len(), 2);
        let want = [Some(6i64), Some(1), None, Some(7), Some(2)];
        for (at, want) in located.rows.iter().zip(want) {
            let got = at.map(|(b, r)| {
                let counts = located.columns[b][0]
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .unwrap();
                // The lent hash is the value's hash.
                let hash = signature_at(located.hashes[b][0].as_fixed_size_binary(), r);
                let alone =
                    crate::signature::hash_array(&located.columns[b][0].slice(r, 1)).unwrap();
                assert_eq!(hash, alone[0]);
                counts.value(r)
            });
            assert_eq!(got, want);
        }
        // The same rows as a lookup.
        let looked = counts(&get(&fresh, &k, &asked));
        assert_eq!(looked, want);
    }

    #[test]
    fn prepare_loads_a_version_and_sizes_its_index_once() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let writer = DiskCache::new(dir.path());
        let many: Vec<_> = (0..=255u8).map(entry).collect();
        put(&writer, &k, &many[..10]);
        let cache = DiskCache::new(dir.path());
        cache.prepare(&k, 256).unwrap();
        let dataset = cache.dataset(&cache.dataset_dir(&k));
        let slots = || dataset.read().unwrap().index.slots.len();
        // Loaded before any lookup, with room for all 256 items.
        assert_eq!(dataset.read().unwrap().index.len, 10);
        assert!(slots() >= 512);
        let before = slots();
        cache.store(&k, &rows(&k, &many[10..])).unwrap();
        assert_eq!(slots(), before, "no growth while storing the rest");
        assert_eq!(
            counts(&get(&cache, &k, &[sig(3), sig(200)])),
            [Some(3), Some(200)]
        );
        // A version already holding the items reserves nothing more.
        cache.prepare(&k, 256).unwrap();
        assert_eq!(slots(), before);
        // The hint is capped: an absurd item count reserves a bounded table.
        cache.prepare(&k, usize::MAX).unwrap();
        assert_eq!(slots(), 2 * PREPARE_LIMIT);
    }

    #[test]
    fn truncated_and_garbage_segments_are_skipped_with_one_warning_each() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let writer = DiskCache::new(dir.path());
        for i in 0..3 {
            put(&writer, &k, &[entry(i)]);
        }
        let segs = segments(&writer.dataset_dir(&k));
        let bytes = std::fs::read(&segs[0]).unwrap();
        std::fs::write(&segs[0], &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(&segs[1], b"definitely not parquet").unwrap();
        // A write that never finished is not a segment at all.
        std::fs::write(writer.dataset_dir(&k).join(".tmp-x.parquet"), b"partial").unwrap();

        let cache = DiskCache::new(dir.path());
        let found = get(&cache, &k, &[sig(0), sig(1), sig(2)]);
        assert_eq!(counts(&found), [None, None, Some(2)]);
        cache.lookup(&k, &[sig(0)]).unwrap();
        let warnings = cache.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.contains("count words")));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let root = dir.path().to_path_buf();
                let k = k.clone();
                s.spawn(move || {
                    let cache = DiskCache::new(root);
                    for i in 0..10u8 {
                        put(&cache, &k, &[entry(t * 10 + i)]);
                    }
                });
            }
        });
        let cache = DiskCache::new(dir.path());
        let all: Vec<Signature> = (0..40).map(sig).collect();
        let found = get(&cache, &k, &all);
        assert_eq!(
            counts(&found),
            (0..40).map(|i| Some(i as i64)).collect::<Vec<_>>()
        );
        assert_eq!(segments(&cache.dataset_dir(&k)).len(), 40);
    }

    #[test]
    fn inspect_compact_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let cache = DiskCache::new(dir.path());
        for i in 0..3 {
            put(&cache, &k, &[entry(i)]);
        }
        assert!(cache.is_cached(&k, &sig(1)).unwrap());
        assert!(!cache.is_cached(&k, &sig(9)).unwrap());
        let stats = cache.stats().unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].node.as_str(), stats[0].segments, stats[0].rows),
            ("count_words", 3, 3)
        );
        assert_eq!(stats[0].code, k.code.to_hex());
        assert!(stats[0].bytes > 0);

        assert_eq!(cache.compact(&k).unwrap(), 3);
        let stats = cache.stats().unwrap();
        assert_eq!((stats[0].segments, stats[0].rows), (1, 3));
        let fresh = DiskCache::new(dir.path());
        let found = get(&fresh, &k, &[sig(0), sig(1), sig(2)]);
        assert_eq!(counts(&found), [Some(0), Some(1), Some(2)]);

        cache.clear_node("count words").unwrap();
        assert!(cache.stats().unwrap().is_empty());
        assert!(!cache.is_cached(&k, &sig(1)).unwrap());
        put(&cache, &k, &[entry(4)]);
        cache.clear().unwrap();
        assert!(cache.stats().unwrap().is_empty());
    }

    #[test]
    fn outputs_without_an_arrow_form_are_not_stored() {
        #[derive(Clone)]
        struct Model;
        let dir = tempfile::tempdir().unwrap();
        let k = CacheKey {
            node: "load".into(),
            code: Signature::of_bytes("test", b"load"),
            outputs: vec![("model".into(), ValueType::resource::<Model>())],
            parts: Vec::new(),
        };
        let cache = DiskCache::new(dir.path());
        assert!(CacheRows::from_values(&k, &[(sig(1), vec![Value::new(Model)])]).is_err());
        let no_rows = CacheRows {
            signatures: vec![sig(1)],
            columns: Vec::new(),
            hashes: Vec::new(),
        };
        cache.store(&k, &no_rows).unwrap();
        assert!(cache.lookup(&k, &[sig(1)]).unwrap().rows[0].is_none());
        assert!(!cache.dataset_dir(&k).exists());
    }
}
