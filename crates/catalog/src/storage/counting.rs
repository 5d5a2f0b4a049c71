//! Request counting: an `ObjectStore` wrapper that counts every request it forwards, by
//! operation (get, get_range, head, list, put, …) and by object kind (Iceberg table metadata,
//! manifests, Parquet data, other), with the bytes moved.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Whole-object read.
    Get,
    /// Byte-range read inside the object (Parquet column chunks, page indexes).
    GetRange,
    /// Byte-range read ending at the object's end: for Parquet files, the footer.
    GetTail,
    /// Metadata only (existence, size).
    Head,
    /// One listing call.
    List,
    /// Whole-object write.
    Put,
    /// Start of a multipart upload.
    PutMultipart,
    /// One part of a multipart upload.
    PutPart,
    /// Delete.
    Delete,
    /// Server-side copy or rename.
    Copy,
}

impl Operation {
    const ALL: [Operation; 10] = [
        Operation::Get,
        Operation::GetRange,
        Operation::GetTail,
        Operation::Head,
        Operation::List,
        Operation::Put,
        Operation::PutMultipart,
        Operation::PutPart,
        Operation::Delete,
        Operation::Copy,
    ];

    /// Lower-case name (`get_range`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::GetRange => "get_range",
            Operation::GetTail => "get_tail",
            Operation::Head => "head",
            Operation::List => "list",
            Operation::Put => "put",
            Operation::PutMultipart => "put_multipart",
            Operation::PutPart => "put_part",
            Operation::Delete => "delete",
            Operation::Copy => "copy",
        }
    }
}

/// What kind of object a request touched, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// Iceberg table metadata (`*.metadata.json`).
    Metadata,
    /// Iceberg manifests and manifest lists (`*.avro`).
    Manifest,
    /// Parquet files.
    Parquet,
    /// Anything else (CSV inputs, listings of prefixes, …).
    Other,
}

impl ObjectKind {
    const ALL: [ObjectKind; 4] = [ObjectKind::Metadata, ObjectKind::Manifest, ObjectKind::Parquet, ObjectKind::Other];

    /// Classifies an object name.
    pub fn of(path: &str) -> Self {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".metadata.json") {
            ObjectKind::Metadata
        } else if lower.ends_with(".avro") {
            ObjectKind::Manifest
        } else if lower.ends_with(".parquet") {
            ObjectKind::Parquet
        } else {
            ObjectKind::Other
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Metadata => "metadata",
            ObjectKind::Manifest => "manifest",
            ObjectKind::Parquet => "parquet",
            ObjectKind::Other => "other",
        }
    }
}

const OPS: usize = Operation::ALL.len();
const KINDS: usize = ObjectKind::ALL.len();

/// Counters of one store: requests and bytes per (operation, object kind).
#[derive(Debug, Default)]
pub struct StoreCounters {
    requests: [[AtomicU64; KINDS]; OPS],
    bytes: [[AtomicU64; KINDS]; OPS],
}

/// One row of a counter snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCount {
    /// Store root, e.g. `gs://bucket`.
    pub store: String,
    /// Operation.
    pub operation: Operation,
    /// Object kind.
    pub kind: ObjectKind,
    /// Requests made.
    pub requests: u64,
    /// Bytes read or written.
    pub bytes: u64,
}

impl StoreCounters {
    fn add(&self, op: Operation, path: &str, bytes: u64) {
        let (o, k) = (op as usize, ObjectKind::of(path) as usize);
        self.requests[o][k].fetch_add(1, Ordering::Relaxed);
        if bytes > 0 {
            self.bytes[o][k].fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Requests of one operation on one kind so far.
    pub fn requests(&self, op: Operation, kind: ObjectKind) -> u64 {
        self.requests[op as usize][kind as usize].load(Ordering::Relaxed)
    }

    /// Requests of every operation and kind.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().flatten().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The non-zero counters as rows.
    pub fn snapshot(&self, store: &str) -> Vec<RequestCount> {
        let mut out = vec![];
        for op in Operation::ALL {
            for kind in ObjectKind::ALL {
                let requests = self.requests(op, kind);
                if requests > 0 {
                    let bytes = self.bytes[op as usize][kind as usize].load(Ordering::Relaxed);
                    out.push(RequestCount { store: store.to_string(), operation: op, kind, requests, bytes });
                }
            }
        }
        out
    }
}

/// An object store that counts the requests it forwards to `inner`.
#[derive(Debug)]
pub struct CountingStore {
    root: String,
    inner: Arc<dyn ObjectStore>,
    counters: Arc<StoreCounters>,
}

impl CountingStore {
    /// Wraps `inner`, the store of `root` (`gs://bucket`, `file://`, …).
    pub fn new(root: String, inner: Arc<dyn ObjectStore>) -> Self {
        Self { root, inner, counters: Arc::new(StoreCounters::default()) }
    }

    /// The store root this store serves.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Its counters.
    pub fn counters(&self) -> &Arc<StoreCounters> {
        &self.counters
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.counters.add(Operation::Put, location.as_ref(), payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.counters.add(Operation::PutMultipart, location.as_ref(), 0);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload { inner, counters: self.counters.clone(), path: location.to_string() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = match &options.range {
            _ if options.head => Operation::Head,
            None | Some(GetRange::Offset(0)) => Operation::Get,
            Some(GetRange::Suffix(_)) => Operation::GetTail,
            Some(_) => Operation::GetRange,
        };
        let got = match self.inner.get_opts(location, options).await {
            Ok(got) => got,
            Err(e) => {
                self.counters.add(op, location.as_ref(), 0);
                return Err(e);
            }
        };
        // A range that turns out to end at the object's end is a tail (footer) read.
        let op = if op == Operation::GetRange && got.range.end == got.meta.size { Operation::GetTail } else { op };
        let bytes = if op == Operation::Head { 0 } else { got.range.end.saturating_sub(got.range.start) };
        self.counters.add(op, location.as_ref(), bytes);
        Ok(got)
    }

    // Not forwarded: the trait's default splits into (coalesced) get_range calls on `self`,
    // so each request is counted.
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        object_store::coalesce_ranges(
            ranges,
            |range| async move {
                let opts = GetOptions { range: Some(range.into()), ..Default::default() };
                self.get_opts(location, opts).await?.bytes().await
            },
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let counters = self.counters.clone();
        let counted = locations
            .map(move |p| {
                if let Ok(p) = &p {
                    counters.add(Operation::Delete, p.as_ref(), 0);
                }
                p
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.add(Operation::List, prefix.map(|p| p.as_ref()).unwrap_or_default(), 0);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.add(Operation::List, prefix.map(|p| p.as_ref()).unwrap_or_default(), 0);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.counters.add(Operation::List, prefix.map(|p| p.as_ref()).unwrap_or_default(), 0);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.counters.add(Operation::Copy, to.as_ref(), 0);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.counters.add(Operation::Copy, to.as_ref(), 0);
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload whose parts are counted.
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counters: Arc<StoreCounters>,
    path: String,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.counters.add(Operation::PutPart, &self.path, data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
