//! S3 and S3-compatible object stores (`s3://bucket/prefix`), through the `object_store` crate.
//!
//! Settings come from where the AWS CLI reads them ([`aws`], through `aws-config`): credentials
//! from the environment, the profile (`AWS_PROFILE` or `default`, with `role_arn`,
//! `credential_process` and SSO), web identity, ECS and the instance metadata service; the
//! Region from the environment or the profile (without one, the bucket's Region is asked of
//! S3); the endpoint from `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or the profile's
//! `endpoint_url`, for S3-compatible stores, with path-style requests unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`; an `http://` endpoint is allowed because it was
//! asked for explicitly.

mod aws;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use globset::GlobMatcher;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::runtime::{Handle, Runtime};
use tracing::{debug, info_span};

use crate::dataset::layout::is_hidden_name;
pub(crate) use crate::dataset::object_errors::one_line;
use crate::read::Pruned;
use crate::read::layout::{DeliveryFilter, DeliveryPath};

/// Errors talking to an object store; each names the location.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: {message}")]
    Url { url: String, message: String },
    /// Not a `#[source]`: the message is already the useful part of the chain, on one line.
    #[error("{url}: {}", one_line(.error))]
    Access { url: String, error: object_store::Error },
    #[error("starting the network runtime: {0}")]
    Runtime(io::Error),
}

impl StoreError {
    /// The message without the location it concerns.
    pub fn detail(&self) -> String {
        match self {
            StoreError::Url { message, .. } => message.clone(),
            StoreError::Access { error, .. } => one_line(error),
            other => other.to_string(),
        }
    }
}

/// A parsed `s3://bucket/key-or-prefix` (`s3a://` is accepted too).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct S3Url {
    pub bucket: String,
    /// The key or prefix, without leading or trailing `/`; empty for the whole bucket.
    pub key: String,
}

impl S3Url {
    /// `None` when `text` is not an S3 URL at all; an error when it is one but malformed.
    pub fn parse(text: &str) -> Option<Result<S3Url, StoreError>> {
        let rest = text
            .strip_prefix("s3://")
            .or_else(|| text.strip_prefix("s3a://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(StoreError::Url {
                url: text.to_string(),
                message: "no bucket name (expected s3://bucket/prefix)".into(),
            }));
        }
        Some(Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.trim_matches('/').to_string(),
        }))
    }

    /// Whether `text` is an `s3://` (or `s3a://`) URL.
    pub fn is_s3(text: &str) -> bool {
        text.starts_with("s3://") || text.starts_with("s3a://")
    }

    /// The key as an object path (`None` for the bucket root).
    pub fn path(&self) -> Option<ObjectPath> {
        (!self.key.is_empty()).then(|| ObjectPath::from(self.key.as_str()))
    }

    /// This location with `relative` (a `/`-separated path) appended.
    pub fn join(&self, relative: &str) -> S3Url {
        let relative = relative.trim_matches('/');
        let key = match (self.key.is_empty(), relative.is_empty()) {
            (true, _) => relative.to_string(),
            (false, true) => self.key.clone(),
            (false, false) => format!("{}/{relative}", self.key),
        };
        S3Url {
            bucket: self.bucket.clone(),
            key,
        }
    }

    /// The URL DataFusion registers the bucket's store under.
    pub fn bucket_url(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

fn env_value(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// Builds the store for one bucket from the environment (see the module docs).
pub async fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let url = format!("s3://{bucket}");
    let config = aws::sdk_config().await;
    let endpoint = env_value(&["AWS_ENDPOINT_URL_S3"])
        .or_else(|| config.endpoint_url().map(str::to_string))
        .or_else(|| env_value(&["AWS_ENDPOINT"]));
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &endpoint {
        builder = builder.with_endpoint(endpoint);
        if endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
    }
    if let Some(provider) = config.credentials_provider() {
        builder = builder.with_credentials(Arc::new(aws::AwsConfigCredentials::new(provider)));
    }
    let region =
        env_value(&["AWS_REGION", "AWS_DEFAULT_REGION"]).or_else(|| config.region().map(|r| r.to_string()));
    if let Some(region) = &region {
        builder = builder.with_region(region);
    } else if endpoint.is_none() {
        let region = object_store::aws::resolve_bucket_region(bucket, &ClientOptions::new())
            .await
            .map_err(|error| StoreError::Access {
                url: url.clone(),
                error,
            })?;
        debug!(bucket, region, "resolved the bucket's Region");
        builder = builder.with_region(region);
    }
    let store = builder
        .build()
        .map_err(|error| StoreError::Access { url, error })?;
    Ok(Arc::new(store))
}

/// An object to read, found by listing.
#[derive(Clone)]
pub struct RemoteObject {
    pub url: S3Url,
    pub location: ObjectPath,
    pub size: u64,
    /// Last modification, nanoseconds since the epoch.
    pub modified: Option<i128>,
    pub etag: Option<String>,
    store: Arc<dyn ObjectStore>,
    runtime: Handle,
}

impl fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteObject({})", self.url)
    }
}

