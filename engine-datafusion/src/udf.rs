//! The UDFs a lowered map is made of: one computing a node's signature
//! column from its inputs' hash columns, and one per node that joins in the
//! cached rows for those signatures and calls the node for the rest.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, StructArray};
use arrow_schema::{DataType, Field, Fields};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as DfSignature, Volatility,
};
use hypernodes_core::columnar::{ColumnarStep, SigSpec};
use hypernodes_core::value::ValueType;
use serde::{Deserialize, Serialize};

/// What a node step carries out of the process besides its arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StepWire {
    /// The map the step belongs to (its steps share one failure state).
    pub map: u64,
    /// Items in the map.
    pub len: usize,
    /// Whether the map stops at its first failure.
    pub stop: bool,
    /// The node, by name and code hash (hex).
    pub node: String,
    pub code: String,
    /// The pipeline path its errors name.
    pub path: Vec<String>,
    /// The map's cache location (nested maps the step runs use it too).
    pub cache: Option<String>,
    /// Whether the step's own results are cached.
    pub cached: bool,
    /// Whether output hashes are computed (the map has a cache).
    pub hash_outputs: bool,
    /// The node's input names (resources are provided under them).
    pub inputs: Vec<String>,
    /// Per output port, the slot the plan reads it from (`None`: unused).
    pub outs: Vec<Option<usize>>,
}

/// UDFs are equal when their names are (each name is unique in a plan:
/// kind, node and step).
macro_rules! identified_by_name {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.name == other.name
            }
        }
        impl Eq for $t {}
        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.name.hash(state)
            }
        }
    };
}

/// `sig(node, item)` for a batch (see [`SigSpec`]) as a DataFusion UDF.
/// Arguments: the hash column of every `SigArg::Column`, in order.
#[derive(Debug)]
pub(crate) struct SigUdf {
    pub name: String,
    pub spec: SigSpec,
    pub signature: DfSignature,
}

impl SigUdf {
    /// The signature UDF `name` computing `spec`.
    pub fn new(name: String, spec: SigSpec) -> Self {
        SigUdf {
            name,
            spec,
            signature: DfSignature::variadic_any(Volatility::Immutable),
        }
    }
}

identified_by_name!(SigUdf);

fn fsb(array: &ArrayRef) -> DfResult<&FixedSizeBinaryArray> {
    array
        .as_fixed_size_binary_opt()
        .filter(|a| a.value_length() == 32)
        .ok_or_else(|| DataFusionError::Internal("expected a 32-byte hash column".into()))
}

impl ScalarUDFImpl for SigUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &DfSignature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::FixedSizeBinary(32))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let hashes = columns.iter().map(fsb).collect::<DfResult<Vec<_>>>()?;
        Ok(ColumnarValue::Array(self.spec.sign(n, &hashes)))
    }
}

/// One node over a batch (see [`ColumnarStep`]) as a DataFusion UDF.
/// Arguments: the item column, the signature column (when the node is
/// cached), then the value column of every `Arg::Column`. Returns a struct
/// of each needed output's value and value hash.
pub(crate) struct NodeUdf {
    pub name: String,
    /// What a plan that leaves the process carries of this step (see
    /// `codec`): the node by name and code hash, its pipeline path, the
    /// map's size, policy and cache location, and the argument layout.
    pub wire: StepWire,
    /// The step itself.
    pub step: ColumnarStep,
    pub fields: Fields,
    pub signature: DfSignature,
}

impl std::fmt::Debug for NodeUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeUdf").field("name", &self.name).finish()
    }
}

identified_by_name!(NodeUdf);

/// The struct fields a node's UDF returns: `s<slot>` (value) and `h<slot>`
/// (value hash) per needed output.
pub(crate) fn node_fields(outs: &[(Option<usize>, ValueType)]) -> Result<Fields, String> {
    let mut fields = Vec::new();
    for (slot, ty) in outs {
        let Some(slot) = slot else { continue };
        let dt = ty.data_type().ok_or_else(|| ty.name().to_string())?;
        fields.push(Field::new(format!("s{slot}"), dt, true));
        fields.push(Field::new(
            format!("h{slot}"),
            DataType::FixedSizeBinary(32),
            true,
        ));
    }
    Ok(Fields::from(fields))
}

