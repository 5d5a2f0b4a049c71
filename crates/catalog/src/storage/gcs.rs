//! Google Cloud Storage: object_store's client, plus uploads through the JSON API when asked
//! (the default with an emulator endpoint).
//!
//! fake-gcs-server (v1.54) serves the XML API for reads, listings and deletes, but answers an
//! XML `PUT /bucket/object` with 400 "invalid uploadType" and refuses XML multipart uploads
//! (`POST …?uploads`). [`JsonUploadGcs`] therefore writes every object whole with
//! `POST /upload/storage/v1/b/BUCKET/o?uploadType=media&name=NAME` (real GCS accepts it
//! too) and forwards reads and listings to object_store's client. Deletes go through the JSON
//! API too (`DELETE /storage/v1/b/BUCKET/o/NAME`): object_store 0.13's GCS delete asks for a
//! token even with `skip_signature`, which no emulator gives. The object name travels as a
//! query parameter, form-encoded once, so `delivery_date=2021-01-01` is stored as is.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, RetryConfig, UploadPart,
};
use rxgate_common::{Error, Result, StatusCode};
use url::Url;

use super::GcsOptions;

/// Builds the store of `gs://bucket`.
pub(super) fn build(root: &Url, opts: &GcsOptions, _threshold: u64) -> Result<Arc<dyn ObjectStore>> {
    let bucket = root.host_str().unwrap_or_default().to_string();
    let fail = |e: &dyn fmt::Display| {
        Error::new(
            StatusCode::StorageUnavailable,
            format!("cannot set up {}: {e}", rxgate_common::redact_uri(root.as_str())),
        )
    };
    let endpoint = opts.endpoint.as_deref().map(normalize_endpoint);
    let mut b = GoogleCloudStorageBuilder::new().with_bucket_name(&bucket).with_retry(retry());
    if let Some(p) = &opts.service_account_path {
        b = b.with_service_account_path(p);
    }
    if let Some(p) = &opts.application_credentials {
        b = b.with_application_credentials(p);
    }
    let has_credentials = opts.service_account_path.is_some() || opts.application_credentials.is_some();
    let anonymous = opts.anonymous.unwrap_or(endpoint.is_some() && !has_credentials);
    if anonymous {
        b = b.with_skip_signature(true);
    }
    if let Some(ep) = &endpoint {
        b = b.with_base_url(ep);
    }
    let http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
    let client_options = object_store::ClientOptions::new().with_allow_http(opts.allow_http.unwrap_or(http));
    b = b.with_client_options(client_options);
    let store = b.build().map_err(|e| fail(&e))?;
    if !opts.json_upload.unwrap_or(endpoint.is_some()) {
        return Ok(Arc::new(store));
    }
    let base = endpoint.unwrap_or_else(|| "https://storage.googleapis.com".to_string());
    let client =
        reqwest::Client::builder().https_only(!opts.allow_http.unwrap_or(http)).build().map_err(|e| fail(&e))?;
    Ok(Arc::new(JsonUploadGcs { inner: Arc::new(Inner { store, client, base, bucket, anonymous }) }))
}

/// `STORAGE_EMULATOR_HOST` style `host:port` becomes `http://host:port`.
fn normalize_endpoint(ep: &str) -> String {
    let ep = ep.trim_end_matches('/');
    if ep.contains("://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    }
}

/// Fewer, shorter retries than object_store's default (10 retries within 3 minutes): an
/// unreachable store should fail a query in seconds, not minutes.
pub(super) fn retry() -> RetryConfig {
    RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..Default::default() }
}

/// GCS with JSON-API uploads (see the module comment).
#[derive(Debug, Clone)]
pub(super) struct JsonUploadGcs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: GoogleCloudStorage,
    client: reqwest::Client,
    base: String,
    bucket: String,
    anonymous: bool,
}

impl fmt::Display for JsonUploadGcs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoogleCloudStorage(bucket={}, json uploads)", self.inner.bucket)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic { store: "GCS", source: Box::new(e) }
}

