//! Calling a node: one attempt of a function (sync, or async on the
//! shared runtime), its retries and events, panics caught as errors, and
//! the outputs checked against the declaration; async calls of many rows
//! awaited together under the node's bounds.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, NodeError};
use crate::node::{Args, Node, NodeFn, Outs};
use crate::observe::callback::ItemEvent;
use crate::observe::clock::Moment;
use crate::pipeline::Step;
use crate::value::Value;

use super::*;

thread_local! {
    /// The clock reading of the last event that closed a span of this
    /// thread's row walk (a node call's end, an item's start), for the
    /// event that opens the next one (the next node's start, the item's
    /// end) to share: consecutive events of one item read the clock once
    /// between them. Taken (cleared) by whoever uses it.
    static STAMP: std::cell::Cell<Option<Moment>> = const { std::cell::Cell::new(None) };
}

/// Reads the clock, and leaves the reading for the next event of this
/// thread's row walk (see `STAMP`).
#[inline]
pub(crate) fn stamp() -> Moment {
    let now = Moment::now();
    STAMP.set(Some(now));
    now
}

/// The reading the last event left, or the clock's, left again for the
/// next event (an item's start hands its reading to its first node; its
/// end to the next item of the chunk).
#[inline]
pub(crate) fn pass_stamp() -> Moment {
    let now = take_stamp();
    STAMP.set(Some(now));
    now
}

/// The reading the last event left (see `STAMP`), or the clock's.
#[inline]
pub(crate) fn take_stamp() -> Moment {
    STAMP.take().unwrap_or_else(Moment::now)
}

/// Forgets the reading the last event left (a new walk begins).
pub(crate) fn clear_stamp() {
    STAMP.set(None);
}

impl Exec {
    pub(crate) fn call_func(
        &self,
        node: &Node,
        f: &NodeFn,
        step: &Step,
        slots: &[Option<Value>],
        items: &[usize],
    ) -> Result<Outs, Error> {
        let f = match f {
            NodeFn::Sync(f) => f,
            NodeFn::Async(f) => {
                return crate::engine::runtime::block_on(self.call_async(
                    node,
                    f.as_ref(),
                    step,
                    slots,
                    items,
                ));
            }
        };
        let args = Args::new(slots, &step.args, &node.inputs);
        let mut attempt = 1;
        let _span = crate::observe::trace::Span::node_item(&node.name, items).enter();
        loop {
            let start = self.attempt_started(node, items, true);
            let outcome = call_once(node, f.as_ref(), args);
            if let Some(done) =
                self.attempt_settled(node, items, &mut attempt, start, outcome, true)
            {
                return done;
            }
        }
    }

    /// Starts one attempt of `node`: the node-start event, and the time
    /// (read only when a callback takes per-item events and may want times,
    /// see [`Exec::wants_times`]: counts need none).
    /// A call on the row walk's thread (`shared`) takes the reading the
    /// previous event left, if any.
    pub(crate) fn attempt_started(
        &self,
        node: &Node,
        items: &[usize],
        shared: bool,
    ) -> Option<Moment> {
        if !self.has_item_callbacks() {
            return None;
        }
        self.emit_one(ItemEvent::NodeStarts, items, |cb, one| {
            cb.on_node_starts(one, &node.name)
        });
        self.wants_times().then(|| match shared {
            true => take_stamp(),
            false => Moment::now(),
        })
    }

    /// Settles one attempt of `node` (started at `start`): its outputs
    /// (node-end event), `None` to try again (retry event, `attempt`
    /// counted up), or the failure once the retries are spent.
    pub(crate) fn attempt_settled(
        &self,
        node: &Node,
        items: &[usize],
        attempt: &mut u32,
        start: Option<Moment>,
        outcome: Result<Outs, NodeError>,
        shared: bool,
    ) -> Option<Result<Outs, Error>> {
        match outcome {
            Ok(outs) => {
                if self.has_callbacks() {
                    let elapsed = match (start, shared) {
                        (Some(start), true) => stamp() - start,
                        (Some(start), false) => start.elapsed(),
                        (None, _) => std::time::Duration::ZERO,
                    };
                    self.node_ended(items, &node.name, elapsed);
                }
                Some(Ok(outs))
            }
            Err(e) if *attempt <= node.retries => {
                let tried = *attempt;
                self.emit_items(items, |cb, ctx| {
                    cb.on_node_retry(ctx, &node.name, tried, &e)
                });
                *attempt += 1;
                None
            }
            Err(e) => Some(Err(self.fail(node, items, *attempt, e))),
        }
    }

