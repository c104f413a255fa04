//! What happened to each drawn node in a run or a map, from its events
//! ([`Recorder`](crate::observe::Recorder)): how many items it computed,
//! found cached, and failed — the colouring of [`GraphView`] after a run.

use std::collections::BTreeMap;

use super::{GraphView, ident};
use crate::observe::{Event, EventKind, thousands};

/// How many items a node computed, found in the cache, and failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeOutcome {
    /// Items the node ran for successfully.
    pub computed: usize,
    /// Items whose results came from the cache.
    pub cached: usize,
    /// Items it failed for (after its retries).
    pub failed: usize,
}

impl NodeOutcome {
    /// A short account: "cached", "computed", "8,210 cached / 1,790
    /// computed", with failures added.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match (self.cached, self.computed) {
            (0, 0) => {}
            (_, 0) => parts.push(format!("{} cached", thousands(self.cached as u64))),
            (0, _) => parts.push(format!("{} computed", thousands(self.computed as u64))),
            (c, n) => parts.push(format!(
                "{} cached / {} computed",
                thousands(c as u64),
                thousands(n as u64)
            )),
        }
        if self.failed > 0 {
            parts.push(format!("{} failed", thousands(self.failed as u64)));
        }
        parts.join(", ")
    }

    /// The fill colour of the node: failed (salmon), partly cached (khaki),
    /// cached (light blue), computed (pale green); `None` when nothing ran.
    pub fn colour(&self) -> Option<&'static str> {
        if self.failed > 0 {
            Some("#fa8072")
        } else if self.cached > 0 && self.computed > 0 {
            Some("#f0e68c")
        } else if self.cached > 0 {
            Some("#add8e6")
        } else if self.computed > 0 {
            Some("#98fb98")
        } else {
            None
        }
    }
}

impl GraphView {
    /// Counts, per drawn node, what `events` (of a run or map of the drawn
    /// pipeline) say happened: node ends as computed, cached results as
    /// cached, final errors as failed. A nested pipeline drawn as one node
    /// counts its completed nested runs as computed and its failures.
    pub fn with_events(mut self, events: &[Event]) -> Self {
        let mut outcomes: BTreeMap<String, NodeOutcome> = BTreeMap::new();
        for event in events {
            let (node, what) = match &event.kind {
                EventKind::NodeEnd(node) => (node, 0),
                EventKind::NodeCached(node) => (node, 1),
                EventKind::Error {
                    node: Some(node), ..
                } => (node, 2),
                EventKind::NestedEnd(node) => (node, 3),
                _ => continue,
            };
            let prefix: Vec<String> = event.path.iter().map(|p| ident(p)).collect();
            let id = format!("n_{}__{}", prefix.join("__"), ident(node));
            let Some(drawn) = self.nodes.iter().find(|n| n.id == id) else {
                continue;
            };
            let is_pipeline = drawn.kind == super::ViewKind::Pipeline;
            let outcome = outcomes.entry(id).or_default();
            match what {
                0 => outcome.computed += 1,
                1 => outcome.cached += 1,
                2 => outcome.failed += 1,
                _ if is_pipeline => outcome.computed += 1,
                _ => {}
            }
        }
        self.outcomes = outcomes;
        self
    }
}
