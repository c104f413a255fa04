//! `tracing` spans of runs, maps, nodes and the cache (feature `tracing`),
//! so any `tracing` subscriber sees what a pipeline does:
//!
//! | span | where | fields |
//! |---|---|---|
//! | `pipeline` | each `run` or `map` of a pipeline, and each nested run | `pipeline` (its path), `items` (the item path) |
//! | `map` | each `map`, nested ones included | `pipeline`, `items` (how many), `engine` |
//! | `node` | each node call on row engines (one item), each batch on columnar engines | `node`, `item` or `rows`, `hits`, `misses` |
//! | `cache.lookup` | each lookup of a batch of signatures | `node`, `keys`, `hits` |
//! | `cache.store` | each batch of results stored | `node`, `rows`, `bytes` |
//! | `cache.flush` | each flush that makes stored results durable | `rows` |
//!
//! Spans of work done on other threads (a parallel engine's workers,
//! DataFusion's tasks) have their map as parent. Without the feature every
//! function here is a no-op the compiler removes.

use std::sync::Arc;

#[cfg(feature = "tracing")]
use arrow_array::Array;
#[cfg(feature = "tracing")]
use tracing::field::Empty;

use crate::cache::Cache;
#[cfg(feature = "tracing")]
use crate::cache::{CacheError, CacheKey, CacheLocation, CacheRows, Hits, Located};
#[cfg(feature = "tracing")]
use crate::signature::Signature;

/// A span (or nothing, without the `tracing` feature).
#[derive(Clone, Debug, Default)]
pub(crate) struct Span(#[cfg(feature = "tracing")] Option<tracing::Span>);

/// A span entered on this thread until dropped.
pub(crate) struct Entered {
    /// Exits the span when dropped.
    #[cfg(feature = "tracing")]
    _guard: Option<tracing::span::EnteredSpan>,
}

impl Span {
    /// The span of a `map` of `items` items of the pipeline at `path`.
    #[allow(unused_variables)]
    pub(crate) fn map(path: &[String], items: usize, engine: &str) -> Span {
        #[cfg(feature = "tracing")]
        {
            Span(Some(tracing::info_span!(
                "map",
                pipeline = %path.join("/"),
                items,
                engine
            )))
        }
        #[cfg(not(feature = "tracing"))]
        Span()
    }

    /// The span of a run of the pipeline at `path` (at item path `items`).
    #[allow(unused_variables)]
    pub(crate) fn pipeline(path: &[String], items: &[usize]) -> Span {
        #[cfg(feature = "tracing")]
        {
            Span(Some(tracing::info_span!(
                "pipeline",
                pipeline = %path.join("/"),
                items = ?items
            )))
        }
        #[cfg(not(feature = "tracing"))]
        Span()
    }

    /// The span of one call of `node` for one item (row engines), a child
    /// of the current span.
    #[allow(unused_variables)]
    pub(crate) fn node_item(node: &str, items: &[usize]) -> Span {
        #[cfg(feature = "tracing")]
        {
            Span(Some(tracing::debug_span!("node", node, item = ?items)))
        }
        #[cfg(not(feature = "tracing"))]
        Span()
    }

    /// The span of `node` over a batch of `rows` rows (columnar engines), a
    /// child of this span (its map's); record its hits and misses with
    /// [`Span::record_counts`].
    #[allow(unused_variables)]
    pub(crate) fn node_batch(&self, node: impl FnOnce() -> String, rows: usize) -> Span {
        #[cfg(feature = "tracing")]
        {
            let parent = self.0.as_ref().and_then(|s| s.id());
            let node = node();
            Span(Some(tracing::info_span!(
                parent: parent,
                "node",
                node = %node,
                rows,
                hits = Empty,
                misses = Empty
            )))
        }
        #[cfg(not(feature = "tracing"))]
        Span()
    }

    /// Records a node span's hits and misses.
    #[allow(unused_variables)]
    pub(crate) fn record_counts(&self, hits: usize, misses: usize) {
        #[cfg(feature = "tracing")]
        if let Some(s) = &self.0 {
            s.record("hits", hits);
            s.record("misses", misses);
        }
    }

    /// Enters the span on this thread until the guard is dropped.
    pub(crate) fn enter(&self) -> Entered {
        #[cfg(feature = "tracing")]
        {
            Entered {
                _guard: self.0.clone().map(tracing::Span::entered),
            }
        }
        #[cfg(not(feature = "tracing"))]
        Entered {}
    }
}

/// The cache as `tracing` sees it: every lookup, store and flush in a
/// span, whatever the engine (see the module docs). Without the feature,
/// the cache itself.
pub(crate) fn traced(cache: Arc<dyn Cache>) -> Arc<dyn Cache> {
    #[cfg(feature = "tracing")]
    {
        Arc::new(Traced(cache))
    }
    #[cfg(not(feature = "tracing"))]
    cache
}

#[cfg(feature = "tracing")]
struct Traced(Arc<dyn Cache>);

/// The span of one lookup of `sigs` (by `lookup` or `locate`), its hits
/// recorded when known.
#[cfg(feature = "tracing")]
fn lookup_span(key: &CacheKey, sigs: &[Signature]) -> tracing::Span {
    tracing::debug_span!(
        "cache.lookup",
        node = %key.node,
        keys = sigs.len(),
        hits = Empty
    )
}

#[cfg(feature = "tracing")]
impl Cache for Traced {
    fn lookup(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Hits, CacheError> {
        let span = lookup_span(key, sigs);
        let _e = span.enter();
        let hits = self.0.lookup(key, sigs)?;
        span.record("hits", hits.rows.iter().filter(|r| r.is_some()).count());
        Ok(hits)
    }

    fn locate(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Option<Located>, CacheError> {
        let span = lookup_span(key, sigs);
        let _e = span.enter();
        let located = self.0.locate(key, sigs)?;
        if let Some(l) = &located {
            span.record("hits", l.rows.iter().filter(|r| r.is_some()).count());
        }
        Ok(located)
    }

    fn store(&self, key: &CacheKey, rows: &CacheRows) -> Result<(), CacheError> {
        let bytes: usize = rows.columns.iter().map(|c| c.get_array_memory_size()).sum();
        let _e = tracing::debug_span!(
            "cache.store",
            node = %key.node,
            rows = rows.signatures.len(),
            bytes
        )
        .entered();
        self.0.store(key, rows)
    }

    fn flush(&self) -> Result<(), CacheError> {
        let _e = tracing::info_span!("cache.flush", rows = self.0.unwritten_rows()).entered();
        self.0.flush()
    }

    fn unwritten_rows(&self) -> usize {
        self.0.unwritten_rows()
    }

    fn begin_flush(self: Arc<Self>) -> crate::cache::PendingWrite {
        let span = tracing::info_span!("cache.flush", rows = self.0.unwritten_rows());
        let write = span.in_scope(|| self.0.clone().begin_flush());
        Box::new(move || span.in_scope(write))
    }

    fn prepare(&self, key: &CacheKey, items: usize) -> Result<(), CacheError> {
        self.0.prepare(key, items)
    }

    fn versions(&self, node: &str) -> Vec<Signature> {
        self.0.versions(node)
    }

    fn version_parts(&self, node: &str, code: &Signature) -> Option<Vec<(String, String)>> {
        self.0.version_parts(node, code)
    }

    fn location(&self) -> Option<CacheLocation> {
        self.0.location()
    }
}
