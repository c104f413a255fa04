//! HyperNodes on Apache DataFusion: a `map` lowered to a columnar plan.
//!
//! [`DataFusionEngine`] turns a pipeline's `map` into a DataFusion plan (see
//! the `lower` module for its shape): the mapped inputs become a table, each
//! node a batched scalar UDF over Arrow columns, preceded by a per-row
//! signature column computed exactly as the row engines compute it. Inside
//! a node's UDF the cached rows for a batch's signatures are joined in from
//! the store (the same [`Cache`](hypernodes_core::Cache) the row engines
//! use, so results are shared both ways), only the other rows call the node,
//! and their results are stored. A node is called once per batch of
//! missing rows: through its batch implementation if it has one, else
//! through the typed row loop `#[node]` generates
//! ([`hypernodes_core::rows`]); closures built at run time are called row
//! by row, and async functions with up to their
//! [`Node::concurrency`](hypernodes_core::Node::concurrency) rows in flight
//! (one bound for the node across all partitions). Nested
//! pipelines are inlined into the plan (see `hypernodes_core`'s `flat`
//! module), and a `map_over` node runs one inner map over the elements of
//! all the rows of a batch. With callbacks attached the plan stays the
//! same: batch and row-loop calls, and inlined pipelines, fire each item's
//! events in the order the row engines do. DataFusion runs the batches over
//! all cores. A table map over Parquet files
//! ([`Pipeline::map_table`](hypernodes_core::Pipeline::map_table)) is one
//! plan whose source is a scan of the files (read in order as one
//! partition, its rows numbered as the map's items, then spread over all
//! cores) and whose batches stream back to the table map as they come: no
//! table of the whole input is made. `run` uses
//! the reference row path (one item gains nothing from a plan).
//!
//! ```no_run
//! # use hypernodes_core::{Pipeline, Inputs};
//! # fn demo(pipeline: Pipeline, texts: Vec<String>) -> Result<(), hypernodes_core::Error> {
//! use hypernodes_datafusion::DataFusionEngine;
//! let result = pipeline
//!     .with_engine(DataFusionEngine::new())
//!     .map(Inputs::new().with("text", texts), ["text"])?;
//! # Ok(()) }
//! ```

mod codec;
mod lower;
mod scan;
mod udf;

pub use codec::{DecodedOutcome, NodeCodec};
/// The DataFusion this engine is built on (to run decoded plans with the
/// same version).
pub use datafusion;

use std::sync::OnceLock;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use hypernodes_core::{Engine, Error, Inputs, MapJob, MapOptions, MapResult, Pipeline};

/// Executes `map` as a DataFusion plan: one batched UDF per node, per-row
/// signature columns, cached rows joined in, only missing rows computed.
#[derive(Clone, Debug)]
pub struct DataFusionEngine {
    name: String,
    batch_size: usize,
    partitions: usize,
    small_map: usize,
    rows: hypernodes_core::ParallelEngine,
}

/// Maps of fewer items than this run on the row path by default (see
/// [`DataFusionEngine::with_small_map`]).
pub const SMALL_MAP: usize = 4096;

impl Default for DataFusionEngine {
    fn default() -> Self {
        DataFusionEngine {
            name: "datafusion".into(),
            batch_size: 8192,
            partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            small_map: SMALL_MAP,
            rows: hypernodes_core::ParallelEngine::new(),
        }
    }
}

impl DataFusionEngine {
    /// Batches of 8192 rows over as many partitions as there are cores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows per batch (each node's UDF sees at most this many at once).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Partitions the input table is split into (parallelism).
    pub fn with_target_partitions(mut self, partitions: usize) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Maps of fewer than `items` items (default [`SMALL_MAP`]) run on the
    /// row path instead of a plan: setting up a DataFusion plan costs about
    /// a millisecond, more than such a map's work when its nodes are
    /// quick. The row path
    /// ([`ParallelEngine::map_small`](hypernodes_core::ParallelEngine::map_small))
    /// runs the first chunks on the calling thread and spreads the rest
    /// over every core after a millisecond, so slow nodes still run in
    /// parallel. Results, events (counts arrive per chunk rather than per
    /// batch) and cache entries are the same as the plan's. `0`: every map
    /// runs as a plan. Table maps over Parquet files always do, and so do
    /// maps with a `map_over` step: their work grows with the lists'
    /// elements, which the plan maps as one column.
    pub fn with_small_map(mut self, items: usize) -> Self {
        self.small_map = items;
        self
    }

