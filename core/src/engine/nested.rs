//! Nested pipelines: a pipeline node run for one item, a `map_over` node
//! run as one inner map per item, or one inner map over the elements of
//! many items at once.

use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use crate::error::{Error, NodeError};
use crate::io::Inputs;
use crate::map::{ErrorPolicy, ItemFailure, MapMode, MapOptions};
use crate::node::{Mapping, Node, NodeKind};
use crate::pipeline::{Pipeline, Plan, Step};
use crate::value::Value;

use super::*;

impl Exec {
    pub(crate) fn call_nested(
        &self,
        node: &Node,
        inner: &Arc<Pipeline>,
        step: &Step,
        slots: &mut [Option<Value>],
        items: &[usize],
    ) -> Result<(), Error> {
        let start = Instant::now();
        self.emit_items(items, |cb, ctx| cb.on_nested_start(ctx, &node.name));
        let plan = step.inner.as_ref().expect("nested step has an inner plan");
        let mut exec = self.inner_scope(node, inner, plan);
        exec.items = items.to_vec();
        exec.item_map = None;
        let exec = Arc::new(exec);
        let mut inputs = Inputs::new();
        for (port, &slot) in node.inputs.iter().zip(&step.args) {
            let v = slots[slot].clone().expect("argument slot is filled");
            inputs.insert_value(port.inner.clone(), v);
        }
        let values = match &node.mapping {
            None => {
                exec.pipeline_scope(|| {
                    let slots = inner.resolve_inputs(plan, &inputs, &[])?;
                    exec.engine.run(RunJob::new(&exec, slots))
                })?
                .values
            }
            Some(mapping) => self.map_nested(node, mapping, &exec, inputs, items)?,
        };
        if inner.cache.is_some() {
            exec.flush_cache()?;
        }
        for (value, &port) in values.into_iter().zip(&step.inner_ports) {
            if let Some(slot) = step.outs[port] {
                slots[slot] = Some(value);
            }
        }
        let elapsed = start.elapsed();
        self.emit_items(items, |cb, ctx| cb.on_nested_end(ctx, &node.name, elapsed));
        Ok(())
    }

    /// Runs a `map_over` node: splits the mapped lists, maps the inner
    /// pipeline over them, and regroups each output into a list.
    pub(crate) fn map_nested(
        &self,
        node: &Node,
        mapping: &Mapping,
        exec: &Arc<Exec>,
        mut inputs: Inputs,
        items: &[usize],
    ) -> Result<Vec<Value>, Error> {
        let mut mapped = Vec::new();
        for (i, port) in node.inputs.iter().enumerate() {
            if mapping.mapped[i] {
                let list = inputs.remove(&port.inner).expect("mapped input given");
                let ty = mapping.inner_inputs[i];
                let len = ty.list_len(&list).ok_or_else(|| Error::NotAList {
                    name: port.name.clone(),
                    expected: ty.name(),
                    actual: list.type_name(),
                })?;
                mapped.push(MappedList::of_values(port.inner.clone(), ty, list, len));
            }
        }
        let names: Vec<String> = mapped.iter().map(|m| m.name.clone()).collect();
        let options = MapOptions::over(names).mode(mapping.mode);
        let job = MapJob::new(exec.clone(), &inputs, mapped, &options).map_err(|e| match e {
            Error::LengthMismatch { .. } => self.fail(node, items, 1, NodeError::user(e)),
            other => other,
        })?;
        let result = exec.pipeline_scope(|| job.execute())?;
        let mut values = Vec::with_capacity(result.columns.len());
        for col in result.columns {
            let ty = col.ty;
            let elems: Vec<Value> = col.into_values().into_iter().flatten().collect();
            let list = ty.make_list(elems).ok_or_else(|| Error::Engine {
                message: format!("cannot build a list of `{}`", ty.name()),
            })?;
            values.push(list);
        }
        Ok(values)
    }
}

