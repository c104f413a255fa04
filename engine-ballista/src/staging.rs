//! A map's input rows staged as Parquet: a cluster's processes cannot share
//! an in-memory table, and a plan carrying the rows inline outgrows gRPC's
//! message limits at a few hundred thousand items. So before a plan is
//! sent, every in-memory table in it is written as Parquet files (up to
//! [`MAX_FILES`], so as many tasks can share the rows) into a directory
//! every process can read, and the plan scans those files instead. The files are removed when the map ends
//! ([`Staged`]'s drop).

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, provider_as_source, source_as_provider};
use datafusion::logical_expr::LogicalPlan;
use datafusion::parquet::arrow::ArrowWriter;
use hypernodes_core::Error;

/// A map's staged input files, removed when dropped.
pub(crate) struct Staged {
    dir: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            log::warn!("removing staged inputs {}: {e}", self.dir.display());
        }
    }
}

fn staging_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::TableIo {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Writes every in-memory table of `plan` as Parquet into a new directory
/// under `root` and returns the plan scanning those files instead.
pub(crate) fn stage(plan: LogicalPlan, root: &Path) -> Result<(LogicalPlan, Staged), Error> {
    let dir = root.join(format!(
        "map-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| staging_error(&dir, e))?;
    let staged = Staged { dir: dir.clone() };
    let mut tables = 0usize;
    let mut failure: Option<Error> = None;
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let provider = source_as_provider(&scan.source)?;
            let Some(memory) = (provider.as_ref() as &dyn Any).downcast_ref::<MemTable>() else {
                return Ok(Transformed::no(node));
            };
            match write_table(memory, &dir, tables) {
                Ok(listing) => {
                    tables += 1;
                    let mut scan = scan.clone();
                    scan.source = provider_as_source(Arc::new(listing));
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                Err(e) => {
                    failure = Some(e);
                    Ok(Transformed::no(node))
                }
            }
        })
        .map_err(|e| Error::external("staging the map's inputs", e))?
        .data;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((plan, staged))
}

/// Files a table is staged in, at most: enough for as many tasks, each
/// reading whole files.
pub(crate) const MAX_FILES: usize = 8;

/// Rows per staged file, at least (small maps stay in one or few files).
const MIN_FILE_ROWS: usize = 1024;

/// Writes `table`'s rows in order as `t<table>-f<file>.parquet` in `dir`,
/// in up to [`MAX_FILES`] files of equal size (a task each); a listing
/// table over them.
fn write_table(table: &MemTable, dir: &Path, index: usize) -> Result<ListingTable, Error> {
    use datafusion::catalog::TableProvider;
    let schema = table.schema();
    let mut batches = Vec::new();
    for partition in &table.batches {
        let partition = partition.try_read().map_err(|_| Error::Engine {
            message: "ballista: an input table is being written".into(),
        })?;
        batches.extend(partition.iter().filter(|b| b.num_rows() > 0).cloned());
    }
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let per_file = total.div_ceil(MAX_FILES).max(MIN_FILE_ROWS);
    let mut urls = Vec::new();
    let mut open: Option<(PathBuf, ArrowWriter<std::fs::File>, usize)> = None;
    let close = |(path, writer, _): (PathBuf, ArrowWriter<std::fs::File>, usize),
                 urls: &mut Vec<ListingTableUrl>|
     -> Result<(), Error> {
        writer.close().map_err(|e| staging_error(&path, e))?;
        urls.push(
            ListingTableUrl::parse(path.to_string_lossy()).map_err(|e| staging_error(&path, e))?,
        );
        Ok(())
    };
    for batch in batches {
        let mut at = 0;
        while at < batch.num_rows() {
            if open.is_none() {
                let path = dir.join(format!("t{index}-f{:04}.parquet", urls.len()));
                let file = std::fs::File::create(&path).map_err(|e| staging_error(&path, e))?;
                let writer = ArrowWriter::try_new(file, schema.clone(), None)
                    .map_err(|e| staging_error(&path, e))?;
                open = Some((path, writer, 0));
            }
            let Some((path, writer, rows)) = open.as_mut() else {
                break;
            };
            let take = (per_file - *rows).min(batch.num_rows() - at);
            writer
                .write(&batch.slice(at, take))
                .map_err(|e| staging_error(path, e))?;
            *rows += take;
            at += take;
            if *rows >= per_file
                && let Some(full) = open.take()
            {
                close(full, &mut urls)?;
            }
        }
    }
    if let Some(last) = open.take() {
        close(last, &mut urls)?;
    }
    if urls.is_empty() {
        // An empty table: one empty file keeps the scan's schema.
        let path = dir.join(format!("t{index}-f0000.parquet"));
        let file = std::fs::File::create(&path).map_err(|e| staging_error(&path, e))?;
        ArrowWriter::try_new(file, schema.clone(), None)
            .and_then(|w| w.close().map(|_| ()))
            .map_err(|e| staging_error(&path, e))?;
        urls.push(
            ListingTableUrl::parse(path.to_string_lossy()).map_err(|e| staging_error(&path, e))?,
        );
    }
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    ListingTable::try_new(config).map_err(|e| Error::external("staging the map's inputs", e))
}
