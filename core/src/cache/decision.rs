//! What the cache did for one node and item, and why: the values cache
//! decisions are reported as.

use crate::signature::Signature;

/// What the cache did for one node and item, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheDecision {
    /// The node.
    pub node: String,
    /// Item indices, one per enclosing `map` level (empty for `run`).
    pub items: Vec<usize>,
    /// The node's signature for the item, when it has one.
    pub signature: Option<Signature>,
    /// Hit, miss (with why) or not cached (with why).
    pub outcome: CacheOutcome,
}

/// The outcome of a [`CacheDecision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The result came from the cache.
    Hit,
    /// The node ran; `reason` says why no result was cached.
    Miss {
        /// Why: code changed (and which parts), or new input values.
        reason: String,
    },
    /// The node is never cached; `reason` says why.
    NotCached {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for CacheDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let item = if self.items.is_empty() {
            "run".to_string()
        } else {
            self.items
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("/")
        };
        let sig = self
            .signature
            .map(|s| s.to_hex()[..16].to_string())
            .unwrap_or_default();
        match &self.outcome {
            CacheOutcome::Hit => write!(
                f,
                "hypernodes cache: hit node={} item={item} sig={sig}",
                self.node
            ),
            CacheOutcome::Miss { reason } => write!(
                f,
                "hypernodes cache: miss node={} item={item} sig={sig} ({reason})",
                self.node
            ),
            CacheOutcome::NotCached { reason } => {
                write!(
                    f,
                    "hypernodes cache: skip node={} item={item} ({reason})",
                    self.node
                )
            }
        }
    }
}
