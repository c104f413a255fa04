//! A map lowered to columnar steps ([`ColumnarPlan`]): per step of the flat
//! plan, in topological order, how its signature column is computed (a
//! [`SigSpec`], for cached steps), which columns it reads, which it fills,
//! and the [`ColumnarStep`] that runs it. Every columnar engine builds on
//! it: `DataFusionEngine` turns each step into UDF expressions, and the row
//! engines run the steps themselves, batch by batch, when a map has a cache
//! and every value has an Arrow form.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray};

use super::step::{Arg, ColumnarStep, FIRST_PIECE_ROWS};
use super::{ColumnarMap, FixedInput};
use crate::engine::MapJob;
use crate::error::Error;
use crate::node::Node;
use crate::signature::{NodeKey, Signature};
use crate::value::ValueType;

/// Where a signature's input hash comes from: the next hash column, or a
/// fixed input's hash (`None`: a resource without a cache key, which leaves
/// the node unsigned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigArg {
    /// The next hash column.
    Column,
    /// A fixed input's hash.
    Fixed(Option<Signature>),
}

/// How a node's signature column is computed from its inputs' hashes:
/// `sig(node, item)`, exactly as the row engines compute it.
#[derive(Clone, Debug)]
pub struct SigSpec {
    /// The node's name.
    pub node: String,
    /// Its code hash.
    pub code: Signature,
    /// The node's key (code hash, argument count, declared environment).
    pub key: NodeKey,
    /// Per argument, where its hash comes from.
    pub args: Vec<SigArg>,
}

impl SigSpec {
    /// The signature recipe of `node` over `args`.
    pub fn new(node: &Node, args: Vec<SigArg>) -> Self {
        SigSpec {
            node: node.name().to_string(),
            code: node.code_hash(),
            key: NodeKey::new(&node.code_hash(), args.len(), &node.salt()),
            args,
        }
    }

    /// The signatures of `n` rows, from the hash column of every
    /// [`SigArg::Column`] in order: a `FixedSizeBinary(32)` column, null
    /// where an input has no hash.
    pub fn sign(&self, n: usize, hashes: &[&FixedSizeBinaryArray]) -> ArrayRef {
        if let ([SigArg::Column], [column]) = (self.args.as_slice(), hashes)
            && let Some(signed) = self.key.sign_column(column)
        {
            // One input column (the common case): hashed where it lies.
            return signed;
        }
        let sigs = self.key.sign_rows(n, |row, inputs| {
            let mut columns = hashes.iter();
            for arg in &self.args {
                let h = match arg {
                    SigArg::Column => {
                        let Some(c) = columns.next().filter(|c| !c.is_null(row)) else {
                            return false;
                        };
                        match c.value(row).try_into() {
                            Ok(bytes) => Signature(bytes),
                            Err(_) => return false,
                        }
                    }
                    SigArg::Fixed(hash) => match hash {
                        Some(h) => *h,
                        None => return false,
                    },
                };
                inputs.push(h);
            }
            true
        });
        signature_column(sigs.into_iter())
    }
}

/// A `FixedSizeBinary(32)` column of signatures, null where there is none.
fn signature_column(sigs: impl Iterator<Item = Option<Signature>>) -> ArrayRef {
    let (lower, _) = sigs.size_hint();
    let mut bytes: Vec<u8> = Vec::with_capacity(lower * 32);
    let mut valid = arrow_buffer::BooleanBufferBuilder::new(lower);
    for s in sigs {
        bytes.extend_from_slice(&s.unwrap_or(Signature([0; 32])).0);
        valid.append(s.is_some());
    }
    let valid = valid.finish();
    let nulls =
        (valid.count_set_bits() < valid.len()).then(|| arrow_buffer::NullBuffer::new(valid));
    Arc::new(FixedSizeBinaryArray::new(32, bytes.into(), nulls))
}

/// One step of a [`ColumnarPlan`].
#[derive(Debug)]
pub struct PlannedStep {
    /// The step's node.
    pub node: Node,
    /// How its signature column is computed, when it is cached.
    pub sig: Option<SigSpec>,
    /// The slot of each column it reads (its `Arg::Column`s, in order):
    /// their values feed the step, their hashes the signature.
    pub columns: Vec<usize>,
    /// Per output port: its slot (if needed) and type.
    pub outs: Vec<(Option<usize>, ValueType)>,
    /// The step itself.
    pub step: ColumnarStep,
}

/// See the module docs.
#[derive(Debug)]
pub struct ColumnarPlan {
    /// The steps, in topological order.
    pub steps: Vec<PlannedStep>,
    /// The requested outputs: slot and type, in the map's output order.
    pub outputs: Vec<(usize, ValueType)>,
}

