//! Errors: one enum for everything a pipeline can report, each variant naming
//! the nodes, inputs, types and items involved.

use std::fmt;

use crate::value::ValueError;

/// The error type of user node code: anything that is a standard error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why one call of a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node function returned `Err`.
    #[error("{0}")]
    User(BoxError),
    /// The node function panicked.
    #[error("panicked: {0}")]
    Panic(String),
    /// The node received a value of the wrong type for one of its inputs.
    #[error("input `{input}` has type `{actual}`, expected `{expected}`")]
    InputType {
        /// The input's name.
        input: String,
        /// The type the node takes.
        expected: &'static str,
        /// The type it received.
        actual: &'static str,
    },
    /// The node returned a value of the wrong type for one of its outputs.
    #[error("output `{output}` has type `{actual}`, declared `{expected}`")]
    OutputType {
        /// The output's name.
        output: String,
        /// The declared type.
        expected: &'static str,
        /// The returned type.
        actual: &'static str,
    },
    /// The node returned a different number of outputs than it declares.
    #[error("returned {actual} outputs, declared {expected}")]
    OutputCount {
        /// Declared outputs.
        expected: usize,
        /// Returned outputs.
        actual: usize,
    },
}

impl NodeError {
    /// Wraps a user error.
    pub fn user(error: impl Into<BoxError>) -> Self {
        NodeError::User(error.into())
    }

    /// Turns a panic payload into an error.
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        NodeError::Panic(message)
    }
}

