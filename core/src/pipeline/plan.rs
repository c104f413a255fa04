//! Compiling a pipeline: which nodes run for the requested outputs, in
//! which order, and where each value lives in an item's slot table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Pipeline;
use crate::error::Error;
use crate::node::NodeKind;
use crate::value::ValueType;

/// One compiled execution: which nodes run, in which order, and where each
/// value lives in the per-item slot table.
#[derive(Debug)]
pub(crate) struct Plan {
    pub slot_count: usize,
    pub inputs: Vec<PlanInput>,
    pub steps: Vec<Step>,
    pub outputs: Vec<PlanOutput>,
}

#[derive(Debug)]
pub(crate) struct PlanInput {
    pub name: String,
    pub slot: usize,
    pub ty: ValueType,
    pub needed_by: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct PlanOutput {
    pub name: String,
    pub slot: usize,
    pub ty: ValueType,
}

#[derive(Debug)]
pub(crate) struct Step {
    pub node: usize,
    pub args: Vec<usize>,
    /// Per output port: its slot, if anything needs it.
    pub outs: Vec<Option<usize>>,
    /// For nested pipelines: the inner plan, computing the needed outputs.
    pub inner: Option<Arc<Plan>>,
    /// For nested pipelines: per needed inner output, the output port.
    pub inner_ports: Vec<usize>,
}

impl Pipeline {
    /// Compiles the plan computing `requested` outputs (all when `None`).
    pub(crate) fn compile(&self, requested: Option<&[String]>) -> Result<Plan, Error> {
        let g = &*self.graph;
        let all_outputs = || self.outputs().into_iter().map(String::from).collect();
        let requested: Vec<String> = match requested {
            Some(r) => {
                for name in r {
                    if !g.producers.contains_key(name) {
                        return Err(Error::UnknownOutput {
                            name: name.clone(),
                            available: all_outputs(),
                        });
                    }
                }
                r.to_vec()
            }
            None => all_outputs(),
        };
        // Which nodes are needed, and which of their outputs.
        let mut needed = vec![false; g.nodes.len()];
        let mut used: HashSet<&str> = requested.iter().map(String::as_str).collect();
        let mut stack: Vec<usize> = requested.iter().map(|n| g.producers[n].0).collect();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut needed[n], true) {
                continue;
            }
            for p in &g.nodes[n].inputs {
                used.insert(&p.name);
                if let Some(&(m, _)) = g.producers.get(&p.name) {
                    stack.push(m);
                }
            }
        }
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        let mut inputs = Vec::new();
        for info in &g.inputs {
            let needed_by: Vec<String> = info
                .consumers
                .iter()
                .filter(|c| {
                    g.nodes
                        .iter()
                        .position(|n| &n.name == *c)
                        .is_some_and(|i| needed[i])
                })
                .cloned()
                .collect();
            if needed_by.is_empty() {
                continue;
            }
            let slot = slot_of.len();
            slot_of.insert(&info.name, slot);
            inputs.push(PlanInput {
                name: info.name.clone(),
                slot,
                ty: info.ty,
                needed_by,
            });
        }
        let mut steps = Vec::new();
        for &n in g.order.iter().filter(|&&n| needed[n]) {
            let node = &g.nodes[n];
            let args = node
                .inputs
                .iter()
                .map(|p| slot_of[p.name.as_str()])
                .collect();
            let mut outs = Vec::with_capacity(node.outputs.len());
            for p in &node.outputs {
                if used.contains(p.name.as_str()) {
                    let slot = slot_of.len();
                    slot_of.insert(&p.name, slot);
                    outs.push(Some(slot));
                } else {
                    outs.push(None);
                }
            }
            let (inner, inner_ports) = match &node.kind {
                NodeKind::Nested(p) => {
                    let ports: Vec<usize> =
                        (0..outs.len()).filter(|&i| outs[i].is_some()).collect();
                    let names: Vec<String> = ports
                        .iter()
                        .map(|&i| node.outputs[i].inner.clone())
                        .collect();
                    (Some(Arc::new(p.compile(Some(&names))?)), ports)
                }
                NodeKind::Func(_) => (None, Vec::new()),
            };
            steps.push(Step {
                node: n,
                args,
                outs,
                inner,
                inner_ports,
            });
        }
        let outputs = requested
            .iter()
            .map(|name| {
                let (n, o) = g.producers[name];
                PlanOutput {
                    name: name.clone(),
                    slot: slot_of[name.as_str()],
                    ty: g.nodes[n].outputs[o].ty,
                }
            })
            .collect();
        Ok(Plan {
            slot_count: slot_of.len(),
            inputs,
            steps,
            outputs,
        })
    }
}
