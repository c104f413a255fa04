//! [`DiskCache`]: the default store, a directory of Parquet segments (see
//! the `cache` module docs and `docs/cache-format.md`).

mod dataset;
mod index;
mod inspect;
#[cfg(feature = "s3")]
mod remote;
mod segment;

#[cfg(feature = "s3")]
pub use remote::{MIRROR_ENV, RETRY_TIMEOUT};

pub(crate) use dataset::signature_at;
pub use inspect::{GcPolicy, KEY_HEX, StoredRow, VersionInfo};
pub use segment::STALE_TEMPORARY_AGE;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::EnabledStatistics;

use crate::signature::Signature;

use crate::cache::{Cache, CacheError, CacheKey, CacheRows, Hits, Located, PendingWrite};
use dataset::*;
use index::*;
use segment::*;

/// The default store: Parquet segments under a directory (see the module docs).
///
/// ```
/// use hypernodes_core::{DiskCache, Inputs, Pipeline, node};
///
/// #[node(output = "doubled")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// let dir = tempfile::tempdir().unwrap();
/// let p = Pipeline::new([double::node()]).unwrap().with_cache(DiskCache::new(dir.path()));
/// p.map(Inputs::new().with("x", vec![1i64, 2]), ["x"]).unwrap();
/// p.map(Inputs::new().with("x", vec![3i64]), ["x"]).unwrap();
///
/// let cache = DiskCache::new(dir.path()); // another process would open it the same way
/// let stats = cache.stats().unwrap();
/// assert_eq!((stats[0].node.as_str(), stats[0].rows, stats[0].segments), ("double", 3, 2));
/// let key = double::node().cache_key();
/// assert_eq!(cache.compact(&key).unwrap(), 2); // two segments merged into one
/// assert_eq!(cache.stats().unwrap()[0].segments, 1);
/// cache.clear().unwrap();
/// assert!(cache.stats().unwrap().is_empty());
/// ```
pub struct DiskCache {
    root: PathBuf,
    /// Loaded datasets; each behind its own lock, so lookups of several
    /// threads (partitions of a columnar plan) run concurrently.
    datasets: Mutex<HashMap<PathBuf, Arc<RwLock<Dataset>>>>,
    /// Row groups recently read for lookups.
    read: Mutex<ReadGroups>,
    warnings: Mutex<Vec<String>>,
    warned: Mutex<HashSet<PathBuf>>,
    /// The object store this cache mirrors (`root` is then the local mirror).
    #[cfg(feature = "s3")]
    remote: Option<Arc<remote::Remote>>,
}

/// How many bytes of row groups read for lookups a [`DiskCache`] keeps
/// (the most recently used): a `map` looks up its items in about the order
/// they were stored, so each row group is read about once per run.
pub const READ_CACHE_BYTES: usize = 256 << 20;

/// Rows of one place as a lookup reads them: its batches (laid out as a
/// segment), their signature columns, and each batch's first row.
pub(crate) struct Loaded {
    batches: Vec<RecordBatch>,
    sigs: Vec<arrow_array::FixedSizeBinaryArray>,
    starts: Vec<usize>,
}

impl Loaded {
    fn new(batches: Vec<RecordBatch>) -> Loaded {
        let sigs = batches
            .iter()
            .map(|b| b.column(0).as_fixed_size_binary().clone())
            .collect();
        let mut starts = Vec::with_capacity(batches.len());
        let mut at = 0;
        for b in &batches {
            starts.push(at);
            at += b.num_rows();
        }
        Loaded {
            batches,
            sigs,
            starts,
        }
    }

    /// Batch and row of row `row`, counted over all batches.
    fn at(&self, row: usize) -> Option<(usize, usize)> {
        let b = self.starts.partition_point(|&s| s <= row).checked_sub(1)?;
        let r = row - self.starts[b];
        (r < self.batches[b].num_rows()).then_some((b, r))
    }

    /// The signature stored in batch `b`, row `r`.
    fn signature(&self, b: usize, r: usize) -> &[u8] {
        &self.sigs[b].value_data()[r * 32..r * 32 + 32]
    }
}

/// A row group read (or being read) for lookups: its rows once read
/// (`None`: it could not be), their bytes, when last used.
struct ReadGroup {
    rows: Arc<std::sync::OnceLock<Option<Arc<Loaded>>>>,
    size: usize,
    used: u64,
}

/// Row groups read for lookups, by (segment id, group). Threads that want
/// the same group at once read it once: the first reads, the others wait.
struct ReadGroups {
    groups: HashMap<(u64, usize), ReadGroup>,
    bytes: usize,
    /// The most bytes kept (the group in use is kept whatever its size).
    limit: usize,
    tick: u64,
    /// Groups read from disk so far.
    reads: usize,
}

impl ReadGroups {
    /// The cell of a group, made empty if it is not kept.
    fn cell(&mut self, at: (u64, usize)) -> Arc<std::sync::OnceLock<Option<Arc<Loaded>>>> {
        self.tick += 1;
        let tick = self.tick;
        let group = self.groups.entry(at).or_insert_with(|| ReadGroup {
            rows: Arc::default(),
            size: 0,
            used: tick,
        });
        group.used = tick;
        group.rows.clone()
    }

