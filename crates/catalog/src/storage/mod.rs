//! One object-store layer for everything that touches files: the Iceberg catalog's FileIO
//! (metadata, manifests, data files written by ingest), DataFusion's scans (the engine's
//! `RuntimeEnv` resolves URLs through [`StoreRegistry`]) and raw pipeline inputs.
//!
//! A location is a URL or a plain path: `file:///…` or `/…` (local disk), `memory://…`,
//! `gs://bucket/…`, `s3://bucket/…` (also `s3a`, `s3n`), `hdfs://namenode:port/…`. Each store
//! root (`scheme://authority`) gets one object_store client, built from [`StorageOptions`] on
//! first use and wrapped in a [`CountingStore`] that counts requests and bytes by operation
//! and object kind (`system.storage_requests`).
//!
//! Object names are the URL path percent-decoded once (`Path::from_url_path`): a location
//! holding `delivery_date=2021-01-01` names an object with a literal `=`, never `%3D`.

mod cache;
mod counting;
mod gcs;
mod iceberg_io;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use rxgate_common::{redact_uri, Error, Result, StatusCode};
use serde::{Deserialize, Serialize};
use url::Url;

pub use cache::{FileCache, FileCacheStats};
pub use counting::{CountingStore, ObjectKind, Operation, RequestCount, StoreCounters};
pub use iceberg_io::{ObjectStorage, ObjectStorageFactory};

/// Files up to this size are written with one PUT; larger ones with a multipart upload
/// (on GCS emulators always one upload, see [`GcsOptions::json_upload`]).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;

/// Object-store settings (`[storage]` in conf/rxgate.toml).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageOptions {
    /// Google Cloud Storage (`gs://`).
    pub gcs: GcsOptions,
    /// Amazon S3 and compatible stores (`s3://`).
    pub s3: S3Options,
    /// HDFS (`hdfs://`).
    pub hdfs: HdfsOptions,
    /// Objects up to this many bytes are written with one request; `None`: 64 MiB.
    pub multipart_threshold: Option<u64>,
    /// Bytes of Iceberg data files the server keeps in memory for its scans (see
    /// [`FileCache`]); `None`: 1 GiB; 0: no cache.
    pub data_cache_bytes: Option<u64>,
}

/// The default of [`StorageOptions::data_cache_bytes`].
pub const DEFAULT_DATA_CACHE_BYTES: u64 = 1 << 30;

/// `[storage.gcs]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsOptions {
    /// Service-account JSON key file.
    pub service_account_path: Option<String>,
    /// Application-default credentials file (`gcloud auth application-default login` writes
    /// one; GOOGLE_APPLICATION_CREDENTIALS names one). Used when no service account is given.
    pub application_credentials: Option<String>,
    /// Endpoint override for emulators (fake-gcs-server), e.g. `http://127.0.0.1:4443`.
    pub endpoint: Option<String>,
    /// Send no credentials (default: true with an endpoint and no credentials files).
    pub anonymous: Option<bool>,
    /// Upload with the JSON API (`uploadType=media`, whole objects) instead of the XML API.
    /// Default: true with an endpoint: fake-gcs-server refuses XML PUT and multipart uploads.
    pub json_upload: Option<bool>,
    /// Allow plain http (default: true when the endpoint is http://).
    pub allow_http: Option<bool>,
}

/// `[storage.s3]`. Its Debug form hides the secret key and session token.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint override (MinIO, moto, …), e.g. `http://127.0.0.1:5000`.
    pub endpoint: Option<String>,
    /// Region (default us-east-1).
    pub region: Option<String>,
    /// Access key id (else the AWS environment / instance credentials).
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    #[serde(skip_serializing)]
    pub session_token: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`); default true with an endpoint.
    pub path_style: Option<bool>,
    /// Allow plain http (default: true when the endpoint is http://).
    pub allow_http: Option<bool>,
    /// Send unsigned requests.
    pub anonymous: Option<bool>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint.as_deref().map(redact_uri))
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// `[storage.hdfs]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HdfsOptions {
    /// Namenode of `hdfs:///path` locations, e.g. `hdfs://nn.example.internal:8020`.
    pub namenode: Option<String>,
    /// Extra Hadoop client settings (`dfs.*`, `fs.*`) passed to hdfs-native.
    pub config: BTreeMap<String, String>,
}

impl StorageOptions {
    /// Objects up to this many bytes are put whole.
    pub fn multipart_threshold(&self) -> u64 {
        self.multipart_threshold.unwrap_or(DEFAULT_MULTIPART_THRESHOLD)
    }
}