/// Per row of a batched `map_over`: each output port the inner pipeline
/// computed, with its list, or the row's failure.
pub(crate) type NestedOuts = Result<Vec<(usize, Value)>, Error>;

impl Exec {
    /// Runs `map_over` step `step` (node `node`) as ONE inner map over the
    /// elements of every row of `rows` (each its item path and argument
    /// values), as [`Exec::map_nested_rows`] does, when it can: more than
    /// one row, nobody listening to events (they come per item), every
    /// row's arguments present, and values that combine. `None`: run the
    /// rows one by one instead (a failure of the combined map as a whole,
    /// before any element ran, is reported that way too, per item).
    pub(crate) fn map_over_rows(
        &self,
        node: &Node,
        step: &Step,
        rows: &[(SmallVec<[usize; 4]>, Vec<Value>)],
    ) -> Option<Vec<NestedOuts>> {
        let (NodeKind::Nested(inner), Some(mapping), Some(plan)) =
            (&node.kind, &node.mapping, step.inner.as_ref())
        else {
            return None;
        };
        let batched = rows.len() > 1
            && !self.has_callbacks()
            && inner.callbacks.is_empty()
            && rows.iter().all(|(_, v)| v.len() == step.args.len());
        if !batched {
            return None;
        }
        let results = self
            .map_nested_rows(node, inner, plan, mapping, rows)
            .ok()??;
        Some(
            results
                .into_iter()
                .map(|r| {
                    r.map(|lists| {
                        lists
                            .into_iter()
                            .zip(step.inner_ports.iter().copied())
                            .map(|(l, p)| (p, l))
                            .collect()
                    })
                })
                .collect(),
        )
    }
}

/// What one row of a batched nested `map_over` gives: the inner outputs
/// (in the step's `inner_ports` order) as lists, or the row's failure.
pub(crate) type NestedRow = Result<Vec<Value>, Error>;