/// Where a failure happened: the pipeline path from the outermost pipeline
/// and the item index at each mapped level (outermost first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// Pipeline names from the outermost pipeline to the one holding the node.
    pub path: Vec<String>,
    /// Item indices, one per enclosing `map` level, outermost first.
    pub items: Vec<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in pipeline `{}`", self.path.join("/"))?;
        match self.items.as_slice() {
            [] => Ok(()),
            [i] => write!(f, " on item {i}"),
            items => {
                let parts: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                write!(f, " on item {}", parts.join("/"))
            }
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything that can go wrong building or running a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The nodes form a cycle.
    #[error("the pipeline has a cycle through nodes {}", list(.nodes))]
    Cycle {
        /// Nodes on the cycle.
        nodes: Vec<String>,
    },
    /// Two nodes have the same name.
    #[error("two nodes are named `{name}`; rename one with `with_name`")]
    DuplicateNode {
        /// The shared name.
        name: String,
    },
    /// Two nodes produce the same output name.
    #[error("output `{output}` is produced by two nodes: `{first}` and `{second}`")]
    DuplicateOutput {
        /// The output name.
        output: String,
        /// The first producer.
        first: String,
        /// The second producer.
        second: String,
    },
    /// A consumer expects a different type than its producer makes.
    #[error(
        "type mismatch on `{name}`: node `{producer}` produces `{producer_type}` but node `{consumer}` takes `{consumer_type}`"
    )]
    TypeMismatch {
        /// The value's name.
        name: String,
        /// The producing node.
        producer: String,
        /// The type it produces.
        producer_type: &'static str,
        /// The consuming node.
        consumer: String,
        /// The type it takes.
        consumer_type: &'static str,
    },
    /// Two nodes take the same pipeline input with different types.
    #[error(
        "input `{name}` is taken as `{first_type}` by node `{first}` but as `{second_type}` by node `{second}`"
    )]
    InputTypeConflict {
        /// The input's name.
        name: String,
        /// The first consumer.
        first: String,
        /// Its type.
        first_type: &'static str,
        /// The second consumer.
        second: String,
        /// Its type.
        second_type: &'static str,
    },
    /// A node definition is invalid (bad renaming or `map_over`).
    #[error("node `{node}` is invalid: {reason}")]
    InvalidNode {
        /// The node's name.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// A requested output does not exist.
    #[error("unknown output `{name}`; available outputs: {}", list(.available))]
    UnknownOutput {
        /// The requested name.
        name: String,
        /// The outputs the pipeline has.
        available: Vec<String>,
    },
    /// A given name is not an input of the pipeline.
    #[error("unknown input `{name}`; the pipeline's inputs are {}", list(.available))]
    UnknownInput {
        /// The given name.
        name: String,
        /// The pipeline's inputs.
        available: Vec<String>,
    },
    /// A required input was not given.
    #[error("missing input `{name}`, needed by {}", list(.needed_by))]
    MissingInput {
        /// The input's name.
        name: String,
        /// The nodes that take it.
        needed_by: Vec<String>,
    },
    /// Several required inputs were not given: each with the nodes that
    /// take it.
    #[error("missing inputs: {}", .inputs.iter().map(|(n, by)| format!("`{n}` (needed by {})", list(by))).collect::<Vec<_>>().join(", "))]
    MissingInputs {
        /// Each missing input's name and the nodes that take it.
        inputs: Vec<(String, Vec<String>)>,
    },
    /// An input was given with the wrong type.
    #[error("input `{name}` has type `{actual}` but `{expected}` is expected")]
    InputType {
        /// The input's name.
        name: String,
        /// The type the pipeline takes.
        expected: &'static str,
        /// The type given.
        actual: &'static str,
    },
    /// A mapped input is not a list of the input's type.
    #[error("mapped input `{name}` must be a `Vec<{expected}>`, got `{actual}`")]
    NotAList {
        /// The input's name.
        name: String,
        /// The element type expected.
        expected: &'static str,
        /// The type given.
        actual: &'static str,
    },
    /// `map` was called with nothing to map over.
    #[error("map needs at least one input to map over")]
    NothingToMap,
    /// Zipped lists have different lengths.
    #[error("zip map needs lists of one length, got {}", .lengths.iter().map(|(n, l)| format!("`{n}`: {l}")).collect::<Vec<_>>().join(", "))]
    LengthMismatch {
        /// Each mapped input with its length.
        lengths: Vec<(String, usize)>,
    },
    /// A node failed.
    #[error("node `{node}` failed {location}: {source}")]
    NodeFailed {
        /// The innermost failing node.
        node: String,
        /// Where it failed.
        location: Box<Location>,
        /// How many attempts were made.
        attempts: u32,
        /// Why.
        #[source]
        source: NodeError,
    },
    /// An output was read with the wrong type.
    #[error("output `{name}` has type `{actual}`, not `{requested}`")]
    OutputType {
        /// The output's name.
        name: String,
        /// The type asked for.
        requested: &'static str,
        /// Its real type.
        actual: &'static str,
    },
    /// An item of a `map` result has no value (it failed).
    #[error(
        "item {index} of output `{column}` has no value: the item failed; read a column with failed items with `values_opt` (or `column`), and the failures with `failures`"
    )]
    MissingValue {
        /// The output's name.
        column: String,
        /// The item's index.
        index: usize,
    },
    /// The cache could not be read or written. By default a `map` goes on
    /// without it (the result lists these in
    /// [`MapResult::cache_errors`](crate::MapResult::cache_errors)); with
    /// [`MapOptions::strict_cache`](crate::MapOptions::strict_cache) the map
    /// fails with it.
    #[error("the cache failed{}: {source}", .node.as_ref().map(|n| format!(" for node `{n}`")).unwrap_or_default())]
    Cache {
        /// The node whose results were being read or written, when known.
        node: Option<String>,
        /// What went wrong, with the path and the OS error for I/O.
        #[source]
        source: crate::cache::CacheError,
    },
    /// A library underneath (DataFusion, Arrow, a thread pool) failed; `what`
    /// says what was being done, `source` is its error.
    #[error("{what}: {source}")]
    External {
        /// What was being done.
        what: String,
        /// The library's error.
        #[source]
        source: BoxError,
    },
    /// An item failed because the batch it ran in failed as a whole (a
    /// strict cache's failure, say); every item of the batch shares the
    /// error.
    #[error("the batch this item ran in failed: {source}")]
    Batch {
        /// The batch's error.
        #[source]
        source: std::sync::Arc<Error>,
    },
    /// A plan built in another process names a node this process cannot
    /// run: not linked into it, or linked in another version of its code.
    /// Raised when the plan is decoded, before any row runs.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A table has no column for an input the pipeline needs (see
    /// [`Pipeline::map_table`](crate::Pipeline::map_table)).
    #[error("the table has no column `{column}` {wanted}; its columns: {columns}")]
    MissingColumn {
        /// The column looked for.
        column: String,
        /// What it was wanted for (the input and node it feeds, or to be
        /// carried through).
        wanted: String,
        /// The table's columns, comma-separated.
        columns: String,
    },
    /// A table column's Arrow type cannot become the Rust type of the
    /// input it feeds.
    #[error(
        "column `{column}` ({column_type}) cannot feed input `{input}` of `{node}` ({input_type})"
    )]
    ColumnType {
        /// The column.
        column: String,
        /// The input it feeds.
        input: String,
        /// A node that takes the input.
        node: String,
        /// The column's Arrow type.
        column_type: String,
        /// The input's Rust type and the Arrow type it reads.
        input_type: String,
    },
    /// A null in a column feeding an input that takes no nulls (not an
    /// `Option`): that row's item fails.
    #[error("row {row}: column `{column}` is null, and input `{input}` of `{node}` takes no nulls")]
    NullValue {
        /// The column.
        column: String,
        /// The input it feeds.
        input: String,
        /// A node that takes the input.
        node: String,
        /// The row, counted over the whole table from 0.
        row: usize,
    },
    /// An executor of a cluster does not link a node of the map in the
    /// version the map was built with (found before the map is sent).
    #[error("executor `{executor}`: {source}")]
    Executor {
        /// The executor's id.
        executor: String,
        /// The node it lacks, or links in another version (both hashes).
        #[source]
        source: RegistryError,
    },
    /// Reading or writing a table file failed.
    #[error("table file `{path}`: {source}")]
    TableIo {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Exporting telemetry (the `otel` feature) failed: setting it up,
    /// flushing it or stopping it.
    #[error("telemetry: {what}: {source}")]
    Telemetry {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A broken invariant of the library itself (a bug: please report it).
    #[error("internal error: {message}")]
    Internal {
        /// What was found broken.
        message: String,
    },
    /// An engine cannot run what it was given (a type it cannot hold, say).
    #[error("engine error: {message}")]
    Engine {
        /// What went wrong.
        message: String,
    },
    /// A value could not be converted to or from Arrow.
    #[error("column `{column}`: {source}")]
    Arrow {
        /// The column's name.
        column: String,
        /// The conversion error.
        #[source]
        source: ValueError,
    },
}

/// An Arrow kernel's failure (taking, concatenating, merging columns).
impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::external("arrow", e)
    }
}