/// A location split into its store root (`scheme://authority`) and the object path inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLocation {
    /// `file:///`, `memory:///`, `gs://bucket`, `s3://bucket`, `hdfs://nn:8020`.
    pub root: Url,
    /// The object's name in that store (decoded: `a=b`, never `a%3Db`).
    pub path: Path,
}

/// Parses a location (URL or local path) into store root and object path.
pub fn parse_location(location: &str, options: &StorageOptions) -> Result<ObjectLocation> {
    let bad = |why: String| {
        Error::new(StatusCode::InvalidArgument, format!("bad storage location {:?}: {why}", redact_uri(location)))
    };
    if !location.contains("://") {
        if location.starts_with("memory:") {
            let rest = location.trim_start_matches("memory:");
            return Ok(ObjectLocation { root: root_url("memory:///")?, path: object_path(rest).map_err(bad)? });
        }
        let abs = std::path::absolute(location).map_err(|e| bad(e.to_string()))?;
        let path = Path::from_absolute_path(&abs).map_err(|e| bad(e.to_string()))?;
        return Ok(ObjectLocation { root: root_url("file:///")?, path });
    }
    let url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
    let scheme = url.scheme().to_ascii_lowercase();
    let path = object_path(url.path()).map_err(bad)?;
    let root = match scheme.as_str() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(bad("file:// URLs name the local machine only".into()));
            }
            "file:///".to_string()
        }
        "memory" => {
            // memory://a/b: the "host" is the first path segment.
            let mut p = url.host_str().unwrap_or_default().to_string();
            p.push_str(url.path());
            return Ok(ObjectLocation { root: root_url("memory:///")?, path: object_path(&p).map_err(bad)? });
        }
        "gs" | "gcs" => format!("gs://{}", bucket(&url).map_err(bad)?),
        "s3" | "s3a" | "s3n" => format!("s3://{}", bucket(&url).map_err(bad)?),
        "hdfs" | "viewfs" => match url.host_str().filter(|h| !h.is_empty()) {
            Some(host) => match url.port() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            },
            None => {
                let nn =
                    options.hdfs.namenode.as_deref().ok_or_else(|| {
                        bad("no namenode in the URL and no [storage.hdfs] namenode configured".into())
                    })?;
                let nn_url = Url::parse(nn).map_err(|e| bad(format!("[storage.hdfs] namenode {nn:?}: {e}")))?;
                nn_url.as_str().trim_end_matches('/').to_string()
            }
        },
        other => {
            return Err(Error::new(
                StatusCode::Unsupported,
                format!("storage scheme {other}:// is not supported (file, memory, gs, s3, hdfs)"),
            ))
        }
    };
    Ok(ObjectLocation { root: root_url(&root)?, path })
}

fn root_url(s: &str) -> Result<Url> {
    Url::parse(s).map_err(|e| Error::internal(format!("store root {s}: {e}")))
}

fn bucket(url: &Url) -> std::result::Result<String, String> {
    let b = url.host_str().unwrap_or_default();
    if b.is_empty() {
        return Err("the URL names no bucket".into());
    }
    Ok(b.to_string())
}

fn object_path(url_path: &str) -> std::result::Result<Path, String> {
    Path::from_url_path(url_path).map_err(|e| e.to_string())
}

/// The store key of a URL, as DataFusion's registry forms it (`scheme://host:port`).
fn url_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), &url[url::Position::BeforeHost..url::Position::AfterPort])
}

/// Every store of the process, one per store root, each behind its request counter.
///
/// Shared by the Iceberg FileIO ([`ObjectStorageFactory`]), the engine's DataFusion
/// `RuntimeEnv` (it implements DataFusion's `ObjectStoreRegistry`) and the ingest readers.
pub struct StoreRegistry {
    options: StorageOptions,
    stores: RwLock<HashMap<String, Arc<CountingStore>>>,
    data_cache: Arc<FileCache>,
}

impl std::fmt::Debug for StoreRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roots: Vec<String> = self.stores.read().expect("store lock").keys().cloned().collect();
        f.debug_struct("StoreRegistry").field("stores", &roots).finish()
    }
}

impl StoreRegistry {
    /// An empty registry; stores are built on first use.
    pub fn new(options: StorageOptions) -> Self {
        let data_cache = Arc::new(FileCache::new(options.data_cache_bytes.unwrap_or(DEFAULT_DATA_CACHE_BYTES)));
        Self { options, stores: RwLock::new(HashMap::new()), data_cache }
    }

    /// The cache of data files the lakehouse's scans read through.
    pub fn data_cache(&self) -> &Arc<FileCache> {
        &self.data_cache
    }

