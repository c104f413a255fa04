//! One node version's dataset as a process knows it: where each stored row
//! lies (in memory until a flush writes it, then in a segment's row group),
//! the signature index over them, and the rows waiting for a flush.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch};

use crate::signature::Signature;

use super::index::*;
use super::segment::SegmentFile;
use crate::cache::{CacheError, CacheKey, CacheRows, encode_error};

/// Where a run of stored rows lies.
#[derive(Clone)]
pub(crate) enum Place {
    /// Stored by this process and not yet written: the rows themselves.
    Memory(RecordBatch),
    /// Rows of row group `.1` of a segment from its row `.2` on, read when
    /// a lookup hits them.
    Disk(Arc<SegmentFile>, usize, usize),
}

/// A run of consecutive rows (counted over the whole dataset) in one place.
pub(crate) struct Part {
    pub(crate) start: u32,
    pub(crate) rows: u32,
    pub(crate) place: Place,
}

/// Rows stored and not yet taken by a flush.
pub(crate) struct Pending {
    pub(crate) key: CacheKey,
    /// Each batch with its first dataset row, if it is indexed (its part
    /// is replaced by the segment's row groups once it is written).
    pub(crate) batches: Vec<(Option<u32>, RecordBatch)>,
}

/// One node version's dataset: its parts (laid out as on disk: signature,
/// outputs, hashes) and an index of their signatures (see [`SigIndex`]:
/// it proposes rows, and every proposed row is confirmed against its full
/// signature when it is read, so a lookup never returns another
/// signature's row). Only the index (16 to 32 bytes a row) and the parts
/// held in memory until their flush stay resident; rows on disk are read
/// when a lookup hits them.
#[derive(Default)]
pub(crate) struct Dataset {
    pub(crate) parts: Vec<Part>,
    /// Rows over all parts.
    pub(crate) rows: usize,
    pub(crate) index: SigIndex,
    /// The segments whose rows are indexed (or were written from here).
    pub(crate) segments: HashSet<PathBuf>,
    /// When the directory was last listed for new segments.
    pub(crate) listed: Option<std::time::Instant>,
    pub(crate) pending: Option<Pending>,
}

/// How long a dataset's directory listing is trusted: segments written by
/// other cache instances or processes become visible within this time (and
/// until then their items are only recomputed, never wrong). Batches of a
/// map look up many times a second; listing the directory for each cost
/// more than the lookups themselves.
pub(crate) const LISTING_TTL: std::time::Duration = std::time::Duration::from_millis(100);

/// The dataset rows a lookup proposes, by part: the parts involved (in the
/// order first proposed) and, per requested signature, its part among them
/// and its row within that part.
pub(crate) struct Proposed {
    pub(crate) places: Vec<Place>,
    pub(crate) rows: Vec<Option<(usize, usize)>>,
}

impl Dataset {
    /// Appends rows stored by this process (kept in memory until written)
    /// and indexes them; `false` when they would take the dataset past
    /// [`MAX_ROWS`] (they are then not indexed: their items are recomputed).
    pub(crate) fn add_memory(&mut self, batch: RecordBatch) -> bool {
        let sigs = batch.column(0).as_fixed_size_binary().clone();
        self.append(&[sigs], vec![(batch.num_rows(), Place::Memory(batch))])
    }

    /// Appends a segment's row groups, indexing their signatures (`sigs`,
    /// in order).
    pub(crate) fn add_segment(
        &mut self,
        file: Arc<SegmentFile>,
        sigs: &[FixedSizeBinaryArray],
    ) -> bool {
        let places = file
            .group_rows()
            .into_iter()
            .enumerate()
            .map(|(g, rows)| (rows, Place::Disk(file.clone(), g, 0)))
            .collect();
        self.append(sigs, places)
    }

    fn append(&mut self, sigs: &[FixedSizeBinaryArray], places: Vec<(usize, Place)>) -> bool {
        let n: usize = places.iter().map(|(rows, _)| rows).sum();
        if self.rows + n > MAX_ROWS || sigs.iter().map(Array::len).sum::<usize>() != n {
            return false;
        }
        let first = self.rows as u32;
        for (rows, place) in places {
            self.parts.push(Part {
                start: self.rows as u32,
                rows: rows as u32,
                place,
            });
            self.rows += rows;
        }
        let keys: Vec<u64> = sigs
            .iter()
            .flat_map(|c| (0..c.len()).map(|r| prefix(c.value(r))))
            .collect();
        self.index.insert_all(&keys, first);
        true
    }

