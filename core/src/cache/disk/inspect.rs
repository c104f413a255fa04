//! Looking into a cache directory without the nodes' code: what the
//! `hypernodes cache` command shows and does. Everything here reads the
//! on-disk format (`docs/cache-format.md`) directly: versions are found by
//! directory, outputs by each segment's own columns, and every segment read
//! is checked against its checksums first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;

use super::segment::{
    QUARANTINE_SUFFIX, SegmentFault, file_name, read_segment_as, remove_dir, segment_files,
    sorted_dirs,
};
use super::{DiskCache, write_segment_file};
use crate::cache::{Cache, CacheError};
use crate::signature::Signature;

/// How many hex characters of the code hash a version's key shows.
pub const KEY_HEX: usize = 12;

/// One node version in a cache directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The node's directory name.
    pub node: String,
    /// The code hash (64 hex characters).
    pub code: String,
    /// Where its segments are.
    pub dir: PathBuf,
    /// Complete segments.
    pub segments: usize,
    /// Segments that failed their checks when read now (left in place:
    /// inspecting never changes the cache).
    pub corrupt: usize,
    /// Segments moved aside as corrupt earlier (`*.corrupt`).
    pub quarantined: usize,
    /// Rows over all readable segments (a signature stored twice counts
    /// twice).
    pub rows: usize,
    /// Distinct signatures over all readable segments.
    pub distinct: usize,
    /// Bytes on disk of its segments.
    pub bytes: u64,
    /// When its newest segment was written.
    pub last_written: Option<SystemTime>,
    /// Its outputs: names and Arrow types, as its segments store them.
    pub outputs: Vec<(String, String)>,
}

impl VersionInfo {
    /// The version's key, `node/` and the first [`KEY_HEX`] characters of
    /// its code hash: what every `hypernodes cache` subcommand accepts.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.node,
            &self.code[..KEY_HEX.min(self.code.len())]
        )
    }

    /// Whether `spec` names this version: its node's name, or its node's
    /// name, `/` and a prefix of its code hash.
    pub fn matches(&self, spec: &str) -> bool {
        match spec.split_once('/') {
            Some((node, code)) => node == self.node && self.code.starts_with(code),
            None => spec == self.node,
        }
    }
}

/// One stored row of a signature (see [`DiskCache::why`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRow {
    /// The key of the version that holds it.
    pub key: String,
    /// The segment file it is in.
    pub segment: PathBuf,
    /// Each output's name and value, as text.
    pub values: Vec<(String, String)>,
}

/// Which versions `gc` removes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcPolicy {
    /// Every version of a node but its most recently written one.
    pub superseded: bool,
    /// Versions whose newest segment is older than this.
    pub older_than: Option<Duration>,
}

