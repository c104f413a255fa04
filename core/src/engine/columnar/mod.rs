//! What columnar engines need from a `map`: the job described column by
//! column, and the shared pieces they call per batch of rows.
//!
//! A columnar engine (such as `hypernodes-datafusion`) lowers a
//! [`MapJob`](crate::MapJob) into its own plan.
//! [`MapJob::columnar`](crate::MapJob::columnar) gives it the mapped
//! inputs as Arrow arrays with their value hashes (computed once from the
//! whole lists, exactly as the row engines compute them), the fixed inputs
//! with theirs, and the steps in topological order.
//! [`MapJob::call_step`](crate::MapJob::call_step)
//! runs one step for one row with the row engines' semantics (retries,
//! panics as errors, events), and [`MapJob::finish`](crate::MapJob::finish)
//! applies the error
//! policy and builds the [`MapResult`](crate::MapResult). Signatures
//! ([`NodeKey`](crate::signature::NodeKey)), value hashes
//! ([`hash_array`](crate::signature::hash_array)) and the store
//! ([`Cache`](crate::Cache)) are the same for every engine, so the engines
//! share cache entries.

use arrow_array::ArrayRef;

pub(crate) mod local;
mod plan;
mod scan;
mod step;

pub use plan::{ColumnarPlan, PlannedStep, SigArg, SigSpec};
pub use scan::{ScanFeed, TableScan};
pub use step::{Arg, ColumnarStep, FIRST_PIECE_ROWS, PIECE_TIME};

pub use crate::kernels::RowPicks;

use crate::map::MapMode;
use crate::node::Node;
use crate::signature::Signature;
use crate::value::{Value, ValueType};

/// A mapped input: one element per row of its own list.
#[derive(Clone, Debug)]
pub struct MappedColumn {
    /// The input's name.
    pub name: String,
    /// Its slot in the plan (`None` when no needed node takes it).
    pub slot: Option<usize>,
    /// The element type.
    pub ty: ValueType,
    /// The elements as one Arrow array.
    pub elements: ArrayRef,
    /// Each element's value hash (`FixedSizeBinary(32)`), when the map has
    /// a cache (signatures need them; without a cache nothing is hashed).
    pub hashes: Option<ArrayRef>,
}

/// A fixed input: one value shared by every row.
#[derive(Clone, Debug)]
pub struct FixedInput {
    /// The input's name.
    pub name: String,
    /// Its slot in the plan.
    pub slot: usize,
    /// Its type.
    pub ty: ValueType,
    /// The value.
    pub value: Value,
    /// Its value hash (Arrow values) or declared cache key (resources), if any.
    pub hash: Option<Signature>,
}

/// One step of the plan: a node, the slots it reads and the slots it fills.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo<'a> {
    /// The step's position in [`ColumnarMap::steps`] (for [`MapJob::call_step`]).
    ///
    /// [`MapJob::call_step`]: crate::MapJob::call_step
    pub index: usize,
    /// The node.
    pub node: &'a Node,
    /// The slot of each input, in the node's input order.
    pub args: &'a [usize],
    /// Per output port, its slot if anything needs it.
    pub outs: &'a [Option<usize>],
}

/// A requested output of the map.
#[derive(Clone, Debug)]
pub struct OutputInfo {
    /// The output's name.
    pub name: String,
    /// The slot holding it.
    pub slot: usize,
    /// Its type.
    pub ty: ValueType,
}

/// A `map` described column by column (see the module docs).
#[derive(Debug)]
pub struct ColumnarMap<'a> {
    /// Number of items.
    pub len: usize,
    /// Zip or product.
    pub mode: MapMode,
    /// Slots in a row's table.
    pub slot_count: usize,
    /// The mapped inputs, in the order they were given.
    pub mapped: Vec<MappedColumn>,
    /// The fixed inputs the plan needs.
    pub fixed: Vec<FixedInput>,
    /// The steps, in topological order.
    pub steps: Vec<StepInfo<'a>>,
    /// The requested outputs.
    pub outputs: Vec<OutputInfo>,
}
