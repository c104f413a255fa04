//! Engines: strategies for executing pipelines, all with the same results.
//!
//! An engine decides how the items of a `map` are scheduled; the graph walk,
//! node calls, events and result assembly are shared ([`MapJob`]). The
//! reference is [`SeqEngine`]: one item, one node at a time, in order.
//! [`ParallelEngine`] spreads items over all cores and returns the same
//! results in the same order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::error::Error;
use crate::exec::{MapJob, RunJob};
use crate::io::Outputs;
use crate::map::{ErrorPolicy, MapResult};

/// A strategy for executing pipelines.
pub trait Engine: Send + Sync {
    /// The engine's name, for events and errors.
    fn name(&self) -> &str;

    /// Executes a single run. The default walks the graph once.
    fn run(&self, job: RunJob<'_>) -> Result<Outputs, Error> {
        job.execute()
    }

    /// Executes a map: every item of `job`, then [`MapJob::collect`].
    fn map(&self, job: &MapJob<'_>) -> Result<MapResult, Error>;
}

/// The reference engine: items in order, nodes in topological order, one at
/// a time. Stops at the first failing item unless the map continues on error.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqEngine;

impl Engine for SeqEngine {
    fn name(&self) -> &str {
        "seq"
    }

    fn map(&self, job: &MapJob<'_>) -> Result<MapResult, Error> {
        let stop = job.policy() == ErrorPolicy::Stop;
        let mut results = Vec::with_capacity(job.len());
        for i in 0..job.len() {
            let r = job.run_item(i);
            let failed = r.is_err();
            results.push((i, r));
            if failed && stop {
                break;
            }
        }
        job.collect(results)
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
            .map_err(|e| Error::Engine {
                message: format!("cannot start a pool of {threads} threads: {e}"),
            })?;
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
        let stop_on_error = job.policy() == ErrorPolicy::Stop;
        let stopped = AtomicBool::new(false);
        let work = || {
            (0..job.len())
                .into_par_iter()
                .filter_map(|i| {
                    if stop_on_error && stopped.load(Ordering::Relaxed) {
                        return None;
                    }
                    let r = job.run_item(i);
                    if r.is_err() && stop_on_error {
                        stopped.store(true, Ordering::Relaxed);
                    }
                    Some((i, r))
                })
                .collect::<Vec<_>>()
        };
        let results = match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        };
        job.collect(results)
    }
}
