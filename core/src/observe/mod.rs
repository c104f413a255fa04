//! Observing runs: events as data ([`Recorder`]) beside the [`Callback`]
//! trait they are built on, and the cache log that `LOG_HYPERNODES_CACHE`
//! turns on. Progress bars, tracing spans and the cached/computed colouring
//! of a graph belong here too, all built on the same events.
//!
//! [`Callback`]: crate::Callback

pub(crate) mod cache_log;
pub mod callback;
mod recorder;

pub use recorder::{Event, EventKind, Recorder};