    /// Counts the size of a group just read, dropping the least recently
    /// used groups beyond the limit.
    fn sized(&mut self, at: (u64, usize), size: usize) {
        self.reads += 1;
        let Some(group) = self.groups.get_mut(&at) else {
            return;
        };
        self.bytes = self.bytes - group.size + size;
        group.size = size;
        while self.bytes > self.limit && self.groups.len() > 1 {
            let Some(oldest) = self
                .groups
                .iter()
                .filter(|(k, _)| **k != at)
                .min_by_key(|(_, g)| g.used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(g) = self.groups.remove(&oldest) {
                self.bytes -= g.size;
            }
        }
    }
}

/// Batches that hold hits, and per requested signature its batch among
/// them and row there.
type Fetched = (Vec<RecordBatch>, Vec<Option<(usize, usize)>>);

/// Runs `f` over `items` on up to all cores, results in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

impl DiskCache {
    /// A cache rooted at `root` (created on first store).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DiskCache {
            root: root.into(),
            datasets: Mutex::new(HashMap::new()),
            read: Mutex::new(ReadGroups {
                groups: HashMap::new(),
                bytes: 0,
                limit: READ_CACHE_BYTES,
                tick: 0,
                reads: 0,
            }),
            warnings: Mutex::new(Vec::new()),
            warned: Mutex::new(HashSet::new()),
            #[cfg(feature = "s3")]
            remote: None,
        }
    }

    /// A cache in an object store (`s3://bucket/prefix`), mirrored in a
    /// local directory (see [`MIRROR_ENV`]): lookups pull the segments of
    /// the node versions they need, and every segment written is pushed.
    /// The store is configured from the `AWS_*` environment variables.
    ///
    /// Segment names are unique per writer and segments are never
    /// rewritten, so any number of processes share one store without
    /// coordination. A store that cannot be reached makes lookups misses
    /// (with a warning) and flushes errors (the rows stay in the local
    /// mirror and are pushed at the next flush).
    #[cfg(feature = "s3")]
    pub fn object_store(url: &str) -> Result<Self, CacheError> {
        DiskCache::object_store_at(url, remote::mirror_dir(url), &[])
    }

    /// [`DiskCache::object_store`] with the local mirror in `mirror` and
    /// store settings given here rather than in the environment (keys as
    /// `object_store` names them: `aws_endpoint`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_region`, `aws_allow_http`, ...).
    #[cfg(feature = "s3")]
    pub fn object_store_at(
        url: &str,
        mirror: impl Into<PathBuf>,
        options: &[(&str, &str)],
    ) -> Result<Self, CacheError> {
        let remote = remote::Remote::open(url, options)?;
        let mut cache = DiskCache::new(mirror);
        cache.remote = Some(Arc::new(remote));
        Ok(cache)
    }

    /// The object store's URL, when this cache mirrors one.
    pub fn store_url(&self) -> Option<&str> {
        #[cfg(feature = "s3")]
        if let Some(r) = &self.remote {
            return Some(r.url());
        }
        None
    }

    /// Brings the files under `dir` (a directory of this cache) from the
    /// object store this cache mirrors, if any.
    fn pull(&self, dir: &Path) -> Result<(), CacheError> {
        #[cfg(feature = "s3")]
        if let Some(r) = &self.remote {
            r.pull(&self.root, dir.strip_prefix(&self.root).unwrap_or(dir))?;
        }
        let _ = dir;
        Ok(())
    }

    /// Brings everything the object store holds (for inspection).
    pub(crate) fn pull_all(&self) -> Result<(), CacheError> {
        self.pull(&self.root)
    }

    /// Sends the new file `path` (a segment or manifest) to the object
    /// store this cache mirrors, if any (a failed push is retried at the
    /// end of the next flush).
    fn publish(&self, path: &Path) -> Result<(), CacheError> {
        #[cfg(feature = "s3")]
        if let Some(r) = &self.remote {
            r.push(&self.root, path)?;
        }
        let _ = path;
        Ok(())
    }

    /// Removes `path` (a file or directory of this cache) from the object
    /// store this cache mirrors, if any.
    pub(crate) fn withdraw(&self, path: &Path) -> Result<(), CacheError> {
        #[cfg(feature = "s3")]
        if let Some(r) = &self.remote {
            r.delete(path.strip_prefix(&self.root).unwrap_or(path))?;
        }
        let _ = path;
        Ok(())
    }

    /// Keeps at most `bytes` of the row groups read for lookups (the most
    /// recently used; [`READ_CACHE_BYTES`] by default), builder style. Less
    /// memory, or fewer rereads when lookups jump around a large cache.
    pub fn with_read_cache_bytes(self, bytes: usize) -> Self {
        self.read.lock().unwrap_or_else(|e| e.into_inner()).limit = bytes;
        self
    }

    /// The loaded dataset of the node version in `dir` (empty at first).
    fn dataset(&self, dir: &Path) -> Arc<RwLock<Dataset>> {
        self.datasets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dir.to_path_buf())
            .or_default()
            .clone()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The warnings reported so far (each unreadable segment once).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// The directory of one node version's dataset.
    pub fn dataset_dir(&self, key: &CacheKey) -> PathBuf {
        self.root.join(safe_name(&key.node)).join(key.code.to_hex())
    }

    fn warn(&self, path: &Path, message: String) {
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert(path.to_path_buf()))
            .unwrap_or(false);
        if first {
            log::warn!("hypernodes cache: {message}");
            if let Ok(mut w) = self.warnings.lock() {
                w.push(message);
            }
        }
    }

    /// Indexes the segments among `files` (the dataset's segment files, as
    /// listed by the caller) not seen before: their footers and signature
    /// columns are read, not their values.
    fn refresh(&self, key: &CacheKey, data: &mut Dataset, files: Vec<PathBuf>) {
        let paths: Vec<PathBuf> = files
            .into_iter()
            .filter(|p| !data.segments.contains(p))
            .collect();
        let Ok(expected) = segment_schema(key) else {
            return;
        };
        // Footers first, to size the index once for all new rows (growing
        // it step by step rehashes it many times over).
        let opened = par_map(&paths, |path| SegmentFile::open(path, &expected));
        let rows: usize = opened
            .iter()
            .flatten()
            .map(|f| f.group_rows().iter().sum::<usize>())
            .sum();
        data.reserve(rows);
        let mut files = Vec::new();
        for (path, opened) in paths.into_iter().zip(opened) {
            match opened {
                Ok(file) => files.push((path, file)),
                Err(fault) => self.fault(key, &path, fault),
            }
        }
        // Then the signatures, a few segments at a time, so that only
        // theirs are held at once besides the index.
        let at_once = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut files = files.into_iter().peekable();
        while files.peek().is_some() {
            let some: Vec<(PathBuf, SegmentFile)> = files.by_ref().take(at_once).collect();
            let sigs = par_map(&some, |(_, file)| file.signatures());
            for ((path, file), sigs) in some.into_iter().zip(sigs) {
                match sigs {
                    Ok(sigs) => {
                        data.add_segment(Arc::new(file), &sigs);
                        data.segments.insert(path);
                    }
                    Err(fault) => self.fault(key, &path, fault),
                }
            }
        }
    }

    /// Reports a segment that cannot be used, once, and moves a corrupt one
    /// aside.
    fn fault(&self, key: &CacheKey, path: &Path, fault: SegmentFault) {
        let fault_is_layout = matches!(fault, SegmentFault::Layout(_));
        match fault {
            SegmentFault::Unreadable(message) => self.warn(
                path,
                format!(
                    "ignoring unreadable segment `{}` of node `{}`: {message}; its items will be recomputed",
                    path.display(),
                    key.node
                ),
            ),
            SegmentFault::Corrupt(message) | SegmentFault::Layout(message) => {
                let aside = quarantined_name(path);
                let moved = match std::fs::rename(path, &aside) {
                    Ok(()) => format!("moved aside to `{}`", aside.display()),
                    Err(e) => format!("could not be moved aside ({e})"),
                };
                let what = match fault_is_layout {
                    true => format!(
                        "ignoring segment `{}` of node `{}`, written in another layout (an output type whose Arrow form changed, or another writer)",
                        path.display(),
                        key.node
                    ),
                    false => format!(
                        "ignoring corrupt segment `{}` of node `{}`",
                        path.display(),
                        key.node
                    ),
                };
                self.warn(
                    path,
                    format!("{what}: {message}; it was {moved}, and its items will be recomputed"),
                )
            }
        }
    }

    /// The rows of one place, read if they are on disk (`None`: they
    /// cannot be read, reported once; their items are misses).
    fn load(
        &self,
        key: &CacheKey,
        place: &Place,
        expected: &arrow_schema::SchemaRef,
    ) -> Option<Arc<Loaded>> {
        let (file, group) = match place {
            Place::Memory(batch) => return Some(Arc::new(Loaded::new(vec![batch.clone()]))),
            Place::Disk(file, group, _) => (file, *group),
        };
        if file.bad.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let at = (file.id, group);
        let cell = self.read.lock().unwrap_or_else(|e| e.into_inner()).cell(at);
        let mut read = None;
        let rows = cell.get_or_init(|| {
            let rows = match file.read_group(group, expected) {
                Ok(batches) => Some(Arc::new(Loaded::new(batches))),
                Err(fault) => {
                    file.bad.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.fault(key, &file.path, fault);
                    None
                }
            };
            read = rows.as_ref().map(|r| {
                r.batches
                    .iter()
                    .map(RecordBatch::get_array_memory_size)
                    .sum::<usize>()
            });
            rows
        });
        if let Some(size) = read {
            self.read
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sized(at, size);
        }
        rows.clone()
    }

    /// Where each of `sigs` is stored: the batches that hold hits, and per
    /// signature its batch among them and row there. Every row the index
    /// proposes is read and its full signature compared.
    fn fetch(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Fetched, CacheError> {
        let dataset = self.listed(key);
        let proposed = dataset
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .propose(sigs);
        let expected = segment_schema(key)?;
        let loaded: Vec<Option<(Arc<Loaded>, usize)>> = proposed
            .places
            .iter()
            .map(|place| {
                let skip = match place {
                    Place::Disk(_, _, skip) => *skip,
                    Place::Memory(_) => 0,
                };
                Some((self.load(key, place, &expected)?, skip))
            })
            .collect();
        let mut lent: Vec<RecordBatch> = Vec::new();
        // Per place, per batch of it, its index in `lent`.
        let mut lent_at: Vec<Vec<Option<usize>>> = loaded
            .iter()
            .map(|l| vec![None; l.as_ref().map_or(0, |(l, _)| l.batches.len())])
            .collect();
        let rows = proposed
            .rows
            .iter()
            .zip(sigs)
            .map(|(at, sig)| {
                let (k, r) = (*at)?;
                let (rows, skip) = loaded[k].as_ref()?;
                let (b, r) = rows.at(r + skip)?;
                if rows.signature(b, r) != sig.0 {
                    return None;
                }
                let at = lent_at[k][b].get_or_insert_with(|| {
                    lent.push(rows.batches[b].clone());
                    lent.len() - 1
                });
                Some((*at, r))
            })
            .collect();
        Ok((lent, rows))
    }
}

