//! Nested pipelines: a pipeline node run for one item, a `map_over` node
//! run as one inner map per item, or one inner map over the elements of
//! many items at once.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::error::{Error, NodeError};
use crate::io::Inputs;
use crate::map::{ErrorPolicy, ItemFailure, MapMode, MapOptions};
use crate::node::{Mapping, Node, NodeKind};
use crate::observe::clock::Moment;
use crate::pipeline::{Pipeline, Plan, Step};
use crate::value::{Value, ValueType};

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
        let start = Moment::now();
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

impl Exec {
    /// The ONE inner map of a batched `map_over` (node `node`, inner
    /// pipeline `inner` compiled as `plan`): its scope, in which element
    /// `k` has item path `paths[k]`, and the job over `mapped` beside
    /// `fixed`, in zip mode, going on past failed elements.
    fn elements_job(
        &self,
        node: &Node,
        inner: &Arc<Pipeline>,
        plan: &Arc<Plan>,
        paths: Vec<SmallVec<[usize; 4]>>,
        fixed: &Inputs,
        mapped: Vec<MappedList>,
    ) -> Result<(Arc<Exec>, Arc<MapJob>), Error> {
        let mut scope = self.inner_scope(node, inner, plan);
        scope.item_map = Some(paths.into());
        let scope = Arc::new(scope);
        let names: Vec<String> = mapped.iter().map(|m| m.name.clone()).collect();
        let options = MapOptions::over(names)
            .mode(MapMode::Zip)
            .on_error(ErrorPolicy::Continue);
        let job = MapJob::new(scope.clone(), fixed, mapped, &options)?;
        Ok((scope, job))
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
            let (scope, job) = self.elements_job(node, inner, plan, paths, &fixed, mapped)?;
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

/// An argument of a `map_over` step run over Arrow columns (see
/// [`Exec::map_over_columns`]), in the node's input order.
pub(crate) enum NestedArg<'a> {
    /// A mapped input: one list per outer row.
    List(&'a arrow_array::ListArray),
    /// An input equal for every row.
    Fixed(&'a Value),
}

/// What [`Exec::map_over_columns`] gives: per outer row its failure, if
/// any; per output port of the node, its lists (one per row that did not
/// fail, in row order).
pub(crate) type NestedColumns = (Vec<Option<Error>>, Vec<(usize, arrow_array::ArrayRef)>);

impl Exec {
    /// Runs `map_over` step `step` (node `node`) for many outer rows at
    /// once straight from Arrow: the elements of every row's lists (the
    /// list columns' values, as they are) become the items of ONE inner
    /// map, and each inner output is wrapped back into one list per row
    /// by the same lengths. No value is converted either way. `paths` holds
    /// each row's item path. As [`Exec::map_nested_rows`], each element
    /// keeps its own item path, signatures and cache entries, and a row
    /// fails with its first failed element. `Ok(None)`: these columns do
    /// not qualify (zip mode, lists without nulls and of equal lengths
    /// row by row, unmapped inputs fixed, element and output types as
    /// declared, nobody listening to events); run the rows the general way.
    pub(crate) fn map_over_columns(
        &self,
        node: &Node,
        step: &Step,
        paths: &[SmallVec<[usize; 4]>],
        args: &[NestedArg<'_>],
        outputs: &[(usize, ValueType)],
    ) -> Result<Option<NestedColumns>, Error> {
        use arrow_array::{Array, ListArray};
        let (NodeKind::Nested(inner), Some(mapping), Some(plan)) =
            (&node.kind, &node.mapping, step.inner.as_ref())
        else {
            return Ok(None);
        };
        if mapping.mode != MapMode::Zip
            || self.has_callbacks()
            || !inner.callbacks.is_empty()
            || args.len() != node.inputs.len()
        {
            return Ok(None);
        }
        let rows = paths.len();
        let mut lengths: Option<Vec<usize>> = None;
        let mut fixed = Inputs::new();
        let mut mapped = Vec::new();
        for (i, (arg, port)) in args.iter().zip(&node.inputs).enumerate() {
            match (arg, mapping.mapped[i]) {
                (NestedArg::List(list), true) => {
                    if list.len() != rows || list.null_count() > 0 {
                        return Ok(None);
                    }
                    let lens: Vec<usize> =
                        (0..rows).map(|r| list.value_length(r) as usize).collect();
                    match &lengths {
                        Some(l) if *l != lens => return Ok(None),
                        _ => lengths = Some(lens),
                    }
                    let offsets = list.value_offsets();
                    let first = offsets[0] as usize;
                    let last = offsets[rows] as usize;
                    let elements = list.values().slice(first, last - first);
                    let ty = mapping.inner_inputs[i];
                    if ty.data_type().as_ref() != Some(elements.data_type()) {
                        return Ok(None);
                    }
                    mapped.push(MappedList::of_array(port.inner.clone(), ty, elements));
                }
                (NestedArg::Fixed(value), false) => {
                    fixed.insert_value(port.inner.clone(), (*value).clone());
                }
                _ => return Ok(None),
            }
        }
        let Some(lengths) = lengths else {
            return Ok(None);
        };
        // Each requested port's list type, and the inner output feeding it.
        let mut wanted = Vec::with_capacity(outputs.len());
        for &(port, ty) in outputs {
            let Some(o) = step.inner_ports.iter().position(|&p| p == port) else {
                return Ok(None);
            };
            let Some(arrow_schema::DataType::List(field)) = ty.data_type() else {
                return Ok(None);
            };
            if plan.outputs[o].ty.data_type().as_ref() != Some(field.data_type()) {
                return Ok(None);
            }
            wanted.push((port, o, field));
        }
        let total: usize = lengths.iter().sum();
        let mut failed: Vec<Option<Error>> = (0..rows).map(|_| None).collect();
        let mut columns: Vec<Option<arrow_array::ArrayRef>> = vec![None; plan.outputs.len()];
        if total > 0 {
            let mut element_paths: Vec<SmallVec<[usize; 4]>> = Vec::with_capacity(total);
            for (path, &len) in paths.iter().zip(&lengths) {
                for j in 0..len {
                    let mut p = path.clone();
                    p.push(j);
                    element_paths.push(p);
                }
            }
            let (scope, job) =
                self.elements_job(node, inner, plan, element_paths, &fixed, mapped)?;
            let Ok(result) = job.execute() else {
                // A failure of the inner map as a whole: the rows one by
                // one report it per item.
                return Ok(None);
            };
            if inner.cache.is_some() {
                scope.flush_cache()?;
            }
            // Element k belongs to the row whose range holds it.
            let mut ends = lengths.iter().scan(0usize, |end, &l| {
                *end += l;
                Some(*end)
            });
            let mut row = 0;
            let mut end = ends.next().unwrap_or(0);
            let mut failures = result.failures;
            failures.sort_by_key(|f| f.index);
            for f in failures {
                while f.index >= end && row + 1 < rows {
                    row += 1;
                    end = ends.next().unwrap_or(end);
                }
                if failed[row].is_none() {
                    failed[row] = Some(f.error);
                }
            }
            for &(_, o, _) in &wanted {
                let array = result.columns[o]
                    .to_array()
                    .map_err(|source| Error::Arrow {
                        column: plan.outputs[o].name.clone(),
                        source,
                    })?;
                columns[o] = Some(array);
            }
        }
        // The rows that did not fail keep their elements, in order.
        let any_failed = failed.iter().any(Option::is_some);
        let keep: Option<arrow_array::BooleanArray> = any_failed.then(|| {
            failed
                .iter()
                .zip(&lengths)
                .flat_map(|(f, &len)| std::iter::repeat_n(Some(f.is_none()), len))
                .collect()
        });
        let kept = failed
            .iter()
            .zip(&lengths)
            .filter(|(f, _)| f.is_none())
            .map(|(_, &len)| len);
        let offsets = arrow_buffer::OffsetBuffer::<i32>::from_lengths(kept);
        let mut lists = Vec::with_capacity(wanted.len());
        for (port, o, field) in wanted {
            let mut values = match columns[o].take() {
                Some(values) => values,
                None => arrow_array::new_empty_array(field.data_type()),
            };
            if let Some(keep) = &keep {
                values = arrow_select::filter::filter(values.as_ref(), keep)
                    .map_err(|e| Error::external("dropping failed rows' elements", e))?;
            }
            let list = ListArray::try_new(field, offsets.clone(), values, None)
                .map_err(|e| Error::external("wrapping a nested map's outputs into lists", e))?;
            lists.push((port, Arc::new(list) as arrow_array::ArrayRef));
        }
        Ok(Some((failed, lists)))
    }
}
