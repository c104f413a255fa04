//! The process's cache writers: a few long-lived threads on which the
//! engines' background flushes ([`Cache::begin_flush`](super::Cache::begin_flush))
//! and a [`DiskCache`](super::DiskCache)'s segment writes run.
//!
//! A thread started per write costs a stack and a fresh allocator heap each
//! time (a cold map of 10M items started over a thousand), and whatever
//! the short-lived thread's heap held goes back to the operating system
//! when it exits, to be faulted in again by the next one. Long-lived
//! writers keep their memory warm from one segment to the next.
//!
//! Jobs run here never wait for one another except through the pool
//! itself (a flush writing its datasets in parallel), and only take the
//! cache's locks briefly, so a full pool delays a write but cannot block
//! it for good.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::mpsc;

use rayon::prelude::*;

use super::{CacheError, PendingWrite};

/// The writer threads: as many as there are cores, at least two (one write
/// can wait for the disk while the other encodes). `None` if the threads
/// could not be started; writes then get a thread each, as a fallback.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hypernodes-writer-{i}"))
            .build()
            .inspect_err(|e| log::warn!("hypernodes cache: no writer threads ({e}); one per write"))
            .ok()
    })
    .as_ref()
}

/// The error of a write (to `path`, when known) that panicked.
fn panicked(path: PathBuf, what: &str) -> CacheError {
    CacheError::Io {
        path,
        source: std::io::Error::other(format!("{what} panicked")),
    }
}

/// A write started by [`start`]; [`Started::wait`] gives its outcome.
pub(crate) struct Started(mpsc::Receiver<Result<(), CacheError>>);

impl Started {
    /// Waits for the write to end and gives its outcome (a panic in it is
    /// an error).
    pub(crate) fn wait(self) -> Result<(), CacheError> {
        self.0
            .recv()
            .unwrap_or_else(|_| Err(panicked(PathBuf::new(), "the cache writer")))
    }
}

/// Starts `write` on a writer thread.
pub(crate) fn start(write: PendingWrite) -> Started {
    let (done, outcome) = mpsc::sync_channel(1);
    let job = move || {
        let result = catch_unwind(AssertUnwindSafe(write))
            .unwrap_or_else(|_| Err(panicked(PathBuf::new(), "the cache writer")));
        // The receiver may be gone (its map ended in an error): nothing waits.
        let _ = done.send(result);
    };
    match pool() {
        Some(pool) => pool.spawn(job),
        None => {
            if let Err(e) = std::thread::Builder::new().spawn(job) {
                let (done, outcome) = mpsc::sync_channel(1);
                let _ = done.send(Err(CacheError::Io {
                    path: PathBuf::new(),
                    source: e,
                }));
                return Started(outcome);
            }
        }
    }
    Started(outcome)
}

/// `write` over each of `items` (a directory and what to write there) on
/// the writer threads, outcomes in order; a panic in one is its error,
/// naming its directory.
pub(crate) fn each<T: Send>(
    items: Vec<(PathBuf, T)>,
    write: impl Fn(PathBuf, T) -> Result<(), CacheError> + Sync + Send,
) -> Vec<Result<(), CacheError>> {
    let one = |(dir, item): (PathBuf, T)| {
        let named = dir.clone();
        catch_unwind(AssertUnwindSafe(|| write(dir, item)))
            .unwrap_or_else(|_| Err(panicked(named, "a segment write")))
    };
    match pool() {
        Some(pool) if items.len() > 1 => pool.install(|| items.into_par_iter().map(one).collect()),
        _ => items.into_iter().map(one).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_run_on_long_lived_threads_and_a_panic_is_an_error() {
        let names = std::sync::Mutex::new(std::collections::HashSet::new());
        for _ in 0..50 {
            let items = (0..4)
                .map(|i| (PathBuf::from(format!("d{i}")), i))
                .collect();
            let out = each(items, |_, i: i32| {
                let name = std::thread::current().name().map(str::to_string);
                names.lock().unwrap().insert(name);
                if i == 2 {
                    panic!("boom");
                }
                Ok(())
            });
            assert!(out[0].is_ok() && out[1].is_ok() && out[3].is_ok());
            let e = out[2].as_ref().unwrap_err().to_string();
            assert!(
                e.contains("a segment write panicked") && e.contains("d2"),
                "{e}"
            );
        }
        let names = names.into_inner().unwrap();
        // 200 writes on at most as many threads as the pool has.
        assert!(
            names.len() <= pool().unwrap().current_num_threads(),
            "{names:?}"
        );
        assert!(
            names.iter().all(|n| n
                .as_deref()
                .is_some_and(|n| n.starts_with("hypernodes-writer-"))),
            "{names:?}"
        );
        let started = start(Box::new(|| panic!("boom")));
        let e = started.wait().unwrap_err().to_string();
        assert!(e.contains("the cache writer panicked"), "{e}");
        let fine = start(Box::new(|| Ok(())));
        assert!(fine.wait().is_ok());
    }
}
