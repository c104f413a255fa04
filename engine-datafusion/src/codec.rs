//! Plans that leave the process: the node and signature UDFs of a lowered
//! map as bytes (a DataFusion physical plan through `datafusion-proto`), and
//! back in another process that knows only its [`NodeRegistry`] and the
//! cache's location.
//!
//! A UDF travels as data alone: the node's name and code hash, its pipeline
//! path, the map's size and error policy, the argument layout with fixed
//! inputs as Arrow IPC (resources by the input name a registry factory
//! provides them under), and the cache as a [`CacheLocation`] URL. Decoding
//! resolves the node in the registry — a node that is missing, or linked in
//! another version of its code, fails the decoding with
//! [`Error::Registry`], before any row runs — opens the cache at its
//! location (once per location), and builds, per step, a map job around
//! that node alone ([`MapJob::for_node`]): the node is called, retried,
//! cached and its errors named exactly as in the process that built the
//! plan.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::MemTable;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::logical_expr::{ScalarUDF, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use hypernodes_core::cache::{Cache, CacheLocation};
use hypernodes_core::engine::MapState;
use hypernodes_core::node::{NodeRegistry, RegistryError};
use hypernodes_core::signature::Signature;
use hypernodes_core::value::Value;
use hypernodes_core::{Error, ErrorPolicy, MapJob};
use serde::{Deserialize, Serialize};

use hypernodes_core::columnar::{Arg, ColumnarStep, SigArg, SigSpec};

use crate::udf::{
    HashUdf, NodeUdf, NullCheckUdf, Report, ReportUdf, SigUdf, StepWire, node_fields,
};

/// A node argument on the wire.
#[derive(Debug, Serialize, Deserialize)]
enum ArgWire {
    /// The next value column of the UDF.
    Column,
    /// A fixed input: its value as a one-row Arrow IPC stream (`None`: a
    /// resource, provided by the registry), and its hash (hex).
    Fixed {
        ipc: Option<Vec<u8>>,
        hash: Option<String>,
    },
}

/// A UDF of ours on the wire.
#[derive(Debug, Serialize, Deserialize)]
enum UdfWire {
    Signature {
        node: String,
        code: String,
        /// `None`: a hash column; `Some(hash)`: a fixed input's hash.
        args: Vec<Option<Option<String>>>,
    },
    Node {
        step: StepWire,
        args: Vec<ArgWire>,
    },
    /// What a map's plan reports besides results (see `ReportUdf`).
    Report {
        kind: Report,
        map: u64,
        len: usize,
        stop: bool,
    },
    /// A table column's value hashes (see `HashUdf`).
    Hash,
    /// A table column's null check (see `NullCheckUdf`).
    NullCheck {
        map: u64,
        len: usize,
        stop: bool,
        column: String,
        input: String,
        node: String,
    },
}

/// A new identifier for a lowered map (unique across processes in
/// practice: process, time and a counter).
pub(crate) fn new_map_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = format!(
        "{}/{nanos}/{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let sig = Signature::of_bytes("hypernodes/map-id/v1", seed.as_bytes());
    u64::from_le_bytes(sig.0[..8].try_into().unwrap_or([0; 8]))
}

/// What running decoded plans left behind (see [`NodeCodec::close`]).
#[derive(Debug, Default)]
pub struct DecodedOutcome {
    /// Every failed item, by map item index, with its error (naming node,
    /// pipeline path and item as the building process would).
    pub failures: Vec<(usize, Error)>,
    /// Cache failures the steps went on without.
    pub cache_errors: Vec<Error>,
}

/// Encodes the UDFs of lowered maps, and decodes them with the nodes of a
/// [`NodeRegistry`]: a `datafusion-proto` [`LogicalExtensionCodec`] (for
/// logical plans, which also carries the map's in-memory input table) and
/// [`PhysicalExtensionCodec`] (for physical plans).
/// One codec decodes the plans of one run: it keeps the jobs and the
/// caches it opened until [`NodeCodec::close`].
pub struct NodeCodec {
    registry: NodeRegistry,
    state: Mutex<Decoded>,
}

/// What a codec opened while decoding.
#[derive(Default)]
struct Decoded {
    /// The first node the registry refused while decoding: returned as it
    /// is (DataFusion turns errors inside a logical plan into text).
    refused: Option<RegistryError>,
    caches: HashMap<String, Arc<dyn Cache>>,
    /// Per decoded map, its state and when a plan of it was last decoded.
    maps: HashMap<u64, (Arc<MapState>, std::time::Instant)>,
    jobs: Vec<Arc<MapJob>>,
}

