//! [`ParallelEngine`]: chunks of items on all cores (rayon).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::{Engine, MapJob};
use crate::error::Error;
use crate::map::MapResult;

/// Runs the items of a `map` on all cores (rayon), with the same results in
/// the same order as [`SeqEngine`](super::SeqEngine). A single `run` executes sequentially.
#[derive(Clone, Debug, Default)]
pub struct ParallelEngine {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl ParallelEngine {
    /// Uses rayon's global pool (one thread per core).
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses a dedicated pool of `threads` threads.
    pub fn with_threads(threads: usize) -> Result<Self, Error> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hypernodes-{i}"))
            .build()
            .map_err(|e| Error::external(format!("cannot start a pool of {threads} threads"), e))?;
        Ok(ParallelEngine {
            pool: Some(Arc::new(pool)),
        })
    }
}

/// How long a small map runs on the calling thread before the rest of its
/// items spread over every core (see [`ParallelEngine::map_small`]).
pub(crate) const SPREAD_AFTER: std::time::Duration = std::time::Duration::from_millis(1);

impl ParallelEngine {
    /// Runs a map that is probably small: chunks of 8, 16, 32, ... items in
    /// order on the calling thread, so a map that takes microseconds wakes
    /// no other thread; once it has run for a millisecond with items
    /// left, every thread of the pool claims the rest. Results, events and
    /// cache entries are those of any other engine (each chunk is
    /// [`MapJob::run_chunk`]). `DataFusionEngine` runs its small maps so.
    pub fn map_small(&self, job: &std::sync::Arc<MapJob>) -> Result<MapResult, Error> {
        let next = AtomicUsize::new(0);
        let chunks = std::sync::Mutex::new(Vec::new());
        let began = std::time::Instant::now();
        let mut size = 8usize;
        while began.elapsed() < SPREAD_AFTER {
            let start = next.fetch_add(size, Ordering::Relaxed);
            if start >= job.len() || job.state().stopped_before(start) {
                return job.assemble(chunks.into_inner().unwrap_or_else(|e| e.into_inner()));
            }
            let chunk = job.run_chunk(start..(start + size).min(job.len()));
            let stopped = chunk.failed();
            chunks.lock().unwrap_or_else(|e| e.into_inner()).push(chunk);
            if stopped {
                return job.assemble(chunks.into_inner().unwrap_or_else(|e| e.into_inner()));
            }
            size = size.saturating_mul(2);
        }
        // What is left, in a few chunks per thread.
        let left = job.len().saturating_sub(next.load(Ordering::Relaxed));
        let threads = match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        };
        let share = left.div_ceil(threads * 4).max(1);
        self.claim_all(job, &next, &chunks, |_| share);
        job.assemble(chunks.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every thread of the pool claims chunks of `job` from `next` (each
    /// sized by `size` from the thread's previous chunk) until none is
    /// left or the map stopped, into `chunks`.
    fn claim_all(
        &self,
        job: &std::sync::Arc<MapJob>,
        next: &AtomicUsize,
        chunks: &std::sync::Mutex<Vec<crate::engine::Chunk>>,
        size: impl Fn(Option<(usize, std::time::Duration)>) -> usize + Sync,
    ) {
        let work = || {
            rayon::scope(|s| {
                for _ in 0..rayon::current_num_threads() {
                    s.spawn(|_| {
                        let mut previous = None;
                        loop {
                            let size = size(previous);
                            let start = next.fetch_add(size, Ordering::Relaxed);
                            let stopped = job.state().stopped_before(start);
                            if start >= job.len() || stopped {
                                break;
                            }
                            let end = (start + size).min(job.len());
                            let began = std::time::Instant::now();
                            let chunk = job.run_chunk(start..end);
                            previous = Some((end - start, began.elapsed()));
                            chunks.lock().unwrap_or_else(|e| e.into_inner()).push(chunk);
                        }
                    });
                }
            })
        };
        match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }
}

impl Engine for ParallelEngine {
    fn name(&self) -> &str {
        "parallel"
    }

    fn map(&self, job: &std::sync::Arc<MapJob>) -> Result<MapResult, Error> {
        if job.exec().cache.is_some() {
            // With a cache, each worker claims chunks sized to its own pace
            // (see `MapJob::next_chunk_size`), so results reach the cache
            // as the map goes whatever an item costs.
            let next = AtomicUsize::new(0);
            let chunks = std::sync::Mutex::new(Vec::new());
            self.claim_all(job, &next, &chunks, |previous| {
                job.next_chunk_size(previous)
            });
            return job.assemble(chunks.into_inner().unwrap_or_else(|e| e.into_inner()));
        }
        let work = || {
            let size = job.chunk_size(rayon::current_num_threads());
            let starts: Vec<usize> = (0..job.len()).step_by(size).collect();
            starts
                .into_par_iter()
                .map(|start| job.run_chunk(start..(start + size).min(job.len())))
                .collect::<Vec<_>>()
        };
        let chunks = match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        };
        job.assemble(chunks)
    }
}
