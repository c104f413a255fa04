//! Engines: strategies for executing pipelines, all with the same results.
//!
//! An engine decides how the items of a `map` are scheduled; the graph walk,
//! node calls, events and result assembly are shared ([`MapJob`]). The
//! reference is [`SeqEngine`]: one item, one node at a time, in order.
//! [`ParallelEngine`] spreads items over all cores and returns the same
//! results in the same order.
//!
//! One room per job:
//! - `scope`: an execution's place (pipeline path, items) and the graph walk
//!   for one item; `run`: a single run; `nested`: pipeline nodes and
//!   `map_over`;
//! - `invoke`: calling a node (attempts, retries, panics, async calls under
//!   their bounds);
//! - `job`: a map (items, chunks, the result); `state`: what a map knows of
//!   its items as it runs (failures, the stop policy, start times); `flush`:
//!   writing results while a map runs;
//! - `columnar`: the map column by column, lowered to `ColumnarStep`s — THE
//!   cached step, over Arrow columns: `DataFusionEngine` runs it in its
//!   plan, the row engines chunk by chunk (`columnar::local`); `flat`: the
//!   steps with nested pipelines inlined; `spi`: what columnar engines call;
//!   `remote`: a step of a plan built in another process, run by a job
//!   around one node;
//! - `kernel`: the cached step over rows of values, for runs and maps with
//!   a value that has no Arrow form (cached runs otherwise go through the
//!   columnar steps too, as a map of one item);
//! - `runtime`: the async runtime and its limits; the strategies `seq` and
//!   `parallel`.

pub mod columnar;
pub(crate) mod flat;
mod flush;
mod invoke;
mod job;
pub(crate) mod kernel;
mod nested;
mod parallel;
mod remote;
mod run;
pub(crate) mod runtime;
mod scope;
mod seq;
mod spi;
mod state;

pub(crate) use flush::*;
pub(crate) use job::*;
pub use job::{Chunk, ItemOutput, MapJob};
pub use parallel::ParallelEngine;
pub use remote::StepLayout;
pub use run::RunJob;
pub use scope::Exec;
pub(crate) use scope::*;
pub use seq::SeqEngine;
pub use state::{ItemTimes, MapState};

use crate::error::Error;
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
    fn map(&self, job: &std::sync::Arc<MapJob>) -> Result<MapResult, Error>;

    /// Whether this engine reads Parquet files itself: a table map over
    /// Parquet files then runs as one [`Engine::map_scan`] instead of a
    /// `map` per chunk.
    fn scans_parquet(&self) -> bool {
        false
    }

    /// Runs `job` over the files of `scan` as one plan, handing `emit` the
    /// plan's batches as they come (see [`columnar::TableScan`] for their
    /// layout). Only called when [`Engine::scans_parquet`] says so; an
    /// error from `emit` (the reader went away) ends the plan.
    fn map_scan(
        &self,
        job: &std::sync::Arc<MapJob>,
        scan: &columnar::TableScan,
        emit: &mut (dyn FnMut(arrow_array::RecordBatch) -> Result<(), Error> + Send),
    ) -> Result<(), Error> {
        let _ = (job, scan, emit);
        Err(Error::Engine {
            message: format!(
                "engine `{}` does not read Parquet files itself",
                self.name()
            ),
        })
    }
}
