//! Engines: strategies for executing pipelines, all with the same results.
//!
//! An engine decides how the items of a `map` are scheduled; the graph walk,
//! node calls, events and result assembly are shared ([`MapJob`]). The
//! reference is [`SeqEngine`]: one item, one node at a time, in order.
//! [`ParallelEngine`] spreads items over all cores and returns the same
//! results in the same order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::error::Error;
use crate::exec::{MapJob, RunJob};
use crate::io::Outputs;
use crate::map::MapResult;

/// A strategy for executing pipelines.
pub trait Engine: Send + Sync {
    /// The engine's name, for events and errors.
    fn name(&self) -> &str;

    /// Executes a single run. The default walks the graph once.
    fn run(&self, job: RunJob<'_>) -> Result<Outputs, Error> {
        job.execute()
    }

    /// Executes a map: every item of `job` through [`MapJob::run_chunk`],
    /// then [`MapJob::assemble`].
    fn map(&self, job: &MapJob<'_>) -> Result<MapResult, Error>;
}

/// The reference engine: items in order, nodes in topological order, one at
/// a time. Stops at the first failing item unless the map continues on error.
///
/// Two cases run a batch of items node by node instead (each node for the
/// whole batch, items in order, before the next node), with the same
/// results: a map with a cache (so lookups and stores are batched), and a
/// map whose pipeline has an `async` node (so up to the node's
/// [`concurrency`](crate::Node::concurrency) calls wait at once; they start
/// in item order and end as they finish).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqEngine;

impl Engine for SeqEngine {
    fn name(&self) -> &str {
        "seq"
    }

    fn map(&self, job: &MapJob<'_>) -> Result<MapResult, Error> {
        let first_failure = AtomicUsize::new(usize::MAX);
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut previous = None;
        while start < job.len() {
            let size = job.next_chunk_size(previous);
            let end = (start + size).min(job.len());
            let began = std::time::Instant::now();
            let chunk = job.run_chunk(start..end, &first_failure);
            previous = Some((end - start, began.elapsed()));
            let failed = chunk.failed();
            chunks.push(chunk);
            if failed {
                break;
            }
            start = end;
        }
        job.assemble(chunks)
    }
}

/// Runs the items of a `map` on all cores (rayon), with the same results in
/// the same order as [`SeqEngine`]. A single `run` executes sequentially.
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

impl Engine for ParallelEngine {
    fn name(&self) -> &str {
        "parallel"
    }

    fn map(&self, job: &MapJob<'_>) -> Result<MapResult, Error> {
        let first_failure = AtomicUsize::new(usize::MAX);
        if job.exec().cache.is_some() {
            // With a cache, each worker claims chunks sized to its own pace
            // (see `MapJob::next_chunk_size`), so results reach the cache
            // as the map goes whatever an item costs.
            let next = AtomicUsize::new(0);
            let chunks = std::sync::Mutex::new(Vec::new());
            let work = || {
                rayon::scope(|s| {
                    for _ in 0..rayon::current_num_threads() {
                        s.spawn(|_| {
                            let mut previous = None;
                            loop {
                                let size = job.next_chunk_size(previous);
                                let start = next.fetch_add(size, Ordering::Relaxed);
                                let stopped = job.policy() == crate::map::ErrorPolicy::Stop
                                    && first_failure.load(Ordering::Relaxed) < start;
                                if start >= job.len() || stopped {
                                    break;
                                }
                                let end = (start + size).min(job.len());
                                let began = std::time::Instant::now();
                                let chunk = job.run_chunk(start..end, &first_failure);
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
            return job.assemble(chunks.into_inner().unwrap_or_else(|e| e.into_inner()));
        }
        let work = || {
            let size = job.chunk_size(rayon::current_num_threads());
            let starts: Vec<usize> = (0..job.len()).step_by(size).collect();
            starts
                .into_par_iter()
                .map(|start| job.run_chunk(start..(start + size).min(job.len()), &first_failure))
                .collect::<Vec<_>>()
        };
        let chunks = match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        };
        job.assemble(chunks)
    }
}