    /// The plan of a table map over Parquet files (what
    /// [`Engine::map_scan`] runs): for an engine that runs it elsewhere (a
    /// cluster). Its batches go through [`scan_batch`] before
    /// `map_scan`'s `emit`.
    pub fn lower_scan(
        &self,
        job: &std::sync::Arc<MapJob>,
        scan: &hypernodes_core::columnar::TableScan,
    ) -> Result<datafusion::dataframe::DataFrame, Error> {
        Ok(lower::lower_scan(self, job, scan)?.df)
    }

    /// The plan of `job` as a DataFrame, without running it: for an engine
    /// that plans or runs it elsewhere (a cluster's explain).
    pub fn lower_map(
        &self,
        job: &std::sync::Arc<MapJob>,
    ) -> Result<datafusion::dataframe::DataFrame, Error> {
        Ok(lower::lower(self, job)?.df)
    }

    /// The lowered plan of `pipeline.map(inputs, options)` (logical, then
    /// physical), without running it.
    pub fn explain(
        &self,
        pipeline: &Pipeline,
        inputs: Inputs,
        options: impl Into<MapOptions>,
    ) -> Result<String, Error> {
        self.inspect_lowered(pipeline, inputs, options, |lowered| {
            let logical = lowered.df.logical_plan().display_indent().to_string();
            let physical = block_on(lowered.df.create_physical_plan()).map_err(df_error)?;
            let physical = datafusion::physical_plan::displayable(physical.as_ref())
                .indent(false)
                .to_string();
            Ok(format!(
                "logical plan:\n{logical}\n\nphysical plan:\n{physical}"
            ))
        })
    }
}

impl DataFusionEngine {
    /// Lowers `pipeline.map(inputs, options)` without running it, and hands
    /// the lowered plan to `f` (an explain, an encoding).
    fn inspect_lowered<T>(
        &self,
        pipeline: &Pipeline,
        inputs: Inputs,
        options: impl Into<MapOptions>,
        f: impl FnOnce(lower::Lowered) -> Result<T, Error>,
    ) -> Result<T, Error> {
        pipeline.inspect_map(inputs, options, |job| f(lower::lower(self, job)?))
    }

    /// A DataFusion session set up as this engine's own (batch size,
    /// partitions, and an optimizer that never duplicates a node's UDF):
    /// where a process runs plans decoded with [`NodeCodec`], logical ones
    /// above all (they are optimized again there).
    pub fn session(&self) -> datafusion::prelude::SessionContext {
        lower::session(
            datafusion::prelude::SessionConfig::new()
                .with_batch_size(self.batch_size.max(1))
                .with_target_partitions(self.partitions.max(1)),
        )
    }

    /// The logical plan of `pipeline.map(inputs, options)` as bytes
    /// (`datafusion-proto`, with [`NodeCodec`], the input rows included):
    /// what a client sends a scheduler. Decode it with
    /// [`NodeCodec::decode_logical_plan`] in a [`DataFusionEngine::session`].
    pub fn encode_map_logical(
        &self,
        pipeline: &Pipeline,
        inputs: Inputs,
        options: impl Into<MapOptions>,
    ) -> Result<Vec<u8>, Error> {
        self.inspect_lowered(pipeline, inputs, options, |lowered| {
            let codec = NodeCodec::new(hypernodes_core::node::NodeRegistry::new());
            datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(
                lowered.df.logical_plan(),
                &codec,
            )
            .map(|bytes| bytes.to_vec())
            .map_err(df_error)
        })
    }