impl PartialEq for RemoteObject {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}
impl Eq for RemoteObject {}
impl PartialOrd for RemoteObject {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RemoteObject {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.url.cmp(&other.url)
    }
}
impl std::hash::Hash for RemoteObject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.url.hash(state)
    }
}

impl RemoteObject {
    /// Streams the object's bytes (no temporary file, constant memory) as a blocking reader, for
    /// the converter's worker threads.
    pub fn reader(&self) -> io::Result<Box<dyn io::Read + Send>> {
        let store = self.store.clone();
        let location = self.location.clone();
        let stream = self
            .runtime
            .block_on(async move { store.get(&location).await.map(|got| got.into_stream()) })
            .map_err(|e| io::Error::other(one_line(&e)))?;
        let reader = tokio_util::io::StreamReader::new(stream.map_err(|e| io::Error::other(one_line(&e))));
        Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
            reader,
            self.runtime.clone(),
        )))
    }
}

/// The object stores of one run, and the runtime their requests run on.
pub struct Stores {
    /// The runtime made for these stores, when they were not given one.
    owned_runtime: Option<Runtime>,
    runtime: Handle,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// Where a table is: its location, and its directory when it is local.
pub struct TableTarget {
    pub location: crate::dataset::TableLocation,
    pub local_root: Option<std::path::PathBuf>,
}

impl Stores {
    /// The table at `target`: an `s3://bucket/prefix` URL or a local directory.
    pub fn table_target(&self, target: &std::path::Path) -> Result<TableTarget, StoreError> {
        use crate::dataset::TableLocation;
        let invalid = |error: crate::dataset::TableError| StoreError::Url {
            url: target.display().to_string(),
            message: error.to_string(),
        };
        Ok(match target.to_str().and_then(S3Url::parse).transpose()? {
            Some(url) => TableTarget {
                location: TableLocation::s3(&url.bucket, &url.key, self.bucket_store(&url.bucket)?)
                    .map_err(invalid)?,
                local_root: None,
            },
            None => TableTarget {
                location: TableLocation::local(target).map_err(invalid)?,
                local_root: Some(target.to_path_buf()),
            },
        })
    }

    pub fn new() -> Result<Stores, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keytrail-io")
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        Ok(Stores {
            runtime: runtime.handle().clone(),
            owned_runtime: Some(runtime),
            stores: Mutex::new(HashMap::new()),
        })
    }

