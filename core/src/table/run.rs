//! A map over a table, chunk by chunk: columns checked against the
//! inputs they feed before anything runs, each chunk's columns turned into
//! mapped inputs and mapped on the pipeline's engine, and the results
//! assembled into record batches (carried columns, outputs, and with the
//! continue policy `error_node` and `error`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::Table;
use super::read::Chunks;
use super::scan::Native;
use super::write::{ParquetSink, Written};
use crate::engine::columnar::{ScanFeed, TableScan};
use crate::map::{ErrorPolicy, MapOptions};
use crate::{Error, Inputs, Pipeline};

/// One table column feeding one mapped input.
struct Feed {
    column: String,
    input: String,
    node: String,
    data_type: DataType,
    nullable: bool,
}

/// A map over a table, ready to run: iterate it for record batches (one
/// per chunk), or write them all with [`TableMap::write_parquet`]. Made by
/// [`Pipeline::map_table`].
pub struct TableMap<'a> {
    pipeline: &'a Pipeline,
    fixed: Inputs,
    options: MapOptions,
    feeds: Vec<Feed>,
    carry: Vec<String>,
    schema: SchemaRef,
    chunks: Chunks,
    /// Rows of the table mapped so far.
    row: usize,
    /// Rows whose item failed so far.
    failed: usize,
    /// Whether any chunk came out (an empty table still yields one, empty).
    yielded: bool,
    done: bool,
    /// For Parquet files on an engine that reads them itself: the whole
    /// map as one plan of that engine's, started at the first read.
    native: Option<Native>,
    scan: Option<TableScan>,
}

/// Whether a column of type `from` can feed a value read as `to` without
/// loss (the same type, another encoding of it, or a wider number).
fn compatible(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to {
        return true;
    }
    match (from, to) {
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) => true,
        (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64) => true,
        (UInt16, UInt32 | UInt64 | Int32 | Int64) | (UInt32, UInt64 | Int64) => true,
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (List(a) | LargeList(a), List(b) | LargeList(b)) => {
            compatible(a.data_type(), b.data_type())
        }
        (Dictionary(_, v), to) => compatible(v, to),
        _ => false,
    }
}

