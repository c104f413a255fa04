//! A table map's Parquet files as a DataFusion table read in order
//! ([`InOrder`]): the files in the order the map numbers their rows, as one
//! partition, so that numbering the scan's rows (a `row_number()` window)
//! gives each row its item. The nodes after it still run over all
//! partitions: DataFusion spreads the numbered batches again.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use hypernodes_core::Error;
use hypernodes_core::columnar::TableScan;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct InOrder {
    paths: Vec<std::path::PathBuf>,
    files: ListingTable,
}

impl InOrder {
    /// The files of `scan`, read with its schema.
    pub(crate) fn new(scan: &TableScan) -> Result<InOrder, Error> {
        InOrder::open(scan.files.clone(), scan.schema.clone())
    }

    /// `paths`, in this order, read with `schema` (where a plan naming
    /// them is decoded).
    pub(crate) fn open(
        paths: Vec<std::path::PathBuf>,
        schema: SchemaRef,
    ) -> Result<InOrder, Error> {
        let urls = paths
            .iter()
            .map(|f| ListingTableUrl::parse(f.to_string_lossy()))
            .collect::<DfResult<Vec<_>>>()
            .map_err(|e| Error::external("naming the table's files", e))?;
        // The files are named one by one: whatever their extension.
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema);
        let files = ListingTable::try_new(config)
            .map_err(|e| Error::external("reading the table's files", e))?;
        Ok(InOrder { paths, files })
    }

    /// The files, in table order.
    pub(crate) fn files(&self) -> &[std::path::PathBuf] {
        &self.paths
    }
}

#[async_trait]
impl TableProvider for InOrder {
    fn schema(&self) -> SchemaRef {
        self.files.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // One file group: the files in path order (their table order), one
        // after the other.
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(datafusion::error::DataFusionError::Internal(
                "a table map's scan needs a SessionState".into(),
            ));
        };
        let config = state.config().clone().with_target_partitions(1);
        let one = SessionStateBuilder::new_from_existing(state.clone())
            .with_config(config)
            .build();
        self.files.scan(&one, projection, filters, limit).await
    }
}