impl std::fmt::Debug for NodeCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCodec")
            .field("nodes", &self.registry.versions().len())
            .finish()
    }
}

/// Our error inside a DataFusion one.
fn ours(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A codec error that is not about a node (bytes that are not ours).
fn malformed(what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("hypernodes plan codec: {what}"))
}

fn hex_sig(hex: &str) -> DfResult<Signature> {
    Signature::from_hex(hex).ok_or_else(|| malformed(format!("`{hex}` is not a code hash")))
}

/// A one-row array as an Arrow IPC stream.
fn to_ipc(array: ArrayRef) -> DfResult<Vec<u8>> {
    let batch = RecordBatch::try_from_iter([("v", array)])?;
    let mut bytes = Vec::new();
    {
        let mut writer =
            datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())?;
        writer.write(&batch)?;
        writer.finish()?;
    }
    Ok(bytes)
}

/// The array of a one-column Arrow IPC stream.
fn from_ipc(bytes: &[u8]) -> DfResult<ArrayRef> {
    let mut reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let batch = reader
        .next()
        .ok_or_else(|| malformed("a fixed input without a value"))??;
    Ok(batch.column(0).clone())
}

impl NodeCodec {
    /// A codec resolving nodes (and resources) in `registry`.
    pub fn new(registry: NodeRegistry) -> Self {
        NodeCodec {
            registry,
            state: Mutex::new(Decoded::default()),
        }
    }

    /// The nodes (and resources) this codec resolves.
    pub fn registry(&self) -> &NodeRegistry {
        &self.registry
    }