impl ScalarUDFImpl for NodeUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &DfSignature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Struct(self.fields.clone()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let mut columns = columns.into_iter();
        let items = columns
            .next()
            .ok_or_else(|| DataFusionError::Internal("no item column".into()))?;
        let items: Vec<usize> = items
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| DataFusionError::Internal("item column is not UInt64".into()))?
            .values()
            .iter()
            .map(|&i| i as usize)
            .collect();
        let sig_array: Option<ArrayRef> = match &self.step.cache {
            Some(_) => columns.next(),
            None => None,
        };
        // The signature column, decoded once for the lookup, the decisions
        // and the store.
        let sigs: Option<&FixedSizeBinaryArray> = sig_array.as_ref().map(fsb).transpose()?;
        let values: Vec<ArrayRef> = columns.collect();
        let arrays = self
            .step
            .run(n, items, sigs, values)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let out = StructArray::try_new(self.fields.clone(), arrays, None)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// A table column feeding an input that takes no nulls, as a DataFusion
/// UDF: arguments the item column and the values; returns the values as
/// they are, after failing (in the map's state) the item of every row
/// whose value is null, so the nodes after it skip those rows.
pub(crate) struct NullCheckUdf {
    pub name: String,
    /// The map (see `StepWire::map`), its size and policy.
    pub map: u64,
    pub len: usize,
    pub stop: bool,
    pub feed: hypernodes_core::columnar::ScanFeed,
    pub state: Arc<hypernodes_core::MapState>,
    pub signature: DfSignature,
}

impl std::fmt::Debug for NullCheckUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NullCheckUdf")
            .field("name", &self.name)
            .finish()
    }
}

identified_by_name!(NullCheckUdf);

impl ScalarUDFImpl for NullCheckUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &DfSignature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        arg_types
            .get(1)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("a null check takes items and values".into()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let [items, values] = columns.as_slice() else {
            return Err(DataFusionError::Internal(
                "a null check takes items and values".into(),
            ));
        };
        if values.null_count() > 0 {
            let items = items
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| DataFusionError::Internal("item column is not UInt64".into()))?;
            for (r, item) in items.values().iter().enumerate() {
                if values.is_null(r) {
                    let item = *item as usize;
                    self.state.fail(
                        item,
                        hypernodes_core::Error::NullValue {
                            column: self.feed.column.clone(),
                            input: self.feed.input.clone(),
                            node: self.feed.node.clone(),
                            row: item,
                        },
                    );
                }
            }
        }
        Ok(ColumnarValue::Array(values.clone()))
    }
}

/// The value hashes of a mapped input's values, as a DataFusion UDF
/// (computed as for any mapped input, so rows read from a table share
/// cache entries with the same values given in a `Vec`).
#[derive(Debug)]
pub(crate) struct HashUdf {
    pub name: String,
    pub signature: DfSignature,
}

identified_by_name!(HashUdf);

impl ScalarUDFImpl for HashUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &DfSignature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::FixedSizeBinary(32))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let [values] = columns.as_slice() else {
            return Err(DataFusionError::Internal("a hash takes one column".into()));
        };
        let hashes = hypernodes_core::signature::hash_column(values)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(ColumnarValue::Array(hashes))
    }
}

/// A failed item on the wire (a JSON text in the `__errors` column of a
/// plan run in another process).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FailureWire {
    /// The failing node, if the error names one.
    pub node: Option<String>,
    /// For a node failure: its pipeline path, items and attempts.
    pub path: Vec<String>,
    pub items: Vec<usize>,
    pub attempts: u32,
    /// Whether it was a node failure ([`hypernodes_core::Error::NodeFailed`]).
    pub node_failed: bool,
    /// The node's own error as text (a node failure), else the whole error.
    pub message: String,
}

impl FailureWire {
    /// `error` on the wire.
    pub fn of(error: &hypernodes_core::Error) -> FailureWire {
        match error {
            hypernodes_core::Error::NodeFailed {
                node,
                location,
                attempts,
                source,
            } => FailureWire {
                node: Some(node.clone()),
                path: location.path.clone(),
                items: location.items.clone(),
                attempts: *attempts,
                node_failed: true,
                message: source.to_string(),
            },
            other => FailureWire {
                node: other.node().map(str::to_string),
                path: Vec::new(),
                items: Vec::new(),
                attempts: 0,
                node_failed: false,
                message: other.to_string(),
            },
        }
    }

