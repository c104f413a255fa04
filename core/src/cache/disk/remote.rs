//! A [`DiskCache`](super::DiskCache) mirrored to an object store
//! (`s3://bucket/prefix`): the store holds the cache's files under the same
//! relative paths as a directory cache, and every process keeps a local
//! mirror of the node versions it looks up.
//!
//! Segments are immutable and their names unique per writer, so mirroring
//! needs no coordination: a process *pulls* the segments it lacks when it
//! lists a node version (at most every `LISTING_TTL`), and *pushes* each
//! segment it writes as soon as the segment is complete on its disk. A
//! failed push is retried at the next flush; until then the rows are
//! cached locally only. Nothing is ever read-modify-written on the store.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::cache::CacheError;

use super::segment::{MANIFEST, QUARANTINE_SUFFIX, is_segment_name, unique_name};

/// The environment variable naming the directory under which processes
/// keep their local mirrors of object-store caches (the system's temporary
/// directory, `hypernodes-mirror/`, when unset).
pub const MIRROR_ENV: &str = "HYPERNODES_CACHE_MIRROR";

/// How long a request to the object store is retried before it fails
/// (a store that cannot be reached fails the flush after this long, or
/// turns lookups into misses, rather than hanging).
pub const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How often a process lists one directory of the store: a segment
/// another process pushed is seen at most this long after it landed.
pub(crate) const PULL_EVERY: Duration = Duration::from_secs(1);

/// How long a process leaves the store alone after a pull failed (lookups
/// meanwhile use the mirror as it is, and miss what it lacks).
pub(crate) const PULL_BACKOFF: Duration = Duration::from_secs(10);

/// One object store and the prefix the cache lives under.
pub(crate) struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// Local files whose push failed, retried at the next flush.
    unpushed: Mutex<Vec<PathBuf>>,
    /// Per directory pulled: when it may be pulled again, behind a lock
    /// held during a pull (threads that want the directory meanwhile wait
    /// for it rather than look at a half-pulled mirror).
    next_pull: Mutex<HashMap<PathBuf, Arc<Mutex<Option<Instant>>>>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

/// The runtime that drives object-store requests for every remote of the
/// process (never dropped, so a cache may be dropped inside another async
/// runtime). The cache is called from plain threads and from async tasks
/// alike; each request runs here and the caller waits for it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hypernodes-object-store")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the object store runtime: {e}"))
    })
}

/// Runs `f` on the object-store runtime and waits for it.
fn block<F>(f: F) -> Result<F::Output, tokio::task::JoinError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    futures::executor::block_on(runtime().spawn(f))
}

impl Remote {
    /// Opens the object store of `url` (`s3://bucket/prefix`), configured
    /// from the process's `AWS_*` environment variables (endpoint,
    /// credentials, region, `AWS_ALLOW_HTTP`), as every AWS tool is, then
    /// from `options` (the same keys in lower case: `aws_endpoint`, ...).
    pub(crate) fn open(url: &str, options: &[(&str, &str)]) -> Result<Remote, CacheError> {
        let fail = |reason: String| CacheError::Location {
            location: url.to_string(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fail("not a URL".into()))?;
        if scheme != "s3" {
            return Err(fail(format!(
                "the `{scheme}` scheme is not supported (only file://, s3:// and plain paths)"
            )));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(fail("the URL names no bucket (s3://bucket/prefix)".into()));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: RETRY_TIMEOUT,
                ..Default::default()
            });
        for (key, value) in options {
            let key = key
                .parse()
                .map_err(|e: object_store::Error| fail(e.to_string()))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder.build().map_err(|e| fail(e.to_string()))?;
        Ok(Remote {
            url: url.to_string(),
            store: Arc::new(store),
            prefix: ObjectPath::from(prefix.trim_matches('/')),
            unpushed: Mutex::new(Vec::new()),
            next_pull: Mutex::new(HashMap::new()),
        })
    }

    /// The store's URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The object path of `rel` (a path relative to the cache's root).
    fn object(&self, rel: &Path) -> ObjectPath {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(rel.iter().map(|c| c.to_string_lossy().into_owned()));
        ObjectPath::from_iter(parts)
    }

    fn error(
        &self,
        object: &ObjectPath,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> CacheError {
        CacheError::Remote {
            location: self.url.clone(),
            object: object.to_string(),
            source: e.into(),
        }
    }

    /// Every object under `rel` (recursively), as paths relative to the
    /// cache's root, with their last-modified times.
    pub(crate) fn list(
        &self,
        rel: &Path,
    ) -> Result<Vec<(PathBuf, std::time::SystemTime)>, CacheError> {
        let at = self.object(rel);
        let store = self.store.clone();
        let skip = self.prefix.parts().count();
        let listed = block({
            let at = at.clone();
            async move {
                store
                    .list(Some(&at))
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
            }
        })
        .map_err(|e| self.error(&at, e))?
        .map_err(|e| self.error(&at, e))?;
        Ok(listed
            .into_iter()
            .map(|meta| {
                let rel: PathBuf = meta
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect();
                (rel, meta.last_modified.into())
            })
            .collect())
    }

    /// Downloads into `root` the segments and manifests under `rel` that
    /// `root` lacks (a quarantined local copy counts as present: it is not
    /// fetched again). Each file arrives whole: written under a temporary
    /// name, then renamed.
    ///
    /// A directory is listed at most every [`PULL_EVERY`], and not for
    /// [`PULL_BACKOFF`] after a failure (then this returns 0).
    pub(crate) fn pull(&self, root: &Path, rel: &Path) -> Result<usize, CacheError> {
        let gate = self
            .next_pull
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(rel.to_path_buf())
            .or_default()
            .clone();
        let mut next = gate.lock().unwrap_or_else(|e| e.into_inner());
        if next.is_some_and(|at| Instant::now() < at) {
            return Ok(0);
        }
        let result = self.pull_now(root, rel);
        let wait = if result.is_ok() {
            PULL_EVERY
        } else {
            PULL_BACKOFF
        };
        *next = Some(Instant::now() + wait);
        result
    }

    fn pull_now(&self, root: &Path, rel: &Path) -> Result<usize, CacheError> {
        let mut pulled = 0;
        for (file, _) in self.list(rel)? {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let wanted = is_segment_name(&name) || name == MANIFEST;
            let local = root.join(&file);
            let quarantined = {
                let mut q = local.clone().into_os_string();
                q.push(QUARANTINE_SUFFIX);
                PathBuf::from(q).exists()
            };
            if !wanted || local.exists() || quarantined {
                continue;
            }
            self.download(&file, &local)?;
            pulled += 1;
        }
        Ok(pulled)
    }

    fn download(&self, rel: &Path, local: &Path) -> Result<(), CacheError> {
        let at = self.object(rel);
        let store = self.store.clone();
        let bytes = block({
            let at = at.clone();
            async move { store.get(&at).await?.bytes().await }
        })
        .map_err(|e| self.error(&at, e))?
        .map_err(|e| self.error(&at, e))?;
        let dir = local.parent().unwrap_or(local);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!(".tmp-{}.pull", unique_name()));
        std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, local).map_err(io(local))?;
        Ok(())
    }