impl Error {
    /// An error of a library underneath, while doing `what`.
    pub fn external(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::External {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// A cache failure, for node `node` when known.
    pub(crate) fn cache(node: Option<&str>, source: crate::cache::CacheError) -> Error {
        Error::Cache {
            node: node.map(str::to_string),
            source,
        }
    }

    /// For a node failure: the failing node's name.
    pub fn node(&self) -> Option<&str> {
        match self {
            Error::NodeFailed { node, .. } | Error::NullValue { node, .. } => Some(node),
            _ => None,
        }
    }

    /// For a node failure in `map`: the outermost item index.
    pub fn item(&self) -> Option<usize> {
        match self {
            Error::NodeFailed { location, .. } => location.items.first().copied(),
            _ => None,
        }
    }

    /// For a node failure: where it happened.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::NodeFailed { location, .. } => Some(location),
            _ => None,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a plan's step cannot be run by this process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No node of that name is linked into this process.
    #[error(
        "node `{node}` (code {}) is not in this process's node registry; link it and register it",
        .wanted.to_hex()
    )]
    UnknownNode {
        /// The node the plan names.
        node: String,
        /// The code hash the plan was built with.
        wanted: crate::signature::Signature,
    },
    /// A node of that name is linked, in another version of its code.
    #[error(
        "node `{node}` has code {} in the plan but {} in this process: build both from the same code",
        .wanted.to_hex(),
        .linked.to_hex()
    )]
    CodeMismatch {
        /// The node.
        node: String,
        /// The code hash the plan was built with.
        wanted: crate::signature::Signature,
        /// The code hash of the node linked here.
        linked: crate::signature::Signature,
    },
}