    /// Decodes a plan encoded by [`DataFusionEngine::encode_map`] for
    /// execution in `ctx`. A node missing from the registry, or linked in
    /// another version, is an [`Error::Registry`] naming it (and both code
    /// hashes).
    ///
    /// [`DataFusionEngine::encode_map`]: crate::DataFusionEngine::encode_map
    pub fn decode_plan(
        &self,
        bytes: &[u8],
        ctx: &SessionContext,
    ) -> Result<Arc<dyn ExecutionPlan>, Error> {
        datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
            bytes,
            &ctx.task_ctx(),
            self,
        )
        .map_err(|e| self.decode_failed(e))
    }

    /// Decodes a logical plan encoded by
    /// [`DataFusionEngine::encode_map_logical`], for `ctx` to optimize and
    /// run (make it with [`DataFusionEngine::session`]). Nodes are
    /// resolved as for [`NodeCodec::decode_plan`].
    ///
    /// [`DataFusionEngine::encode_map_logical`]: crate::DataFusionEngine::encode_map_logical
    /// [`DataFusionEngine::session`]: crate::DataFusionEngine::session
    pub fn decode_logical_plan(
        &self,
        bytes: &[u8],
        ctx: &SessionContext,
    ) -> Result<LogicalPlan, Error> {
        datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
            bytes,
            &ctx.task_ctx(),
            self,
        )
        .map_err(|e| self.decode_failed(e))
    }

    /// Ends the runs of the decoded plans: waits for their cache writes,
    /// writes what their caches buffered, and returns their failed items
    /// and cache failures. The codec can decode again afterwards.
    pub fn close(&self) -> Result<DecodedOutcome, Error> {
        let decoded = std::mem::take(&mut *self.state.lock().unwrap_or_else(|e| e.into_inner()));
        let mut outcome = DecodedOutcome::default();
        for job in &decoded.jobs {
            outcome.cache_errors.extend(job.close()?);
        }
        for (state, _) in decoded.maps.values() {
            if let Some(error) = state.take_map_failure() {
                return Err(error);
            }
            outcome.failures.extend(state.take_failures());
        }
        outcome.failures.sort_by_key(|(i, _)| *i);
        Ok(outcome)
    }

    /// Keeps the registry's refusal (the first) and wraps it for DataFusion.
    fn refused(&self, e: RegistryError) -> DataFusionError {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused
            .get_or_insert_with(|| e.clone());
        ours(e.into())
    }

    /// A decoding failure: the registry's refusal when there was one.
    fn decode_failed(&self, e: DataFusionError) -> Error {
        match self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused
            .take()
        {
            Some(refused) => Error::Registry(refused),
            None => crate::df_error(e),
        }
    }

    /// The cache at `url`, opened once per codec.
    fn cache(&self, url: &str) -> Result<Arc<dyn Cache>, Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cache) = state.caches.get(url) {
            return Ok(cache.clone());
        }
        let cache = CacheLocation::parse(url)
            .and_then(|at| at.open())
            .map_err(|source| Error::Cache { node: None, source })?;
        state.caches.insert(url.to_string(), cache.clone());
        Ok(cache)
    }

    /// The state of decoded map `map` (its steps and its errors column share
    /// it), made on first use.
    fn map_state(&self, map: u64, len: usize, stop: bool) -> Arc<MapState> {
        let policy = if stop {
            ErrorPolicy::Stop
        } else {
            ErrorPolicy::Continue
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entry = state.maps.entry(map).or_insert_with(|| {
            (
                Arc::new(MapState::new(len, policy)),
                std::time::Instant::now(),
            )
        });
        entry.1 = std::time::Instant::now();
        entry.0.clone()
    }

    /// Writes what the decoded plans' steps stored so far, and forgets the
    /// jobs decoded until now (their plans have run): for a process that
    /// runs decoded plans one task after another (a Ballista executor), at
    /// the end of each task, so what a task computed is in the cache when
    /// it ends. Failed items are not kept here: the plans carry them back
    /// as data; the states of maps not decoded for ten minutes are
    /// dropped. Returns the cache failures the steps went on without.
    pub fn flush(&self) -> Result<Vec<Error>, Error> {
        let (jobs, caches) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // The states of maps no plan was decoded for in ten minutes:
            // their tasks have ended (a task decodes its plan as it starts).
            state
                .maps
                .retain(|_, (_, used)| used.elapsed() < std::time::Duration::from_secs(600));
            let caches: Vec<Arc<dyn Cache>> = state.caches.values().cloned().collect();
            (std::mem::take(&mut state.jobs), caches)
        };
        let mut cache_errors = Vec::new();
        for job in &jobs {
            cache_errors.extend(job.close()?);
        }
        for cache in caches {
            cache
                .flush()
                .map_err(|source| Error::Cache { node: None, source })?;
        }
        Ok(cache_errors)
    }

    /// Rebuilds a node step's UDF in this process.
    fn decode_node(&self, name: &str, step: StepWire, args: Vec<ArgWire>) -> DfResult<NodeUdf> {
        let node = self
            .registry
            .resolve(&step.node, &hex_sig(&step.code)?)
            .map_err(|e| self.refused(e))?
            .clone();
        if args.len() != node.inputs().len() || step.outs.len() != node.outputs().len() {
            return Err(malformed(format!(
                "step `{name}` has {} arguments and {} outputs; node `{}` has {} and {}",
                args.len(),
                step.outs.len(),
                step.node,
                node.inputs().len(),
                node.outputs().len()
            )));
        }
        let cache = match &step.cache {
            Some(url) => Some(self.cache(url).map_err(ours)?),
            None => None,
        };
        let policy = if step.stop {
            ErrorPolicy::Stop
        } else {
            ErrorPolicy::Continue
        };
        let job = MapJob::for_node(&node, step.path.clone(), cache.clone(), step.len, policy)
            .map_err(ours)?;
        let layout = job.step_layout(0).map_err(ours)?;
        let mut decoded = Vec::with_capacity(args.len());
        for (k, arg) in args.into_iter().enumerate() {
            let port = &node.inputs()[k];
            let slot = layout.args[k];
            decoded.push(match arg {
                ArgWire::Column => Arg::Column { slot, ty: port.ty },
                ArgWire::Fixed { ipc, hash } => {
                    let hash = hash.as_deref().map(hex_sig).transpose()?;
                    let value = match ipc {
                        Some(bytes) => {
                            let array = from_ipc(&bytes)?;
                            port.ty
                                .from_array(array.as_ref())
                                .map_err(|source| {
                                    ours(Error::Arrow {
                                        column: port.name.clone(),
                                        source,
                                    })
                                })?
                                .into_iter()
                                .next()
                                .ok_or_else(|| malformed("an empty fixed input"))?
                        }
                        None => {
                            let input = &step.inputs[k];
                            let resource = self.registry.resource(input).ok_or_else(|| {
                                ours(Error::Engine {
                                    message: format!(
                                        "node `{}` takes resource `{input}`, which this process's registry does not provide (register it with NodeRegistry::with_resource)",
                                        step.node
                                    ),
                                })
                            })?;
                            Value::new(resource.clone())
                        }
                    };
                    Arg::Fixed {
                        slot,
                        ty: port.ty,
                        value,
                        hash,
                    }
                }
            });
        }
        let outs: Vec<_> = step
            .outs
            .iter()
            .zip(node.outputs())
            .map(|(slot, p)| (*slot, p.ty))
            .collect();
        let fields = node_fields(&outs).map_err(|ty| {
            malformed(format!("node `{}`: type {ty} has no Arrow form", step.node))
        })?;
        let args_arrow = decoded.iter().all(|a| match a {
            Arg::Column { .. } => true,
            Arg::Fixed { ty, .. } => ty.is_arrow(),
        });
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .jobs
            .push(job.clone());
        let state = self.map_state(step.map, step.len, step.stop);
        Ok(NodeUdf {
            name: name.to_string(),
            fields,
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Volatile),
            step: ColumnarStep {
                name: name.to_string(),
                step: 0,
                job,
                state,
                observed: false,
                counted: false,
                tally: Some(step.node.clone()),
                scopes: 0,
                cache: cache.filter(|_| step.cached).map(|c| (c, node.cache_key())),
                hash_outputs: step.hash_outputs,
                first: false,
                last: false,
                slot_count: layout.slot_count,
                args: decoded,
                outs,
                batch: node.batch().cloned().filter(|_| args_arrow),
                rows: node.rows().cloned(),
                retries: node.retries(),
                opens: Vec::new(),
                closes: Vec::new(),
                piece_rows: std::sync::atomic::AtomicUsize::new(
                    hypernodes_core::columnar::FIRST_PIECE_ROWS,
                ),
            },
            wire: step,
        })
    }
}

