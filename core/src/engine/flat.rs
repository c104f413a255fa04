//! A map's steps with nested pipelines inlined, for columnar engines.
//!
//! A nested pipeline without `map_over` computes, per item, a few more
//! values from values the outer item already has. A columnar engine can
//! therefore run its nodes as steps of the outer plan, over the outer
//! rows, instead of running the inner pipeline once per row. [`Flat`]
//! describes that: one slot space (the outer plan's slots, then each inlined
//! scope's own), the inner steps in order, and for each step the scope
//! ([`Exec`]) that names its errors and provides its cache.
//!
//! Inner inputs take the slots of the outer values bound to them (no copy);
//! inner outputs fill the outer slots they are mapped to. Values bound in
//! the inner pipeline itself become fixed inputs of the flat plan.
//!
//! An inlined pipeline keeps its events: engines fire its nested-start and
//! pipeline-start events for an item before the first of its steps
//! ([`Flat::opening`]) and its pipeline-end and nested-end events after the
//! last ([`Flat::closing`]), as the row engines do around a nested run.
//!
//! A nested pipeline stays one step (run per row through
//! [`Exec::call_nested`], exactly as the row engines run it) when inlining
//! would change what users observe: when the inner pipeline has its own
//! engine, cache or callbacks, for `map_over` nodes, and when an inner
//! output is also an inner input.

use crate::engine::Exec;
use crate::node::{Node, NodeKind};
use crate::pipeline::{Plan, Step};
use crate::value::{Value, ValueType};

/// One step of a flat plan.
#[derive(Debug)]
pub(crate) struct FlatStep {
    /// The scope the step belongs to (0: the map's own pipeline).
    pub scope: usize,
    /// Its index in the scope's plan.
    pub step: usize,
    /// Flat slot of each argument.
    pub args: Vec<usize>,
    /// Flat slot of each output port, if needed.
    pub outs: Vec<Option<usize>>,
}

/// A value bound inside an inlined pipeline: a fixed input of the flat plan.
#[derive(Debug)]
pub(crate) struct FlatFixed {
    pub name: String,
    pub slot: usize,
    pub ty: ValueType,
    pub value: Value,
}

/// An inlined pipeline: the scope it is nested in and its node's name.
#[derive(Debug)]
pub(crate) struct FlatScope {
    pub parent: usize,
    pub node: String,
}

/// See the module docs.
pub(crate) struct Flat {
    /// Scopes 1.. (scope 0 is the map's own [`Exec`]); `None` only while
    /// being filled.
    scopes: Vec<Option<Exec>>,
    /// Scopes 1..: where each is nested.
    pub nesting: Vec<FlatScope>,
    pub steps: Vec<FlatStep>,
    pub slot_count: usize,
    pub fixed: Vec<FlatFixed>,
}

impl Flat {
    /// Flattens `root`'s plan.
    pub fn new(root: &Exec) -> Flat {
        let mut flat = Flat {
            scopes: Vec::new(),
            nesting: Vec::new(),
            steps: Vec::new(),
            slot_count: root.plan().slot_count,
            fixed: Vec::new(),
        };
        let identity: Vec<usize> = (0..root.plan().slot_count).collect();
        flat.add_scope(root, 0, &identity);
        flat
    }

    /// The executor of scope `scope` (0: the map's own).
    pub fn scope<'s>(&'s self, root: &'s Exec, scope: usize) -> Option<&'s Exec> {
        match scope {
            0 => Some(root),
            k => self.scopes.get(k - 1)?.as_ref(),
        }
    }

    /// The inlined scopes step `step` is in, outermost first.
    fn chain(&self, step: usize) -> Vec<usize> {
        let mut chain = Vec::new();
        let mut scope = self.steps.get(step).map_or(0, |s| s.scope);
        while scope != 0 {
            chain.push(scope);
            scope = self.nesting[scope - 1].parent;
        }
        chain.reverse();
        chain
    }

