//! Where recordings are kept, from `SKYLARK_RECORDINGS_URL`: a directory (`file:///path`
//! or a path; the default is under the data dir) or S3-compatible object storage
//! (`s3://bucket/prefix`, credentials, region and endpoint the standard AWS way:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP=true` for a plain-http endpoint). Both are an [`ObjectStore`], so the
//! packager and the API have one code path for either.

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use object_store::{
    buffered, path::Path as Key, Error, GetOptions, GetRange, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutPayload,
};

/// A recordings store and what it is, for logs and errors.
#[derive(Clone)]
pub struct Store {
    pub objects: Arc<dyn ObjectStore>,
    /// `directory /path` or `s3://bucket/prefix`.
    pub describe: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SKYLARK_RECORDINGS_URL={0} names no directory: use file:///path")]
    NoPath(String),
    #[error("SKYLARK_RECORDINGS_URL={0} names no bucket: use s3://bucket or s3://bucket/prefix")]
    NoBucket(String),
    #[error(
        "SKYLARK_RECORDINGS_URL={0}: use a directory (file:///path or a path) or s3://bucket/prefix"
    )]
    Scheme(String),
    #[error("recordings directory {0}: {1} (create it or make it writable)")]
    Dir(PathBuf, std::io::Error),
    #[error("recordings storage {0}: {1} (check the AWS_* settings)")]
    Store(String, object_store::Error),
}

/// Opens the store `url` names; no URL (or an empty one): the directory `default_dir`.
pub fn open(url: Option<&str>, default_dir: PathBuf) -> Result<Store, ConfigError> {
    open_with(url, default_dir, &[])
}

/// [`open`], with S3 settings (`aws_endpoint_url`, `aws_allow_http`, …) over the
/// environment's.
pub fn open_with(
    url: Option<&str>,
    default_dir: PathBuf,
    s3_settings: &[(&str, &str)],
) -> Result<Store, ConfigError> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return local(default_dir);
    };
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(ConfigError::NoPath(url.into()));
        }
        return local(PathBuf::from(path));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ConfigError::NoBucket(url.into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in s3_settings {
            let key = k.parse().map_err(|e| ConfigError::Store(url.into(), e))?;
            builder = builder.with_config(key, *v);
        }
        let s3 = builder
            .build()
            .map_err(|e| ConfigError::Store(url.into(), e))?;
        let prefix = prefix.trim_matches('/');
        let objects: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        return Ok(Store {
            objects,
            describe: format!("s3://{bucket}/{prefix}"),
        });
    }
    if url.contains("://") {
        return Err(ConfigError::Scheme(url.into()));
    }
    local(PathBuf::from(url))
}

/// A directory: created if missing; deleting a recording's last file removes the
/// directories it leaves empty.
pub fn local(dir: PathBuf) -> Result<Store, ConfigError> {
    std::fs::create_dir_all(&dir).map_err(|e| ConfigError::Dir(dir.clone(), e))?;
    let fs = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| ConfigError::Store(dir.display().to_string(), e))?
        .with_automatic_cleanup(true);
    Ok(Store {
        objects: Arc::new(fs),
        describe: format!("directory {}", dir.display()),
    })
}

impl Store {
    /// Deletes every object under `prefix` (a recording: `{room}/{id}`), returning how
    /// many; none there is not an error.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, Error> {
        let prefix = Key::from(prefix);
        let keys = self
            .objects
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .boxed();
        let deleted: Vec<Key> = self
            .objects
            .delete_stream(keys)
            .or_else(|e| async move {
                match e {
                    Error::NotFound { path, .. } => Ok(Key::from(path)),
                    e => Err(e),
                }
            })
            .try_collect()
            .await?;
        Ok(deleted.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(matches!(
            open(Some("file://"), "/x".into()),
            Err(ConfigError::NoPath(_))
        ));
        assert!(matches!(
            open(Some("s3://"), "/x".into()),
            Err(ConfigError::NoBucket(_))
        ));
        assert!(matches!(
            open(Some("gs://b/p"), "/x".into()),
            Err(ConfigError::Scheme(_))
        ));
        let s = open(Some("s3://bucket/a/b/"), "/x".into()).unwrap();
        assert_eq!(s.describe, "s3://bucket/a/b");
    }

    #[tokio::test]
    async fn a_directory_store_deletes_a_prefix_and_its_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let s = open(None, tmp.path().join("rec")).unwrap();
        for k in ["room/rec_1/a", "room/rec_1/main/b", "room/rec_2/a"] {
            s.objects
                .put(&Key::from(k), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        assert!(tmp.path().join("rec/room/rec_1/main/b").exists());
        assert_eq!(s.delete_prefix("room/rec_1").await.unwrap(), 2);
        assert!(!tmp.path().join("rec/room/rec_1").exists());
        assert!(tmp.path().join("rec/room/rec_2/a").exists());
        assert_eq!(s.delete_prefix("room/none").await.unwrap(), 0);
    }
}