/// Entry counts and sizes of one node version's dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetStats {
    /// The node's directory name.
    pub node: String,
    /// The code version (64 hex characters).
    pub code: String,
    /// Complete segments.
    pub segments: usize,
    /// Rows over all segments (a signature stored twice counts twice).
    pub rows: usize,
    /// Bytes on disk.
    pub bytes: u64,
    /// Segments found corrupt and moved aside (`*.corrupt`), never read.
    pub quarantined: usize,
}

impl DiskCache {
    /// The dataset of `key`, with the segments that appeared since its
    /// directory was last listed (at most [`LISTING_TTL`] ago) loaded.
    fn listed(&self, key: &CacheKey) -> Arc<RwLock<Dataset>> {
        let dir = self.dataset_dir(key);
        let dataset = self.dataset(&dir);
        let fresh = {
            let data = dataset.read().unwrap_or_else(|e| e.into_inner());
            data.listed.is_some_and(|t| t.elapsed() < LISTING_TTL)
        };
        if !fresh {
            let first = {
                let data = dataset.read().unwrap_or_else(|e| e.into_inner());
                data.listed.is_none()
            };
            if first {
                remove_stale_temporaries(&dir);
            }
            if let Err(e) = self.pull(&dir) {
                // Rows the store holds and this mirror lacks are computed
                // again: a miss, never a wrong value.
                self.warn(
                    &dir,
                    format!("cannot pull from the cache's object store: {e}"),
                );
            }
            let files = segment_files(&dir);
            let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
            if files.iter().any(|p| !data.segments.contains(p)) {
                self.refresh(key, &mut data, files);
            }
            data.listed = Some(std::time::Instant::now());
        }
        dataset
    }

    /// Bytes held by the signature indexes of the node versions this
    /// instance has opened: what stays resident as a cache grows (16 to 32
    /// bytes per stored row; values are read from the segments on demand,
    /// at most [`READ_CACHE_BYTES`] of them kept).
    pub fn index_bytes(&self) -> usize {
        self.all_datasets()
            .iter()
            .map(|(_, d)| d.read().unwrap_or_else(|e| e.into_inner()).index.bytes())
            .sum()
    }

    /// Whether `sig` is cached for `key`.
    pub fn is_cached(&self, key: &CacheKey, sig: &Signature) -> Result<bool, CacheError> {
        Ok(self.lookup(key, std::slice::from_ref(sig))?.rows[0].is_some())
    }

    /// Counts and sizes per node version, sorted by node and code.
    pub fn stats(&self) -> Result<Vec<DatasetStats>, CacheError> {
        self.pull_all()?;
        let mut out = Vec::new();
        for node_dir in sorted_dirs(&self.root)? {
            for version_dir in sorted_dirs(&node_dir)? {
                let mut stats = DatasetStats {
                    node: file_name(&node_dir),
                    code: file_name(&version_dir),
                    segments: 0,
                    rows: 0,
                    bytes: 0,
                    quarantined: count_files(&version_dir, |n| n.ends_with(QUARANTINE_SUFFIX)),
                };
                for seg in segment_files(&version_dir) {
                    stats.segments += 1;
                    stats.bytes += std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
                    stats.rows += File::open(&seg)
                        .ok()
                        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
                        .map(|b| b.metadata().file_metadata().num_rows() as usize)
                        .unwrap_or(0);
                }
                out.push(stats);
            }
        }
        Ok(out)
    }

    /// Removes every cached result of the node named `node` (all versions).
    pub fn clear_node(&self, node: &str) -> Result<(), CacheError> {
        let dir = self.root.join(safe_name(node));
        self.forget(&dir);
        self.withdraw(&dir)?;
        remove_dir(&dir)
    }

    /// Removes everything in the cache.
    pub fn clear(&self) -> Result<(), CacheError> {
        self.forget(&self.root);
        self.withdraw(&self.root)?;
        remove_dir(&self.root)
    }

    fn forget(&self, under: &Path) {
        let mut datasets = self.datasets.lock().unwrap_or_else(|e| e.into_inner());
        datasets.retain(|dir, _| !dir.starts_with(under));
    }

