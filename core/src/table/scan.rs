//! A table map over Parquet files on an engine that reads them itself
//! ([`Engine::scans_parquet`](crate::Engine::scans_parquet)): one plan for
//! the whole table instead of a `map` per chunk. The plan runs on a thread
//! of its own while the caller reads the results ([`Native`]); its batches
//! come in any order and are put back in table order here ([`Ordered`]),
//! with the error columns. A bounded channel between the two keeps memory
//! bounded: the plan waits while the caller has not taken its results.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::engine::columnar::TableScan;
use crate::engine::{MapJob, MapState};
use crate::map::{ErrorPolicy, MapOptions};
use crate::{Error, Inputs, Pipeline};

/// Batches the plan may get ahead of the caller by.
const AHEAD: usize = 2;

/// A table map's plan running on its own thread (see the module docs).
pub(crate) struct Native {
    rx: Option<Receiver<Result<RecordBatch, Error>>>,
    thread: Option<JoinHandle<()>>,
}

impl Native {
    /// Starts mapping `pipeline` over `scan` (with `fixed` beside, as
    /// `options` say); `carried` are the carried columns' fields.
    pub(crate) fn start(
        pipeline: Pipeline,
        fixed: Inputs,
        options: MapOptions,
        scan: TableScan,
        carried: Vec<Field>,
    ) -> Result<Native, Error> {
        let (tx, rx) = sync_channel(AHEAD);
        let thread = std::thread::Builder::new()
            .name("hypernodes-table-map".into())
            .spawn(move || {
                if let Err(e) = run(&pipeline, &fixed, &options, &scan, carried, &tx) {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::external("starting the table map's thread", e))?;
        Ok(Native {
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    /// The next batch of results in table order (`None`: all were given).
    pub(crate) fn next(&mut self) -> Option<Result<RecordBatch, Error>> {
        let received = self.rx.as_ref()?.recv().ok();
        if received.is_none() {
            self.stop();
        }
        received
    }

    /// Stops the plan (if it still runs) and waits for its thread.
    fn stop(&mut self) {
        self.rx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Native {
    /// A map dropped before its end stops its plan: the plan's next batch
    /// finds no reader, and the plan ends; what it stored is flushed.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread's work: the job, its plan, the results in order to `tx`.
fn run(
    pipeline: &Pipeline,
    fixed: &Inputs,
    options: &MapOptions,
    scan: &TableScan,
    carried: Vec<Field>,
    tx: &SyncSender<Result<RecordBatch, Error>>,
) -> Result<(), Error> {
    let plan = pipeline.compile(options.outputs.as_deref())?;
    let exec = Arc::new(pipeline.root_scope(plan));
    let job = MapJob::for_scan(exec, fixed, scan, options)?;
    let mut ordered = Ordered::new(&job, carried, options.on_error);
    let mut send = |batch: RecordBatch| {
        tx.send(Ok(batch)).map_err(|_| Error::Engine {
            message: "the table map's reader went away".into(),
        })
    };
    let engine = job.exec().engine.clone();
    job.exec().pipeline_scope(|| {
        job.execute_with(|job| engine.map_scan(job, scan, &mut |raw| ordered.push(raw, &mut send)))
    })?;
    ordered.finish(&mut send)?;
    job.exec().flush_cache()
}

/// Puts a plan's batches (each a run of consecutive items, in any order)
/// back in item order, and gives each its final columns: the carried
/// ones, the outputs, and with the continue policy `error_node` and
/// `error` from the failures the job recorded.
pub(crate) struct Ordered {
    state: Arc<MapState>,
    len: usize,
    schema: SchemaRef,
    carried: usize,
    continue_on_error: bool,
    /// The next item to give.
    next: u64,
    /// Runs that came before their turn, by first item.
    waiting: BTreeMap<u64, RecordBatch>,
    /// Failures taken from the job's state not yet given, by item.
    failures: HashMap<usize, Error>,
    /// Whether any batch was given.
    gave: bool,
}

impl Ordered {
    fn new(job: &Arc<MapJob>, carried: Vec<Field>, policy: ErrorPolicy) -> Ordered {
        let continue_on_error = policy == ErrorPolicy::Continue;
        let mut fields = carried.clone();
        for output in &job.exec().plan.outputs {
            let data_type = output.ty.data_type().unwrap_or(DataType::Null);
            fields.push(Field::new(&output.name, data_type, true));
        }
        if continue_on_error {
            fields.push(Field::new("error_node", DataType::Utf8, true));
            fields.push(Field::new("error", DataType::Utf8, true));
        }
        Ordered {
            state: job.state().clone(),
            len: job.len(),
            schema: Arc::new(Schema::new(fields)),
            carried: carried.len(),
            continue_on_error,
            next: 0,
            waiting: BTreeMap::new(),
            failures: HashMap::new(),
            gave: false,
        }
    }

    /// Takes a batch of the plan; gives every run whose turn has come.
    fn push(
        &mut self,
        raw: RecordBatch,
        give: &mut dyn FnMut(RecordBatch) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let items = raw
            .column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| Error::Internal {
                message: "a table map's plan gave no UInt64 item column".into(),
            })?
            .values()
            .clone();
        // Usually one run per batch; cut where items jump.
        let mut start = 0;
        for r in 1..=items.len() {
            if r == items.len() || items[r] != items[r - 1] + 1 {
                self.waiting
                    .insert(items[start], raw.slice(start, r - start));
                start = r;
            }
        }
        while let Some(run) = self.waiting.remove(&self.next) {
            self.next += run.num_rows() as u64;
            self.give(run, give)?;
        }
        Ok(())
    }

    /// The final form of a run of items, given on unless the stop policy
    /// stopped the map at or before one of them.
    fn give(
        &mut self,
        run: RecordBatch,
        give: &mut dyn FnMut(RecordBatch) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let n = run.num_rows();
        let first = self.next as usize - n;
        for (item, error) in self.state.take_failures() {
            self.failures.insert(item, error);
        }
        if !self.continue_on_error {
            // Stopped: the earliest failure is the map's error (at the end).
            if self.failures.keys().any(|&i| i < first + n) {
                return Ok(());
            }
        }
        let mut arrays: Vec<ArrayRef> = run.columns()[1..].to_vec();
        if self.continue_on_error {
            let errors: Vec<Option<Error>> = (first..first + n)
                .map(|item| self.failures.remove(&item))
                .collect();
            let nodes: StringArray = errors
                .iter()
                .map(|e| e.as_ref().map(|e| e.node().unwrap_or_default().to_string()))
                .collect();
            let messages: StringArray = errors
                .iter()
                .map(|e| e.as_ref().map(|e| e.to_string()))
                .collect();
            arrays.push(Arc::new(nodes));
            arrays.push(Arc::new(messages));
        }
        if arrays.len() != self.schema.fields().len() {
            return Err(Error::Internal {
                message: format!(
                    "a table map's plan gave {} columns for {} carried columns and {} outputs",
                    run.num_columns() - 1,
                    self.carried,
                    self.schema.fields().len() - self.carried
                ),
            });
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.gave = true;
        give(batch)
    }

    /// After the plan: the stop policy's error, or a check that every item
    /// came back (and an empty batch for an empty table).
    fn finish(
        &mut self,
        give: &mut dyn FnMut(RecordBatch) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for (item, error) in self.state.take_failures() {
            self.failures.insert(item, error);
        }
        if !self.continue_on_error
            && let Some(&first) = self.failures.keys().min()
            && let Some(error) = self.failures.remove(&first)
        {
            return Err(error);
        }
        if self.next != self.len as u64 {
            return Err(Error::Engine {
                message: format!("a table map's plan gave no row for item {}", self.next),
            });
        }
        if !self.gave {
            give(RecordBatch::new_empty(self.schema.clone()))?;
        }
        Ok(())
    }
}

/// Rows with an error in a batch `Ordered` gave under the continue policy
/// (its failed items): the last column is `error`.
pub(crate) fn failed_rows(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .last()
        .map_or(0, |e| e.len() - e.null_count())
}
