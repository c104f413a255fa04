//! Tables in, tables out: a `map` whose mapped inputs are the columns of
//! Arrow record batches or Parquet files, whose results stream out as
//! record batches or into a Parquet file, in bounded memory.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch, StringArray};
//! use hypernodes_core::{Inputs, MapOptions, Pipeline, node};
//! use hypernodes_core::table::Table;
//!
//! #[node(output = "word_count")]
//! fn count(text: &str) -> i64 { text.split_whitespace().count() as i64 }
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("id", Arc::new(Int64Array::from(vec![7, 8])) as _),
//!     ("body", Arc::new(StringArray::from(vec!["a b", "c"])) as _),
//! ]).unwrap();
//! let p = Pipeline::new([count::node()]).unwrap();
//! let table = Table::from_batches([batch]).rename([("body", "text")]).carry(["id"]);
//! let out = p.map_table(table, Inputs::new(), MapOptions::default()).unwrap().collect().unwrap();
//! assert_eq!(out[0].schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["id", "word_count"]);
//! ```
//!
//! How the table is read depends on the engine:
//! - Parquet files on an engine that reads them itself
//!   ([`Engine::scans_parquet`](crate::Engine::scans_parquet):
//!   `DataFusionEngine`) are mapped as ONE plan of that engine, whose
//!   source is a scan of the files and whose batches stream back to the
//!   caller; the table's rows are the map's items, numbered in file order.
//! - Otherwise the table is read in chunks of [`Table::chunk_rows`] rows;
//!   each chunk is one `map` on the pipeline's engine.
//!
//! Either way results are written as they come and the plan (or the next
//! chunk) waits while the caller has not taken them, so memory holds a
//! bounded part of the table (and the cache's index) whatever its size.
//! Items are identified by content as in any `map`: a row read from
//! Parquet and the same value passed in a `Vec` share their cache entries.

mod read;
mod run;
mod scan;
mod write;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;

pub use run::TableMap;
pub use write::Written;

/// Record batches produced one at a time (see [`Table::from_reader`]).
pub type BatchReader = Box<dyn Iterator<Item = Result<RecordBatch, crate::Error>> + Send>;

/// Where a table's rows come from (see [`Table`]).
#[derive(Clone)]
enum Source {
    /// Record batches in memory.
    Batches(Vec<RecordBatch>),
    /// Parquet files, read in this order.
    Parquet(Vec<PathBuf>),
    /// Batches produced as they are read, with their schema (read once:
    /// clones of the table share the reader).
    Reader(arrow_schema::SchemaRef, Arc<Mutex<BatchReader>>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Batches(b) => write!(f, "Batches({} batches)", b.len()),
            Source::Parquet(files) => f.debug_tuple("Parquet").field(files).finish(),
            Source::Reader(schema, _) => write!(f, "Reader({schema:?})"),
        }
    }
}

/// A table to map over: its source, which columns feed which inputs, and
/// which columns are carried through to the output.
#[derive(Clone, Debug)]
pub struct Table {
    source: Source,
    rename: Vec<(String, String)>,
    carry: Vec<String>,
    chunk_rows: usize,
}

impl Table {
    /// Rows per chunk unless [`Table::chunk_rows`] says otherwise: enough
    /// that what each chunk pays once (a plan, a cache flush) stays small
    /// beside its rows, few enough that a chunk of text is tens of MB.
    pub const DEFAULT_CHUNK_ROWS: usize = 262_144;

    /// A table of record batches (all with the same schema).
    pub fn from_batches(batches: impl IntoIterator<Item = RecordBatch>) -> Table {
        Table::with_source(Source::Batches(batches.into_iter().collect()))
    }

    /// A table read from `reader` as the map goes, one batch at a time
    /// (each at most [`Table::chunk_rows`] rows is mapped as it comes):
    /// batches from another library, a query's results, a generator.
    /// `schema` is every batch's schema, known before the first is read so
    /// the columns are checked before anything runs. The reader is read
    /// once.
    pub fn from_reader(
        schema: arrow_schema::SchemaRef,
        reader: impl Iterator<Item = Result<RecordBatch, crate::Error>> + Send + 'static,
    ) -> Table {
        Table::with_source(Source::Reader(
            schema,
            Arc::new(Mutex::new(Box::new(reader))),
        ))
    }

    /// The Parquet data at `path`: one file, a directory (its `*.parquet`
    /// files in name order), or a pattern with `*` in its last part
    /// (`data/part-*.parquet`). Nothing is read until the map runs; a path
    /// that names no file is an error.
    pub fn parquet(path: impl Into<PathBuf>) -> Result<Table, crate::Error> {
        Ok(Table::with_source(Source::Parquet(read::parquet_files(
            &path.into(),
        )?)))
    }

    fn with_source(source: Source) -> Table {
        Table {
            source,
            rename: Vec::new(),
            carry: Vec::new(),
            chunk_rows: Self::DEFAULT_CHUNK_ROWS,
        }
    }

    /// Feeds column `from` to input `to` (for each pair); other columns
    /// feed the inputs of their own names.
    pub fn rename<A: Into<String>, B: Into<String>>(
        mut self,
        pairs: impl IntoIterator<Item = (A, B)>,
    ) -> Table {
        self.rename
            .extend(pairs.into_iter().map(|(a, b)| (a.into(), b.into())));
        self
    }

    /// Copies these columns to the output unchanged, before the results
    /// (an id column, say).
    pub fn carry<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Table {
        self.carry.extend(columns.into_iter().map(Into::into));
        self
    }

    /// Rows read and mapped at a time (at least 1) where the table is read
    /// in chunks (an engine reading Parquet itself uses its own batches).
    pub fn chunk_rows(mut self, rows: usize) -> Table {
        self.chunk_rows = rows.max(1);
        self
    }

    /// The input a column feeds (its renaming, or its own name).
    fn input_of<'a>(&'a self, column: &'a str) -> &'a str {
        self.rename
            .iter()
            .find(|(from, _)| from == column)
            .map_or(column, |(_, to)| to.as_str())
    }
}