    /// Rewrites one node version's segments as a single segment (the new
    /// segment is complete on disk before the old ones are removed, so a
    /// crash leaves duplicates at worst). Returns how many segments it merged.
    pub fn compact(&self, key: &CacheKey) -> Result<usize, CacheError> {
        let spec = format!("{}/{}", safe_name(&key.node), key.code.to_hex());
        if !self.dataset_dir(key).is_dir() {
            return Ok(0);
        }
        Ok(self
            .compact_all(Some(&spec))?
            .first()
            .map_or(0, |(_, merged)| *merged))
    }
}

impl Cache for DiskCache {
    fn location(&self) -> Option<super::CacheLocation> {
        Some(DiskCache::location(self))
    }

    fn versions(&self, node: &str) -> Vec<Signature> {
        #[cfg(feature = "s3")]
        if let Some(r) = &self.remote {
            return remote_versions(r, node);
        }
        let mut dirs: Vec<(Option<SystemTime>, PathBuf)> =
            sorted_dirs(&self.root.join(safe_name(node)))
                .unwrap_or_default()
                .into_iter()
                .filter(|d| !segment_files(d).is_empty())
                .map(|d| (std::fs::metadata(&d).and_then(|m| m.modified()).ok(), d))
                .collect();
        dirs.sort();
        dirs.iter()
            .filter_map(|(_, d)| Signature::from_hex(&file_name(d)))
            .collect()
    }

    fn version_parts(&self, node: &str, code: &Signature) -> Option<Vec<(String, String)>> {
        let path = self
            .root
            .join(safe_name(node))
            .join(code.to_hex())
            .join(MANIFEST);
        if !path.exists() {
            // A mirror may not have it yet (a miss's explanation only).
            let _ = self.pull(&path);
        }
        let text = std::fs::read_to_string(path).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn lookup(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Hits, CacheError> {
        if !key.storable() {
            return Ok(Hits::none(key, sigs.len()));
        }
        let (lent, at) = self.fetch(key, sigs)?;
        let mut rows = Vec::with_capacity(sigs.len());
        let mut found = Vec::with_capacity(sigs.len());
        let mut positions = Vec::with_capacity(sigs.len());
        for (sig, at) in sigs.iter().zip(at) {
            match at {
                Some(at) => {
                    rows.push(Some(found.len()));
                    found.push(*sig);
                    positions.push(at);
                }
                None => rows.push(None),
            }
        }
        let found = gather(key, &lent, found, &positions)?;
        Ok(Hits { rows, found })
    }

    fn locate(&self, key: &CacheKey, sigs: &[Signature]) -> Result<Option<Located>, CacheError> {
        if !key.storable() {
            return Ok(None);
        }
        let (lent, rows) = self.fetch(key, sigs)?;
        let outputs = key.outputs.len();
        Ok(Some(Located {
            columns: lent
                .iter()
                .map(|b| (0..outputs).map(|o| b.column(1 + o).clone()).collect())
                .collect(),
            hashes: lent
                .iter()
                .map(|b| {
                    (0..outputs)
                        .map(|o| b.column(1 + outputs + o).clone())
                        .collect()
                })
                .collect(),
            rows,
        }))
    }

    fn prepare(&self, key: &CacheKey, items: usize) -> Result<(), CacheError> {
        if !key.storable() {
            return Ok(());
        }
        let dataset = self.listed(key);
        let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
        // A hint, so capped: a product map can promise far more items than
        // ever get stored, and the index then grows as usual.
        let more = items.min(PREPARE_LIMIT).saturating_sub(data.index.len);
        data.reserve(more);
        Ok(())
    }

    fn store(&self, key: &CacheKey, rows: &CacheRows) -> Result<(), CacheError> {
        if rows.is_empty() || !key.storable() {
            return Ok(());
        }
        let batch = segment_batch(key, rows)?;
        let dataset = self.dataset(&self.dataset_dir(key));
        let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
        let first = data.rows as u32;
        let indexed = data.add_memory(batch.clone());
        data.pending
            .get_or_insert_with(|| Pending {
                key: key.clone(),
                batches: Vec::new(),
            })
            .batches
            .push((indexed.then_some(first), batch));
        Ok(())
    }

    fn flush(&self) -> Result<(), CacheError> {
        let all = self.take_pending();
        self.write_all(all)?;
        #[cfg(feature = "s3")]
        if let Some(r) = &self.remote {
            r.retry(&self.root)?;
        }
        Ok(())
    }

    fn begin_flush(self: Arc<Self>) -> PendingWrite {
        let all = self.take_pending();
        Box::new(move || self.write_all(all))
    }

    fn unwritten_rows(&self) -> usize {
        self.all_datasets()
            .iter()
            .map(|(_, d)| {
                d.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .pending
                    .as_ref()
                    .map_or(0, |p| p.batches.iter().map(|(_, b)| b.num_rows()).sum())
            })
            .sum()
    }
}

impl Drop for DiskCache {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::warn!("hypernodes cache: results not written at exit: {e}");
        }
    }
}

impl DiskCache {
    /// Every dataset this instance knows, with its directory.
    fn all_datasets(&self) -> Vec<(PathBuf, Arc<RwLock<Dataset>>)> {
        self.datasets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(dir, d)| (dir.clone(), d.clone()))
            .collect()
    }

    /// Everything buffered, per dataset directory.
    fn take_pending(&self) -> Vec<(PathBuf, Pending)> {
        self.all_datasets()
            .into_iter()
            .filter_map(|(dir, d)| {
                let pending = d
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .pending
                    .take()?;
                Some((dir, pending))
            })
            .collect()
    }

    /// Writes one segment per dataset, the datasets in parallel (encoding
    /// a segment is single-threaded, and a cold `map` produces rows faster
    /// than one thread writes them); the first error, after trying all.
    fn write_all(&self, all: Vec<(PathBuf, Pending)>) -> Result<(), CacheError> {
        let results = super::writers::each(all, |dir, p| self.write_pending(dir, p));
        results.into_iter().collect()
    }

    fn write_pending(&self, dir: PathBuf, p: Pending) -> Result<(), CacheError> {
        // The buffered batches go to the writer one after another (it fills
        // row groups across batches), not concatenated into a copy first.
        let batches: Vec<RecordBatch> = p.batches.iter().map(|(_, b)| b.clone()).collect();
        let seg = self.write_segment(&p.key, &batches)?;
        drop(batches);
        // From now on its rows are read from the segment: the copies held
        // since they were stored are released (if the new segment cannot
        // be opened, they simply stay).
        let file = SegmentFile::open(&seg, &segment_schema(&p.key)?).ok();
        let dataset = self.dataset(&dir);
        let mut data = dataset.write().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = file {
            let runs: Vec<(Option<u32>, usize)> = p
                .batches
                .iter()
                .map(|(first, b)| (*first, b.num_rows()))
                .collect();
            data.written(&Arc::new(file), &runs);
        }
        data.segments.insert(seg);
        Ok(())
    }

    /// Writes one complete segment atomically (see the module docs) and
    /// returns its path.
    fn write_segment(
        &self,
        key: &CacheKey,
        batches: &[RecordBatch],
    ) -> Result<PathBuf, CacheError> {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => segment_schema(key)?,
        };
        let dir = self.dataset_dir(key);
        let seg = write_segment_file(&dir, &key.node, schema, batches)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        let manifest = dir.join(MANIFEST);
        let mut new_manifest = false;
        if !key.parts.is_empty() && !manifest.exists() {
            let text: String = key
                .parts
                .iter()
                .map(|(k, v)| format!("{k}\t{v}\n"))
                .collect();
            let tmp = dir.join(format!(".tmp-{}.manifest", unique_name()));
            std::fs::write(&tmp, text).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &manifest).map_err(io(&manifest))?;
            new_manifest = true;
        }
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        // Both are sent. A failed push is remembered and tried again at
        // the end of this flush (whose error it then is): the segment is
        // complete in the mirror, so it is indexed like any other first.
        if new_manifest {
            let _ = self.publish(&manifest);
        }
        let _ = self.publish(&seg);
        Ok(seg)
    }
}