    /// The error again, in the process that asked for the map: a node
    /// failure as [`hypernodes_core::Error::NodeFailed`] (the node's own
    /// error as text), anything else as [`hypernodes_core::Error::Engine`].
    pub fn into_error(self) -> hypernodes_core::Error {
        if self.node_failed {
            hypernodes_core::Error::NodeFailed {
                node: self.node.unwrap_or_default(),
                location: Box::new(hypernodes_core::error::Location {
                    path: self.path,
                    items: self.items,
                }),
                attempts: self.attempts,
                source: hypernodes_core::error::NodeError::User(self.message.into()),
            }
        } else {
            hypernodes_core::Error::Engine {
                message: self.message,
            }
        }
    }
}

/// What a lowered map's plan reports besides results, one column each
/// (see [`ReportUdf`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    /// `__errors`: per row its item's failure as JSON ([`FailureWire`]), or
    /// null. A decoded plan takes the failures of the batch's items out of
    /// the decoded map's state, so they travel back with the rows.
    Errors,
    /// `__counts`: in each batch's first row, what the nodes of a decoded
    /// map computed and found cached since a batch last took the tallies
    /// (JSON: node, computed, cached; `[]` when none); the other rows are
    /// null. Each batch takes what its own steps tallied (and any other
    /// batch's not yet taken), so every count arrives exactly once.
    Counts,
}

impl Report {
    /// Every report, in the plan's column order.
    pub(crate) const ALL: [Report; 2] = [Report::Errors, Report::Counts];

    /// The report's column (and, without the underscores, its UDF's name).
    pub(crate) fn column(self) -> &'static str {
        match self {
            Report::Errors => "__errors",
            Report::Counts => "__counts",
        }
    }
}

/// A report of a map's plan as a DataFusion UDF (argument the item column,
/// a `Utf8` result; see [`Report`]). Where the plan was built (`state` is
/// `None`) the column is all null: failures and counts stay with the map's
/// own job. Where a plan was decoded (another process, a Ballista
/// executor) the UDF takes them from the decoded map's state.
pub(crate) struct ReportUdf {
    pub name: String,
    pub kind: Report,
    /// The map (see `StepWire::map`), its size and policy.
    pub map: u64,
    pub len: usize,
    pub stop: bool,
    pub state: Option<Arc<hypernodes_core::MapState>>,
    pub signature: DfSignature,
}

impl ReportUdf {
    /// Report `kind` of map `map` (`len` items, `stop` policy), over
    /// `state` where decoded.
    pub(crate) fn new(
        kind: Report,
        map: u64,
        len: usize,
        stop: bool,
        state: Option<Arc<hypernodes_core::MapState>>,
    ) -> Self {
        ReportUdf {
            name: kind.column().trim_start_matches('_').to_string(),
            kind,
            map,
            len,
            stop,
            state,
            signature: DfSignature::variadic_any(Volatility::Volatile),
        }
    }
}

impl std::fmt::Debug for ReportUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportUdf")
            .field("kind", &self.kind)
            .field("map", &self.map)
            .finish()
    }
}

identified_by_name!(ReportUdf);

fn to_json(value: &impl Serialize) -> DfResult<String> {
    serde_json::to_string(value).map_err(|e| DataFusionError::External(Box::new(e)))
}

impl ScalarUDFImpl for ReportUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &DfSignature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let mut texts: Vec<Option<String>> = vec![None; n];
        let Some(state) = &self.state else {
            return Ok(ColumnarValue::Array(arrow_array::new_null_array(
                &DataType::Utf8,
                n,
            )));
        };
        match self.kind {
            Report::Errors => {
                let columns = ColumnarValue::values_to_arrays(&args.args)?;
                let items = columns
                    .first()
                    .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                    .ok_or_else(|| DataFusionError::Internal("item column is not UInt64".into()))?;
                if items.values().iter().any(|&i| state.failed(i as usize)) {
                    let wanted: std::collections::HashMap<usize, usize> = items
                        .values()
                        .iter()
                        .enumerate()
                        .map(|(r, &i)| (i as usize, r))
                        .collect();
                    for (item, error) in state.take_failures_of(|i| wanted.contains_key(&i)) {
                        if let Some(&r) = wanted.get(&item) {
                            texts[r] = Some(to_json(&FailureWire::of(&error))?);
                        }
                    }
                }
            }
            Report::Counts => {
                let counts: Vec<(String, usize, usize)> = state
                    .take_node_counts()
                    .into_iter()
                    .map(|(node, c)| (node, c.computed, c.cached))
                    .collect();
                // Every batch of a decoded plan says so, even with nothing
                // to count.
                if n > 0 {
                    texts[0] = Some(to_json(&counts)?);
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(
            arrow_array::StringArray::from(texts),
        )))
    }
}
