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
            let work = || {
                rayon::scope(|s| {
                    for _ in 0..rayon::current_num_threads() {
                        s.spawn(|_| {
                            let mut previous = None;
                            loop {
                                let size = job.next_chunk_size(previous);
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
