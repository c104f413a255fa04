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
