//! Reading a table's rows chunk by chunk: record batches sliced, Parquet
//! files read a chunk at a time with only the needed columns.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::Source;
use crate::Error;

fn io_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::TableIo {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// The Parquet files `path` names: a file, a directory's `*.parquet`
/// files, or a `*` pattern in the last part of the path.
pub(crate) fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let not_found = |what: &str| {
        io_error(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, what.to_string()),
        )
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (dir, pattern) = if name.contains('*') {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            Some(name),
        )
    } else if path.is_dir() {
        (path.to_path_buf(), Some("*.parquet".to_string()))
    } else if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    } else {
        return Err(not_found("no such file or directory"));
    };
    let pattern = pattern.unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| io_error(&dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| matches(&pattern, &n.to_string_lossy()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(not_found("no Parquet file matches"));
    }
    Ok(files)
}

/// Whether `name` matches `pattern`, where `*` stands for any characters.
fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Chunks of at most `rows` rows of a table, with only `columns` read
/// (where the source can skip the others).
pub(crate) struct Chunks {
    source: Source,
    columns: Vec<String>,
    rows: usize,
    /// Position: which batch or file, and for batches the row in it.
    at: usize,
    offset: usize,
    reader: Option<ParquetRecordBatchReader>,
    /// A reader's batch being cut into chunks.
    pending: Option<RecordBatch>,
}

impl Chunks {
    pub(crate) fn new(source: Source, columns: Vec<String>, rows: usize) -> Chunks {
        Chunks {
            source,
            columns,
            rows,
            at: 0,
            offset: 0,
            reader: None,
            pending: None,
        }
    }

    /// The table's schema (the first batch's or file's).
    pub(crate) fn schema(source: &Source) -> Result<SchemaRef, Error> {
        match source {
            Source::Batches(batches) => Ok(batches
                .first()
                .map(|b| b.schema())
                .unwrap_or_else(|| std::sync::Arc::new(arrow_schema::Schema::empty()))),
            Source::Reader(schema, _) => Ok(schema.clone()),
            Source::Parquet(files) => {
                let file = &files[0];
                let f = std::fs::File::open(file).map_err(|e| io_error(file, e))?;
                let builder =
                    ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| io_error(file, e))?;
                Ok(builder.schema().clone())
            }
        }
    }

    /// The rows of Parquet files, from their footers, and the files as
    /// absolute paths (what an engine reading them itself is given).
    pub(crate) fn parquet_rows(files: &[PathBuf]) -> Result<(usize, Vec<PathBuf>), Error> {
        let mut rows = 0;
        let mut absolute = Vec::with_capacity(files.len());
        for file in files {
            let f = std::fs::File::open(file).map_err(|e| io_error(file, e))?;
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| io_error(file, e))?;
            let n = builder.metadata().file_metadata().num_rows();
            rows += usize::try_from(n).unwrap_or(0);
            absolute.push(std::fs::canonicalize(file).map_err(|e| io_error(file, e))?);
        }
        Ok((rows, absolute))
    }

    fn open(&self, file: &Path) -> Result<ParquetRecordBatchReader, Error> {
        let f = std::fs::File::open(file).map_err(|e| io_error(file, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| io_error(file, e))?;
        let schema = builder.schema().clone();
        let roots: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| self.columns.iter().any(|c| c == f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder
            .with_projection(mask)
            .with_batch_size(self.rows)
            .build()
            .map_err(|e| io_error(file, e))
    }
}

impl Iterator for Chunks {
    type Item = Result<RecordBatch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match &self.source {
                Source::Batches(batches) => {
                    let batch = batches.get(self.at)?;
                    if self.offset >= batch.num_rows() {
                        self.at += 1;
                        self.offset = 0;
                        continue;
                    }
                    let len = self.rows.min(batch.num_rows() - self.offset);
                    let chunk = batch.slice(self.offset, len);
                    self.offset += len;
                    return Some(Ok(chunk));
                }
                Source::Reader(_, reader) => {
                    // Batches larger than a chunk are cut into chunks.
                    if let Some(pending) = &self.pending {
                        let len = self.rows.min(pending.num_rows() - self.offset);
                        let chunk = pending.slice(self.offset, len);
                        self.offset += len;
                        if self.offset >= pending.num_rows() {
                            self.pending = None;
                            self.offset = 0;
                        }
                        return Some(Ok(chunk));
                    }
                    let next = reader.lock().unwrap_or_else(|e| e.into_inner()).next()?;
                    match next {
                        Ok(batch) if batch.num_rows() == 0 => continue,
                        Ok(batch) => self.pending = Some(batch),
                        Err(e) => return Some(Err(e)),
                    }
                }
                Source::Parquet(files) => {
                    if self.reader.is_none() {
                        let file = files.get(self.at)?.clone();
                        match self.open(&file) {
                            Ok(r) => self.reader = Some(r),
                            Err(e) => {
                                self.at = files.len();
                                return Some(Err(e));
                            }
                        }
                    }
                    let file = files[self.at].clone();
                    match self.reader.as_mut().and_then(Iterator::next) {
                        Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                        Some(Ok(batch)) => return Some(Ok(batch)),
                        Some(Err(e)) => {
                            self.at = files.len();
                            self.reader = None;
                            return Some(Err(io_error(&file, e)));
                        }
                        None => {
                            self.reader = None;
                            self.at += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_as_shells_do_for_star() {
        assert!(matches("*.parquet", "a.parquet"));
        assert!(matches("part-*.parquet", "part-0001.parquet"));
        assert!(!matches("part-*.parquet", "part-0001.csv"));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(!matches("a*b*c", "ac"));
        assert!(matches("exact", "exact"));
    }
}