    /// The physical plan of `pipeline.map(inputs, options)` as bytes
    /// (`datafusion-proto`, with [`NodeCodec`]), for another process to
    /// decode with its node registry ([`NodeCodec::decode_plan`]) and run:
    /// every node step is described by data alone (node name and code
    /// hash, argument layout, fixed inputs as Arrow values, error policy,
    /// the cache as a location). The map's cache must be one another
    /// process can open (a [`DiskCache`](hypernodes_core::DiskCache)).
    pub fn encode_map(
        &self,
        pipeline: &Pipeline,
        inputs: Inputs,
        options: impl Into<MapOptions>,
    ) -> Result<Vec<u8>, Error> {
        self.inspect_lowered(pipeline, inputs, options, |lowered| {
            let physical = block_on(lowered.df.create_physical_plan()).map_err(df_error)?;
            let codec = NodeCodec::new(hypernodes_core::node::NodeRegistry::new());
            datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(physical, &codec)
                .map(|bytes| bytes.to_vec())
                .map_err(df_error)
        })
    }
}

/// The failed items a lowered map's plan gives back as data, from its
/// batches: where the plan was decoded (by a [`NodeCodec`], in another
/// process or a Ballista executor) each row whose item failed carries its
/// error in the plan's last column, `__errors` (JSON). A node failure comes
/// back as [`Error::NodeFailed`] naming node, pipeline path and item (its
/// own error as text); anything else as [`Error::Engine`] with the message.
pub fn failures(batches: &[arrow_array::RecordBatch]) -> Result<Vec<(usize, Error)>, Error> {
    let mut out = Vec::new();
    for batch in batches {
        let Some(errors) = batch
            .column_by_name(udf::Report::Errors.column())
            .and_then(|c| c.as_string_opt::<i32>())
        else {
            continue;
        };
        if errors.null_count() == errors.len() {
            continue;
        }
        let items = batch
            .column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| Error::Internal {
                message: "datafusion: the item column is not UInt64".into(),
            })?;
        for (r, text) in errors.iter().enumerate() {
            if let Some(text) = text {
                let wire: udf::FailureWire =
                    serde_json::from_str(text).map_err(|e| Error::external("a failed item", e))?;
                out.push((items.value(r) as usize, wire.into_error()));
            }
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

/// A batch of a table map's plan (see [`DataFusionEngine::lower_scan`]) as
/// [`Engine::map_scan`] hands it on: the failed items it carries
/// (`__errors`, see [`failures`]) recorded in `job`'s state, and that
/// column dropped.
pub fn scan_batch(
    job: &MapJob,
    batch: arrow_array::RecordBatch,
) -> Result<arrow_array::RecordBatch, Error> {
    take_reports(job, std::slice::from_ref(&batch))?;
    let schema = batch.schema();
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| {
            let name = schema.field(i).name();
            !udf::Report::ALL.iter().any(|r| r.column() == name)
        })
        .collect();
    Ok(batch.project(&keep)?)
}

/// What the rows of a lowered map's plan carry besides results, into
/// `job`: failed items into its state and, from a plan run elsewhere, the
/// items finished and the per-node counts (`__counts`) to its callbacks.
fn take_reports(job: &MapJob, batches: &[arrow_array::RecordBatch]) -> Result<(), Error> {
    for (item, error) in failures(batches)? {
        job.state().fail(item, error);
    }
    for batch in batches {
        let Some(counts) = batch
            .column_by_name(udf::Report::Counts.column())
            .and_then(|c| c.as_string_opt::<i32>())
        else {
            continue;
        };
        // A batch of a plan decoded elsewhere carries counts in its first
        // row (its items' events were not seen here).
        if counts.is_empty() || counts.is_null(0) {
            continue;
        }
        let n = batch.num_rows();
        job.report_items_batch(hypernodes_core::ItemCounts {
            started: n,
            ended: n,
        });
        for text in counts.iter().flatten() {
            let tallies: Vec<(String, usize, usize)> =
                serde_json::from_str(text).map_err(|e| Error::external("node counts", e))?;
            for (node, computed, cached) in tallies {
                job.report_node_counts(&node, hypernodes_core::NodeCounts { computed, cached });
            }
        }
    }
    Ok(())
}

/// A DataFusion session state with `config` set up as
/// [`DataFusionEngine::session`]'s (an optimizer that never duplicates a
/// node's UDF): for a process that plans lowered maps it did not lower (a
/// Ballista scheduler).
pub fn session_state(
    config: datafusion::prelude::SessionConfig,
) -> datafusion::execution::context::SessionState {
    lower::session_state(config)
}

/// A DataFusion error as ours: an error of ours that went through
/// DataFusion comes back as it was; DataFusion's own keep it as their cause.
fn df_error(e: datafusion::error::DataFusionError) -> Error {
    match e.find_root() {
        datafusion::error::DataFusionError::External(inner) if inner.is::<Error>() => match e {
            datafusion::error::DataFusionError::External(inner) => {
                match inner.downcast::<Error>() {
                    Ok(ours) => *ours,
                    Err(other) => Error::External {
                        what: "datafusion".into(),
                        source: other,
                    },
                }
            }
            e => Error::external("datafusion", e),
        },
        _ => Error::external("datafusion", e),
    }
}

/// A DataFusion `DataFrame` (a query over registered tables, a Parquet
/// scan, ...) as a [`Table`](hypernodes_core::table::Table) to map over:
/// its batches are produced as the map reads them, never all at once.
///
/// ```
/// use hypernodes_core::{Inputs, MapOptions, Pipeline, node};
/// use hypernodes_datafusion::{dataframe_table, datafusion::prelude::SessionContext};
///
/// #[node(output = "doubled")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// let ctx = SessionContext::new();
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// let df = rt.block_on(ctx.sql("SELECT column1 AS x FROM (VALUES (1), (2), (3))")).unwrap();
/// let table = dataframe_table(df).unwrap();
/// let out = Pipeline::new([double::node()]).unwrap()
///     .map_table(table, Inputs::new(), MapOptions::default()).unwrap()
///     .collect().unwrap();
/// assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
/// ```
pub fn dataframe_table(
    df: datafusion::dataframe::DataFrame,
) -> Result<hypernodes_core::table::Table, Error> {
    use futures::StreamExt;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let mut stream = block_on(df.execute_stream()).map_err(df_error)?;
    let batches =
        std::iter::from_fn(move || block_on(stream.next()).map(|batch| batch.map_err(df_error)));
    Ok(hypernodes_core::table::Table::from_reader(schema, batches))
}

/// Runs a future on the engine's runtime (created once per process). From
/// inside a tokio runtime (a nested pipeline mapped by a node of an outer
/// plan, or a caller's own runtime) it runs on a runtime of its own thread
/// instead, so the outer plan's blocked workers cannot starve it.
fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("hypernodes-datafusion")
            .enable_all()
            .build()
            .expect("a tokio runtime for DataFusion")
    });
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for a nested DataFusion plan")
                    .block_on(f)
            })
            .join()
        })
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    } else {
        rt.block_on(f)
    }
}

