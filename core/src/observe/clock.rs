//! The clock that times events: node calls, items, nested runs and maps.
//!
//! A callback that takes per-item events gets each node call's own
//! duration, so the row engines read this clock once per node and item.
//! The OS clock costs about 32 ns a reading on a virtual machine (the vDSO
//! path with its ordering fence and conversion), more than half a quick
//! node's own work; this clock reads the CPU's time-stamp counter where it
//! is invariant (one reading and a multiply, about 10 ns) and falls back to
//! the OS monotonic clock elsewhere. It is calibrated against the OS clock
//! once per process, on its first reading (under a millisecond here), and
//! agrees with it to a few microseconds over seconds.
//!
//! Only event timings use it; deadlines, flush intervals and chunk sizing
//! keep `std::time::Instant`.

use std::time::Duration;

/// A reading of the event clock (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(quanta::Instant);

impl Moment {
    /// The clock now.
    #[inline]
    pub fn now() -> Self {
        Moment(quanta::Instant::now())
    }

    /// The time since this reading.
    #[inline]
    pub fn elapsed(self) -> Duration {
        Self::now() - self
    }

    /// The time from `earlier` to this reading, zero if `earlier` is later.
    #[inline]
    pub fn saturating_duration_since(self, earlier: Moment) -> Duration {
        self.0.saturating_duration_since(earlier.0)
    }

    /// This reading moved `later` forward, if it can be represented.
    #[inline]
    pub fn checked_add(self, later: Duration) -> Option<Moment> {
        self.0.checked_add(later).map(Moment)
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
        assert_eq!(a.checked_add(took).map(|m| m - a), Some(took));
        assert!(a.elapsed() >= took);
    }
}