    /// Uploads the local file `local` (under `root`) to its place in the
    /// store; a failure is remembered and retried by [`Remote::retry`].
    pub(crate) fn push(&self, root: &Path, local: &Path) -> Result<(), CacheError> {
        let result = self.upload(root, local);
        if result.is_err() {
            self.unpushed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(local.to_path_buf());
        }
        result
    }

    fn upload(&self, root: &Path, local: &Path) -> Result<(), CacheError> {
        let rel = local.strip_prefix(root).unwrap_or(local);
        let at = self.object(rel);
        let bytes = std::fs::read(local).map_err(|source| CacheError::Io {
            path: local.to_path_buf(),
            source,
        })?;
        let store = self.store.clone();
        block({
            let at = at.clone();
            async move { store.put(&at, PutPayload::from(bytes)).await }
        })
        .map_err(|e| self.error(&at, e))?
        .map_err(|e| self.error(&at, e))?;
        Ok(())
    }

    /// Pushes again the files whose push failed (those still on disk),
    /// oldest first. The first failure ends the attempt (the store is
    /// likely still out of reach): the rest wait for the next one.
    pub(crate) fn retry(&self, root: &Path) -> Result<(), CacheError> {
        let files = std::mem::take(&mut *self.unpushed.lock().unwrap_or_else(|e| e.into_inner()));
        let mut files = files.into_iter().filter(|f| f.exists());
        while let Some(file) = files.next() {
            if let Err(e) = self.upload(root, &file) {
                let mut unpushed = self.unpushed.lock().unwrap_or_else(|e| e.into_inner());
                let newer = std::mem::take(&mut *unpushed);
                unpushed.push(file);
                unpushed.extend(files);
                unpushed.extend(newer);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Deletes every object under `rel` (a file or a directory of the cache).
    pub(crate) fn delete(&self, rel: &Path) -> Result<(), CacheError> {
        let mut objects: Vec<ObjectPath> = self
            .list(rel)?
            .into_iter()
            .map(|(file, _)| self.object(&file))
            .collect();
        if objects.is_empty() {
            objects.push(self.object(rel));
        }
        for at in objects {
            let store = self.store.clone();
            let result = block({
                let at = at.clone();
                async move { store.delete(&at).await }
            })
            .map_err(|e| self.error(&at, e))?;
            match result {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(&at, e)),
            }
        }
        Ok(())
    }
}

/// The local mirror directory of the cache at `url`: under
/// [`MIRROR_ENV`] (or the temporary directory), a directory named after a
/// digest of the URL, so caches at different URLs never share a mirror.
pub(crate) fn mirror_dir(url: &str) -> PathBuf {
    let base = std::env::var_os(MIRROR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hypernodes-mirror"));
    let digest = blake3::hash(url.as_bytes()).to_hex();
    base.join(&digest.as_str()[..16])
}
