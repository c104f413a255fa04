//! Segments on disk: their layout, writing them atomically with checksums,
//! reading and verifying them, and the files beside them (temporaries,
//! quarantined segments, the manifest).

use std::fs::File;
use std::io::Write;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};

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

/// Whether a file named `name` is a complete segment (`seg-*.parquet`).
pub(crate) fn is_segment_name(name: &str) -> bool {
    name.starts_with("seg-") && name.ends_with(".parquet")
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
                .is_some_and(is_segment_name)
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
    /// Its content is wrong (altered bytes, no checksum): skipped and
    /// moved aside, never read again.
    Corrupt(String),
    /// Its columns are not the ones expected (an output type whose Arrow
    /// form changed, say): skipped and moved aside like a corrupt one, and
    /// reported as what it is.
    Layout(String),
}

impl std::fmt::Display for SegmentFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentFault::Unreadable(m) | SegmentFault::Corrupt(m) | SegmentFault::Layout(m) => {
                f.write_str(m)
            }
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

/// The checksummed regions a segment's footer records (see
/// [`CHECKSUM_KEY`]), as `(start, end, crc)`, checked to cover every byte
/// before the footer, which starts at `footer_start`.
pub(crate) fn checksum_regions(
    metadata: &parquet::file::metadata::ParquetMetaData,
    footer_start: u64,
) -> Result<Vec<(u64, u64, u32)>, SegmentFault> {
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
    let mut regions = Vec::new();
    for region in recorded.split(',') {
        let parsed = region.split_once(':').and_then(|(end, crc)| {
            Some((end.parse::<u64>().ok()?, u32::from_str_radix(crc, 16).ok()?))
        });
        let Some((end, crc)) = parsed.filter(|(end, _)| *end > start && *end <= footer_start)
        else {
            return Err(corrupt(format!(
                "its checksum entry `{region}` is malformed"
            )));
        };
        regions.push((start, end, crc));
        start = end;
    }
    // Nothing between the last region and the footer goes unchecked.
    if start != footer_start {
        return Err(corrupt(format!(
            "its bytes {start}..{footer_start} are not covered by its checksums"
        )));
    }
    Ok(regions)
}

/// Where the footer of a Parquet file of `len` bytes starts, given its
/// last 8 bytes (the footer's length and the magic).
fn footer_start(len: u64, tail: &[u8]) -> Result<u64, SegmentFault> {
    let malformed = || SegmentFault::Corrupt("its footer is malformed".into());
    let footer = u32::from_le_bytes(
        tail.get(..4)
            .ok_or_else(malformed)?
            .try_into()
            .map_err(|_| malformed())?,
    );
    len.checked_sub(8)
        .and_then(|at| at.checked_sub(footer as u64))
        .ok_or_else(malformed)
}

/// Checks a segment's bytes against the checksums its footer records
/// (see [`CHECKSUM_KEY`]): every byte before the footer is covered.
pub(crate) fn verify_checksums(
    metadata: &parquet::file::metadata::ParquetMetaData,
    bytes: &[u8],
) -> Result<(), SegmentFault> {
    let tail = &bytes[bytes.len().saturating_sub(8)..];
    let regions = checksum_regions(metadata, footer_start(bytes.len() as u64, tail)?)?;
    for (start, end, crc) in regions {
        check_region(&bytes[start as usize..end as usize], start, end, crc)?;
    }
    Ok(())
}

fn check_region(bytes: &[u8], start: u64, end: u64, crc: u32) -> Result<(), SegmentFault> {
    if crc32fast::hash(bytes) != crc {
        return Err(SegmentFault::Corrupt(format!(
            "its bytes {start}..{end} do not match their checksum: the file was altered after it was written"
        )));
    }
    Ok(())
}

/// Checks that a segment's columns are `expected`'s, in name and type.
fn check_layout(schema: &Schema, expected: &Schema) -> Result<(), SegmentFault> {
    if schema.fields().len() != expected.fields().len() {
        return Err(SegmentFault::Layout(format!(
            "{} columns where {} were expected",
            schema.fields().len(),
            expected.fields().len()
        )));
    }
    for (i, (got, want)) in schema.fields().iter().zip(expected.fields()).enumerate() {
        if got.name() != want.name() || got.data_type() != want.data_type() {
            return Err(SegmentFault::Layout(format!(
                "column {i} is `{}` ({}) where `{}` ({}) was expected",
                got.name(),
                got.data_type(),
                want.name(),
                want.data_type()
            )));
        }
    }
    Ok(())
}

