//! A single `run`: every needed node once, in topological order.

use crate::error::Error;
use crate::io::Outputs;
use crate::value::Value;

use super::*;

/// One `run`: an engine executes it (by default with [`RunJob::execute`]).
pub struct RunJob<'a> {
    exec: &'a Exec,
    slots: Vec<Option<Value>>,
}

impl<'a> RunJob<'a> {
    /// A cached run through the columnar steps, as a map of one item whose
    /// inputs are all fixed (`None`: the run cannot be planned as columns,
    /// a value without an Arrow form; it walks values).
    fn execute_columnar(&self) -> Result<Option<Outputs>, Error> {
        let job = MapJob::for_run(self.exec, self.slots.clone());
        let Some(plan) = job.local_plan() else {
            return Ok(None);
        };
        let chunk = job.run_chunk_columnar(&plan, 0..1);
        job.drop_local_plan();
        // Writes the job started end here; what it buffered is flushed by
        // the run's caller (or the map a nested run belongs to).
        job.wait_for_flush()?;
        let columns = chunk.arrow.unwrap_or_default();
        let result = job.finish(columns)?;
        let plan = &self.exec.plan;
        let mut names = Vec::with_capacity(plan.outputs.len());
        let mut values = Vec::with_capacity(plan.outputs.len());
        for (o, column) in plan.outputs.iter().zip(result.columns) {
            let value = column.into_values().into_iter().next().flatten();
            names.push(o.name.clone());
            values.push(value.ok_or_else(|| Error::Internal {
                message: format!("output `{}` was not computed", o.name),
            })?);
        }
        Ok(Some(Outputs::new(names, values)))
    }

    pub(crate) fn new(exec: &'a Exec, slots: Vec<Option<Value>>) -> Self {
        RunJob { exec, slots }
    }

    /// The execution scope.
    pub fn exec(&self) -> &Exec {
        self.exec
    }

    /// Runs every node once, in topological order.
    pub fn execute(mut self) -> Result<Outputs, Error> {
        let items = self.exec.items.clone();
        // A top-level run shares no clock reading with what ran before it.
        if items.is_empty() {
            crate::engine::invoke::clear_stamp();
        }
        if self.exec.cache.is_some()
            && let Some(out) = self.execute_columnar()?
        {
            return Ok(out);
        }
        if let Some(cache) = &self.exec.cache {
            let mut batch = crate::engine::kernel::Batch::new(self.slots.len(), 1, None);
            batch.push(None, &self.slots, true);
            let report = |node: Option<&str>, e| self.exec.cache_failed(node, e);
            crate::engine::kernel::run_batch(
                self.exec,
                Some(cache.as_ref()),
                &mut batch,
                true,
                &report,
            )?;
            self.slots = batch.take_row(0)?;
        } else {
            self.exec.run_steps(&mut self.slots, &items)?;
        }
        let plan = &self.exec.plan;
        let names = plan.outputs.iter().map(|o| o.name.clone()).collect();
        let values = plan
            .outputs
            .iter()
            .map(|o| self.slots[o.slot].clone().expect("output computed"))
            .collect();
        Ok(Outputs::new(names, values))
    }
}
