//! [`SeqEngine`]: the reference strategy, one chunk after another.

use super::{Engine, MapJob};
use crate::error::Error;
use crate::map::MapResult;

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

    fn map(&self, job: &std::sync::Arc<MapJob>) -> Result<MapResult, Error> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut previous = None;
        while start < job.len() {
            let size = job.next_chunk_size(previous);
            let end = (start + size).min(job.len());
            let began = std::time::Instant::now();
            let chunk = job.run_chunk(start..end);
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
