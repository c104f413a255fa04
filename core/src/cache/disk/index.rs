//! A dataset's signature index: open addressing over 8-byte slots.

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
pub(crate) struct SigIndex {
    pub(crate) slots: Vec<u64>,
    pub(crate) len: usize,
}

/// The most rows a dataset indexes (row + 1 must fit a slot's 32 bits);
/// rows beyond are not loaded, and their items are recomputed.
pub(crate) const MAX_ROWS: usize = u32::MAX as usize - 1;

/// The most index entries [`DiskCache`]'s `prepare` reserves room for
/// (4M entries: a 64 MiB table).
pub(crate) const PREPARE_LIMIT: usize = 1 << 22;

/// How far ahead lookups prefetch.
pub(crate) const PREFETCH: usize = 16;

#[inline]
pub(crate) fn prefetch<T>(at: &T) {
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
    pub(crate) fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    pub(crate) fn tag(key: u64) -> u64 {
        key >> 32
    }

    pub(crate) fn pack(key: u64, row: u32) -> u64 {
        Self::tag(key) << 32 | (row as u64 + 1)
    }

    /// The row of a full slot.
    pub(crate) fn row(slot: u64) -> u32 {
        ((slot & 0xffff_ffff) - 1) as u32
    }

    /// The table size that holds `len + more` entries at most half full, if
    /// the current one does not (the caller then re-inserts everything).
    pub(crate) fn grown(&self, more: usize) -> Option<usize> {
        let need = (self.len + more)
            .saturating_mul(2)
            .next_power_of_two()
            .max(16);
        (need > self.slots.len()).then_some(need)
    }

    /// An empty index of `slots` slots (a power of two).
    pub(crate) fn with_slots(slots: usize) -> SigIndex {
        SigIndex {
            slots: vec![0; slots],
            len: 0,
        }
    }

    /// Where key `key` would start probing, for prefetching.
    pub(crate) fn home(&self, key: u64) -> &u64 {
        &self.slots[key as usize & self.mask()]
    }

    /// Inserts `row` under `key`; `same(other)` tells whether row `other`,
    /// found under the same tag, holds the same signature (it is replaced).
    /// The table must have room (see [`SigIndex::grown`]).
    pub(crate) fn insert(&mut self, key: u64, row: u32, same: impl Fn(u32) -> bool) {
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
    pub(crate) fn find(&self, key: u64, matches: impl Fn(u32) -> bool) -> Option<u32> {
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
    pub(crate) fn candidates(&self, keys: &[u64]) -> Vec<Option<u32>> {
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
}

/// The first 8 bytes of a signature, the key of a dataset's index.
pub(crate) fn prefix(sig: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&sig[..8]);
    u64::from_le_bytes(word)
}
