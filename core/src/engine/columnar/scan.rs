//! A map over Parquet files that an engine reads itself
//! ([`Engine::map_scan`](crate::Engine::map_scan)): the files, which column
//! feeds which mapped input, and which columns are carried through.
//!
//! The engine's plan starts with a scan of the files, in the order given
//! (items are numbered in that order, from 0), and ends with batches of
//! `__item` (`UInt64`), the carried columns in [`TableScan::carry`] order,
//! then the map's outputs in output order. Batches may come in any order,
//! but each must hold consecutive items: the table map puts them back in
//! table order and adds the error columns. A row whose value is null where
//! its input takes no nulls fails its item (recorded in the job's
//! [`MapState`](crate::MapState)) with [`Error::NullValue`](crate::Error::NullValue).

use std::path::PathBuf;

use arrow_schema::{DataType, SchemaRef};

/// One column of the files feeding one mapped input.
#[derive(Clone, Debug)]
pub struct ScanFeed {
    /// The column's name in the files.
    pub column: String,
    /// The mapped input it feeds (a [`MappedColumn`](super::MappedColumn)
    /// of the job's [`ColumnarMap`](super::ColumnarMap) has this name).
    pub input: String,
    /// The first node taking the input (for errors).
    pub node: String,
    /// The type the input reads (the column is cast to it when it differs).
    pub data_type: DataType,
    /// Whether the input takes nulls (an `Option`).
    pub nullable: bool,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct TableScan {
    /// The files, absolute, in table order.
    pub files: Vec<PathBuf>,
    /// Their schema (the first file's).
    pub schema: SchemaRef,
    /// Rows in all the files (the job's items).
    pub rows: usize,
    /// The columns feeding mapped inputs.
    pub feeds: Vec<ScanFeed>,
    /// The columns copied to the output unchanged.
    pub carry: Vec<String>,
}