impl Exec {
    /// Runs `map_over` node `node` (inner pipeline `inner`, compiled as
    /// `plan`) for many outer items at once: every item's elements (its
    /// zipped or crossed lists, with its other inputs beside them) become
    /// the items of ONE inner map, whose results are regrouped into one list
    /// per outer item by the element counts. Each element keeps its own
    /// item path (`outer item, element`), signatures and cache entries, so
    /// results, errors and cache entries are those of running the node item
    /// by item. `rows` holds each outer item's path and argument values.
    /// `Ok(None)`: the values cannot be combined (a type without list
    /// operations); run the items one by one instead.
    pub(crate) fn map_nested_rows(
        &self,
        node: &Node,
        inner: &Arc<Pipeline>,
        plan: &Arc<Plan>,
        mapping: &Mapping,
        rows: &[(SmallVec<[usize; 4]>, Vec<Value>)],
    ) -> Result<Option<Vec<NestedRow>>, Error> {
        let ports = &node.inputs;
        // Inputs equal for every row stay fixed; the others repeat per element.
        let constant: Vec<bool> = (0..ports.len())
            .map(|i| !mapping.mapped[i] && rows.iter().all(|(_, v)| v[i].same(&rows[0].1[i])))
            .collect();
        let mut outcome: Vec<Option<Error>> = (0..rows.len()).map(|_| None).collect();
        let mut counts = vec![0usize; rows.len()];
        let mut columns: Vec<Vec<Value>> = vec![Vec::new(); ports.len()];
        let mut paths: Vec<SmallVec<[usize; 4]>> = Vec::new();
        for (r, (path, values)) in rows.iter().enumerate() {
            let mut lists: Vec<(usize, Vec<Value>)> = Vec::new();
            for (i, port) in ports.iter().enumerate() {
                if !mapping.mapped[i] {
                    continue;
                }
                let ty = mapping.inner_inputs[i];
                match ty.split_list(&values[i]) {
                    Some(items) => lists.push((i, items)),
                    None => {
                        outcome[r] = Some(Error::NotAList {
                            name: port.name.clone(),
                            expected: ty.name(),
                            actual: values[i].type_name(),
                        });
                        break;
                    }
                }
            }
            if outcome[r].is_some() {
                continue;
            }
            let named: Vec<(String, usize)> = lists
                .iter()
                .map(|(i, l)| (ports[*i].inner.clone(), l.len()))
                .collect();
            let count = match mapping.mode.items(&named) {
                Ok(count) => count,
                Err(e) => {
                    outcome[r] = Some(self.fail(node, path, 1, NodeError::user(e)));
                    continue;
                }
            };
            let lens: Vec<usize> = named.iter().map(|l| l.1).collect();
            for j in 0..count {
                // Element j of each list (last list fastest in product mode).
                let picks = mapping.mode.elements(&lens, j);
                for ((i, l), pick) in lists.iter().zip(&picks) {
                    columns[*i].push(l[*pick].clone());
                }
                for i in (0..ports.len()).filter(|&i| !mapping.mapped[i] && !constant[i]) {
                    columns[i].push(values[i].clone());
                }
                let mut p = path.clone();
                p.push(j);
                paths.push(p);
            }
            counts[r] = count;
        }
        let total: usize = counts.iter().sum();

        let mut fixed = Inputs::new();
        let mut mapped = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            if constant[i] {
                if let Some((_, values)) = rows.first() {
                    fixed.insert_value(port.inner.clone(), values[i].clone());
                }
                continue;
            }
            let ty = if mapping.mapped[i] {
                mapping.inner_inputs[i]
            } else {
                port.ty
            };
            let Some(list) = ty.make_list(std::mem::take(&mut columns[i])) else {
                return Ok(None);
            };
            mapped.push(MappedList::of_values(port.inner.clone(), ty, list, total));
        }
        // Per inner output, every element's value (none at all when every
        // row's lists are empty: each row then gets empty lists).
        let mut results: Vec<Vec<Option<Value>>> = vec![Vec::new(); plan.outputs.len()];
        let mut failures: Vec<ItemFailure> = Vec::new();
        if total > 0 {
            let mut scope = self.inner_scope(node, inner, plan);
            scope.item_map = Some(paths.into());
            let scope = Arc::new(scope);
            let names: Vec<String> = mapped.iter().map(|m| m.name.clone()).collect();
            let options = MapOptions::over(names)
                .mode(MapMode::Zip)
                .on_error(ErrorPolicy::Continue);
            let job = MapJob::new(scope.clone(), &fixed, mapped, &options)?;
            let result = job.execute()?;
            if inner.cache.is_some() {
                scope.flush_cache()?;
            }
            failures = result.failures;
            failures.sort_by_key(|f| f.index);
            results = result
                .columns
                .into_iter()
                .map(|col| col.into_values())
                .collect();
        }
        // Regroup: row r owns elements [start, start + counts[r]).
        let out_types: Vec<_> = plan.outputs.iter().map(|o| o.ty).collect();
        let mut failures = failures.into_iter().peekable();
        let mut start = 0;
        let mut out = Vec::with_capacity(rows.len());
        for (r, &count) in counts.iter().enumerate() {
            let end = start + count;
            let mut failed = outcome[r].take();
            while let Some(f) = failures.next_if(|f| f.index < end) {
                if failed.is_none() {
                    failed = Some(f.error);
                }
            }
            out.push(match failed {
                Some(e) => Err(e),
                None => results
                    .iter()
                    .zip(&out_types)
                    .map(|(values, ty)| {
                        let elements: Vec<Value> =
                            values[start..end].iter().flatten().cloned().collect();
                        if elements.len() != count {
                            return Err(Error::Engine {
                                message: format!("node `{}`: an element has no value", node.name),
                            });
                        }
                        ty.make_list(elements).ok_or_else(|| Error::Engine {
                            message: format!("cannot build a list of `{}`", ty.name()),
                        })
                    })
                    .collect(),
            });
            start = end;
        }
        Ok(Some(out))
    }
}