impl DiskCache {
    /// Every node version in the cache, sorted by node and code: counts,
    /// sizes and outputs, read from the segments (a cache directory that
    /// does not exist is an error).
    pub fn inventory(&self) -> Result<Vec<VersionInfo>, CacheError> {
        self.pull_all()?;
        let root = self.root();
        if !root.is_dir() {
            return Err(CacheError::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no cache directory here",
                ),
            });
        }
        let mut out = Vec::new();
        for node_dir in sorted_dirs(root)? {
            for version_dir in sorted_dirs(&node_dir)? {
                out.push(version_info(&node_dir, &version_dir));
            }
        }
        Ok(out)
    }

    /// The versions `spec` names (see [`VersionInfo::matches`]); an error
    /// when it names none.
    pub fn versions_of(&self, spec: &str) -> Result<Vec<VersionInfo>, CacheError> {
        let all = self.inventory()?;
        let found: Vec<VersionInfo> = all.iter().filter(|v| v.matches(spec)).cloned().collect();
        if found.is_empty() {
            let mut nodes: Vec<&str> = all.iter().map(|v| v.node.as_str()).collect();
            nodes.dedup();
            return Err(CacheError::NotFound {
                what: spec.to_string(),
                known: nodes.join(", "),
            });
        }
        Ok(found)
    }

    /// Every stored row of signature `sig` in the versions `spec` names:
    /// which version and segment hold it, and its output values.
    pub fn why(&self, spec: &str, sig: &Signature) -> Result<Vec<StoredRow>, CacheError> {
        let mut out = Vec::new();
        for version in self.versions_of(spec)? {
            for seg in segment_files(&version.dir) {
                let Ok(batches) = read_segment_as(&seg, None) else {
                    continue;
                };
                for batch in &batches {
                    let sigs = batch.column(0).as_fixed_size_binary();
                    for row in 0..batch.num_rows() {
                        if sigs.value(row) == sig.0 {
                            out.push(StoredRow {
                                key: version.key(),
                                segment: seg.clone(),
                                values: row_values(batch, row),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Rewrites each version `spec` names (every version for `None`) with
    /// more than one segment as a single segment of its distinct rows: the
    /// new segment is complete on disk before the old ones are removed, so
    /// a crash leaves duplicates at worst. Corrupt segments are left as
    /// they are. Returns, per version compacted, its key and how many
    /// segments it merged.
    pub fn compact_all(&self, spec: Option<&str>) -> Result<Vec<(String, usize)>, CacheError> {
        let versions = match spec {
            Some(spec) => self.versions_of(spec)?,
            None => self.inventory()?,
        };
        let mut done = Vec::new();
        for version in versions {
            let mut kept: Vec<RecordBatch> = Vec::new();
            let mut merged: Vec<PathBuf> = Vec::new();
            let mut seen: HashSet<[u8; 32]> = HashSet::new();
            for seg in segment_files(&version.dir) {
                let Ok(batches) = read_segment_as(&seg, None) else {
                    continue;
                };
                if kept.first().is_some_and(|k| {
                    batches
                        .first()
                        .is_some_and(|b| b.schema().fields() != k.schema().fields())
                }) {
                    continue;
                }
                for batch in batches {
                    let sigs = batch.column(0).as_fixed_size_binary();
                    let fresh: Vec<u32> = (0..batch.num_rows())
                        .filter(|&r| seen.insert(sigs.value(r).try_into().unwrap_or([0; 32])))
                        .map(|r| r as u32)
                        .collect();
                    let picks = arrow_array::UInt32Array::from(fresh);
                    let columns = batch
                        .columns()
                        .iter()
                        .map(|c| arrow_select::take::take(c, &picks, None))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| encode(&version.node, e))?;
                    kept.push(
                        RecordBatch::try_new(batch.schema(), columns)
                            .map_err(|e| encode(&version.node, e))?,
                    );
                }
                merged.push(seg);
            }
            if merged.len() < 2 {
                continue;
            }
            let schema = kept[0].schema();
            self.flush()?;
            let new = write_segment_file(&version.dir, &version.node, schema, &kept)?;
            self.publish(&new)?;
            for seg in &merged {
                self.withdraw(seg)?;
                std::fs::remove_file(seg).map_err(|source| CacheError::Io {
                    path: seg.clone(),
                    source,
                })?;
            }
            // What this process had loaded of the version is read again.
            self.forget(&version.dir);
            done.push((version.key(), merged.len()));
        }
        Ok(done)
    }

    /// The versions `policy` would remove, without removing anything.
    pub fn gc_plan(&self, policy: GcPolicy) -> Result<Vec<VersionInfo>, CacheError> {
        let all = self.inventory()?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        for v in &all {
            let newest_of_node = all
                .iter()
                .filter(|o| o.node == v.node)
                .max_by_key(|o| (o.last_written, o.code.clone()))
                .is_some_and(|o| o.code == v.code);
            let stale = policy.older_than.is_some_and(|age| {
                v.last_written
                    .and_then(|t| now.duration_since(t).ok())
                    .is_none_or(|since| since > age)
            });
            if (policy.superseded && !newest_of_node) || stale {
                out.push(v.clone());
            }
        }
        Ok(out)
    }

    /// Removes one node version (all its files).
    pub fn remove_version(&self, version: &VersionInfo) -> Result<(), CacheError> {
        self.forget(&version.dir);
        self.withdraw(&version.dir)?;
        remove_dir(&version.dir)
    }
}

fn encode(node: &str, e: impl ToString) -> CacheError {
    CacheError::Encode {
        node: node.to_string(),
        output: "*".into(),
        message: e.to_string(),
    }
}

/// What one version directory holds.
fn version_info(node_dir: &Path, dir: &Path) -> VersionInfo {
    let mut info = VersionInfo {
        node: file_name(node_dir),
        code: file_name(dir),
        dir: dir.to_path_buf(),
        segments: 0,
        corrupt: 0,
        quarantined: super::segment::count_files(dir, |n| n.ends_with(QUARANTINE_SUFFIX)),
        rows: 0,
        distinct: 0,
        bytes: 0,
        last_written: None,
        outputs: Vec::new(),
    };
    let mut distinct: HashSet<[u8; 32]> = HashSet::new();
    for seg in segment_files(dir) {
        info.segments += 1;
        if let Ok(meta) = std::fs::metadata(&seg) {
            info.bytes += meta.len();
            info.last_written = info.last_written.max(meta.modified().ok());
        }
        match read_segment_as(&seg, None) {
            Ok(batches) => {
                for batch in &batches {
                    if info.outputs.is_empty() {
                        let fields = batch.schema().fields().clone();
                        let outputs = (fields.len() - 1) / 2;
                        info.outputs = fields
                            .iter()
                            .skip(1)
                            .take(outputs)
                            .map(|f| (f.name().clone(), f.data_type().to_string()))
                            .collect();
                    }
                    info.rows += batch.num_rows();
                    let sigs = batch.column(0).as_fixed_size_binary();
                    for r in 0..batch.num_rows() {
                        distinct.insert(sigs.value(r).try_into().unwrap_or([0; 32]));
                    }
                }
            }
            Err(
                SegmentFault::Corrupt(_) | SegmentFault::Layout(_) | SegmentFault::Unreadable(_),
            ) => info.corrupt += 1,
        }
    }
    info.distinct = distinct.len();
    info
}

/// Each output's name and value at `row` of a segment batch, as text.
fn row_values(batch: &RecordBatch, row: usize) -> Vec<(String, String)> {
    let outputs = (batch.num_columns() - 1) / 2;
    let options = arrow_cast::display::FormatOptions::default().with_null("null");
    (1..=outputs)
        .map(|c| {
            let name = batch.schema().field(c).name().clone();
            let text = arrow_cast::display::ArrayFormatter::try_new(batch.column(c), &options)
                .map(|f| f.value(row).to_string())
                .unwrap_or_else(|e| format!("<{e}>"));
            (name, text)
        })
        .collect()
}
