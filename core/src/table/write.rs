//! Writing a table map's results to a Parquet file, atomically: the file
//! is written under a temporary name beside its destination, synced, and
//! renamed into place only when complete, so a crash never leaves a file
//! that looks complete but is not.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::Error;

/// What [`TableMap::write_parquet`](super::TableMap::write_parquet) wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The file.
    pub path: PathBuf,
    /// Rows written (one per table row).
    pub rows: usize,
    /// Rows whose item failed (their outputs are null).
    pub failed: usize,
}

fn io_error(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::TableIo {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// A Parquet file being written under a temporary name.
pub(crate) struct ParquetSink {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
}

impl ParquetSink {
    pub(crate) fn new(path: &Path) -> ParquetSink {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "out.parquet".into());
        let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
        ParquetSink {
            path: path.to_path_buf(),
            tmp,
            writer: None,
        }
    }

    /// Appends a batch (the first one fixes the file's schema).
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            }
            let file = File::create(&self.tmp).map_err(|e| io_error(&self.tmp, e))?;
            let writer = ArrowWriter::try_new(file, batch.schema(), None)
                .map_err(|e| io_error(&self.tmp, e))?;
            self.writer = Some(writer);
        }
        if let Some(w) = &mut self.writer {
            w.write(batch).map_err(|e| io_error(&self.tmp, e))?;
        }
        Ok(())
    }

    /// Finishes the file and moves it into place.
    pub(crate) fn finish(mut self, empty: &RecordBatch) -> Result<(), Error> {
        if self.writer.is_none() {
            self.write(empty)?;
        }
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let file = writer.into_inner().map_err(|e| io_error(&self.tmp, e))?;
        file.sync_all().map_err(|e| io_error(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| io_error(&self.path, e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        // Not finished (an error on the way): no partial file stays.
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
