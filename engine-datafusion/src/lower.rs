//! Lowering a `map` into a DataFusion plan.
//!
//! The mapped inputs become a table with an `__item` column (zip: columns
//! side by side; product: a cross join of one table per input, `__item`
//! computed from the element indices so the last input varies fastest).
//! Every slot of the pipeline's slot table that holds per-item values is a
//! pair of columns, `s<slot>` (the values) and `h<slot>` (their hashes).
//! Fixed inputs are constants held by the UDFs. Each step adds, in
//! topological order, a signature column `g<step>` (when the node is cached)
//! and a struct column `r<step>` from the node's UDF, split into its
//! outputs' `s`/`h` columns. The plan ends with `__item` and the requested
//! outputs, in any order (the engine places rows by `__item`). A table map
//! over Parquet files starts instead from a scan of the files, its rows
//! numbered as items (see `lower_scan`).

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, ScalarUDF, Volatility, col, lit};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use hypernodes_core::columnar::{ColumnarMap, PlannedStep, TableScan};
use hypernodes_core::value::ValueType;
use hypernodes_core::{Error, MapJob, MapMode};

use crate::DataFusionEngine;

use crate::udf::{NodeUdf, SigUdf, StepWire, node_fields};

/// A lowered map, ready to execute.
pub(crate) struct Lowered {
    pub df: DataFrame,
    /// The requested outputs' slots and types, in order.
    pub outputs: Vec<(usize, ValueType)>,
}

fn df_error(e: datafusion::error::DataFusionError) -> Error {
    Error::external("datafusion", e)
}

/// Splits columns into batches of `batch_size` rows spread over
/// `partitions` partitions, as a table.
fn table(
    ctx: &SessionContext,
    schema: Arc<Schema>,
    columns: Vec<ArrayRef>,
    rows: usize,
    engine: &DataFusionEngine,
) -> Result<DataFrame, Error> {
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::external("building the input table", e))?;
    let partitions = engine.partitions.max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    let size = engine.batch_size.max(1);
    let mut start = 0;
    let mut p = 0;
    while start < rows {
        let len = size.min(rows - start);
        parts[p % partitions].push(batch.slice(start, len));
        start += len;
        p += 1;
    }
    let mem = MemTable::try_new(schema, parts).map_err(df_error)?;
    ctx.read_table(Arc::new(mem)).map_err(df_error)
}

/// The input table: `__item`, then `s<slot>`/`h<slot>` per needed mapped input.
fn inputs(
    ctx: &SessionContext,
    cm: &ColumnarMap<'_>,
    engine: &DataFusionEngine,
) -> Result<DataFrame, Error> {
    let mapped_columns = |m: &hypernodes_core::columnar::MappedColumn,
                          fields: &mut Vec<Field>,
                          columns: &mut Vec<ArrayRef>| {
        if let Some(slot) = m.slot {
            fields.push(Field::new(
                format!("s{slot}"),
                m.elements.data_type().clone(),
                true,
            ));
            columns.push(m.elements.clone());
            if let Some(hashes) = &m.hashes {
                fields.push(Field::new(
                    format!("h{slot}"),
                    DataType::FixedSizeBinary(32),
                    true,
                ));
                columns.push(hashes.clone());
            }
        }
    };
    match cm.mode {
        MapMode::Zip => {
            let mut fields = vec![Field::new("__item", DataType::UInt64, false)];
            let mut columns: Vec<ArrayRef> =
                vec![Arc::new(UInt64Array::from_iter_values(0..cm.len as u64))];
            for m in &cm.mapped {
                mapped_columns(m, &mut fields, &mut columns);
            }
            table(ctx, Arc::new(Schema::new(fields)), columns, cm.len, engine)
        }
        MapMode::Product => {
            let mut plan: Option<LogicalPlanBuilder> = None;
            let mut item: Option<Expr> = None;
            let mut keep = vec![];
            for (k, m) in cm.mapped.iter().enumerate() {
                let index = format!("__i{k}");
                let mut fields = vec![Field::new(&index, DataType::UInt64, false)];
                let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
                    0..m.elements.len() as u64,
                ))];
                mapped_columns(m, &mut fields, &mut columns);
                keep.extend(fields.iter().skip(1).map(|f| col(f.name())));
                let t = table(
                    ctx,
                    Arc::new(Schema::new(fields)),
                    columns,
                    m.elements.len(),
                    engine,
                )?;
                let t = t.into_unoptimized_plan();
                plan = Some(match plan {
                    None => LogicalPlanBuilder::from(t),
                    Some(b) => b.cross_join(t).map_err(df_error)?,
                });
                item = Some(match item {
                    None => col(&index),
                    Some(e) => e * lit(m.elements.len() as u64) + col(&index),
                });
            }
            let (Some(plan), Some(item)) = (plan, item) else {
                return Err(Error::NothingToMap);
            };
            let mut exprs = vec![item.alias("__item")];
            exprs.extend(keep);
            let plan = plan
                .project(exprs)
                .map_err(df_error)?
                .build()
                .map_err(df_error)?;
            Ok(DataFrame::new(ctx.state(), plan))
        }
    }
}