/// An in-memory table (the map's input rows) on the wire: each partition
/// as an Arrow IPC stream.
#[derive(Debug, Serialize, Deserialize)]
struct TableWire {
    partitions: Vec<Vec<u8>>,
    /// A table map's Parquet files, read in order (see `scan::InOrder`),
    /// instead of rows.
    #[serde(default)]
    files: Option<Vec<String>>,
}

/// The batches of an IPC stream.
fn batches_from_ipc(bytes: &[u8]) -> DfResult<Vec<RecordBatch>> {
    datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?
        .map(|b| b.map_err(DataFusionError::from))
        .collect()
}

/// Batches as one IPC stream of `schema`.
fn batches_to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> DfResult<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut bytes, schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(bytes)
}

/// UDFs of ours as bytes (`None`: not ours, found by name where decoded).
impl NodeCodec {
    fn encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        let inner = udf.inner();
        let wire = if let Some(sig) = inner.downcast_ref::<SigUdf>() {
            UdfWire::Signature {
                node: sig.spec.node.clone(),
                code: sig.spec.code.to_hex(),
                args: sig
                    .spec
                    .args
                    .iter()
                    .map(|a| match a {
                        SigArg::Column => None,
                        SigArg::Fixed(hash) => Some(hash.map(|h| h.to_hex())),
                    })
                    .collect(),
            }
        } else if let Some(node) = inner.downcast_ref::<NodeUdf>() {
            if node.wire.hash_outputs && node.wire.cache.is_none() {
                return Err(malformed(format!(
                    "the map of node `{}` has a cache without a location another process can open (use a DiskCache)",
                    node.wire.node
                )));
            }
            let mut args = Vec::with_capacity(node.step.args.len());
            for arg in &node.step.args {
                args.push(match arg {
                    Arg::Column { .. } => ArgWire::Column,
                    Arg::Fixed {
                        ty, value, hash, ..
                    } => ArgWire::Fixed {
                        ipc: if ty.is_arrow() {
                            let array = ty.to_array(&[value]).map_err(|source| {
                                ours(Error::Arrow {
                                    column: node.wire.node.clone(),
                                    source,
                                })
                            })?;
                            Some(to_ipc(array)?)
                        } else {
                            None
                        },
                        hash: hash.map(|h| h.to_hex()),
                    },
                });
            }
            UdfWire::Node {
                step: node.wire.clone(),
                args,
            }
        } else if let Some(report) = inner.downcast_ref::<ReportUdf>() {
            UdfWire::Report {
                kind: report.kind,
                map: report.map,
                len: report.len,
                stop: report.stop,
            }
        } else if inner.downcast_ref::<HashUdf>().is_some() {
            UdfWire::Hash
        } else if let Some(check) = inner.downcast_ref::<NullCheckUdf>() {
            UdfWire::NullCheck {
                map: check.map,
                len: check.len,
                stop: check.stop,
                column: check.feed.column.clone(),
                input: check.feed.input.clone(),
                node: check.feed.node.clone(),
            }
        } else {
            return Ok(());
        };
        serde_json::to_writer(buf, &wire).map_err(malformed)
    }

    fn decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        let wire: UdfWire = serde_json::from_slice(buf).map_err(malformed)?;
        let udf = match wire {
            UdfWire::Signature { node, code, args } => {
                let linked = self
                    .registry
                    .resolve(&node, &hex_sig(&code)?)
                    .map_err(|e| self.refused(e))?;
                let args = args
                    .into_iter()
                    .map(|a| match a {
                        None => Ok(SigArg::Column),
                        Some(hash) => Ok(SigArg::Fixed(hash.as_deref().map(hex_sig).transpose()?)),
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                ScalarUDF::new_from_impl(SigUdf::new(name.to_string(), SigSpec::new(linked, args)))
            }
            UdfWire::Node { step, args } => {
                ScalarUDF::new_from_impl(self.decode_node(name, step, args)?)
            }
            UdfWire::Report {
                kind,
                map,
                len,
                stop,
            } => ScalarUDF::new_from_impl(ReportUdf::new(
                kind,
                map,
                len,
                stop,
                Some(self.map_state(map, len, stop)),
            )),
            UdfWire::Hash => ScalarUDF::new_from_impl(HashUdf {
                name: name.to_string(),
                signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
            }),
            UdfWire::NullCheck {
                map,
                len,
                stop,
                column,
                input,
                node,
            } => ScalarUDF::new_from_impl(NullCheckUdf {
                name: name.to_string(),
                map,
                len,
                stop,
                feed: hypernodes_core::columnar::ScanFeed {
                    column,
                    input,
                    node,
                    // Only what the check reads travels.
                    data_type: datafusion::arrow::datatypes::DataType::Null,
                    nullable: false,
                },
                state: self.map_state(map, len, stop),
                signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Volatile),
            }),
        };
        Ok(Arc::new(udf))
    }
}