impl MapJob {
    /// Lowers this map to columnar steps (see [`ColumnarPlan`]), for engine
    /// `engine`: fails, naming node, output and type, when a value that
    /// would be a column has no Arrow form.
    pub fn columnar_plan(self: &Arc<Self>, engine: &str) -> Result<ColumnarPlan, Error> {
        let cm = self.columnar()?;
        plan(self, &cm, engine)
    }
}

/// See [`MapJob::columnar_plan`].
fn plan(job: &Arc<MapJob>, cm: &ColumnarMap<'_>, engine: &str) -> Result<ColumnarPlan, Error> {
    let cache = job.cache().cloned();
    // Nodes whose outputs have no Arrow form cannot be columns.
    for step in &cm.steps {
        let node = step.node;
        let all = !node.is_pipeline();
        for (port, slot) in node.outputs().iter().zip(step.outs) {
            if (all || slot.is_some()) && !port.ty.is_arrow() {
                return Err(Error::Engine {
                    message: format!(
                        "node `{}` cannot run on engine `{engine}`: output `{}` of type {} has no Arrow form",
                        node.name(),
                        port.name,
                        port.ty.name()
                    ),
                });
            }
        }
    }
    // Slots held as columns, with their types.
    let mut column_ty: HashMap<usize, ValueType> = cm
        .mapped
        .iter()
        .filter_map(|m| m.slot.map(|s| (s, m.ty)))
        .collect();
    let fixed: HashMap<usize, &FixedInput> = cm.fixed.iter().map(|f| (f.slot, f)).collect();
    let last = cm.steps.len();
    let mut steps = Vec::with_capacity(cm.steps.len());
    for step in &cm.steps {
        let node = step.node;
        let mut args = Vec::with_capacity(step.args.len());
        for &slot in step.args {
            if let Some(ty) = column_ty.get(&slot) {
                args.push(Arg::Column { slot, ty: *ty });
            } else if let Some(f) = fixed.get(&slot) {
                args.push(Arg::Fixed {
                    slot,
                    ty: f.ty,
                    value: f.value.clone(),
                    hash: f.hash,
                });
            } else {
                return Err(Error::Engine {
                    message: format!(
                        "engine `{engine}`: no value for an input of node `{}`",
                        node.name()
                    ),
                });
            }
        }
        let args_arrow = args.iter().all(|a| match a {
            Arg::Column { .. } => true,
            Arg::Fixed { ty, .. } => ty.is_arrow(),
        });
        let hashable = args.iter().all(|a| match a {
            Arg::Column { .. } => true,
            Arg::Fixed { hash, .. } => hash.is_some(),
        });
        let cached = cache.is_some() && node.caching() && hashable;
        let sig = cached.then(|| {
            SigSpec::new(
                node,
                args.iter()
                    .map(|a| match a {
                        Arg::Column { .. } => SigArg::Column,
                        Arg::Fixed { hash, .. } => SigArg::Fixed(*hash),
                    })
                    .collect(),
            )
        });
        let columns = args
            .iter()
            .filter_map(|a| match a {
                Arg::Column { slot, .. } => Some(*slot),
                Arg::Fixed { .. } => None,
            })
            .collect();
        let outs: Vec<(Option<usize>, ValueType)> = node
            .outputs()
            .iter()
            .zip(step.outs)
            .map(|(p, slot)| (*slot, p.ty))
            .collect();
        for (slot, ty) in &outs {
            if let Some(slot) = slot {
                column_ty.insert(*slot, *ty);
            }
        }
        let columnar = ColumnarStep {
            tally: None,
            name: format!("node_{}_{}", node.name(), step.index),
            step: step.index,
            job: job.clone(),
            state: job.state().clone(),
            observed: job.observed(),
            counted: job.counted(),
            scopes: job.scope_count(),
            cache: match (&cache, cached) {
                (Some(c), true) => Some((c.clone(), node.cache_key())),
                _ => None,
            },
            hash_outputs: cache.is_some(),
            first: step.index == 0,
            last: step.index + 1 == last,
            slot_count: cm.slot_count,
            args,
            outs: outs.clone(),
            batch: node.batch().cloned().filter(|_| args_arrow),
            rows: node.rows().cloned(),
            retries: node.retries(),
            opens: job.scopes_opening(step.index),
            closes: job.scopes_closing(step.index),
            piece_rows: AtomicUsize::new(FIRST_PIECE_ROWS),
        };
        steps.push(PlannedStep {
            node: node.clone(),
            sig,
            columns,
            outs,
            step: columnar,
        });
    }
    let mut outputs = Vec::with_capacity(cm.outputs.len());
    for o in &cm.outputs {
        if !column_ty.contains_key(&o.slot) {
            return Err(Error::Engine {
                message: format!(
                    "engine `{engine}`: output `{}` is not a column of the plan",
                    o.name
                ),
            });
        }
        outputs.push((o.slot, o.ty));
    }
    Ok(ColumnarPlan { steps, outputs })
}
