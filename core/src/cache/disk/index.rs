//! A dataset's signature index: open addressing over 16-byte slots, the
//! only part of a dataset that stays resident.

/// One slot: a signature's first 8 bytes and its row + 1 (`0`: empty).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Slot {
    key: u64,
    row: u32,
}

/// A dataset's index: where each stored signature's row is, rows counted
/// over all of the dataset's parts in order. Open addressing with linear
/// probing over a power-of-two table of [`Slot`]s, at most three quarters
/// full. A slot keeps the signature's first 8 bytes (its *key*; a uniformly
/// random signature's bytes are their own hash, so the low bits pick the
/// slot a key probes from) and its row. Only the key is resident, not the
/// whole signature: a row the index gives is a *candidate*, confirmed
/// against the full signature stored in that row when the row is read, so a
/// lookup never returns another signature's row (two signatures sharing 8
/// bytes, one pair in about 2^64 / n², cost a recomputation, never a wrong
/// value). A later insert of the same key replaces the earlier row, and
/// the table grows from its own slots (the keys are all it needs). Lookups
/// come in batches, so the slot of a key a few positions ahead is
/// prefetched while the current one is probed: a million-row index does not
/// fit in cache, and this hides most of the memory latency of random probes.
#[derive(Default)]
pub(crate) struct SigIndex {
    pub(crate) slots: Vec<Slot>,
    pub(crate) len: usize,
}

/// The most rows a dataset indexes (row + 1 must fit a slot's 32 bits);
/// rows beyond are not indexed, and their items are recomputed.
pub(crate) const MAX_ROWS: usize = u32::MAX as usize - 1;

/// The most index entries [`DiskCache`](super::DiskCache)'s `prepare`
/// reserves room for (4M entries: a 64 MiB table at most).
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
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Bytes the index holds.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// Makes room for `more` entries (growing re-inserts every entry, so
    /// growing step by step costs more than one reservation).
    pub(crate) fn reserve(&mut self, more: usize) {
        let need = (self.len + more)
            .saturating_mul(4)
            .div_ceil(3)
            .next_power_of_two()
            .max(16);
        if need <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); need]);
        self.len = 0;
        for slot in old.into_iter().filter(|s| s.row != 0) {
            self.insert(slot.key, slot.row - 1);
        }
    }

    /// Where key `key` would start probing, for prefetching.
    fn home(&self, key: u64) -> &Slot {
        &self.slots[key as usize & self.mask()]
    }

    /// Records `row` under `key` (replacing an earlier row of the same
    /// key), growing the table when it is three quarters full.
    pub(crate) fn insert(&mut self, key: u64, row: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.reserve(1);
        }
        let mask = self.mask();
        let mut i = key as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.row == 0 {
                *slot = Slot { key, row: row + 1 };
                self.len += 1;
                return;
            }
            if slot.key == key {
                slot.row = row + 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The row recorded under `key`, if any.
    pub(crate) fn find(&self, key: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = key as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot.row == 0 {
                return None;
            }
            if slot.key == key {
                return Some(slot.row - 1);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts many keys, `first_row` onwards in order, prefetching ahead.
    pub(crate) fn insert_all(&mut self, keys: &[u64], first_row: u32) {
        self.reserve(keys.len());
        for (n, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(n + PREFETCH) {
                prefetch(self.home(ahead));
            }
            self.insert(key, first_row + n as u32);
        }
    }

    /// For each key, its candidate row (`None`: not stored), prefetching ahead.
    pub(crate) fn candidates(&self, keys: &[u64]) -> Vec<Option<u32>> {
        if self.slots.is_empty() {
            return vec![None; keys.len()];
        }
        let mut out = Vec::with_capacity(keys.len());
        for (n, &key) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(n + PREFETCH) {
                prefetch(self.home(ahead));
            }
            out.push(self.find(key));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sharing_low_bits_are_kept_apart_and_reinserts_replace() {
        let mut index = SigIndex::default();
        // Keys that all start probing at the same slot.
        let keys: Vec<u64> = (1..=1000u64).map(|k| k << 40 | 5).collect();
        index.insert_all(&keys, 0);
        assert_eq!(index.len, 1000);
        for (r, &k) in keys.iter().enumerate() {
            assert_eq!(index.find(k), Some(r as u32));
        }
        assert_eq!(index.find(7 << 40 | 6), None);
        // The same key again points at its later row; the count stays.
        index.insert(keys[10], 5000);
        assert_eq!(index.find(keys[10]), Some(5000));
        assert_eq!(index.len, 1000);
        // At most three quarters full, after growing step by step.
        assert!(index.len * 4 <= index.slots.len() * 3);
        let before = index.slots.len();
        index.reserve(100_000);
        assert!(index.slots.len() > before);
        assert_eq!(index.find(keys[999]), Some(999));
        assert_eq!(
            index.candidates(&[keys[0], 1, keys[10]]),
            [Some(0), None, Some(5000)]
        );
    }
}