/// A session whose optimizer never duplicates a node's UDF: the rules that
/// push struct field accesses towards the scan would copy
/// `get_field(node(...))` once per field, calling the node once per output.
pub(crate) fn session(config: SessionConfig) -> SessionContext {
    SessionContext::new_with_state(session_state(config))
}

/// The state behind [`session`] (see [`crate::session_state`]).
pub(crate) fn session_state(config: SessionConfig) -> datafusion::execution::context::SessionState {
    use datafusion::execution::SessionStateBuilder;
    // A table map numbers the rows of its one-partition scan in order:
    // the scan must stay one partition (the steps after it are spread).
    let mut config = config;
    config.options_mut().optimizer.repartition_file_scans = false;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let rules: Vec<_> = state
        .optimizers()
        .iter()
        .filter(|r| {
            !matches!(
                r.name(),
                "extract_leaf_expressions" | "push_down_leaf_projections"
            )
        })
        .cloned()
        .collect();
    SessionStateBuilder::new_from_existing(state)
        .with_optimizer_rules(rules)
        .build()
}

/// Lowers `job` (see the module docs): the input table, then its steps.
pub(crate) fn lower(engine: &DataFusionEngine, job: &Arc<MapJob>) -> Result<Lowered, Error> {
    let cm = job.columnar()?;
    let ctx = engine.session();
    let df = inputs(&ctx, &cm, engine)?;
    steps(engine, job, &cm, df, 0, crate::codec::new_map_id())
}

/// Lowers `job` over the Parquet files of `scan` (see
/// [`TableScan`]): the files scanned in order, their rows numbered as
/// items, the feeding columns cast to their inputs' types and hashed (a
/// null where the input takes none fails the row's item), then the steps
/// as for any map. The plan ends with `__item`, the carried columns
/// (`c0`, `c1`, ...) and the outputs.
pub(crate) fn lower_scan(
    engine: &DataFusionEngine,
    job: &Arc<MapJob>,
    scan: &TableScan,
) -> Result<Lowered, Error> {
    use datafusion::common::Column;
    let cm = job.columnar()?;
    let ctx = engine.session();
    let map_id = crate::codec::new_map_id();
    let df = ctx
        .read_table(Arc::new(crate::scan::InOrder::new(scan)?))
        .map_err(df_error)?;
    // Numbered in file order: the scan is one partition (see `InOrder`).
    let df = df
        .window(vec![
            datafusion::functions_window::expr_fn::row_number().alias("__row"),
        ])
        .map_err(df_error)?;
    let column = |name: &str| Expr::Column(Column::new_unqualified(name));
    let item = column("__row") - lit(1u64);
    let mut exprs = vec![item.clone().alias("__item")];
    for (k, c) in scan.carry.iter().enumerate() {
        exprs.push(column(c).alias(format!("c{k}")));
    }
    let mut hashed = Vec::new();
    for (k, feed) in scan.feeds.iter().enumerate() {
        let slot = cm
            .mapped
            .iter()
            .find(|m| m.name == feed.input)
            .and_then(|m| m.slot);
        let name = slot.map_or(format!("u{k}"), |s| format!("s{s}"));
        let read = df
            .schema()
            .field_with_unqualified_name(&feed.column)
            .map_err(df_error)?
            .data_type()
            .clone();
        let mut value = if read == feed.data_type {
            column(&feed.column)
        } else {
            datafusion::logical_expr::cast(column(&feed.column), feed.data_type.clone())
        };
        if !feed.nullable {
            let check = crate::udf::NullCheckUdf {
                name: format!("nulls_{}", feed.input),
                map: map_id,
                len: cm.len,
                stop: job.policy() == hypernodes_core::ErrorPolicy::Stop,
                feed: feed.clone(),
                state: job.state().clone(),
                signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Volatile),
            };
            value = ScalarUDF::new_from_impl(check).call(vec![item.clone(), value]);
        }
        exprs.push(value.alias(&name));
        if let Some(slot) = slot {
            hashed.push((name, format!("h{slot}")));
        }
    }
    let mut df = df.select(exprs).map_err(df_error)?;
    for (values, hash) in hashed {
        let udf = crate::udf::HashUdf {
            name: format!("hash_{values}"),
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
        };
        df = df
            .with_column(
                &hash,
                ScalarUDF::new_from_impl(udf).call(vec![col(&values)]),
            )
            .map_err(df_error)?;
    }
    steps(engine, job, &cm, df, scan.carry.len(), map_id)
}