    /// The batches of a flush (each with its first dataset row, if
    /// indexed) were written, in order, as `file`: each one's part, held in
    /// memory so far, becomes the pieces of the row groups that now hold
    /// its rows, and its memory is released.
    pub(crate) fn written(&mut self, file: &Arc<SegmentFile>, batches: &[(Option<u32>, usize)]) {
        let groups = file.group_rows();
        if groups.iter().sum::<usize>() != batches.iter().map(|(_, n)| n).sum::<usize>() {
            return;
        }
        // Each group's first row in the segment.
        let mut group_starts = Vec::with_capacity(groups.len());
        let mut at = 0;
        for rows in &groups {
            group_starts.push(at);
            at += rows;
        }
        let mut offset = 0; // the batch's first row in the segment
        for &(first, rows) in batches {
            let from = offset;
            offset += rows;
            let Some(first) = first else { continue };
            let p = self.parts.partition_point(|p| p.start < first);
            let replaceable = self.parts.get(p).is_some_and(|part| {
                part.start == first
                    && part.rows as usize == rows
                    && matches!(part.place, Place::Memory(_))
            });
            if !replaceable || rows == 0 {
                continue;
            }
            // The pieces of the groups overlapping segment rows from..from+rows.
            let mut pieces = Vec::new();
            let mut g = group_starts.partition_point(|&s| s <= from) - 1;
            let mut row = from;
            while row < from + rows {
                let end = (group_starts[g] + groups[g]).min(from + rows);
                if end == row {
                    g += 1;
                    continue;
                }
                pieces.push(Part {
                    start: first + (row - from) as u32,
                    rows: (end - row) as u32,
                    place: Place::Disk(file.clone(), g, row - group_starts[g]),
                });
                row = end;
                g += 1;
            }
            self.parts.splice(p..p + 1, pieces);
        }
    }

    /// Makes room in the index for `more` rows.
    pub(crate) fn reserve(&mut self, more: usize) {
        self.index.reserve(more);
    }

    /// The part holding dataset row `row` (trying part `hint` first) and
    /// the row within it.
    fn part_of(&self, row: u32, hint: usize) -> Option<(usize, usize)> {
        let within = |p: &Part| p.start <= row && row < p.start + p.rows;
        let p = match self.parts.get(hint) {
            Some(part) if within(part) => hint,
            _ => self
                .parts
                .partition_point(|p| p.start <= row)
                .checked_sub(1)?,
        };
        let part = self.parts.get(p).filter(|part| within(part))?;
        Some((p, (row - part.start) as usize))
    }

    /// The rows the index proposes for `sigs` (see [`Proposed`]); each is
    /// to be confirmed against the signature stored there.
    pub(crate) fn propose(&self, sigs: &[Signature]) -> Proposed {
        let keys: Vec<u64> = sigs.iter().map(|s| prefix(&s.0)).collect();
        let candidates = self.index.candidates(&keys);
        let mut used: Vec<usize> = Vec::new();
        let mut places = Vec::new();
        let mut last: Option<(usize, usize)> = None;
        let mut hint = 0;
        let rows = candidates
            .into_iter()
            .map(|candidate| {
                let (p, r) = self.part_of(candidate?, hint)?;
                hint = p;
                let k = match last {
                    Some((lp, k)) if lp == p => k,
                    _ => match used.iter().position(|&u| u == p) {
                        Some(k) => k,
                        None => {
                            used.push(p);
                            places.push(self.parts[p].place.clone());
                            used.len() - 1
                        }
                    },
                };
                last = Some((p, k));
                Some((k, r))
            })
            .collect();
        Proposed { places, rows }
    }
}

/// The rows at `positions` (batch of `batches`, row) as [`CacheRows`].
pub(crate) fn gather(
    key: &CacheKey,
    batches: &[RecordBatch],
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
            return Ok(batches[b0].column(c).slice(r0, positions.len()));
        };
        if let Some(rows) = rows_of_one {
            return arrow_select::take::take(batches[b0].column(c).as_ref(), rows, None)
                .map_err(fail);
        }
        let arrays: Vec<&dyn Array> = used
            .iter()
            .map(|&b| batches[b].column(c).as_ref())
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

pub(crate) fn signature_at(array: &FixedSizeBinaryArray, row: usize) -> Signature {
    let mut sig = [0u8; 32];
    sig.copy_from_slice(array.value(row));
    Signature(sig)
}