    /// [`Exec::call_func`] for an async function, as a future that does not
    /// block: the same events, retries and errors, with the node's future
    /// running on the shared async runtime. Each attempt first waits for
    /// the node's admission (a place among its calls in flight, and its
    /// turn under its rate limit), then fires its node-start event.
    pub(crate) async fn call_async(
        &self,
        node: &Node,
        f: &crate::node::AsyncFn,
        step: &Step,
        slots: &[Option<Value>],
        items: &[usize],
    ) -> Result<Outs, Error> {
        let mut attempt = 1;
        loop {
            let admitted = node.limits().admit().await;
            let start = self.attempt_started(node, items, false);
            let outcome =
                call_async_once(node, f, Args::new(slots, &step.args, &node.inputs)).await;
            drop(admitted);
            if let Some(done) =
                self.attempt_settled(node, items, &mut attempt, start, outcome, false)
            {
                return done;
            }
        }
    }

    /// Calls async node `node` (function `f`, step `step`) once per row of
    /// `rows` (each a slot table and an item path), with up to
    /// [`Node::concurrency`] calls in flight, and waits for all of them
    /// from this thread. Calls start in row order; a finished call makes
    /// room for the next one whatever the order they finish in. Outcomes
    /// come back in row order; events fire as calls start and end.
    pub(crate) fn call_async_rows(
        &self,
        node: &Node,
        f: &crate::node::AsyncFn,
        step: &Step,
        rows: &[(&[Option<Value>], &[usize])],
    ) -> Vec<Result<Outs, Error>> {
        use futures::StreamExt;
        let calls = rows
            .iter()
            .enumerate()
            .map(|(k, (slots, items))| async move {
                (k, self.call_async(node, f, step, slots, items).await)
            });
        let finished: Vec<(usize, Result<Outs, Error>)> = crate::engine::runtime::block_on(
            futures::stream::iter(calls)
                .buffer_unordered(node.concurrency())
                .collect(),
        );
        let mut outcomes: Vec<Option<Result<Outs, Error>>> =
            (0..rows.len()).map(|_| None).collect();
        for (k, outcome) in finished {
            outcomes[k] = Some(outcome);
        }
        outcomes.into_iter().flatten().collect()
    }
}

/// One call of a synchronous function; a panic inside it is an error.
pub(crate) fn call_once(
    node: &Node,
    f: &crate::node::SyncFn,
    args: Args<'_>,
) -> Result<Outs, NodeError> {
    let outs = match catch_unwind(AssertUnwindSafe(|| f(args))) {
        Ok(r) => r?,
        Err(payload) => return Err(NodeError::from_panic(payload)),
    };
    check_outs(node, outs)
}

/// One call of an async function: start it (a panic while starting is an
/// error) and await its future on the shared async runtime.
pub(crate) async fn call_async_once(
    node: &Node,
    f: &crate::node::AsyncFn,
    args: Args<'_>,
) -> Result<Outs, NodeError> {
    let fut = match catch_unwind(AssertUnwindSafe(|| f(args))) {
        Ok(r) => r?,
        Err(payload) => return Err(NodeError::from_panic(payload)),
    };
    check_outs(node, crate::engine::runtime::run(fut).await??)
}

/// A node's returned outputs checked against its declared outputs.
pub(crate) fn check_outs(node: &Node, outs: Outs) -> Result<Outs, NodeError> {
    if outs.len() != node.outputs.len() {
        return Err(NodeError::OutputCount {
            expected: node.outputs.len(),
            actual: outs.len(),
        });
    }
    for (v, p) in outs.iter().zip(&node.outputs) {
        if !p.ty.matches(v) {
            return Err(NodeError::OutputType {
                output: p.inner.clone(),
                expected: p.ty.name(),
                actual: v.type_name(),
            });
        }
    }
    Ok(outs)
}