/// Adds the steps of `job` to `df` (the input table: `__item`, then
/// `c<k>` for each of `carried` columns, then `s`/`h` per mapped input):
/// per step of its [`ColumnarPlan`](hypernodes_core::columnar::ColumnarPlan)
/// a signature column and its node's UDF; ends with `__item`, the carried
/// columns, the outputs, `__errors` and `__counts` (the failures and the
/// per-node counts of a plan run in another process, see `ReportUdf`). `map_id` names the map on the wire
/// (its steps, null checks and errors share one state where decoded).
fn steps(
    engine: &DataFusionEngine,
    job: &Arc<MapJob>,
    cm: &ColumnarMap<'_>,
    mut df: DataFrame,
    carried: usize,
    map_id: u64,
) -> Result<Lowered, Error> {
    let plan = job.columnar_plan(&engine.name)?;
    // What a plan that leaves the process carries instead of the cache, and
    // which map its steps belong to.
    let cache_url = job.cache().and_then(|c| c.location()).map(|l| l.url());
    for planned in plan.steps {
        let PlannedStep {
            node,
            sig,
            columns,
            outs,
            step,
        } = planned;
        let index = step.step;
        let mut udf_args = vec![col("__item")];
        if let Some(spec) = sig {
            let hash_cols: Vec<Expr> = columns.iter().map(|s| col(format!("h{s}"))).collect();
            let name = format!("g{index}");
            let sig = SigUdf::new(format!("signature_{}_{index}", node.name()), spec);
            df = df
                .with_column(&name, ScalarUDF::new_from_impl(sig).call(hash_cols))
                .map_err(df_error)?;
            udf_args.push(col(&name));
        }
        udf_args.extend(columns.iter().map(|s| col(format!("s{s}"))));
        let fields = node_fields(&outs).map_err(|ty| Error::Engine {
            message: format!("node `{}`: type {ty} has no Arrow form", node.name()),
        })?;
        let wire = StepWire {
            map: map_id,
            len: cm.len,
            stop: job.policy() == hypernodes_core::ErrorPolicy::Stop,
            node: node.name().to_string(),
            code: node.code_hash().to_hex(),
            path: job.step_path(index)?,
            cache: cache_url.clone(),
            cached: step.cache.is_some(),
            hash_outputs: step.hash_outputs,
            inputs: node.inputs().iter().map(|p| p.name.clone()).collect(),
            outs: outs.iter().map(|(slot, _)| *slot).collect(),
        };
        let udf = NodeUdf {
            name: step.name.clone(),
            wire,
            fields,
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Volatile),
            step,
        };
        let r = format!("r{index}");
        df = df
            .with_column(&r, ScalarUDF::new_from_impl(udf).call(udf_args))
            .map_err(df_error)?;
        for (slot, _) in &outs {
            let Some(slot) = slot else { continue };
            for prefix in ["s", "h"] {
                let name = format!("{prefix}{slot}");
                df = df
                    .with_column(&name, get_field(col(&r), name.as_str()))
                    .map_err(df_error)?;
            }
        }
        df = df.drop_columns(&[r.as_str()]).map_err(df_error)?;
    }
    let mut select = vec![col("__item")];
    select.extend((0..carried).map(|k| col(format!("c{k}"))));
    select.extend(plan.outputs.iter().map(|(slot, _)| col(format!("s{slot}"))));
    // Last: after every step of the row has run.
    let stop = job.policy() == hypernodes_core::ErrorPolicy::Stop;
    for kind in crate::udf::Report::ALL {
        let report = crate::udf::ReportUdf::new(kind, map_id, cm.len, stop, None);
        select.push(
            ScalarUDF::new_from_impl(report)
                .call(vec![col("__item")])
                .alias(kind.column()),
        );
    }
    // No sort: the engine places each row by its `__item`.
    let df = df.select(select).map_err(df_error)?;
    Ok(Lowered {
        df,
        outputs: plan.outputs,
    })
}