impl LogicalExtensionCodec for NodeCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> DfResult<Extension> {
        Err(malformed("lowered maps have no plan nodes of their own"))
    }

    fn try_encode(&self, node: &Extension, _buf: &mut Vec<u8>) -> DfResult<()> {
        Err(malformed(format!(
            "cannot encode plan node `{}`",
            node.node.name()
        )))
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let wire: TableWire = serde_json::from_slice(buf).map_err(malformed)?;
        if let Some(files) = wire.files {
            let paths = files.into_iter().map(Into::into).collect();
            let table = crate::scan::InOrder::open(paths, schema).map_err(ours)?;
            return Ok(Arc::new(table));
        }
        let partitions = wire
            .partitions
            .iter()
            .map(|p| batches_from_ipc(p))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(MemTable::try_new(schema, partitions)?))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        if let Some(files) =
            (node.as_ref() as &dyn std::any::Any).downcast_ref::<crate::scan::InOrder>()
        {
            let wire = TableWire {
                partitions: Vec::new(),
                files: Some(
                    files
                        .files()
                        .iter()
                        .map(|f| f.to_string_lossy().to_string())
                        .collect(),
                ),
            };
            return serde_json::to_writer(buf, &wire).map_err(malformed);
        }
        let table = (node.as_ref() as &dyn std::any::Any)
            .downcast_ref::<MemTable>()
            .ok_or_else(|| malformed(format!("cannot encode table `{table_ref}`")))?;
        let schema = table.schema();
        let mut partitions = Vec::with_capacity(table.batches.len());
        for partition in &table.batches {
            let batches = partition
                .try_read()
                .map_err(|_| malformed(format!("table `{table_ref}` is being written")))?;
            partitions.push(batches_to_ipc(&schema, &batches)?);
        }
        serde_json::to_writer(
            buf,
            &TableWire {
                partitions,
                files: None,
            },
        )
        .map_err(malformed)
    }

    fn try_encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.encode_udf(udf, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        self.decode_udf(name, buf)
    }
}

impl PhysicalExtensionCodec for NodeCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(malformed("lowered maps have no plan nodes of their own"))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        _buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        Err(malformed(format!(
            "cannot encode plan node `{}`",
            node.name()
        )))
    }

    fn try_encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        self.encode_udf(udf, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        self.decode_udf(name, buf)
    }
}
