//! What a map knows about its items while it runs ([`MapState`]), one for
//! every engine: which items failed and with what error, under
//! [`ErrorPolicy::Stop`] the earliest failure so far (work after it is
//! skipped), a failure of the engine itself that fails the whole map, and,
//! when someone listens to events, when each item (and each inlined
//! pipeline of it) started. Row engines' workers and columnar engines'
//! UDFs record into it from any thread; the job builds the result from it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::Error;
use crate::map::ErrorPolicy;
use crate::observe::clock::Moment;

/// When each item entered the map, and each inlined pipeline (scope
/// `1..`; index 0 unused). Each time is 8 bytes (nanoseconds after the
/// map's first event, 0 for "not yet"), and an engine stamps a whole batch
/// of items with one reading of the clock.
pub struct ItemTimes {
    base: Moment,
    items: Vec<AtomicU64>,
    scopes: Vec<OnceLock<Vec<AtomicU64>>>,
}

impl ItemTimes {
    fn new(len: usize, scopes: usize) -> Self {
        ItemTimes {
            base: Moment::now(),
            items: Self::slots(len),
            scopes: (0..=scopes).map(|_| OnceLock::new()).collect(),
        }
    }

    fn slots(len: usize) -> Vec<AtomicU64> {
        (0..len).map(|_| AtomicU64::new(0)).collect()
    }

    /// `at` as stored: clock counts after `base`, plus one (0 is "unset").
    fn encode(&self, at: Moment) -> u64 {
        at.counts_since(self.base).saturating_add(1)
    }

    fn decode(&self, stored: u64) -> Option<Moment> {
        (stored != 0)
            .then(|| self.base.after_counts(stored - 1))
            .flatten()
    }

    fn mark(&self, slot: Option<&AtomicU64>, at: Moment) {
        if let Some(t) = slot {
            let _ = t.compare_exchange(0, self.encode(at), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Marks now as when item `item` started, unless it had.
    pub fn start(&self, item: usize) {
        self.start_at(item, Moment::now());
    }

    /// Marks `at` as when item `item` started, unless it had (one clock
    /// reading for a batch of items).
    pub fn start_at(&self, item: usize, at: Moment) {
        self.mark(self.items.get(item), at);
    }

    /// When item `item` started, if it did.
    pub fn started(&self, item: usize) -> Option<Moment> {
        self.decode(self.items.get(item)?.load(Ordering::Relaxed))
    }

    /// Marks now as when item `item` entered inlined pipeline `scope`,
    /// unless it had.
    pub fn enter(&self, scope: usize, item: usize) {
        self.enter_at(scope, item, Moment::now());
    }

    /// Marks `at` as when item `item` entered inlined pipeline `scope`,
    /// unless it had.
    pub fn enter_at(&self, scope: usize, item: usize, at: Moment) {
        if let Some(times) = self.scopes.get(scope) {
            let len = self.items.len();
            self.mark(times.get_or_init(|| Self::slots(len)).get(item), at);
        }
    }

    /// When item `item` entered inlined pipeline `scope`, if it did.
    pub fn entered(&self, scope: usize, item: usize) -> Option<Moment> {
        let stored = self
            .scopes
            .get(scope)?
            .get()?
            .get(item)?
            .load(Ordering::Relaxed);
        self.decode(stored)
    }
}

/// See the module docs.
pub struct MapState {
    len: usize,
    policy: ErrorPolicy,
    /// One bit per item: whether it failed.
    failed: Vec<AtomicU64>,
    failures: Mutex<Vec<(usize, Error)>>,
    /// Under the stop policy, the earliest failed item so far
    /// (`usize::MAX`: none).
    first_failure: AtomicUsize,
    fatal: Mutex<Option<Error>>,
    times: OnceLock<ItemTimes>,
    /// Per node, results computed and found cached not yet taken (steps of
    /// a plan decoded elsewhere tally here; see `ColumnarStep::tally`).
    node_counts: Mutex<Vec<(String, crate::observe::callback::NodeCounts)>>,
}

impl std::fmt::Debug for MapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapState")
            .field("len", &self.len)
            .field("policy", &self.policy)
            .finish()
    }
}

impl MapState {
    /// The state of a map of `len` items under `policy`.
    pub fn new(len: usize, policy: ErrorPolicy) -> Self {
        MapState {
            len,
            policy,
            failed: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            failures: Mutex::new(Vec::new()),
            first_failure: AtomicUsize::new(usize::MAX),
            fatal: Mutex::new(None),
            times: OnceLock::new(),
            node_counts: Mutex::new(Vec::new()),
        }
    }

    /// Items in the map.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The error policy.
    pub fn policy(&self) -> ErrorPolicy {
        self.policy
    }