    /// The settings stores are built from.
    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    /// The store serving `location` and the object path inside it.
    pub fn resolve(&self, location: &str) -> Result<(Arc<CountingStore>, Path)> {
        let loc = parse_location(location, &self.options)?;
        Ok((self.store(&loc.root)?, loc.path))
    }

    /// The (counting) store of a store root URL, built on first use.
    pub fn store(&self, root: &Url) -> Result<Arc<CountingStore>> {
        let mut root = root.clone();
        if root.scheme() == "gcs" {
            let _ = root.set_scheme("gs");
        } else if matches!(root.scheme(), "s3a" | "s3n") {
            let _ = root.set_scheme("s3");
        }
        let key = url_key(&root);
        if let Some(s) = self.stores.read().expect("store lock").get(&key) {
            return Ok(s.clone());
        }
        let inner = build_store(&root, &self.options)?;
        let mut stores = self.stores.write().expect("store lock");
        let store = stores.entry(key.clone()).or_insert_with(|| Arc::new(CountingStore::new(key, inner))).clone();
        Ok(store)
    }

    /// Puts a store in place of the one `root` would build (tests, DataFusion registrations).
    pub fn register(&self, root: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        let key = url_key(root);
        let counting = Arc::new(CountingStore::new(key.clone(), store));
        self.stores.write().expect("store lock").insert(key, counting).map(|s| s as Arc<dyn ObjectStore>)
    }

    /// Reads a whole object.
    pub async fn read(&self, location: &str) -> Result<Bytes> {
        let (store, path) = self.resolve(location)?;
        let got = store.get(&path).await.map_err(|e| storage_error(location, e))?;
        got.bytes().await.map_err(|e| storage_error(location, e))
    }

    /// Writes a whole object (one request).
    pub async fn write(&self, location: &str, data: Bytes) -> Result<()> {
        let (store, path) = self.resolve(location)?;
        store.put(&path, data.into()).await.map_err(|e| storage_error(location, e))?;
        Ok(())
    }

