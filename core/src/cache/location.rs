//! Where a cache lives, as data ([`CacheLocation`]): what a plan that
//! leaves the process carries instead of a live store, so that every
//! process opens the same cache.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Cache, CacheError, DiskCache};

/// The location of a cache: a directory every process can reach
/// (`file:///path` or a plain path), or an S3 bucket (`s3://bucket/prefix`,
/// with the `s3` feature) that every process mirrors locally.
///
/// ```
/// use hypernodes_core::cache::CacheLocation;
///
/// let at = CacheLocation::parse("file:///var/cache/hypernodes").unwrap();
/// assert_eq!(at.url(), "file:///var/cache/hypernodes");
/// assert_eq!(CacheLocation::parse("/var/cache/hypernodes").unwrap(), at);
/// assert!(CacheLocation::parse("gs://bucket/cache").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheLocation {
    /// A directory of Parquet segments ([`DiskCache`]).
    Directory(PathBuf),
    /// The same files in an object store, by URL (`s3://bucket/prefix`),
    /// mirrored by each process in a local directory
    /// ([`DiskCache::object_store`]).
    ObjectStore(String),
}

impl CacheLocation {
    /// Parses a location: a `file://` URL with an absolute path, or a plain
    /// path. Other schemes are an error naming the location.
    pub fn parse(location: &str) -> Result<CacheLocation, CacheError> {
        let unsupported = |reason: &str| CacheError::Location {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = location.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(unsupported(
                    "a file URL needs an absolute path (file:///...)",
                ));
            }
            return Ok(CacheLocation::Directory(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = location.split_once("://") {
            if scheme == "s3" {
                if cfg!(feature = "s3") {
                    return Ok(CacheLocation::ObjectStore(location.to_string()));
                }
                return Err(unsupported(
                    "this build has no object store support (the `s3` feature)",
                ));
            }
            return Err(unsupported(&format!(
                "the `{scheme}` scheme is not supported (only file://, s3:// and plain paths)"
            )));
        }
        Ok(CacheLocation::Directory(PathBuf::from(location)))
    }

    /// The location as a URL (`file:///…`; a relative directory keeps its
    /// relative path).
    pub fn url(&self) -> String {
        match self {
            CacheLocation::Directory(dir) if dir.is_absolute() => {
                format!("file://{}", dir.display())
            }
            CacheLocation::Directory(dir) => dir.display().to_string(),
            CacheLocation::ObjectStore(url) => url.clone(),
        }
    }

    /// Opens the cache at this location (nothing is read until it is used;
    /// an object store fails here only when its configuration is invalid).
    pub fn open(&self) -> Result<Arc<dyn Cache>, CacheError> {
        Ok(Arc::new(self.open_disk()?))
    }

    /// Opens the cache at this location as a [`DiskCache`] (for inspection
    /// and maintenance).
    pub fn open_disk(&self) -> Result<DiskCache, CacheError> {
        match self {
            CacheLocation::Directory(dir) => Ok(DiskCache::new(dir)),
            #[cfg(feature = "s3")]
            CacheLocation::ObjectStore(url) => DiskCache::object_store(url),
            #[cfg(not(feature = "s3"))]
            CacheLocation::ObjectStore(url) => Err(CacheError::Location {
                location: url.clone(),
                reason: "this build has no object store support (the `s3` feature)".into(),
            }),
        }
    }
}

impl DiskCache {
    /// Where this cache lives: its object store if it mirrors one, else
    /// its directory.
    pub fn location(&self) -> CacheLocation {
        match self.store_url() {
            Some(url) => CacheLocation::ObjectStore(url.to_string()),
            None => CacheLocation::Directory(self.root().to_path_buf()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheRows;
    use crate::signature::Signature;
    use crate::value::{Value, ValueType};

    #[test]
    fn a_location_opens_the_same_store_in_another_instance() {
        let dir = tempfile::tempdir().unwrap();
        let first = DiskCache::new(dir.path());
        let at = CacheLocation::parse(&first.location().url()).unwrap();
        assert_eq!(at, first.location());
        let key = crate::cache::CacheKey {
            node: "n".into(),
            code: Signature([1; 32]),
            outputs: vec![("y".into(), ValueType::arrow::<i64>())],
            parts: Vec::new(),
        };
        let rows =
            CacheRows::from_values(&key, &[(Signature([2; 32]), vec![Value::new(7i64)])]).unwrap();
        first.store(&key, &rows).unwrap();
        first.flush().unwrap();
        let other = at.open().unwrap();
        let hits = other.lookup(&key, &[Signature([2; 32])]).unwrap();
        assert_eq!(hits.rows, [Some(0)]);
    }

    #[test]
    fn unsupported_locations_are_named() {
        let err = CacheLocation::parse("gs://bucket/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gs://bucket/x") && err.contains("`gs`"),
            "{err}"
        );
        let err = CacheLocation::parse("file://relative")
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
    }
}