    /// Records that item `item` failed with `error`.
    pub fn fail(&self, item: usize, error: Error) {
        if let Some(word) = self.failed.get(item / 64) {
            word.fetch_or(1 << (item % 64), Ordering::Relaxed);
        }
        if self.policy == ErrorPolicy::Stop {
            self.first_failure.fetch_min(item, Ordering::Relaxed);
        }
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((item, error));
    }

    /// Whether item `item` failed.
    pub fn failed(&self, item: usize) -> bool {
        self.failed
            .get(item / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (item % 64)) != 0)
    }

    /// Whether item `item` need not run: it failed, or, under the stop
    /// policy, an earlier item failed (the map ends with the earliest
    /// failure, as the sequential engine's would, so items before it still
    /// run).
    pub fn skip(&self, item: usize) -> bool {
        self.stopped_before(item) || self.failed(item)
    }

    /// Under the stop policy, whether an item before `item` failed.
    pub fn stopped_before(&self, item: usize) -> bool {
        self.policy == ErrorPolicy::Stop && self.first_failure.load(Ordering::Relaxed) < item
    }

    /// Records a failure of the engine itself (the cache under a strict
    /// map, a broken plan), which fails the whole map; the first one wins.
    pub fn fail_map(&self, error: Error) {
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error);
    }

    /// The failure of the whole map, if any, taken out.
    pub fn take_map_failure(&self) -> Option<Error> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The failures of the items `wanted` accepts, taken out (the others
    /// stay).
    pub fn take_failures_of(&self, wanted: impl Fn(usize) -> bool) -> Vec<(usize, Error)> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *failures)
            .into_iter()
            .partition(|(i, _)| wanted(*i));
        *failures = kept;
        taken
    }

    /// Adds `counts` to node `node`'s tally.
    pub fn tally(&self, node: &str, counts: crate::observe::callback::NodeCounts) {
        let mut tallies = self.node_counts.lock().unwrap_or_else(|e| e.into_inner());
        match tallies.iter_mut().find(|(n, _)| n == node) {
            Some((_, c)) => {
                c.computed += counts.computed;
                c.cached += counts.cached;
            }
            None => tallies.push((node.to_string(), counts)),
        }
    }

    /// The tallies per node since they were last taken, taken out.
    pub fn take_node_counts(&self) -> Vec<(String, crate::observe::callback::NodeCounts)> {
        std::mem::take(&mut *self.node_counts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The failed items with their errors, by item, taken out.
    pub fn take_failures(&self) -> Vec<(usize, Error)> {
        let mut failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        failures.sort_by_key(|(i, _)| *i);
        failures
    }

    /// Per-item start times for a map with `scopes` inlined pipelines,
    /// allocated on first use (only observed maps need them).
    pub fn times(&self, scopes: usize) -> &ItemTimes {
        self.times.get_or_init(|| ItemTimes::new(self.len, scopes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(item: usize) -> Error {
        Error::Internal {
            message: format!("item {item}"),
        }
    }

    #[test]
    fn stop_skips_only_after_the_earliest_failure() {
        let state = MapState::new(200, ErrorPolicy::Stop);
        state.fail(130, failure(130));
        state.fail(70, failure(70));
        assert!(state.failed(70) && state.failed(130) && !state.failed(71));
        assert!(!state.skip(69) && state.skip(70) && state.skip(71));
        let failures = state.take_failures();
        assert_eq!(
            failures.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [70, 130]
        );
    }

    #[test]
    fn item_times_keep_the_first_mark_exactly() {
        let state = MapState::new(4, ErrorPolicy::Continue);
        let times = state.times(2);
        let first = Moment::now();
        times.start_at(1, first);
        times.start_at(1, first.after_counts(5_000).unwrap());
        assert_eq!(times.started(1), Some(first), "the first mark stays");
        assert_eq!(times.started(0), None);
        assert_eq!(times.started(9), None, "beyond the map: none");
        times.enter_at(2, 3, first);
        assert_eq!(times.entered(2, 3), Some(first));
        assert_eq!(times.entered(1, 3), None, "another scope: none");
        assert_eq!(times.entered(7, 3), None);
    }

    #[test]
    fn continue_skips_only_failed_items() {
        let state = MapState::new(10, ErrorPolicy::Continue);
        state.fail(3, failure(3));
        assert!(state.skip(3) && !state.skip(4) && !state.stopped_before(9));
        state.fail_map(failure(99));
        state.fail_map(failure(100));
        assert_eq!(
            state.take_map_failure().map(|e| e.to_string()),
            Some("internal error: item 99".to_string())
        );
    }
}