/// How many rows go in one read batch of a file whose row groups decode to
/// `bytes` over `rows` rows: at most about 1 GiB of values, so no column
/// exceeds what one Arrow array holds (2 GiB of text).
fn batch_rows(rows: usize, bytes: i64) -> usize {
    let rows = rows.max(1);
    let per_row = (bytes.max(1) as usize).div_ceil(rows);
    let fit = ((1usize << 30) / per_row.max(1)).max(1);
    rows.min(1 << 20).min(fit)
}

/// One complete segment as a reader holds it: its footer (not its rows),
/// checked for layout and checksum coverage when it was opened. Rows are
/// read a row group at a time ([`SegmentFile::read_group`]), each after
/// its bytes pass their checksums.
pub(crate) struct SegmentFile {
    /// Unique in the process (names the segment's row groups in caches).
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    meta: ArrowReaderMetadata,
    regions: Vec<(u64, u64, u32)>,
    /// Set once a read found it unreadable or corrupt: its rows are misses.
    pub(crate) bad: AtomicBool,
}

impl SegmentFile {
    /// Opens the segment at `path`: reads its footer, checks its layout
    /// against `expected` and that its checksums cover every byte before
    /// the footer.
    pub(crate) fn open(path: &Path, expected: &SchemaRef) -> Result<SegmentFile, SegmentFault> {
        let unreadable = |e: std::io::Error| SegmentFault::Unreadable(e.to_string());
        let corrupt = |e: parquet::errors::ParquetError| SegmentFault::Corrupt(e.to_string());
        let mut file = File::open(path).map_err(unreadable)?;
        let len = file.metadata().map_err(unreadable)?.len();
        if len < 12 {
            return Err(SegmentFault::Corrupt(
                "it is too short to be Parquet".into(),
            ));
        }
        let tail = read_at(&mut file, 8, len - 8).map_err(unreadable)?;
        let meta = ArrowReaderMetadata::load(&file, Default::default()).map_err(corrupt)?;
        check_layout(meta.schema(), expected)?;
        let regions = checksum_regions(meta.metadata(), footer_start(len, &tail)?)?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Ok(SegmentFile {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            path: path.to_path_buf(),
            meta,
            regions,
            bad: AtomicBool::new(false),
        })
    }

