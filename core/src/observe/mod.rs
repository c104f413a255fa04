//! Observing runs: events as data ([`Recorder`]) beside the [`Callback`]
//! trait they are built on, and the cache log that `LOG_HYPERNODES_CACHE`
//! turns on, and progress bars (`Progress`, feature `progress`). Tracing
//! spans and the cached/computed colouring of a graph are built on the same
//! events.
//!
//! [`Callback`]: crate::Callback

pub(crate) mod cache_log;
pub mod callback;
pub mod clock;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "progress")]
mod progress;
mod recorder;
pub mod trace;

#[cfg(feature = "progress")]
pub use progress::{Progress, ProgressWriter};

pub use recorder::{Event, EventKind, Recorder};

/// `1234567` as `1,234,567`: counts as progress lines and graph labels
/// show them.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_grouped_by_thousands() {
        use super::thousands;
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