    /// Stores whose requests run on `runtime` (a SQL session's). Their blocking calls
    /// ([`Stores::list`], [`RemoteObject::reader`]) must then be made off its worker threads.
    pub fn on(runtime: Handle) -> Stores {
        Stores {
            owned_runtime: None,
            runtime,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime the stores' requests run on.
    pub fn handle(&self) -> &Handle {
        &self.runtime
    }

    /// The store of one bucket (made on first use).
    pub fn bucket_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        self.store(bucket)
    }

    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut stores = crate::sync::lock(&self.stores);
        if let Some(store) = stores.get(bucket) {
            return Ok(store.clone());
        }
        let store = self.runtime.block_on(s3_store(bucket))?;
        stores.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    /// The objects under a prefix (or matching a glob pattern in the key, such as
    /// `s3://bucket/AWSLogs/*/CloudTrail/us-east-1/2024/**`), sorted by key. Keys with a
    /// `.`- or `_`-prefixed segment below the prefix are skipped, as in local directory walks;
    /// a URL naming one object returns that object.
    pub fn list(&self, url: &S3Url) -> Result<Vec<RemoteObject>, StoreError> {
        let _span = info_span!("list", %url).entered();
        let store = self.store(&url.bucket)?;
        let (base, matcher) = glob_split(url)?;
        let access = |error| StoreError::Access {
            url: url.to_string(),
            error,
        };
        let prefix = base.path();
        let metas: Vec<ObjectMeta> = self
            .runtime
            .block_on(store.list(prefix.as_ref()).try_collect())
            .map_err(access)?;
        let base_parts = prefix.as_ref().map_or(0, |p| p.parts().count());
        let mut objects: Vec<RemoteObject> = metas
            .into_iter()
            .filter(|meta| {
                !meta
                    .location
                    .parts()
                    .skip(base_parts)
                    .any(|part| is_hidden_name(part.as_ref()))
            })
            .filter(|meta| {
                matcher
                    .as_ref()
                    .is_none_or(|m| m.is_match(meta.location.as_ref()))
            })
            .map(|meta| self.remote(&store, url, meta))
            .collect();
        if objects.is_empty() && matcher.is_none() {
            objects.extend(self.named_object(&store, url)?);
        }
        objects.sort();
        debug!(objects = objects.len(), "listed");
        Ok(objects)
    }

    /// [`Stores::list`], listing only the prefixes `filter` may want: the delivery layout's
    /// levels (accounts, Regions, years, months, days) are listed one level at a time, and only
    /// the matching ones are looked into; below a day, or outside the layout, a prefix is listed
    /// whole and its files filtered by name.
    pub fn list_filtered(
        &self,
        url: &S3Url,
        filter: Option<&DeliveryFilter>,
        pruned: &mut Pruned,
    ) -> Result<Vec<RemoteObject>, StoreError> {
        // Listing level by level costs a request per directory: only worth it when the filter
        // can skip directories below the layout's top (an empty one skips only digests).
        let Some(filter) = filter.filter(|f| !f.is_empty() && !url.key.contains(['*', '?', '[', '{'])) else {
            let mut objects = self.list(url)?;
            if let Some(filter) = filter {
                let before = objects.len();
                objects.retain(|o| filter.may_hold_file(&o.url.key));
                pruned.files += (before - objects.len()) as u64;
            }
            return Ok(objects);
        };
        let _span = info_span!("list by delivery layout", %url).entered();
        let store = self.store(&url.bucket)?;
        let access = |error| StoreError::Access {
            url: url.to_string(),
            error,
        };
        let base = url.path();
        let base_parts = base.as_ref().map_or(0, |p| p.parts().count());
        let hidden = |location: &ObjectPath| {
            location
                .parts()
                .skip(base_parts)
                .any(|part| is_hidden_name(part.as_ref()))
        };
        let mut metas: Vec<ObjectMeta> = Vec::new();
        // (prefix, levels below the base listed one at a time so far)
        let mut pending: Vec<(Option<ObjectPath>, usize)> = vec![(base.clone(), 0)];
        while let Some((prefix, depth)) = pending.pop() {
            let text = prefix.as_ref().map_or(String::new(), ToString::to_string);
            let layout = DeliveryPath::parse(&text, false);
            let in_layout = layout.account.is_some() || text.split('/').any(|p| p == "AWSLogs");
            if layout.reaches_day() || (!in_layout && depth >= MAX_DELIMITED_LEVELS) {
                let listed: Vec<ObjectMeta> = self
                    .runtime
                    .block_on(store.list(prefix.as_ref()).try_collect())
                    .map_err(access)?;
                metas.extend(listed);
                continue;
            }
            let level = self
                .runtime
                .block_on(store.list_with_delimiter(prefix.as_ref()))
                .map_err(access)?;
            metas.extend(level.objects);
            for below in level.common_prefixes {
                if hidden(&below) {
                    continue;
                }
                if filter.may_hold_dir(below.as_ref()) {
                    pending.push((Some(below), depth + 1));
                } else {
                    pruned.dirs += 1;
                }
            }
        }
        let mut objects = Vec::with_capacity(metas.len());
        for meta in metas {
            if hidden(&meta.location) {
                continue;
            }
            if filter.may_hold_file(meta.location.as_ref()) {
                objects.push(self.remote(&store, url, meta));
            } else {
                pruned.files += 1;
            }
        }
        if objects.is_empty() && pruned.files == 0 && pruned.dirs == 0 {
            objects.extend(self.named_object(&store, url)?);
        }
        objects.sort();
        debug!(
            objects = objects.len(),
            pruned_files = pruned.files,
            pruned_dirs = pruned.dirs,
            "listed"
        );
        Ok(objects)
    }

    /// The object a URL names, when it names one (a listing under it found nothing).
    fn named_object(
        &self,
        store: &Arc<dyn ObjectStore>,
        url: &S3Url,
    ) -> Result<Option<RemoteObject>, StoreError> {
        let Some(path) = url.path() else {
            return Ok(None);
        };
        match self.runtime.block_on(store.head(&path)) {
            Ok(meta) => Ok(Some(self.remote(store, url, meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(StoreError::Access {
                url: url.to_string(),
                error,
            }),
        }
    }

    fn remote(&self, store: &Arc<dyn ObjectStore>, url: &S3Url, meta: ObjectMeta) -> RemoteObject {
        RemoteObject {
            url: S3Url {
                bucket: url.bucket.clone(),
                key: meta.location.to_string(),
            },
            location: meta.location,
            size: meta.size,
            modified: meta.last_modified.timestamp_nanos_opt().map(i128::from),
            etag: meta.e_tag,
            store: store.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which tokio forbids inside another
        // runtime (a SQL session ends inside the CLI's); nothing of ours is left running on it.
        if let Some(runtime) = self.owned_runtime.take()
            && Handle::try_current().is_ok()
        {
            runtime.shutdown_background();
        }
    }
}

/// Levels outside the delivery layout listed one at a time before a prefix is listed whole
/// (a bucket's top levels may lead to `AWSLogs/`).
const MAX_DELIMITED_LEVELS: usize = 2;

/// Splits a URL whose key holds glob characters into the literal prefix to list and a matcher
/// for whole keys.
fn glob_split(url: &S3Url) -> Result<(S3Url, Option<GlobMatcher>), StoreError> {
    if !url.key.contains(['*', '?', '[', '{']) {
        return Ok((url.clone(), None));
    }
    let literal: Vec<&str> = url
        .key
        .split('/')
        .take_while(|part| !part.contains(['*', '?', '[', '{']))
        .collect();
    let matcher = globset::GlobBuilder::new(&url.key)
        .literal_separator(true)
        .build()
        .map_err(|e| StoreError::Url {
            url: url.to_string(),
            message: format!("invalid glob pattern: {e}"),
        })?
        .compile_matcher();
    let base = S3Url {
        bucket: url.bucket.clone(),
        key: literal.join("/"),
    };
    Ok((base, Some(matcher)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let url = S3Url::parse("s3://trail/AWSLogs/123/").unwrap().unwrap();
        assert_eq!((url.bucket.as_str(), url.key.as_str()), ("trail", "AWSLogs/123"));
        assert_eq!(url.to_string(), "s3://trail/AWSLogs/123");
        assert_eq!(url.join("a/b.parquet").key, "AWSLogs/123/a/b.parquet");
        let root = S3Url::parse("s3a://trail").unwrap().unwrap();
        assert_eq!(root.key, "");
        assert!(root.path().is_none());
        assert_eq!(root.join("x").key, "x");
        assert!(S3Url::parse("/tmp/x").is_none());
        let error = S3Url::parse("s3:///key").unwrap().unwrap_err().to_string();
        assert!(error.contains("no bucket name"), "{error}");
    }

    #[test]
    fn s3_error_bodies_become_one_line() {
        let body = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n\
            <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        let error = object_store::Error::Generic {
            store: "S3",
            source: body.into(),
        };
        assert_eq!(
            one_line(&error),
            "NoSuchBucket: The specified bucket does not exist"
        );
        let refused = object_store::Error::Generic {
            store: "S3",
            source:
                "Error performing GET http://h/b in 3.5s, after 10 retries - HTTP error: connection refused"
                    .into(),
        };
        assert_eq!(
            one_line(&refused),
            "Error performing GET http://h/b: HTTP error: connection refused"
        );
    }

    #[test]
    fn globs_list_their_literal_prefix() {
        let url = S3Url::parse("s3://b/AWSLogs/*/CloudTrail/us-east-1/**")
            .unwrap()
            .unwrap();
        let (base, matcher) = glob_split(&url).unwrap();
        assert_eq!(base.key, "AWSLogs");
        let matcher = matcher.unwrap();
        assert!(matcher.is_match("AWSLogs/1/CloudTrail/us-east-1/2024/01/02/x.json.gz"));
        assert!(!matcher.is_match("AWSLogs/1/CloudTrail/eu-west-1/2024/01/02/x.json.gz"));
        assert!(!matcher.is_match("AWSLogs/1/2/CloudTrail/us-east-1/x.json.gz"));
        let plain = S3Url::parse("s3://b/AWSLogs").unwrap().unwrap();
        assert!(glob_split(&plain).unwrap().1.is_none());
    }
}
