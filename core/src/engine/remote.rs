//! A node step that arrived from another process: the map job a process
//! builds around one node of its registry when it runs part of a plan built
//! elsewhere (a decoded DataFusion plan, a Ballista task). The job has no
//! mapped lists of its own — the plan brings the rows — but it calls the
//! node exactly as the job that built the plan would: the same attempts,
//! retries, panics as errors, async bounds, nested pipelines and `map_over`,
//! errors named with the step's pipeline path, results stored in the cache
//! opened from the plan's cache location and written as the map goes.

use std::sync::Arc;

use crate::cache::Cache;
use crate::error::Error;
use crate::map::{ErrorPolicy, MapOptions};
use crate::node::Node;
use crate::pipeline::Pipeline;
use crate::value::Value;

use super::*;

/// Where a step's node reads its arguments and writes its outputs in the
/// slot table of the job built by [`MapJob::for_node`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepLayout {
    /// Slots per row.
    pub slot_count: usize,
    /// The slot of each of the node's inputs, in the node's input order.
    pub args: Vec<usize>,
    /// The slot of each of the node's outputs, in its output order.
    pub outs: Vec<Option<usize>>,
}

impl MapJob {
    /// A job of `len` items for node `node` alone, in a pipeline whose
    /// path (for errors and events) is `path`, with `cache` (where results
    /// are looked up and stored) and the error policy `policy`. Its only
    /// step is step 0 ([`MapJob::call_step_rows`], [`MapJob::step_error`],
    /// [`MapJob::stored`] …); [`MapJob::step_layout`] says where that step
    /// reads and writes. Call [`MapJob::close`] when the plan has run.
    pub fn for_node(
        node: &Node,
        path: Vec<String>,
        cache: Option<Arc<dyn Cache>>,
        len: usize,
        policy: ErrorPolicy,
    ) -> Result<Arc<MapJob>, Error> {
        let pipeline = Pipeline::new([node.clone()])?;
        let plan = pipeline.compile(None)?;
        let slot_count = plan.slot_count;
        let mut exec = Exec::root(Arc::new(pipeline), Arc::new(plan), Arc::new(SeqEngine));
        if !path.is_empty() {
            exec.path = path;
        }
        exec.cache = cache;
        let options = MapOptions::default().on_error(policy);
        Ok(Arc::new(MapJob::from_parts(
            Arc::new(exec),
            vec![None; slot_count],
            Vec::new(),
            len,
            &options,
        )))
    }

    /// A job of one item for a single `run` in `exec`, whose inputs are the
    /// filled `slots`: every input is fixed, the item's path is the run's,
    /// and it fires no map-item events. A cached run goes through the
    /// columnar steps with it, as a map's items do.
    pub(crate) fn for_run(exec: &Exec, slots: Vec<Option<Value>>) -> Arc<MapJob> {
        let mut exec = exec.clone();
        let path: smallvec::SmallVec<[usize; 4]> = exec.items.iter().copied().collect();
        exec.item_map = Some(Arc::from(vec![path]));
        let mut job =
            MapJob::from_parts(Arc::new(exec), slots, Vec::new(), 1, &MapOptions::default());
        job.item_events = false;
        Arc::new(job)
    }

    /// Where step `step` reads its arguments and writes its outputs.
    pub fn step_layout(&self, step: usize) -> Result<StepLayout, Error> {
        let (_, _, fs) = self.step_at(step)?;
        Ok(StepLayout {
            slot_count: self.flat().slot_count,
            args: fs.args.clone(),
            outs: fs.outs.clone(),
        })
    }

    /// Ends a job built by [`MapJob::for_node`] (or any job whose engine
    /// ran it without [`Pipeline::map`]): waits for the writes still
    /// running, writes what its cache buffered, and returns the cache
    /// failures the job went on without.
    pub fn close(&self) -> Result<Vec<Error>, Error> {
        let mut written = self.wait_for_flush();
        if written.is_ok()
            && let Some(cache) = &self.exec.cache
            && let Err(e) = cache.flush()
        {
            written = self.cache_failed(None, e);
        }
        written?;
        Ok(self.take_cache_errors())
    }
}
