//! The cache store: batch-first lookups and stores of node results keyed by
//! [`Signature`], and [`DiskCache`], a directory of Parquet segments.
//!
//! Layout of a [`DiskCache`] at `root` (one dataset per node version):
//!
//! ```text
//! root/<node name>/<code hash, 64 hex>/seg-<nanos>-<pid>-<n>-<token>.parquet   complete segments
//! root/<node name>/<code hash, 64 hex>/.tmp-<nanos>-<pid>-<n>.parquet  writes in progress
//! ```
//!
//! A segment holds a `signature` column (`FixedSizeBinary(32)`, not null),
//! one column per node output, named and typed as the output's Arrow form,
//! and one `<output>.hash` column per output holding each value's hash, so
//! that a hit also brings the hashes its dependents' signatures need.
//! Segments are written to a `.tmp-` file, synced, then renamed, so a `seg-`
//! file is complete or absent; readers ignore every other file. A segment
//! that cannot be read or whose schema differs is reported once and skipped:
//! its items are computed again, never trusted.
//!
//! The API is columnar ([`CacheRows`], [`Hits`]): rows go in and come out as
//! Arrow arrays, so row engines and columnar engines share one store. A
//! [`DiskCache`] keeps only an index from signature to row in memory and
//! reads the row groups that hold hits when a lookup asks for them.
//!
//! The full format and its guarantees are specified in `docs/cache-format.md`.

mod decision;
pub(crate) mod disk;
mod location;
mod rows;
pub(crate) mod writers;

pub use decision::{CacheDecision, CacheOutcome};
pub(crate) use disk::signature_at;
pub use disk::{
    DatasetStats, DiskCache, GcPolicy, KEY_HEX, READ_CACHE_BYTES, STALE_TEMPORARY_AGE, StoredRow,
    VersionInfo,
};
#[cfg(feature = "s3")]
pub use disk::{MIRROR_ENV, RETRY_TIMEOUT};
pub use location::CacheLocation;
pub use rows::{CacheRows, Hits, Located};

use std::path::PathBuf;
use std::sync::Arc;

use crate::signature::Signature;
use crate::value::ValueType;

/// An error of the cache store.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Nothing in the cache is named so (a node, or a node version's key).
    #[error("the cache holds no node version `{what}` (its nodes: {known})")]
    NotFound {
        /// What was asked for.
        what: String,
        /// The nodes it holds, comma-separated.
        known: String,
    },
    /// A file system operation failed.
    #[error("cache I/O on `{path}`: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A cache location that cannot be opened here.
    #[error("cache location `{location}`: {reason}")]
    Location {
        /// The location as given.
        location: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A request to the object store holding the cache failed.
    #[error("cache store `{location}`, object `{object}`: {source}")]
    Remote {
        /// The store's URL.
        location: String,
        /// The object involved.
        object: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Values could not be hashed, so the nodes taking them cannot be
    /// signed (they run, uncached).
    #[error("cannot hash {column}: {message}")]
    Hash {
        /// Which values: an input, or a node's output.
        column: String,
        /// What went wrong.
        message: String,
    },
    /// Values could not be encoded for storage.
    #[error("cannot encode output `{output}` of node `{node}`: {message}")]
    Encode {
        /// The node.
        node: String,
        /// The output.
        output: String,
        /// What went wrong.
        message: String,
    },
}

/// What identifies one node version's results: its name, code fingerprint
/// and outputs (names and types, in order).
#[derive(Clone, Debug)]
pub struct CacheKey {
    /// The node's name.
    pub node: String,
    /// The node's code fingerprint.
    pub code: Signature,
    /// The node's outputs.
    pub outputs: Vec<(String, ValueType)>,
    /// Named hashes of the parts of the code fingerprint (see
    /// [`Node::code_parts`](crate::Node::code_parts)), kept to explain misses.
    pub parts: Vec<(String, String)>,
}

impl CacheKey {
    /// Whether every output has an Arrow form (only then can it be stored).
    pub fn storable(&self) -> bool {
        self.outputs.iter().all(|(_, t)| t.is_arrow())
    }
}

pub(crate) fn encode_error(key: &CacheKey, output: &str, message: impl ToString) -> CacheError {
    CacheError::Encode {
        node: key.node.clone(),
        output: output.to_string(),
        message: message.to_string(),
    }
}

/// The writing half of [`Cache::begin_flush`].
pub type PendingWrite = Box<dyn FnOnce() -> Result<(), CacheError> + Send>;

/// A content-addressed store of node results, batch-first and columnar.
pub trait Cache: Send + Sync {
    /// Looks up many signatures of one node version at once.
    fn lookup(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Hits, CacheError>;

    /// Where the stored rows of `sigs` lie, for engines that merge hits
    /// with fresh results themselves: the store lends whole stored batches
    /// and gives each found signature's batch and row, so each hit is
    /// copied once, into the merged result, instead of first being gathered
    /// into a new array. `None` (the default): the store cannot lend its
    /// rows, and engines use [`Cache::lookup`].
    fn locate(&self, _key: &CacheKey, _sigs: &[Signature]) -> Result<Option<Located>, CacheError> {
        Ok(None)
    }

    /// Stores rows of one node version (nothing happens for no rows).
    fn store(&self, key: &CacheKey, rows: &CacheRows) -> Result<(), CacheError>;

    /// Makes everything stored so far durable. A store may buffer stored
    /// rows until then ([`DiskCache`] does, writing one segment per node
    /// version per flush). Engines flush during a `map` by count and by time
    /// (see [`MapOptions::flush_every`](crate::MapOptions::flush_every)) and
    /// at the end of every `run` and `map`.
    fn flush(&self) -> Result<(), CacheError> {
        Ok(())
    }

    /// How many stored rows wait to be made durable by a flush (0 for a
    /// store that writes at once, the default).
    fn unwritten_rows(&self) -> usize {
        0
    }

    /// Starts a flush whose writing can run on another thread: takes what
    /// is buffered *now* (so what each flush holds does not depend on
    /// timing) and returns the work that makes it durable. Engines run it in
    /// the background while items keep running, a bounded number of
    /// writes at a time, which may overlap. The default flushes at once.
    fn begin_flush(self: Arc<Self>) -> PendingWrite {
        let done = self.flush();
        Box::new(move || done)
    }

    /// Called before a `map` of `items` items runs node version `key`: a
    /// store may load what it holds of that version now, and size its
    /// structures once for about `items` results (growing an index step by
    /// step rehashes it many times over). Only a hint: lookups and stores
    /// stay correct without it, and the default does nothing.
    fn prepare(&self, _key: &CacheKey, _items: usize) -> Result<(), CacheError> {
        Ok(())
    }

    /// The code versions of the node named `node` that have results, oldest
    /// first, if the store can tell (used to explain misses).
    fn versions(&self, _node: &str) -> Vec<Signature> {
        Vec::new()
    }

    /// The code parts recorded for one version of a node, if known.
    fn version_parts(&self, _node: &str, _code: &Signature) -> Option<Vec<(String, String)>> {
        None
    }

    /// Where another process opens this same store ([`CacheLocation`]),
    /// if it can: plans that leave the process carry it instead of the
    /// store. `None` (the default): a store only this process can reach.
    fn location(&self) -> Option<CacheLocation> {
        None
    }
}
