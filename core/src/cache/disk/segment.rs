//! Segments on disk: their layout, writing them atomically with checksums,
//! reading and verifying them, and the files beside them (temporaries,
//! quarantined segments, the manifest).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::signature::signature_array;

use crate::cache::{CacheError, CacheKey, CacheRows, encode_error};

/// The schema of a node version's segments.
pub(crate) fn segment_schema(key: &CacheKey) -> Result<SchemaRef, CacheError> {
    let mut fields = vec![Field::new(
        "signature",
        DataType::FixedSizeBinary(32),
        false,
    )];
    for (name, ty) in &key.outputs {
        fields.push(
            ty.field(name)
                .ok_or_else(|| encode_error(key, name, "no Arrow form"))?,
        );
    }
    for (name, _) in &key.outputs {
        fields.push(Field::new(
            format!("{name}.hash"),
            DataType::FixedSizeBinary(32),
            false,
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Where a corrupt segment is moved: its name with [`QUARANTINE_SUFFIX`].
pub(crate) fn quarantined_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(QUARANTINE_SUFFIX);
    PathBuf::from(name)
}

/// The file beside a version's segments naming its code parts, one
/// `part<TAB>hash` line each.
pub(crate) const MANIFEST: &str = "manifest.tsv";

pub(crate) fn safe_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CacheError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// How old a `.tmp-` file must be before a cache that opens its dataset
/// deletes it: no writer takes that long to write one segment, so such a
/// file is what a crashed or failed writer left.
pub const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes the `.tmp-` files in `dir` last modified more than
/// [`STALE_TEMPORARY_AGE`] ago (failures are ignored: another process may
/// have deleted them first).
pub(crate) fn remove_stale_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".tmp-"))
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMPORARY_AGE);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How many files in `dir` have a name `keep` accepts.
pub(crate) fn count_files(dir: &Path, keep: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .count()
}

pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".parquet"))
        })
        .collect();
    files.sort();
    files
}

pub(crate) fn remove_dir(dir: &Path) -> Result<(), CacheError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CacheError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Why a segment could not be used.
#[derive(Debug)]
pub(crate) enum SegmentFault {
    /// The file could not be read (it may be readable later): skipped.
    Unreadable(String),
    /// Its content is wrong (altered bytes, no checksum, another layout):
    /// skipped and moved aside, never read again.
    Corrupt(String),
}

impl std::fmt::Display for SegmentFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentFault::Unreadable(m) | SegmentFault::Corrupt(m) => f.write_str(m),
        }
    }
}

/// The key-value metadata entry of a segment that holds its checksums.
pub(crate) const CHECKSUM_KEY: &str = "hypernodes.crc32";

/// The suffix a corrupt segment's name gets when it is moved aside.
pub(crate) const QUARANTINE_SUFFIX: &str = ".corrupt";

/// A segment writer's sink: passes bytes to `inner` and keeps the CRC-32
/// (IEEE) of consecutive regions of them, cut where row groups end.
pub(crate) struct ChecksumWriter<W> {
    pub(crate) inner: W,
    pub(crate) crc: crc32fast::Hasher,
    pub(crate) written: u64,
    /// Each region's end offset (exclusive) and CRC, in order; the first
    /// region starts at 0.
    pub(crate) regions: Vec<(u64, u32)>,
}

impl<W> ChecksumWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        ChecksumWriter {
            inner,
            crc: crc32fast::Hasher::new(),
            written: 0,
            regions: Vec::new(),
        }
    }

    /// Ends the current region at what was written so far (nothing
    /// happens if it is empty).
    pub(crate) fn cut(&mut self) {
        let start = self.regions.last().map_or(0, |r| r.0);
        if self.written > start {
            let crc = std::mem::take(&mut self.crc).finalize();
            self.regions.push((self.written, crc));
        }
    }

    /// The regions as stored under [`CHECKSUM_KEY`]: `end:crc` pairs (end
    /// in decimal, CRC as 8 hex digits) joined by commas.
    pub(crate) fn regions(&self) -> String {
        self.regions
            .iter()
            .map(|(end, crc)| format!("{end}:{crc:08x}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A Parquet error while writing segment `path`: the OS error when there
/// is one underneath (a full disk, a vanished directory), else an encoding
/// error of the node's outputs.
pub(crate) fn write_error(node: &str, path: &Path, e: parquet::errors::ParquetError) -> CacheError {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(io) => CacheError::Io {
                    path: path.to_path_buf(),
                    source: *io,
                },
                Err(other) => CacheError::Encode {
                    node: node.to_string(),
                    output: "*".into(),
                    message: other.to_string(),
                },
            }
        }
        e => CacheError::Encode {
            node: node.to_string(),
            output: "*".into(),
            message: e.to_string(),
        },
    }
}