/// The versions of `node` the object store holds segments of, oldest
/// first (by their newest segment).
#[cfg(feature = "s3")]
fn remote_versions(r: &remote::Remote, node: &str) -> Vec<Signature> {
    let mut newest: HashMap<String, SystemTime> = HashMap::new();
    for (file, modified) in r.list(Path::new(&safe_name(node))).unwrap_or_default() {
        let mut parts = file.iter().map(|c| c.to_string_lossy().into_owned());
        let (Some(_), Some(code), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if is_segment_name(&name) {
            let at = newest.entry(code).or_insert(modified);
            *at = (*at).max(modified);
        }
    }
    let mut versions: Vec<(SystemTime, String)> = newest.into_iter().map(|(c, t)| (t, c)).collect();
    versions.sort();
    versions
        .iter()
        .filter_map(|(_, code)| Signature::from_hex(code))
        .collect()
}

/// The most rows a segment's row group holds: a lookup reads whole row
/// groups, so they are kept small enough to read for a few hits.
pub(crate) const GROUP_ROWS: usize = 1 << 16;

/// The most bytes (encoded, as the writer estimates them) a segment's row
/// group holds.
pub(crate) const GROUP_BYTES: usize = 64 << 20;

/// Writes `batches` (laid out as `schema`) as one new segment of the
/// dataset in `dir`, atomically (a temporary file, synced, then renamed),
/// with its checksums; `node` names the node in errors.
pub(crate) fn write_segment_file(
    dir: &Path,
    node: &str,
    schema: arrow_schema::SchemaRef,
    batches: &[RecordBatch],
) -> Result<PathBuf, CacheError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CacheError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = unique_name();
    let tmp = dir.join(format!(".tmp-{name}.parquet"));
    let seg = dir.join(format!("seg-{name}.parquet"));
    let file = File::create(&tmp).map_err(io(&tmp))?;
    // Segments are written on the hot path of every cold run and read
    // whole, never filtered: no dictionaries (signatures and hashes are
    // random bytes, and typical outputs are mostly distinct, so building
    // a dictionary costs more than it saves), and no min/max statistics
    // on the signature and hash columns (random bytes: nothing to prune).
    // No page indexes either (nothing reads them), so every byte before
    // the footer lies in a checksummed region.
    let mut props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(GROUP_ROWS))
        .set_max_row_group_bytes(Some(GROUP_BYTES))
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true)
        .set_column_statistics_enabled("signature".into(), EnabledStatistics::None);
    for field in schema.fields().iter().skip(1) {
        if field.name().ends_with(".hash") {
            props = props.set_column_statistics_enabled(
                field.name().as_str().into(),
                EnabledStatistics::None,
            );
        }
    }
    let written = (|| {
        let parquet = |e: parquet::errors::ParquetError| write_error(node, &tmp, e);
        let mut writer =
            ArrowWriter::try_new(ChecksumWriter::new(file), schema, Some(props.build()))
                .map_err(parquet)?;
        let mut groups = 0;
        for batch in batches {
            // In slices that end where a row group fills, so that each row
            // group gets a checksummed region of its own (a reader then
            // reads and checks only the group it wants).
            let mut at = 0;
            while at < batch.num_rows() {
                let room = GROUP_ROWS.saturating_sub(writer.in_progress_rows()).max(1);
                let len = room.min(batch.num_rows() - at);
                writer.write(&batch.slice(at, len)).map_err(parquet)?;
                at += len;
                // A row group just written ends a checksummed region.
                if writer.flushed_row_groups().len() != groups {
                    groups = writer.flushed_row_groups().len();
                    writer.sync().map_err(io(&tmp))?;
                    writer.inner_mut().cut();
                }
            }
        }
        writer.flush().map_err(parquet)?;
        writer.sync().map_err(io(&tmp))?;
        writer.inner_mut().cut();
        let regions = writer.inner().regions();
        writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            CHECKSUM_KEY.to_string(),
            regions,
        ));
        let mut file = writer.into_inner().map_err(parquet)?.into_inner();
        file.flush().map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &seg).map_err(io(&seg))
    })();
    if let Err(e) = written {
        // Nothing half-written stays behind (a full disk stays full
        // otherwise).
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(seg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Value, ValueType};
    use arrow_array::ArrayRef;
    use arrow_array::cast::AsArray;
    use arrow_schema::DataType;

    /// `n` rows of a one-output key: item `i` has count `i`.
    fn numbered(k: &CacheKey, from: u64, n: u64) -> CacheRows {
        let sigs: Vec<Signature> = (from..from + n)
            .map(|i| Signature::of_bytes("n", &i.to_le_bytes()))
            .collect();
        let counts: ArrayRef = Arc::new(arrow_array::Int64Array::from_iter_values(
            (from..from + n).map(|i| i as i64),
        ));
        CacheRows::from_columns(k, sigs, vec![counts]).unwrap()
    }

    fn one_output() -> CacheKey {
        CacheKey {
            node: "number".into(),
            code: Signature::of_bytes("test", b"number"),
            outputs: vec![("n".into(), ValueType::arrow::<i64>())],
            parts: vec![],
        }
    }

    fn looked_up(cache: &DiskCache, k: &CacheKey, items: &[u64]) -> Vec<Option<i64>> {
        let sigs: Vec<Signature> = items
            .iter()
            .map(|i| Signature::of_bytes("n", &i.to_le_bytes()))
            .collect();
        counts(&get(cache, k, &sigs))
    }

    #[test]
    fn written_rows_leave_memory_and_are_read_back_from_their_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let k = one_output();
        let cache = DiskCache::new(dir.path());
        // Three stores in one flush: more rows than one row group holds,
        // so batches and row groups do not line up.
        let total = GROUP_ROWS as u64 * 2 + 1000;
        let third = total / 3;
        cache.store(&k, &numbered(&k, 0, third)).unwrap();
        cache.store(&k, &numbered(&k, third, third)).unwrap();
        cache
            .store(&k, &numbered(&k, 2 * third, total - 2 * third))
            .unwrap();
        let dataset = cache.dataset(&cache.dataset_dir(&k));
        let in_memory = |d: &Dataset| {
            d.parts
                .iter()
                .filter(|p| matches!(p.place, Place::Memory(_)))
                .count()
        };
        assert_eq!(in_memory(&dataset.read().unwrap()), 3);
        let probe: Vec<u64> = vec![0, third - 1, third, GROUP_ROWS as u64, total - 1, total, 7];
        let want: Vec<Option<i64>> = probe
            .iter()
            .map(|&i| (i < total).then_some(i as i64))
            .collect();
        assert_eq!(looked_up(&cache, &k, &probe), want);
        cache.flush().unwrap();
        {
            let data = dataset.read().unwrap();
            assert_eq!(in_memory(&data), 0, "written rows are not held in memory");
            assert_eq!(data.rows, total as usize);
            // The parts are pieces of the segment's three row groups.
            let groups: HashSet<usize> = data
                .parts
                .iter()
                .map(|p| match &p.place {
                    Place::Disk(_, g, _) => *g,
                    Place::Memory(_) => unreachable!(),
                })
                .collect();
            assert_eq!(groups.len(), 3);
        }
        // The same values, now read from disk; and from a new instance.
        assert_eq!(looked_up(&cache, &k, &probe), want);
        let fresh = DiskCache::new(dir.path());
        assert_eq!(looked_up(&fresh, &k, &probe), want);
        let all: Vec<u64> = (0..total).rev().collect();
        let found = looked_up(&fresh, &k, &all);
        assert!(found.iter().zip(&all).all(|(f, &i)| *f == Some(i as i64)));
        // Only the index and the recently read row groups stay resident.
        assert!(fresh.index_bytes() >= total as usize * 16);
        assert!(fresh.read.lock().unwrap().bytes <= READ_CACHE_BYTES);
    }

    /// One segment of three row groups (the last one short) of `number`.
    fn three_groups(dir: &Path) -> (CacheKey, u64) {
        let k = one_output();
        let total = GROUP_ROWS as u64 * 2 + 1000;
        let cache = DiskCache::new(dir);
        cache.store(&k, &numbered(&k, 0, total)).unwrap();
        cache.flush().unwrap();
        (k, total)
    }

    #[test]
    fn row_groups_read_are_kept_up_to_a_limit_and_read_once_by_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let (k, total) = three_groups(dir.path());
        let all: Vec<u64> = (0..total).collect();
        let reads = |c: &DiskCache| c.read.lock().unwrap().reads;
        // In stored order, with room for one group only: each is read once,
        // and only the last stays.
        let small = DiskCache::new(dir.path()).with_read_cache_bytes(1);
        for part in all.chunks(4096) {
            assert!(looked_up(&small, &k, part).iter().all(Option::is_some));
        }
        assert_eq!(reads(&small), 3);
        assert_eq!(small.read.lock().unwrap().groups.len(), 1);
        looked_up(&small, &k, &[0]);
        assert_eq!(
            reads(&small),
            4,
            "the first group was dropped, so read again"
        );
        // With the default room, a second pass reads nothing.
        let roomy = DiskCache::new(dir.path());
        looked_up(&roomy, &k, &all);
        looked_up(&roomy, &k, &all);
        assert_eq!(reads(&roomy), 3);
        // Eight threads wanting the same group at once read it once.
        let shared = DiskCache::new(dir.path());
        shared.prepare(&k, 0).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let found = looked_up(&shared, &k, &all[..1000]);
                    assert!(found.iter().all(Option::is_some));
                });
            }
        });
        assert_eq!(reads(&shared), 1);
    }

    #[test]
    fn a_corrupt_row_group_is_found_when_read_and_its_segment_is_no_longer_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (k, total) = three_groups(dir.path());
        let version = DiskCache::new(dir.path()).dataset_dir(&k);
        let seg = segments(&version).remove(0);
        // Alter one byte of the second row group's values.
        let at = {
            let file = File::open(&seg).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            let rg = reader.metadata().row_group(1);
            assert_eq!(reader.metadata().num_row_groups(), 3);
            rg.column(1).data_page_offset() as usize + 10
        };
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[at] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        // The first group passes its checksums and is used; the second
        // fails, and from then on nothing of the segment is: its rows are
        // misses, one warning names it, and it is moved aside.
        let cache = DiskCache::new(dir.path());
        let all: Vec<u64> = (0..total).collect();
        let found = looked_up(&cache, &k, &all);
        let hits = found.iter().filter(|f| f.is_some()).count();
        assert_eq!(hits, GROUP_ROWS, "{:?}", cache.warnings());
        assert!(
            found[..GROUP_ROWS]
                .iter()
                .zip(0..)
                .all(|(f, i)| *f == Some(i))
        );
        let warnings = cache.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("corrupt") && warnings[0].contains("do not match"));
        assert!(!seg.exists());
        assert!(quarantined_name(&seg).exists());
        assert!(
            looked_up(&cache, &k, &all[..10])
                .iter()
                .all(Option::is_none)
        );
        assert!(
            looked_up(&DiskCache::new(dir.path()), &k, &all[..10])
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn a_segment_of_another_layout_is_a_miss_moved_aside_and_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let k = one_output();
        let cache = DiskCache::new(dir.path());
        cache.store(&k, &numbered(&k, 0, 100)).unwrap();
        cache.flush().unwrap();
        let seg = segments(&DiskCache::new(dir.path()).dataset_dir(&k)).remove(0);
        // The same node version, its output now of another Arrow type.
        let changed = CacheKey {
            outputs: vec![("n".into(), ValueType::arrow::<i32>())],
            ..one_output()
        };
        let cache = DiskCache::new(dir.path());
        let sigs: Vec<Signature> = (0..100u64)
            .map(|i| Signature::of_bytes("n", &i.to_le_bytes()))
            .collect();
        let found = get(&cache, &changed, &sigs);
        assert!(found.iter().all(Option::is_none), "every row a miss");
        let warnings = cache.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("another layout"), "{}", warnings[0]);
        assert!(
            !warnings[0].starts_with("ignoring corrupt"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[0].contains("Int64") && warnings[0].contains("Int32"),
            "{}",
            warnings[0]
        );
        assert!(!seg.exists());
        assert!(quarantined_name(&seg).exists());
    }

    #[test]
    fn a_signature_sharing_its_first_bytes_with_a_stored_one_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let k = one_output();
        let cache = DiskCache::new(dir.path());
        let rows = numbered(&k, 0, 100);
        cache.store(&k, &rows).unwrap();
        cache.flush().unwrap();
        // The same first 8 bytes (the index's key), then different.
        let mut twin = rows.signatures[42];
        twin.0[31] ^= 1;
        let fresh = DiskCache::new(dir.path());
        let hits = fresh.lookup(&k, &[twin, rows.signatures[42]]).unwrap();
        assert_eq!(hits.rows, [None, Some(0)]);
    }

    fn key() -> CacheKey {
        CacheKey {
            node: "count words".into(),
            code: Signature::of_bytes("test", b"count"),
            outputs: vec![
                ("word_count".into(), ValueType::arrow::<i64>()),
                ("words".into(), ValueType::arrow::<Vec<String>>()),
            ],
            parts: vec![("body".into(), "abc".into())],
        }
    }

    fn sig(i: u8) -> Signature {
        Signature::of_bytes("item", &[i])
    }

    fn entry(i: u8) -> (Signature, Vec<Value>) {
        (
            sig(i),
            vec![Value::new(i as i64), Value::new(vec![format!("w{i}")])],
        )
    }

    fn rows(k: &CacheKey, entries: &[(Signature, Vec<Value>)]) -> CacheRows {
        CacheRows::from_values(k, entries).unwrap()
    }

    /// Stores and writes at once.
    fn put(cache: &DiskCache, k: &CacheKey, entries: &[(Signature, Vec<Value>)]) {
        cache.store(k, &rows(k, entries)).unwrap();
        cache.flush().unwrap();
    }

    fn get(cache: &DiskCache, k: &CacheKey, sigs: &[Signature]) -> Vec<Option<Vec<Value>>> {
        cache.lookup(k, sigs).unwrap().values(k).unwrap()
    }

    fn counts(found: &[Option<Vec<Value>>]) -> Vec<Option<i64>> {
        found
            .iter()
            .map(|o| o.as_ref().map(|v| *v[0].downcast_ref::<i64>().unwrap()))
            .collect()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stored_results_are_found_by_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let writer = DiskCache::new(dir.path());
        writer.store(&k, &rows(&k, &[entry(1), entry(2)])).unwrap();
        // Buffered: visible to the writer, on disk only once flushed (here
        // by dropping the writer).
        assert_eq!(counts(&get(&writer, &k, &[sig(1)])), [Some(1)]);
        assert!(!writer.dataset_dir(&k).exists());
        drop(writer);
        let cache = DiskCache::new(dir.path());
        let found = get(&cache, &k, &[sig(2), sig(3), sig(1)]);
        assert_eq!(counts(&found), [Some(2), None, Some(1)]);
        assert_eq!(
            found[0].as_ref().unwrap()[1].downcast_ref::<Vec<String>>(),
            Some(&vec!["w2".to_string()])
        );
        assert!(cache.warnings().is_empty());
        // Another code version is another dataset.
        let mut k2 = k.clone();
        k2.code = Signature::of_bytes("test", b"count v2");
        assert_eq!(counts(&get(&cache, &k2, &[sig(1)])), [None]);
    }

    #[test]
    fn segments_record_checksums_that_cover_every_byte_before_the_footer() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        put(&cache, &key(), &[entry(7), entry(8)]);
        let seg = segments(&cache.dataset_dir(&key())).remove(0);
        let bytes = std::fs::read(&seg).unwrap();
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone())).unwrap();
        let recorded = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == CHECKSUM_KEY).cloned())
            .and_then(|e| e.value)
            .unwrap();
        let regions: Vec<(u64, u32)> = recorded
            .split(',')
            .map(|r| {
                let (end, crc) = r.split_once(':').unwrap();
                (end.parse().unwrap(), u32::from_str_radix(crc, 16).unwrap())
            })
            .collect();
        // The regions cover the file from its start to the footer.
        let footer_len =
            u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
        let footer_start = bytes.len() as u64 - 8 - footer_len as u64;
        assert_eq!(regions.last().unwrap().0, footer_start);
        let mut start = 0;
        for (end, crc) in regions {
            assert_eq!(crc32fast::hash(&bytes[start as usize..end as usize]), crc);
            start = end;
        }
        // Any altered byte before the footer is caught.
        for at in [
            0usize,
            4,
            footer_start as usize / 2,
            footer_start as usize - 1,
        ] {
            let mut altered = bytes.clone();
            altered[at] ^= 0x20;
            let meta = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()))
                .unwrap()
                .metadata()
                .clone();
            assert!(
                matches!(
                    verify_checksums(&meta, &altered),
                    Err(SegmentFault::Corrupt(_))
                ),
                "byte {at}"
            );
        }
    }

    #[test]
    fn a_segment_without_checksums_is_not_trusted_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        let k = key();
        // A segment of the right layout written by another tool.
        let batch = segment_batch(&k, &rows(&k, &[entry(7)])).unwrap();
        let version_dir = cache.dataset_dir(&k);
        std::fs::create_dir_all(&version_dir).unwrap();
        let seg = version_dir.join("seg-00000000000000000001-1-0.parquet");
        let mut writer =
            ArrowWriter::try_new(File::create(&seg).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        assert_eq!(counts(&get(&cache, &k, &[sig(7)])), [None]);
        let warnings = cache.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("no checksums"), "{}", warnings[0]);
        assert!(!seg.exists());
        assert!(quarantined_name(&seg).exists());
        let stats = cache.stats().unwrap();
        assert_eq!(stats[0].quarantined, 1);
        assert_eq!(stats[0].segments, 0);
    }

    #[test]
    fn segments_are_plain_parquet_with_a_signature_column() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        put(&cache, &key(), &[entry(7)]);
        let segs = segments(&cache.dataset_dir(&key()));
        assert_eq!(segs.len(), 1);
        let batch = ParquetRecordBatchReaderBuilder::try_new(File::open(&segs[0]).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "signature",
                "word_count",
                "words",
                "word_count.hash",
                "words.hash"
            ]
        );
        assert_eq!(schema.field(0).data_type(), &DataType::FixedSizeBinary(32));
        // The stored hashes are the values' hashes.
        let count_hash = crate::signature::hash_array(batch.column(1)).unwrap();
        assert_eq!(
            batch.column(3).as_fixed_size_binary().value(0),
            count_hash[0].as_bytes()
        );
        // Written plain, without dictionaries, and without statistics on
        // the random signature and hash columns.
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&segs[0]).unwrap())
            .unwrap()
            .metadata()
            .clone();
        for column in meta.row_group(0).columns() {
            let name = column.column_path().string();
            assert!(
                !column
                    .encodings()
                    .any(|e| e == parquet::basic::Encoding::RLE_DICTIONARY),
                "{name} has a dictionary"
            );
            let random = name == "signature" || name.ends_with(".hash");
            assert_eq!(column.statistics().is_some(), !random, "{name}");
        }
    }

    #[test]
    fn stores_before_one_flush_make_one_segment_in_store_order() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let cache = DiskCache::new(dir.path());
        let many: Vec<_> = (0..9u8).map(entry).collect();
        for part in [&many[..2], &many[2..3], &many[3..]] {
            cache.store(&k, &rows(&k, part)).unwrap();
        }
        cache.flush().unwrap();
        let segs = segments(&cache.dataset_dir(&k));
        assert_eq!(segs.len(), 1);
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&segs[0]).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 1);
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let stored: Vec<Signature> = batches
            .iter()
            .flat_map(|b| {
                let sigs = b.column(0).as_fixed_size_binary();
                (0..b.num_rows())
                    .map(|r| signature_at(sigs, r))
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<Signature> = many.iter().map(|(s, _)| *s).collect();
        assert_eq!(stored, want);
        // A new instance reads every row back.
        let fresh = DiskCache::new(dir.path());
        let found = get(&fresh, &k, &want);
        assert_eq!(counts(&found), (0..9).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn locate_lends_the_stored_batches_that_hold_hits() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let cache = DiskCache::new(dir.path());
        let many: Vec<_> = (0..9u8).map(entry).collect();
        // Two segments: two stored batches.
        put(&cache, &k, &many[..4]);
        put(&cache, &k, &many[4..]);
        let fresh = DiskCache::new(dir.path());
        let asked = [sig(6), sig(1), sig(200), sig(7), sig(2)];
        let located = fresh.locate(&k, &asked).unwrap().unwrap();
        assert_eq!(located.rows.len(), asked.len());
        assert_eq!(located.rows[2], None, "never stored");
        // Only the batches holding hits are lent, numbered as first used.
        assert_eq!(located.columns.len(), 2);
        assert_eq!(located.hashes.len(), 2);
        let want = [Some(6i64), Some(1), None, Some(7), Some(2)];
        for (at, want) in located.rows.iter().zip(want) {
            let got = at.map(|(b, r)| {
                let counts = located.columns[b][0]
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .unwrap();
                // The lent hash is the value's hash.
                let hash = signature_at(located.hashes[b][0].as_fixed_size_binary(), r);
                let alone =
                    crate::signature::hash_array(&located.columns[b][0].slice(r, 1)).unwrap();
                assert_eq!(hash, alone[0]);
                counts.value(r)
            });
            assert_eq!(got, want);
        }
        // The same rows as a lookup.
        let looked = counts(&get(&fresh, &k, &asked));
        assert_eq!(looked, want);
    }

    #[test]
    fn prepare_loads_a_version_and_sizes_its_index_once() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let writer = DiskCache::new(dir.path());
        let many: Vec<_> = (0..=255u8).map(entry).collect();
        put(&writer, &k, &many[..10]);
        let cache = DiskCache::new(dir.path());
        cache.prepare(&k, 256).unwrap();
        let dataset = cache.dataset(&cache.dataset_dir(&k));
        let slots = || dataset.read().unwrap().index.slots.len();
        // Loaded before any lookup, with room for all 256 items.
        assert_eq!(dataset.read().unwrap().index.len, 10);
        assert!(slots() >= 512);
        let before = slots();
        cache.store(&k, &rows(&k, &many[10..])).unwrap();
        assert_eq!(slots(), before, "no growth while storing the rest");
        assert_eq!(
            counts(&get(&cache, &k, &[sig(3), sig(200)])),
            [Some(3), Some(200)]
        );
        // A version already holding the items reserves nothing more.
        cache.prepare(&k, 256).unwrap();
        assert_eq!(slots(), before);
        // The hint is capped: an absurd item count reserves a bounded table.
        cache.prepare(&k, usize::MAX).unwrap();
        assert_eq!(slots(), 2 * PREPARE_LIMIT);
    }

    #[test]
    fn truncated_and_garbage_segments_are_skipped_with_one_warning_each() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let writer = DiskCache::new(dir.path());
        for i in 0..3 {
            put(&writer, &k, &[entry(i)]);
        }
        let segs = segments(&writer.dataset_dir(&k));
        let bytes = std::fs::read(&segs[0]).unwrap();
        std::fs::write(&segs[0], &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(&segs[1], b"definitely not parquet").unwrap();
        // A write that never finished is not a segment at all.
        std::fs::write(writer.dataset_dir(&k).join(".tmp-x.parquet"), b"partial").unwrap();

        let cache = DiskCache::new(dir.path());
        let found = get(&cache, &k, &[sig(0), sig(1), sig(2)]);
        assert_eq!(counts(&found), [None, None, Some(2)]);
        cache.lookup(&k, &[sig(0)]).unwrap();
        let warnings = cache.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.contains("count words")));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let root = dir.path().to_path_buf();
                let k = k.clone();
                s.spawn(move || {
                    let cache = DiskCache::new(root);
                    for i in 0..10u8 {
                        put(&cache, &k, &[entry(t * 10 + i)]);
                    }
                });
            }
        });
        let cache = DiskCache::new(dir.path());
        let all: Vec<Signature> = (0..40).map(sig).collect();
        let found = get(&cache, &k, &all);
        assert_eq!(
            counts(&found),
            (0..40).map(|i| Some(i as i64)).collect::<Vec<_>>()
        );
        assert_eq!(segments(&cache.dataset_dir(&k)).len(), 40);
    }

    #[test]
    fn inspect_compact_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let cache = DiskCache::new(dir.path());
        for i in 0..3 {
            put(&cache, &k, &[entry(i)]);
        }
        assert!(cache.is_cached(&k, &sig(1)).unwrap());
        assert!(!cache.is_cached(&k, &sig(9)).unwrap());
        let stats = cache.stats().unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].node.as_str(), stats[0].segments, stats[0].rows),
            ("count_words", 3, 3)
        );
        assert_eq!(stats[0].code, k.code.to_hex());
        assert!(stats[0].bytes > 0);

        assert_eq!(cache.compact(&k).unwrap(), 3);
        let stats = cache.stats().unwrap();
        assert_eq!((stats[0].segments, stats[0].rows), (1, 3));
        let fresh = DiskCache::new(dir.path());
        let found = get(&fresh, &k, &[sig(0), sig(1), sig(2)]);
        assert_eq!(counts(&found), [Some(0), Some(1), Some(2)]);

        cache.clear_node("count words").unwrap();
        assert!(cache.stats().unwrap().is_empty());
        assert!(!cache.is_cached(&k, &sig(1)).unwrap());
        put(&cache, &k, &[entry(4)]);
        cache.clear().unwrap();
        assert!(cache.stats().unwrap().is_empty());
    }

    #[test]
    fn outputs_without_an_arrow_form_are_not_stored() {
        #[derive(Clone)]
        struct Model;
        let dir = tempfile::tempdir().unwrap();
        let k = CacheKey {
            node: "load".into(),
            code: Signature::of_bytes("test", b"load"),
            outputs: vec![("model".into(), ValueType::resource::<Model>())],
            parts: Vec::new(),
        };
        let cache = DiskCache::new(dir.path());
        assert!(CacheRows::from_values(&k, &[(sig(1), vec![Value::new(Model)])]).is_err());
        let no_rows = CacheRows {
            signatures: vec![sig(1)],
            columns: Vec::new(),
            hashes: Vec::new(),
        };
        cache.store(&k, &no_rows).unwrap();
        assert!(cache.lookup(&k, &[sig(1)]).unwrap().rows[0].is_none());
        assert!(!cache.dataset_dir(&k).exists());
    }
}
