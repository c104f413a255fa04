//! The row engines' cached path: a chunk of a map's items run through the
//! map's [`ColumnarPlan`] in this process, step by step over Arrow columns
//! — the same [`ColumnarStep`](super::ColumnarStep)s `DataFusionEngine`
//! runs inside its plan, so every engine looks up, calls, hashes, stores
//! and reports a node's rows the same way. A map takes this path when it
//! has a cache and can be planned (every value that would be a column has
//! an Arrow form); otherwise the row engines walk values
//! (`engine::kernel`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, FixedSizeBinaryArray, UInt32Array};

use super::ColumnarPlan;
use crate::engine::{Chunk, MapJob};
use crate::error::Error;
use crate::map::{ErrorPolicy, MapMode};

/// Whether a job's columnar plan was built for its row engine.
#[derive(Default)]
pub(crate) enum LocalPlan {
    /// Not yet asked for.
    #[default]
    Untried,
    /// The map cannot be planned: its items walk values.
    Unavailable,
    /// Built.
    Ready(Arc<ColumnarPlan>),
}

/// A 32-byte hash column.
fn hashes(array: &ArrayRef) -> Result<&FixedSizeBinaryArray, Error> {
    array
        .as_fixed_size_binary_opt()
        .filter(|a| a.value_length() == 32)
        .ok_or_else(|| Error::Internal {
            message: "expected a 32-byte hash column".into(),
        })
}

impl MapJob {
    /// The columnar plan the row engines run this map's chunks through,
    /// built on first use; `None` when the map has no cache or cannot be
    /// planned. Dropped when the map ends ([`MapJob::drop_local_plan`]):
    /// its steps refer back to the job.
    pub(crate) fn local_plan(self: &Arc<Self>) -> Option<Arc<ColumnarPlan>> {
        self.exec.cache.as_ref()?;
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if let LocalPlan::Untried = *local {
            *local = match self.columnar_plan(self.exec.engine.name()) {
                Ok(plan) => LocalPlan::Ready(Arc::new(plan)),
                Err(_) => LocalPlan::Unavailable,
            };
        }
        match &*local {
            LocalPlan::Ready(plan) => Some(plan.clone()),
            _ => None,
        }
    }

    /// Ends the local plan (and the reference cycle through its steps).
    pub(crate) fn drop_local_plan(&self) {
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = LocalPlan::Untried;
    }

    /// Runs the items of `range` through `plan`: their outputs as Arrow
    /// columns, failed items null (their failures in the job's state). A
    /// failure of the whole map (a strict cache's, say) is recorded in the
    /// state and stops the chunk.
    pub(crate) fn run_chunk_columnar(&self, plan: &ColumnarPlan, range: Range<usize>) -> Chunk {
        let mut chunk = Chunk {
            start: range.start,
            columns: Vec::new(),
            arrow: None,
            stopped: false,
        };
        let end = range.end;
        match self.columnar_rows(plan, range) {
            Ok(arrays) => chunk.arrow = Some(arrays),
            Err(e) => {
                self.state.fail_map(e);
                chunk.stopped = true;
                return chunk;
            }
        }
        chunk.stopped = self.policy == ErrorPolicy::Stop && self.state.stopped_before(end);
        chunk
    }

    /// See [`MapJob::run_chunk_columnar`].
    fn columnar_rows(
        &self,
        plan: &ColumnarPlan,
        range: Range<usize>,
    ) -> Result<Vec<ArrayRef>, Error> {
        let n = range.len();
        // Per slot held as a column: its values and their hashes.
        let mut columns: HashMap<usize, (ArrayRef, ArrayRef)> = HashMap::new();
        for (k, (m, found)) in self.mapped.iter().zip(self.mapped_hashes()).enumerate() {
            let Some(slot) = m.slot else { continue };
            let (elements, element_hashes) = found.as_ref().map_err(|why| Error::External {
                what: format!("cannot map over input `{}`", m.name),
                source: Box::new(why.clone()),
            })?;
            // The local plan runs cached maps only, whose inputs are hashed.
            let element_hashes = element_hashes.as_ref().ok_or_else(|| Error::Internal {
                message: format!("mapped input `{}` was not hashed", m.name),
            })?;
            let picked = match self.mode {
                MapMode::Zip => (
                    elements.slice(range.start, n),
                    element_hashes.slice(range.start, n),
                ),
                MapMode::Product => {
                    let at = UInt32Array::from_iter_values(
                        range.clone().map(|i| self.element_indices(i)[k] as u32),
                    );
                    (
                        arrow_select::take::take(elements.as_ref(), &at, None)?,
                        arrow_select::take::take(element_hashes.as_ref(), &at, None)?,
                    )
                }
            };
            columns.insert(slot, picked);
        }
        let missing = |slot: &usize| Error::Internal {
            message: format!("slot {slot} is not a column of the plan"),
        };
        let items: Vec<usize> = range.collect();
        for planned in &plan.steps {
            let sigs = match &planned.sig {
                Some(spec) => {
                    let inputs = planned
                        .columns
                        .iter()
                        .map(|s| hashes(&columns.get(s).ok_or_else(|| missing(s))?.1))
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(spec.sign(n, &inputs))
                }
                None => None,
            };
            let values = planned
                .columns
                .iter()
                .map(|s| Ok(columns.get(s).ok_or_else(|| missing(s))?.0.clone()))
                .collect::<Result<Vec<_>, Error>>()?;
            let sigs = sigs.as_ref().map(hashes).transpose()?;
            let mut arrays = planned
                .step
                .run(n, items.clone(), sigs, values)?
                .into_iter();
            for (slot, _) in &planned.outs {
                let Some(slot) = slot else { continue };
                match (arrays.next(), arrays.next()) {
                    (Some(values), Some(hashes)) => {
                        columns.insert(*slot, (values, hashes));
                    }
                    _ => return Err(missing(slot)),
                }
            }
        }
        plan.outputs
            .iter()
            .map(|(slot, _)| Ok(columns.get(slot).ok_or_else(|| missing(slot))?.0.clone()))
            .collect()
    }
}