    /// The rows of each row group, in order.
    pub(crate) fn group_rows(&self) -> Vec<usize> {
        self.meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as usize)
            .collect()
    }

    /// Every row's signature, in order (read without checking checksums:
    /// an index built from them only proposes rows, and every proposed row
    /// is confirmed against a checked read of its row group).
    pub(crate) fn signatures(&self) -> Result<Vec<FixedSizeBinaryArray>, SegmentFault> {
        let corrupt = |e: String| SegmentFault::Corrupt(e);
        let file = File::open(&self.path).map_err(|e| SegmentFault::Unreadable(e.to_string()))?;
        let mask = ProjectionMask::roots(self.meta.metadata().file_metadata().schema_descr(), [0]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_projection(mask)
            .with_batch_size(1 << 16)
            .build()
            .map_err(|e| corrupt(e.to_string()))?;
        let mut out = Vec::new();
        let mut rows = 0;
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(e.to_string()))?;
            let column = batch
                .column(0)
                .as_fixed_size_binary_opt()
                .filter(|c| c.value_length() == 32 && c.null_count() == 0)
                .ok_or_else(|| corrupt("null or malformed signatures".into()))?;
            rows += column.len();
            out.push(column.clone());
        }
        if rows != self.group_rows().iter().sum::<usize>() {
            return Err(corrupt("fewer signatures than rows".into()));
        }
        Ok(out)
    }

    /// Reads row group `group` as batches laid out as `expected`, after
    /// checking the checksums of the regions that hold its bytes.
    pub(crate) fn read_group(
        &self,
        group: usize,
        expected: &SchemaRef,
    ) -> Result<Vec<RecordBatch>, SegmentFault> {
        let corrupt = |m: String| SegmentFault::Corrupt(m);
        let meta = self.meta.metadata();
        let rg = meta
            .row_groups()
            .get(group)
            .ok_or_else(|| corrupt(format!("it has no row group {group}")))?;
        // The bytes of the group's column chunks.
        let mut lo = u64::MAX;
        let mut hi = 0u64;
        for column in rg.columns() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let size = column.compressed_size();
            if start < 0 || size < 0 {
                return Err(corrupt("a column chunk has a negative offset".into()));
            }
            lo = lo.min(start as u64);
            hi = hi.max(start as u64 + size as u64);
        }
        // The checksummed regions that hold them, read and checked whole.
        let covering: Vec<&(u64, u64, u32)> = self
            .regions
            .iter()
            .filter(|(s, e, _)| *s < hi && *e > lo)
            .collect();
        let (Some(first), Some(last)) = (covering.first(), covering.last()) else {
            return Err(corrupt(format!(
                "row group {group} lies outside its checksums"
            )));
        };
        let base = first.0;
        let mut file =
            File::open(&self.path).map_err(|e| SegmentFault::Unreadable(e.to_string()))?;
        let buf = read_at(&mut file, (last.1 - base) as usize, base)
            .map_err(|e| SegmentFault::Unreadable(e.to_string()))?;
        for &&(s, e, crc) in &covering {
            check_region(&buf[(s - base) as usize..(e - base) as usize], s, e, crc)?;
        }
        let window = Window {
            base,
            bytes: bytes::Bytes::from(buf),
            len: file.metadata().map(|m| m.len()).unwrap_or(0),
        };
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(window, self.meta.clone())
            .with_row_groups(vec![group])
            .with_batch_size(batch_rows(
                rg.num_rows().max(0) as usize,
                rg.total_byte_size(),
            ))
            .build()
            .map_err(|e| corrupt(e.to_string()))?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(e.to_string()))?;
            if batch.column(0).null_count() > 0 {
                return Err(corrupt("null signatures".into()));
            }
            out.push(
                RecordBatch::try_new(expected.clone(), batch.columns().to_vec())
                    .map_err(|e| corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }
}

/// `len` bytes of `file` from offset `at`.
fn read_at(file: &mut File, len: usize, at: u64) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} bytes where {len} were expected", buf.len()),
        ));
    }
    Ok(buf)
}

/// The checked bytes of some regions of a file, as a Parquet reader's
/// input: reads outside them fail.
struct Window {
    base: u64,
    bytes: bytes::Bytes,
    len: u64,
}

impl Window {
    fn slice(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let from = start.checked_sub(self.base);
        match from.map(|f| f as usize) {
            Some(f)
                if f.checked_add(length)
                    .is_some_and(|end| end <= self.bytes.len()) =>
            {
                Ok(self.bytes.slice(f..f + length))
            }
            _ => Err(parquet::errors::ParquetError::General(format!(
                "bytes {start}..+{length} lie outside the checked regions"
            ))),
        }
    }
}

impl parquet::file::reader::Length for Window {
    fn len(&self) -> u64 {
        self.len
    }
}

impl parquet::file::reader::ChunkReader for Window {
    type T = bytes::buf::Reader<bytes::Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let rest = (self.base + self.bytes.len() as u64).saturating_sub(start) as usize;
        Ok(bytes::Buf::reader(self.slice(start, rest)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.slice(start, length)
    }
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
    let bytes_decoded: i64 = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.total_byte_size())
        .sum();
    let reader = builder
        .with_batch_size(batch_rows(rows, bytes_decoded))
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
        check_layout(&schema, expected)?;
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

/// A name no other writer uses: the time in nanoseconds (so names sort by
/// age), the process id, a counter, and a random token drawn once per
/// process (processes on different machines may share a process id).
pub(crate) fn unique_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static TOKEN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let token = TOKEN.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish() as u32
    });
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:020}-{}-{}-{token:08x}",
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