    /// True when an object exists at `location`.
    pub async fn is_object(&self, location: &str) -> Result<bool> {
        let (store, path) = self.resolve(location)?;
        match store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(storage_error(location, e)),
        }
    }

    /// The objects under a "directory" location whose names end in `.ext` (any case), as full
    /// locations, sorted. A location that is itself an object is returned alone.
    pub async fn list_files(&self, location: &str, ext: &str) -> Result<Vec<String>> {
        let loc = parse_location(location, &self.options)?;
        let store = self.store(&loc.root)?;
        if !location.ends_with('/') && self.is_object(location).await? {
            return Ok(vec![location.to_string()]);
        }
        let metas: Vec<_> = store.list(Some(&loc.path)).try_collect().await.map_err(|e| storage_error(location, e))?;
        let suffix = format!(".{}", ext.to_ascii_lowercase());
        let base = location.trim_end_matches('/');
        let prefix = loc.path.as_ref();
        let mut out: Vec<String> = metas
            .into_iter()
            .map(|m| m.location)
            .filter(|p| p.as_ref().to_ascii_lowercase().ends_with(&suffix))
            // Direct children only, as a directory listing would give.
            .filter_map(|p| {
                let rest = p.as_ref().strip_prefix(prefix)?.trim_start_matches('/').to_string();
                (!rest.contains('/')).then(|| format!("{base}/{rest}"))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every object under `location` (recursively), each as its full location
    /// (`file:///w/t/x`, `gs://b/w/t/x`) with its metadata.
    pub async fn list_objects(&self, location: &str) -> Result<Vec<(String, object_store::ObjectMeta)>> {
        let loc = parse_location(location, &self.options)?;
        let store = self.store(&loc.root)?;
        let metas: Vec<object_store::ObjectMeta> =
            store.list(Some(&loc.path)).try_collect().await.map_err(|e| storage_error(location, e))?;
        let root = loc.root.to_string();
        // `file:///` + `w/t/x` → `file:///w/t/x`; `gs://b` + `w/t/x` → `gs://b/w/t/x`.
        let base = if root.ends_with(":///") { root } else { format!("{}/", root.trim_end_matches('/')) };
        Ok(metas.into_iter().map(|m| (format!("{base}{}", m.location), m)).collect())
    }

    /// Request counts of every store built so far, by store, operation and object kind.
    pub fn request_counts(&self) -> Vec<RequestCount> {
        let stores = self.stores.read().expect("store lock");
        let mut out: Vec<RequestCount> = stores.values().flat_map(|s| s.counters().snapshot(s.root())).collect();
        out.sort_by(|a, b| (&a.store, a.operation, a.kind).cmp(&(&b.store, b.operation, b.kind)));
        out
    }

    /// Total requests of all stores (all operations).
    pub fn total_requests(&self) -> u64 {
        self.stores.read().expect("store lock").values().map(|s| s.counters().total_requests()).sum()
    }

    /// The registry as DataFusion's `ObjectStoreRegistry`: give it to the `RuntimeEnv` so
    /// scans read through the same (counted) stores.
    pub fn datafusion(self: &Arc<Self>) -> Arc<dyn datafusion::execution::object_store::ObjectStoreRegistry> {
        Arc::new(DataFusionRegistry(self.clone()))
    }
}

/// DataFusion's view of a [`StoreRegistry`].
#[derive(Debug)]
struct DataFusionRegistry(Arc<StoreRegistry>);

impl datafusion::execution::object_store::ObjectStoreRegistry for DataFusionRegistry {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.0.register(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let loc = parse_location(url.as_str(), &self.0.options)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        self.0
            .store(&loc.root)
            .map(|s| s as Arc<dyn ObjectStore>)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

/// Builds the raw client of one store root.
fn build_store(root: &Url, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::new(StatusCode::StorageUnavailable, format!("cannot set up storage {}: {e}", redact_uri(root.as_str())))
    };
    match root.scheme() {
        "file" => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
        "memory" => Ok(Arc::new(object_store::memory::InMemory::new())),
        "gs" => gcs::build(root, &options.gcs, options.multipart_threshold()),
        "s3" => {
            let s3 = &options.s3;
            let bucket = root.host_str().unwrap_or_default();
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_retry(gcs::retry());
            if let Some(ep) = &s3.endpoint {
                b = b.with_endpoint(ep);
            }
            if let Some(k) = &s3.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = &s3.secret_access_key {
                b = b.with_secret_access_key(k);
            }
            if let Some(t) = &s3.session_token {
                b = b.with_token(t);
            }
            let path_style = s3.path_style.unwrap_or(s3.endpoint.is_some());
            b = b.with_virtual_hosted_style_request(!path_style);
            let http = s3.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
            b = b.with_allow_http(s3.allow_http.unwrap_or(http));
            if s3.anonymous == Some(true) {
                b = b.with_skip_signature(true);
            }
            Ok(Arc::new(b.build().map_err(|e| unavailable(&e))?))
        }
        "hdfs" | "viewfs" => {
            let config: HashMap<String, String> = options.hdfs.config.clone().into_iter().collect();
            let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
                .with_url(root.as_str().trim_end_matches('/'))
                .with_config(config)
                .build()
                .map_err(|e| unavailable(&e))?;
            Ok(Arc::new(store))
        }
        other => Err(Error::new(StatusCode::Unsupported, format!("storage scheme {other}:// is not supported"))),
    }
}

/// An object-store error of reading or writing a whole object (raw ingest inputs, reports)
/// as ours: classified by variant as `Error::from` does, except NotFound → InputUnavailable
/// (a named input missing); the message is the location and the error's first line, the
/// logged detail its full chain (both redacted).
pub fn storage_error(location: &str, e: object_store::Error) -> Error {
    let classified = Error::from_dyn(&e);
    let code = match &e {
        object_store::Error::NotFound { .. } => StatusCode::InputUnavailable,
        _ => classified.code,
    };
    Error::new(code, format!("{}: {}", redact_uri(location), classified.message)).with_source(&e)
}

#[cfg(test)]
mod tests;

/// The columns of `system.storage_requests`.
pub fn request_counts_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("store", DataType::Utf8, false),
        Field::new("operation", DataType::Utf8, false),
        Field::new("object_kind", DataType::Utf8, false),
        Field::new("requests", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
    ]))
}

impl StoreRegistry {
    /// The request counters as one batch of [`request_counts_schema`] (cumulative since the
    /// process started; one row per store, operation and object kind that saw a request).
    pub fn request_counts_batch(&self) -> Result<arrow::record_batch::RecordBatch> {
        use arrow::array::{Int64Array, StringArray};
        let rows = self.request_counts();
        let text = |f: &dyn Fn(&RequestCount) -> &str| -> arrow::array::ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let columns = vec![
            text(&|r| r.store.as_str()),
            text(&|r| r.operation.as_str()),
            text(&|r| r.kind.as_str()),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.requests as i64))) as _,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.bytes as i64))) as _,
        ];
        arrow::record_batch::RecordBatch::try_new(request_counts_schema(), columns)
            .map_err(|e| Error::internal(e.to_string()))
    }
}
