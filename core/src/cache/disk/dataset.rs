//! One node version's loaded segments: the batches, their row starts and
//! the signature index over them.

use std::collections::HashSet;
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch};

use crate::signature::Signature;

use super::index::*;
use crate::cache::{CacheError, CacheKey, CacheRows, encode_error};

/// One node version's loaded segments: Arrow batches laid out as on disk
/// (signature, outputs, hashes) and an index of their signatures (see
/// [`SigIndex`]: every hit is confirmed against the full signature in its
/// batch, so a lookup never returns another signature's row). The index
/// costs about 16 bytes a row.
#[derive(Default)]
pub(crate) struct Dataset {
    pub(crate) batches: Vec<RecordBatch>,
    /// The first row (counted over all batches) of each batch.
    pub(crate) starts: Vec<u32>,
    /// Rows over all batches.
    pub(crate) rows: usize,
    pub(crate) index: SigIndex,
    pub(crate) segments: HashSet<PathBuf>,
    /// When the directory was last listed for new segments.
    pub(crate) listed: Option<std::time::Instant>,
}

/// How long a dataset's directory listing is trusted: segments written by
/// other cache instances or processes become visible within this time (and
/// until then their items are only recomputed, never wrong). Batches of a
/// map look up many times a second; listing the directory for each cost
/// more than the lookups themselves.
pub(crate) const LISTING_TTL: std::time::Duration = std::time::Duration::from_millis(100);

/// The signature column of each batch.
pub(crate) fn signature_columns(batches: &[RecordBatch]) -> Vec<&FixedSizeBinaryArray> {
    batches
        .iter()
        .map(|b| b.column(0).as_fixed_size_binary())
        .collect()
}

/// Batch and row of row `row` counted over all batches (`starts`: the
/// first row of each batch), trying batch `hint` first.
pub(crate) fn batch_row(starts: &[u32], row: u32, hint: usize) -> (usize, usize) {
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
    pub(crate) fn add(&mut self, batch: RecordBatch) {
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
    pub(crate) fn reserve(&mut self, more: usize) {
        if let Some(slots) = self.index.grown(more) {
            self.reindex(slots);
        }
    }

    /// Rebuilds the index with `slots` slots, every batch in order.
    pub(crate) fn reindex(&mut self, slots: usize) {
        self.index = SigIndex::with_slots(slots);
        for b in 0..self.batches.len() {
            self.index_rows(b);
        }
    }

    /// Indexes batch `b`'s rows, prefetching ahead.
    pub(crate) fn index_rows(&mut self, b: usize) {
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
    pub(crate) fn find_many(&self, sigs: &[Signature]) -> Vec<Option<(usize, usize)>> {
        let mut out = Vec::with_capacity(sigs.len());
        self.find_each(sigs, |_, at| out.push(at));
        out
    }

    /// Where each of `sigs` is stored (batch, row), if it is, handed to
    /// `found` in order: the index gives a candidate row per signature,
    /// confirmed against the full stored signature (prefetched ahead, as the
    /// index slots are); a candidate that is another signature sharing the
    /// tag sends the lookup on.
    pub(crate) fn find_each(
        &self,
        sigs: &[Signature],
        mut found: impl FnMut(usize, Option<(usize, usize)>),
    ) {
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
    pub(crate) fn gather(
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
            let picks = crate::kernels::RowPicks::new(
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