    /// The inlined scopes that begin with step `step`, outermost first.
    pub fn opening(&self, step: usize) -> Vec<usize> {
        let before = match step {
            0 => Vec::new(),
            s => self.chain(s - 1),
        };
        let mut open = self.chain(step);
        open.retain(|s| !before.contains(s));
        open
    }

    /// The inlined scopes that end with step `step`, innermost first.
    pub fn closing(&self, step: usize) -> Vec<usize> {
        let after = self.chain(step + 1);
        let mut close = self.chain(step);
        close.retain(|s| !after.contains(s));
        close.reverse();
        close
    }

    /// The scope of step `step` with the step itself.
    pub fn step<'s>(
        &'s self,
        root: &'s Exec,
        step: usize,
    ) -> Option<(&'s Exec, &'s Step, &'s FlatStep)> {
        let fs = self.steps.get(step)?;
        let exec = self.scope(root, fs.scope)?;
        Some((exec, exec.plan().steps.get(fs.step)?, fs))
    }

    fn add_scope(&mut self, exec: &Exec, scope: usize, slot_of: &[usize]) {
        let plan: &Plan = exec.plan();
        for (i, s) in plan.steps.iter().enumerate() {
            let node: &Node = exec.node(s);
            let args: Vec<usize> = s.args.iter().map(|&a| slot_of[a]).collect();
            let outs: Vec<Option<usize>> = s.outs.iter().map(|o| o.map(|o| slot_of[o])).collect();
            if self.try_inline(exec, scope, node, s, &args, &outs) {
                continue;
            }
            self.steps.push(FlatStep {
                scope,
                step: i,
                args,
                outs,
            });
        }
    }

    /// Inlines nested step `s` if it can be (see the module docs).
    fn try_inline(
        &mut self,
        exec: &Exec,
        parent: usize,
        node: &Node,
        s: &Step,
        args: &[usize],
        outs: &[Option<usize>],
    ) -> bool {
        let NodeKind::Nested(inner) = &node.kind else {
            return false;
        };
        let (Some(plan), None) = (s.inner.as_ref(), &node.mapping) else {
            return false;
        };
        if plan.steps.is_empty() {
            // Nothing to hang its events on.
            return false;
        }
        if !inner.callbacks.is_empty() || inner.cache.is_some() || inner.engine.is_some() {
            return false;
        }
        const UNSET: usize = usize::MAX;
        let mut slot_of = vec![UNSET; plan.slot_count];
        let mut bound = Vec::new();
        for pi in &plan.inputs {
            if let Some(k) = node.inputs.iter().position(|p| p.inner == pi.name) {
                slot_of[pi.slot] = args[k];
            } else if let Some(v) = inner.bound.get(&pi.name) {
                bound.push((pi, v.clone()));
            } else {
                return false;
            }
        }
        for (o, &port) in plan.outputs.iter().zip(&s.inner_ports) {
            if let Some(outer) = outs.get(port).copied().flatten() {
                if slot_of[o.slot] != UNSET {
                    // An inner input passed straight through: two slots.
                    return false;
                }
                slot_of[o.slot] = outer;
            }
        }
        for (pi, value) in bound {
            let slot = self.new_slot();
            slot_of[pi.slot] = slot;
            self.fixed.push(FlatFixed {
                name: pi.name.clone(),
                slot,
                ty: pi.ty,
                value,
            });
        }
        for s in slot_of.iter_mut().filter(|s| **s == UNSET) {
            *s = self.slot_count;
            self.slot_count += 1;
        }
        let scope = exec.inner_scope(node, inner, plan);
        // Scopes are numbered in the order they are entered.
        self.scopes.push(None);
        self.nesting.push(FlatScope {
            parent,
            node: node.name.clone(),
        });
        let id = self.scopes.len();
        self.add_scope(&scope, id, &slot_of);
        self.scopes[id - 1] = Some(scope);
        true
    }

    fn new_slot(&mut self) -> usize {
        self.slot_count += 1;
        self.slot_count - 1
    }
}
