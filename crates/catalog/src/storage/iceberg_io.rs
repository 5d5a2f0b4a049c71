//! iceberg-rust's `Storage` over the [`StoreRegistry`]: the catalog's FileIO reads and writes
//! metadata, manifests and data files through the same counted object stores DataFusion uses.
//!
//! Writes are buffered: an object up to the multipart threshold is sent with one PUT when the
//! writer closes, a larger one becomes a multipart upload (object_store's `BufWriter`).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::{FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig, StorageFactory};
use iceberg::{Error, ErrorKind, Result};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{CountingStore, StorageOptions, StoreRegistry};

/// The `StorageFactory` given to the Iceberg SQL catalog: every FileIO it builds shares the
/// registry (its stores, clients and counters). Catalog/table `props` are not used: storage
/// is configured once, in `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStorageFactory {
    #[serde(skip, default = "default_registry")]
    registry: Arc<StoreRegistry>,
}

/// A deserialized factory or storage (iceberg's typetag round trip, unused in-process) has
/// no registry to share: it gets a fresh one with default options.
fn default_registry() -> Arc<StoreRegistry> {
    Arc::new(StoreRegistry::new(StorageOptions::default()))
}

impl ObjectStorageFactory {
    /// A factory over `registry`.
    pub fn new(registry: Arc<StoreRegistry>) -> Self {
        Self { registry }
    }
}

#[typetag::serde(name = "RxgateObjectStorageFactory")]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(ObjectStorage { registry: self.registry.clone() }))
    }
}

/// iceberg `Storage` over the registry; locations of any supported scheme.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStorage {
    #[serde(skip, default = "default_registry")]
    registry: Arc<StoreRegistry>,
}

fn io_error(location: &str, e: object_store::Error) -> Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::DataInvalid,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            ErrorKind::PreconditionFailed
        }
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            ErrorKind::FeatureUnsupported
        }
        _ => ErrorKind::Unexpected,
    };
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().to_string();
    Error::new(kind, format!("{}: {first}", rxgate_common::redact_uri(location))).with_source(e)
}

fn location_error(e: rxgate_common::Error) -> Error {
    let kind = if e.code == rxgate_common::StatusCode::Unsupported {
        ErrorKind::FeatureUnsupported
    } else {
        ErrorKind::DataInvalid
    };
    Error::new(kind, e.message)
}

impl ObjectStorage {
    fn resolve(&self, location: &str) -> Result<(Arc<CountingStore>, Path)> {
        self.registry.resolve(location).map_err(location_error)
    }
}

#[async_trait]
#[typetag::serde(name = "RxgateObjectStorage")]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let (store, p) = self.resolve(path)?;
        match store.head(&p).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (store, p) = self.resolve(path)?;
        let meta = store.head(&p).await.map_err(|e| io_error(path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (store, p) = self.resolve(path)?;
        let got = store.get_opts(&p, GetOptions::default()).await.map_err(|e| io_error(path, e))?;
        got.bytes().await.map_err(|e| io_error(path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let (store, p) = self.resolve(path)?;
        Ok(Box::new(ObjectRead { store, path: p, location: path.to_string() }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (store, p) = self.resolve(path)?;
        store.put(&p, bs.into()).await.map_err(|e| io_error(path, e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let (store, p) = self.resolve(path)?;
        let capacity = usize::try_from(self.registry.options().multipart_threshold()).unwrap_or(usize::MAX).max(1);
        let store: Arc<dyn ObjectStore> = store;
        Ok(Box::new(ObjectWrite {
            writer: Some(BufWriter::with_capacity(store, p, capacity)),
            location: path.to_string(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (store, p) = self.resolve(path)?;
        match store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (store, p) = self.resolve(path)?;
        let objects = store.list(Some(&p)).map_ok(|m| m.location).boxed();
        store
            .delete_stream(objects)
            .try_for_each(|_| futures::future::ready(Ok(())))
            .await
            .map_err(|e| io_error(path, e))
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Range reads of one object.
struct ObjectRead {
    store: Arc<CountingStore>,
    path: Path,
    location: String,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.store.get_range(&self.path, range).await.map_err(|e| io_error(&self.location, e))
    }
}

/// A buffered object writer (one PUT up to the threshold, multipart beyond).
struct ObjectWrite {
    writer: Option<BufWriter>,
    location: String,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, format!("{}: written after close", self.location)))?;
        w.put(bs).await.map_err(|e| io_error(&self.location, e))
    }

    async fn close(&mut self) -> Result<()> {
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, format!("{}: closed twice", self.location)))?;
        w.shutdown().await.map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("{}: {}", self.location, e.to_string().lines().next().unwrap_or_default()),
            )
            .with_source(e)
        })
    }
}
