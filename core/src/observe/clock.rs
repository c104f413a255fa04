//! The clock that times events: node calls, items, nested runs and maps.
//!
//! A callback that takes per-item events gets each node call's own
//! duration, so the row engines read this clock once per node and item.
//! The OS clock costs about 32 ns a reading on a virtual machine (the vDSO
//! path with its ordering fence and conversion), more than half a quick
//! node's own work; this clock reads the CPU's time-stamp counter where it
//! is invariant and falls back to the OS monotonic clock elsewhere. A
//! reading keeps the raw count (one instruction, no conversion); counts
//! become durations only when two readings are subtracted, which is rarer
//! (a row walk reads the clock once per node and takes one difference per
//! node). The conversion is calibrated against the OS clock once per
//! process, on the first reading (under a millisecond here), and agrees
//! with it to a few microseconds over seconds.
//!
//! Only event timings use it; deadlines, flush intervals and chunk sizing
//! keep `std::time::Instant`.

use std::sync::OnceLock;
use std::time::Duration;

/// The process's event clock, calibrated on first use.
#[inline]
fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A reading of the event clock (see the module docs): a raw count of the
/// clock's source, comparable with other readings of the same process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

impl Moment {
    /// The clock now.
    #[inline]
    pub fn now() -> Self {
        Moment(clock().raw())
    }

    /// The time since this reading.
    #[inline]
    pub fn elapsed(self) -> Duration {
        Self::now() - self
    }

    /// The time from `earlier` to this reading, zero if `earlier` is later.
    #[inline]
    pub fn saturating_duration_since(self, earlier: Moment) -> Duration {
        clock().delta(earlier.0, self.0)
    }

    /// How many counts of the clock's source this reading is after
    /// `earlier` (zero if it is not): a compact, exact offset to store.
    #[inline]
    pub(crate) fn counts_since(self, earlier: Moment) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The reading `counts` counts after this one ([`Moment::counts_since`]
    /// undone), if it can be represented.
    #[inline]
    pub(crate) fn after_counts(self, counts: u64) -> Option<Moment> {
        self.0.checked_add(counts).map(Moment)
    }
}

impl std::ops::Sub for Moment {
    type Output = Duration;

    /// The time from `earlier` to this reading, zero if `earlier` is later.
    #[inline]
    fn sub(self, earlier: Moment) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_advance_and_agree_with_the_os_clock() {
        let (a, os) = (Moment::now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(200));
        let (b, os_took) = (Moment::now(), os.elapsed());
        assert!(b >= a);
        let took = b - a;
        let gap = took.abs_diff(os_took);
        // A tenth: a wrong calibration is off by far more; a preempted
        // reading pair by less.
        assert!(
            gap < Duration::from_millis(20),
            "{took:?} against {os_took:?}"
        );
        assert_eq!(a - b, Duration::ZERO, "saturating");
        let counts = b.counts_since(a);
        assert!(counts > 0);
        assert_eq!(a.after_counts(counts), Some(b), "offsets are exact");
        assert_eq!(a.counts_since(b), 0, "saturating");
        assert_eq!(b.after_counts(u64::MAX), None);
        assert!(a.elapsed() >= took);
    }
}