impl Pipeline {
    /// Maps this pipeline over the rows of `table`: each column feeds the
    /// input of its name (or its [`Table::rename`]d one), `fixed` gives
    /// the other inputs once, and `options` sets the error policy and the
    /// outputs (its mapped names are the table's columns). Every input
    /// column is checked against its input's type before anything runs;
    /// a null in a column whose input takes no nulls fails that row's
    /// item. See the [`table`](crate::table) module.
    pub fn map_table(
        &self,
        table: Table,
        fixed: Inputs,
        options: impl Into<MapOptions>,
    ) -> Result<TableMap<'_>, Error> {
        let mut options = options.into();
        let schema = Chunks::schema(&table.source)?;
        let columns = || {
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut feeds = Vec::new();
        for input in self.inputs() {
            if self.bound_value(&input.name).is_some() || fixed.get(&input.name).is_some() {
                continue;
            }
            let node = input.consumers.first().cloned().unwrap_or_default();
            let Some(field) = schema
                .fields()
                .iter()
                .find(|f| table.input_of(f.name()) == input.name)
            else {
                let column = table
                    .rename
                    .iter()
                    .find(|(_, to)| *to == input.name)
                    .map_or(input.name.clone(), |(from, _)| from.clone());
                return Err(Error::MissingColumn {
                    column,
                    wanted: format!("for input `{}` of `{node}`", input.name),
                    columns: columns(),
                });
            };
            let wanted = input.ty.field(&input.name);
            let type_error =
                || crate::io::column_type_error(field.name(), input, field.data_type());
            let Some(wanted) = &wanted else {
                return Err(type_error());
            };
            if !compatible(field.data_type(), wanted.data_type()) {
                return Err(type_error());
            }
            feeds.push(Feed {
                column: field.name().clone(),
                input: input.name.clone(),
                node,
                data_type: wanted.data_type().clone(),
                nullable: wanted.is_nullable(),
            });
        }
        for c in &table.carry {
            if schema.field_with_name(c).is_err() {
                return Err(Error::MissingColumn {
                    column: c.clone(),
                    wanted: "to carry through".into(),
                    columns: columns(),
                });
            }
        }
        options.over = feeds.iter().map(|f| f.input.clone()).collect();
        let read: Vec<String> = feeds
            .iter()
            .map(|f| f.column.clone())
            .chain(table.carry.iter().cloned())
            .collect();
        let projected: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| read.iter().any(|r| r == f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        let scan = match &table.source {
            super::Source::Parquet(files) if self.engine().is_some_and(|e| e.scans_parquet()) => {
                let (rows, files) = Chunks::parquet_rows(files)?;
                Some(TableScan {
                    files,
                    schema: schema.clone(),
                    rows,
                    feeds: feeds
                        .iter()
                        .map(|f| ScanFeed {
                            column: f.column.clone(),
                            input: f.input.clone(),
                            node: f.node.clone(),
                            data_type: f.data_type.clone(),
                            nullable: f.nullable,
                        })
                        .collect(),
                    carry: table.carry.clone(),
                })
            }
            _ => None,
        };
        Ok(TableMap {
            native: None,
            scan,
            pipeline: self,
            fixed,
            options,
            feeds,
            carry: table.carry.clone(),
            schema: Arc::new(Schema::new(projected)),
            chunks: Chunks::new(table.source, read, table.chunk_rows),
            row: 0,
            failed: 0,
            yielded: false,
            done: false,
        })
    }
}

impl TableMap<'_> {
    /// Maps every chunk and writes the results to the Parquet file at
    /// `path`, atomically (see the [`table`](crate::table) module): the
    /// carried columns, then the outputs, one row per table row in order;
    /// with the continue policy, failed rows have null outputs and name
    /// their node and error in `error_node` and `error`.
    pub fn write_parquet(mut self, path: impl AsRef<Path>) -> Result<Written, Error> {
        let path = path.as_ref();
        let mut sink = ParquetSink::new(path);
        let mut last: Option<RecordBatch> = None;
        for batch in &mut self {
            let batch = batch?;
            sink.write(&batch)?;
            last = Some(batch);
        }
        let empty = last
            .map(|b| b.slice(0, 0))
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::new(Schema::empty())));
        sink.finish(&empty)?;
        Ok(Written {
            path: path.to_path_buf(),
            rows: self.row,
            failed: self.failed,
        })
    }

    /// Maps every chunk and writes the results to a directory of Parquet
    /// files (`part-00000.parquet`, `part-00001.parquet`, ...), each of at
    /// least `rows_per_file` rows (whole chunks) but the last, each written
    /// atomically as [`TableMap::write_parquet`] writes its file: a crash
    /// leaves complete files and at most one temporary file. An empty table
    /// writes one empty file.
    pub fn write_parquet_dir(
        mut self,
        dir: impl AsRef<Path>,
        rows_per_file: usize,
    ) -> Result<Vec<Written>, Error> {
        let dir = dir.as_ref();
        let mut files: Vec<Written> = Vec::new();
        let mut open: Option<(ParquetSink, PathBuf, usize, usize, RecordBatch)> = None;
        let finish = |open: (ParquetSink, PathBuf, usize, usize, RecordBatch),
                      files: &mut Vec<Written>|
         -> Result<(), Error> {
            let (sink, path, rows, failed, last) = open;
            sink.finish(&last.slice(0, 0))?;
            files.push(Written { path, rows, failed });
            Ok(())
        };
        loop {
            let failed_before = self.failed;
            let Some(batch) = self.next() else {
                break;
            };
            let batch = batch?;
            let (sink, _, rows, failed, last) = open.get_or_insert_with(|| {
                let path = dir.join(format!("part-{:05}.parquet", files.len()));
                (ParquetSink::new(&path), path, 0, 0, batch.clone())
            });
            sink.write(&batch)?;
            *rows += batch.num_rows();
            *failed += self.failed - failed_before;
            *last = batch;
            if *rows >= rows_per_file.max(1)
                && let Some(done) = open.take()
            {
                finish(done, &mut files)?;
            }
        }
        if let Some(done) = open.take() {
            finish(done, &mut files)?;
        }
        Ok(files)
    }

    /// Maps every chunk and returns the record batches (for small
    /// tables: they are all held in memory).
    pub fn collect(self) -> Result<Vec<RecordBatch>, Error> {
        Iterator::collect(self)
    }

    /// Maps one chunk of the table.
    fn map_chunk(&mut self, batch: RecordBatch) -> Result<RecordBatch, Error> {
        let n = batch.num_rows();
        let continue_on_error = self.options.on_error == ErrorPolicy::Continue;
        // Rows with a null where the input takes none: their items fail.
        let mut errors: Vec<Option<(String, String)>> = vec![None; n];
        for feed in self.feeds.iter().filter(|f| !f.nullable) {
            let column = column(&batch, &feed.column)?;
            if column.null_count() == 0 {
                continue;
            }
            for (r, slot) in errors.iter_mut().enumerate() {
                if slot.is_none() && column.is_null(r) {
                    let error = Error::NullValue {
                        column: feed.column.clone(),
                        input: feed.input.clone(),
                        node: feed.node.clone(),
                        row: self.row + r,
                    };
                    if !continue_on_error {
                        return Err(error);
                    }
                    *slot = Some((feed.node.clone(), error.to_string()));
                }
            }
        }
        let valid: Vec<u32> = (0..n as u32)
            .filter(|&r| errors[r as usize].is_none())
            .collect();
        let all_valid = valid.len() == n;
        let picks = UInt32Array::from(valid.clone());
        let take = |array: &ArrayRef| -> Result<ArrayRef, Error> {
            if all_valid {
                Ok(array.clone())
            } else {
                arrow_select::take::take(array, &picks, None).map_err(Error::from)
            }
        };
        let mut inputs = self.fixed.clone();
        for feed in &self.feeds {
            let array = take(column(&batch, &feed.column)?)?;
            let array = if array.data_type() == &feed.data_type {
                array
            } else {
                arrow_cast::cast(&array, &feed.data_type)?
            };
            inputs.insert_value(
                feed.input.clone(),
                crate::value::Value::new(crate::io::ArrowList(array)),
            );
        }
        let result = self.pipeline.map(inputs, self.options.clone())?;
        for f in result.failures() {
            let r = valid[f.index] as usize;
            errors[r] = Some((f.node().to_string(), f.error.to_string()));
        }
        let outputs = result.to_record_batch()?;
        // Back to one row per table row: failed-by-null rows get nulls.
        let spread = UInt32Array::from(
            (0..n)
                .scan(0u32, |k, r| {
                    Some(
                        if errors[r].is_some() && valid.binary_search(&(r as u32)).is_err() {
                            None
                        } else {
                            *k += 1;
                            Some(*k - 1)
                        },
                    )
                })
                .collect::<Vec<Option<u32>>>(),
        );
        let mut fields: Vec<Field> = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for c in &self.carry {
            let array = column(&batch, c)?.clone();
            let field = self.schema.field_with_name(c)?.clone();
            fields.push(field);
            arrays.push(array);
        }
        for (field, array) in outputs.schema().fields().iter().zip(outputs.columns()) {
            let array = if all_valid {
                array.clone()
            } else {
                arrow_select::take::take(array, &spread, None)?
            };
            fields.push(Field::new(field.name(), field.data_type().clone(), true));
            arrays.push(array);
        }
        if continue_on_error {
            let nodes: StringArray = errors.iter().map(|e| e.as_ref().map(|e| &e.0)).collect();
            let messages: StringArray = errors.iter().map(|e| e.as_ref().map(|e| &e.1)).collect();
            fields.push(Field::new("error_node", DataType::Utf8, true));
            fields.push(Field::new("error", DataType::Utf8, true));
            arrays.push(Arc::new(nodes));
            arrays.push(Arc::new(messages));
        }
        self.failed += errors.iter().filter(|e| e.is_some()).count();
        self.row += n;
        RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(Error::from)
    }
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef, Error> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::MissingColumn {
            column: name.to_string(),
            wanted: "in a later part of the table".into(),
            columns: batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl Iterator for TableMap<'_> {
    type Item = Result<RecordBatch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(scan) = self.scan.take() {
            let carried = self
                .carry
                .iter()
                .filter_map(|c| self.schema.field_with_name(c).ok().cloned())
                .collect();
            match Native::start(
                self.pipeline.clone(),
                self.fixed.clone(),
                self.options.clone(),
                scan,
                carried,
            ) {
                Ok(native) => self.native = Some(native),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        if let Some(native) = &mut self.native {
            let out = native.next();
            match &out {
                Some(Ok(batch)) => {
                    self.row += batch.num_rows();
                    if self.options.on_error == ErrorPolicy::Continue {
                        self.failed += super::scan::failed_rows(batch);
                    }
                }
                Some(Err(_)) | None => self.done = true,
            }
            return out;
        }
        let batch = match self.chunks.next() {
            Some(Ok(batch)) => batch,
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(e));
            }
            // An empty table still gives one (empty) batch with the
            // output's columns.
            None if !self.yielded => RecordBatch::new_empty(self.schema.clone()),
            None => return None,
        };
        self.yielded = true;
        let out = self.map_chunk(batch);
        if out.is_err() {
            self.done = true;
        }
        Some(out)
    }
}