#[derive(Debug)]
struct Status(String);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Status {}

impl Inner {
    async fn upload(&self, location: &Path, data: Bytes, mode: &PutMode) -> object_store::Result<PutResult> {
        let mut url = Url::parse(&format!("{}/upload/storage/v1/b/{}/o", self.base, self.bucket)).map_err(generic)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("uploadType", "media").append_pair("name", location.as_ref());
            match mode {
                PutMode::Overwrite => {}
                PutMode::Create => {
                    q.append_pair("ifGenerationMatch", "0");
                }
                PutMode::Update(v) => {
                    if let Some(g) = &v.version {
                        q.append_pair("ifGenerationMatch", g);
                    }
                }
            }
        }
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, data.len())
            .body(data);
        if !self.anonymous {
            let cred = self.store.credentials().get_credential().await?;
            req = req.bearer_auth(&cred.bearer);
        }
        let resp = req.send().await.map_err(generic)?;
        let status = resp.status();
        let body = resp.text().await.map_err(generic)?;
        if !status.is_success() {
            let source: Box<dyn std::error::Error + Send + Sync> =
                Box::new(Status(format!("upload answered {status}: {}", body.chars().take(200).collect::<String>())));
            let path = location.to_string();
            return Err(match status.as_u16() {
                404 => object_store::Error::NotFound { path, source },
                412 if matches!(mode, PutMode::Create) => object_store::Error::AlreadyExists { path, source },
                412 => object_store::Error::Precondition { path, source },
                _ => object_store::Error::Generic { store: "GCS", source },
            });
        }
        let meta: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let text = |k: &str| meta.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Ok(PutResult { e_tag: text("etag"), version: text("generation") })
    }

    /// Deletes one object through the JSON API (object_store 0.13's GCS delete asks for a
    /// token even with `skip_signature`, which an emulator cannot give).
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        let name: String = url::form_urlencoded::byte_serialize(location.as_ref().as_bytes()).collect();
        let url = format!("{}/storage/v1/b/{}/o/{}", self.base, self.bucket, name.replace('+', "%20"));
        let mut req = self.client.delete(url);
        if !self.anonymous {
            let cred = self.store.credentials().get_credential().await?;
            req = req.bearer_auth(&cred.bearer);
        }
        let resp = req.send().await.map_err(generic)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let source: Box<dyn std::error::Error + Send + Sync> =
            Box::new(Status(format!("delete answered {status}: {}", body.chars().take(200).collect::<String>())));
        Err(match status.as_u16() {
            404 => object_store::Error::NotFound { path: location.to_string(), source },
            _ => object_store::Error::Generic { store: "GCS", source },
        })
    }
}

#[async_trait]
impl ObjectStore for JsonUploadGcs {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.upload(location, Bytes::from(payload), &opts.mode).await
    }

    /// Parts are kept in memory and sent as one upload on `complete`.
    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(WholeUpload { inner: self.inner.clone(), path: location.clone(), parts: vec![] }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.store.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        locations
            .map(move |location| {
                let inner = inner.clone();
                async move {
                    let location = location?;
                    inner.delete(&location).await?;
                    Ok(location)
                }
            })
            .buffered(8)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.store.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.store.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.store.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.store.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.store.rename_opts(from, to, options).await
    }
}

/// A "multipart" upload that is one JSON upload of the concatenated parts.
#[derive(Debug)]
struct WholeUpload {
    inner: Arc<Inner>,
    path: Path,
    parts: Vec<PutPayload>,
}

#[async_trait]
impl MultipartUpload for WholeUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(async { Ok(()) })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let len: usize = self.parts.iter().map(|p| p.content_length()).sum();
        let mut buf = Vec::with_capacity(len);
        for part in self.parts.drain(..) {
            for chunk in part.iter() {
                buf.extend_from_slice(chunk);
            }
        }
        self.inner.upload(&self.path, Bytes::from(buf), &PutMode::Overwrite).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts.clear();
        Ok(())
    }
}