/// Checks a segment's bytes against the checksums its footer records
/// (see [`CHECKSUM_KEY`]): every byte before the footer is covered.
pub(crate) fn verify_checksums(
    metadata: &parquet::file::metadata::ParquetMetaData,
    bytes: &[u8],
) -> Result<(), SegmentFault> {
    let corrupt = |m: String| SegmentFault::Corrupt(m);
    let recorded = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == CHECKSUM_KEY))
        .and_then(|e| e.value.as_deref())
        .ok_or_else(|| {
            corrupt(
                "it has no checksums (written by an older version of hypernodes or by another tool)"
                    .into(),
            )
        })?;
    let mut start = 0u64;
    for region in recorded.split(',') {
        let parsed = region.split_once(':').and_then(|(end, crc)| {
            Some((end.parse::<u64>().ok()?, u32::from_str_radix(crc, 16).ok()?))
        });
        let Some((end, crc)) = parsed.filter(|(end, _)| *end > start && *end <= bytes.len() as u64)
        else {
            return Err(corrupt(format!(
                "its checksum entry `{region}` is malformed"
            )));
        };
        if crc32fast::hash(&bytes[start as usize..end as usize]) != crc {
            return Err(corrupt(format!(
                "its bytes {start}..{end} do not match their checksum: the file was altered after it was written"
            )));
        }
        start = end;
    }
    // Nothing between the last region and the footer goes unchecked.
    let footer_start = bytes
        .len()
        .checked_sub(8)
        .and_then(|at| {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
            at.checked_sub(len)
        })
        .ok_or_else(|| corrupt("its footer is malformed".into()))?;
    if start != footer_start as u64 {
        return Err(corrupt(format!(
            "its bytes {start}..{footer_start} are not covered by its checksums"
        )));
    }
    Ok(())
}

/// Reads one segment as Arrow batches laid out as [`segment_schema`],
/// after checking its bytes against their checksums.
pub(crate) fn read_segment(path: &Path, key: &CacheKey) -> Result<Vec<RecordBatch>, SegmentFault> {
    let expected = segment_schema(key).map_err(|e| SegmentFault::Corrupt(e.to_string()))?;
    read_segment_as(path, Some(&expected))
}

/// Reads one segment as Arrow batches after checking its bytes against
/// their checksums: laid out as `expected`, or, without it, as any
/// segment is (a signature column, then outputs and their hashes).
pub(crate) fn read_segment_as(
    path: &Path,
    expected: Option<&SchemaRef>,
) -> Result<Vec<RecordBatch>, SegmentFault> {
    let corrupt = |m: String| SegmentFault::Corrupt(m);
    let bytes = bytes::Bytes::from(
        std::fs::read(path).map_err(|e| SegmentFault::Unreadable(e.to_string()))?,
    );
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(|e| corrupt(e.to_string()))?;
    verify_checksums(builder.metadata(), &bytes)?;
    let rows = builder.metadata().file_metadata().num_rows().max(1) as usize;
    // Batches of at most about 1 GiB of values, so no column exceeds what
    // one Arrow array holds (2 GiB of text).
    let bytes_decoded: i64 = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.total_byte_size())
        .sum();
    let per_row = (bytes_decoded.max(1) as usize).div_ceil(rows);
    let fit = ((1usize << 30) / per_row.max(1)).max(1);
    let reader = builder
        .with_batch_size(rows.min(1 << 20).min(fit))
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let schema = batch.schema();
        let Some(expected) = expected else {
            let fields = schema.fields();
            let signed = fields.first().is_some_and(|f| {
                f.name() == "signature" && f.data_type() == &DataType::FixedSizeBinary(32)
            });
            if !signed || fields.len() % 2 == 0 || batch.column(0).null_count() > 0 {
                return Err(corrupt(
                    "it is not laid out as a segment (signature, outputs, hashes)".into(),
                ));
            }
            out.push(batch);
            continue;
        };
        if schema.fields().len() != expected.fields().len() {
            return Err(corrupt(format!(
                "{} columns where {} were expected",
                schema.fields().len(),
                expected.fields().len()
            )));
        }
        for (i, (got, want)) in schema.fields().iter().zip(expected.fields()).enumerate() {
            if got.name() != want.name() || got.data_type() != want.data_type() {
                return Err(corrupt(format!(
                    "column {i} is `{}` ({}) where `{}` ({}) was expected",
                    got.name(),
                    got.data_type(),
                    want.name(),
                    want.data_type()
                )));
            }
        }
        if batch.column(0).null_count() > 0 {
            return Err(corrupt("null signatures".into()));
        }
        // Same columns under the expected schema, so batches of all segments
        // can be gathered together.
        let batch = RecordBatch::try_new(expected.clone(), batch.columns().to_vec())
            .map_err(|e| corrupt(e.to_string()))?;
        out.push(batch);
    }
    Ok(out)
}

pub(crate) fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:020}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Rows as a batch laid out as [`segment_schema`].
pub(crate) fn segment_batch(key: &CacheKey, rows: &CacheRows) -> Result<RecordBatch, CacheError> {
    rows.check(key)?;
    let mut columns = vec![signature_array(&rows.signatures)];
    columns.extend(rows.columns.iter().cloned());
    columns.extend(rows.hashes.iter().cloned());
    RecordBatch::try_new(segment_schema(key)?, columns).map_err(|e| encode_error(key, "*", e))
}