impl Engine for DataFusionEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn map(&self, job: &std::sync::Arc<MapJob>) -> Result<MapResult, Error> {
        if job.len() < self.small_map && !job.maps_over_lists() {
            return self.rows.map_small(job);
        }
        self.map_on(job, |df| block_on(df.collect()).map_err(df_error))
    }

    fn scans_parquet(&self) -> bool {
        true
    }

    /// One plan for the whole table: a scan of the files, in order, as the
    /// plan's source; its batches streamed to `emit` as they come.
    fn map_scan(
        &self,
        job: &std::sync::Arc<MapJob>,
        scan: &hypernodes_core::columnar::TableScan,
        emit: &mut (dyn FnMut(arrow_array::RecordBatch) -> Result<(), Error> + Send),
    ) -> Result<(), Error> {
        use futures::StreamExt;
        let df = self.lower_scan(job, scan)?;
        let streamed = block_on(async move {
            let mut stream = df.execute_stream().await.map_err(df_error)?;
            while let Some(batch) = stream.next().await {
                emit(scan_batch(job, batch.map_err(df_error)?)?)?;
            }
            Ok::<(), Error>(())
        });
        if let Some(fatal) = job.state().take_map_failure() {
            return Err(fatal);
        }
        streamed
    }
}

impl DataFusionEngine {
    /// Runs `job` as this engine does, with the lowered plan executed by
    /// `execute` (here, or on a cluster that decodes its UDFs with
    /// [`NodeCodec`]): lowers it, lets `execute` collect the plan's
    /// batches, and places each row by its item.
    pub fn map_on(
        &self,
        job: &std::sync::Arc<MapJob>,
        execute: impl FnOnce(
            datafusion::dataframe::DataFrame,
        ) -> Result<Vec<arrow_array::RecordBatch>, Error>,
    ) -> Result<MapResult, Error> {
        let lowered = lower::lower(self, job)?;
        let collected = execute(lowered.df);
        if let Some(fatal) = job.state().take_map_failure() {
            return Err(fatal);
        }
        let batches = collected?;
        // Items that failed where the plan ran (another process), and
        // what its nodes did, come back as data.
        take_reports(job, &batches)?;
        // Rows arrive in any order: place each by its item.
        let len = job.len();
        let items_of: Vec<&[u64]> = batches
            .iter()
            .map(|batch| {
                batch
                    .column(0)
                    .as_primitive_opt::<UInt64Type>()
                    .map(|a| &a.values()[..])
                    .ok_or_else(|| Error::Internal {
                        message: "datafusion: the item column is not UInt64".into(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut at: Vec<(usize, usize)> = vec![(usize::MAX, 0); len];
        for (b, items) in items_of.iter().enumerate() {
            for (r, item) in items.iter().enumerate() {
                if let Some(slot) = at.get_mut(*item as usize) {
                    *slot = (b, r);
                }
            }
        }
        if let Some(item) = at.iter().position(|(b, _)| *b == usize::MAX) {
            return Err(Error::Engine {
                message: format!("engine `{}` returned no row for item {item}", self.name),
            });
        }
        // Batches that each hold a run of consecutive items (zip mode:
        // the input table is cut into slices) are concatenated in item
        // order; other layouts are interleaved row by row.
        let mut runs: Vec<(u64, usize)> = Vec::with_capacity(batches.len());
        let mut consecutive = true;
        for (b, items) in items_of.iter().enumerate() {
            let Some(&first) = items.first() else {
                continue;
            };
            consecutive &= items.windows(2).all(|w| w[1] == w[0] + 1);
            runs.push((first, b));
        }
        runs.sort_unstable();
        let mut next = 0u64;
        for &(first, b) in &runs {
            consecutive &= first == next;
            next = first + batches[b].num_rows() as u64;
        }
        consecutive &= next == len as u64;
        let mut columns = Vec::with_capacity(lowered.outputs.len());
        for o in 0..lowered.outputs.len() {
            if consecutive && !runs.is_empty() {
                let arrays: Vec<&dyn arrow_array::Array> = runs
                    .iter()
                    .map(|&(_, b)| batches[b].column(o + 1).as_ref())
                    .collect();
                columns.push(
                    arrow_select::concat::concat(&arrays)
                        .map_err(|e| Error::external("merging the result batches", e))?,
                );
                continue;
            }
            let arrays: Vec<&dyn arrow_array::Array> =
                batches.iter().map(|b| b.column(o + 1).as_ref()).collect();
            let column = if arrays.is_empty() {
                arrow_array::new_empty_array(
                    &lowered.outputs[o]
                        .1
                        .data_type()
                        .unwrap_or(arrow_schema::DataType::Null),
                )
            } else {
                arrow_select::interleave::interleave(&arrays, &at)
                    .map_err(|e| Error::external("merging the result batches", e))?
            };
            columns.push(column);
        }
        job.finish(columns)
    }
}
