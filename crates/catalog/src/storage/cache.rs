//! A process-wide, byte-bounded cache of whole data files for the read path.
//!
//! Iceberg data files never change once written (a rewrite makes new files under new
//! names), so a file's bytes can be kept and served again without asking the store. The
//! first read of a file fetches it whole with one request; every later range read of it
//! (column chunks, pages, the footer) is a zero-copy slice of the cached bytes: no system
//! call, no copy out of the page cache, no fresh buffer to fault in, and on a remote store
//! no request. Files are evicted least recently used first when the cache passes its budget.
//! Files larger than half the budget are not cached (they are read as before).
//!
//! Only the lakehouse's Iceberg scans read through it ([`FileCache::store`]); external Hive
//! tables, whose files can be replaced in place, do not.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use tokio::sync::OnceCell;

/// One file's entry: filled once by the first reader, shared by concurrent ones.
#[derive(Debug, Default)]
struct Slot {
    /// The file's bytes and metadata, or `None` when it is too large to cache.
    data: OnceCell<Option<(Bytes, ObjectMeta)>>,
    /// Logical time of the last read, for LRU eviction.
    used: AtomicU64,
}

/// Hit, miss and eviction counts and the bytes held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Files fetched into the cache.
    pub misses: u64,
    /// Files evicted.
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// The cache (see the module doc). Keys are `store root` + object path.
#[derive(Debug)]
pub struct FileCache {
    budget: u64,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    clock: AtomicU64,
    bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// Data file bytes handed to readers (from the cache, or from the store for files too
    /// large to keep): the bytes scans read.
    scanned: AtomicU64,
    /// Parquet bloom filters of the data files, for pruning files before a scan opens them.
    blooms: crate::bloom::BloomFilters,
}

/// The bytes of bloom filters kept ([`crate::bloom`]): 16 KiB per row group of a 64 Ki-row
/// group, so thousands of files' worth.
const BLOOM_BUDGET: u64 = 64 * 1024 * 1024;

impl FileCache {
    /// A cache holding at most `budget` bytes (0: nothing is cached).
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            slots: Mutex::default(),
            clock: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            blooms: crate::bloom::BloomFilters::new(BLOOM_BUDGET),
        }
    }

    /// The bloom filters read so far (kept whatever the budget: they are small).
    pub fn blooms(&self) -> &crate::bloom::BloomFilters {
        &self.blooms
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Counters so far.
    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Data file bytes handed to readers so far (`rxgate_scanned_bytes_total`).
    pub fn scanned_bytes(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    /// `inner` (the store of `root`) with its reads served through this cache; `inner`
    /// itself when the cache is disabled.
    pub fn store(self: &Arc<Self>, root: &str, inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        if self.budget == 0 {
            return inner;
        }
        Arc::new(CachedStore { root: root.trim_end_matches('/').to_string(), inner, cache: self.clone() })
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let slot = self.slots.lock().expect("file cache lock").entry(key.to_string()).or_default().clone();
        slot.used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        slot
    }

    /// The whole file, fetched on first use; `None` when it is too large to cache.
    async fn file(&self, key: &str, inner: &dyn ObjectStore, location: &Path) -> Result<Option<(Bytes, ObjectMeta)>> {
        let slot = self.slot(key);
        let mut fetched = false;
        let got = slot
            .data
            .get_or_try_init(|| async {
                fetched = true;
                // The size is known before the body is read; a file too large to keep is
                // dropped unread and served by range reads as before.
                let got = inner.get(location).await?;
                if got.meta.size > self.budget / 2 {
                    return Ok::<_, object_store::Error>(None);
                }
                let meta = got.meta.clone();
                Ok(Some((got.bytes().await?, meta)))
            })
            .await?
            .clone();
        match (&got, fetched) {
            (Some((bytes, _)), true) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let held = self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
                if held > self.budget {
                    self.evict(key);
                }
            }
            (Some(_), false) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            (None, _) => {}
        }
        Ok(got)
    }

    /// Drops least recently used files (never `keep`) until the cache is within budget.
    fn evict(&self, keep: &str) {
        let mut slots = self.slots.lock().expect("file cache lock");
        let mut order: Vec<(u64, String, u64)> = slots
            .iter()
            .filter(|(k, _)| k.as_str() != keep)
            .filter_map(|(k, s)| {
                let size = s.data.get()?.as_ref().map_or(0, |(b, _)| b.len() as u64);
                Some((s.used.load(Ordering::Relaxed), k.clone(), size))
            })
            .collect();
        order.sort_unstable();
        for (_, key, size) in order {
            if self.bytes.load(Ordering::Relaxed) <= self.budget {
                break;
            }
            slots.remove(&key);
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A store whose plain reads go through a [`FileCache`]; everything else is forwarded.
#[derive(Debug)]
struct CachedStore {
    root: String,
    inner: Arc<dyn ObjectStore>,
    cache: Arc<FileCache>,
}

impl CachedStore {
    fn key(&self, location: &Path) -> String {
        format!("{}/{}", self.root, location)
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cached({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let conditional = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some();
        if options.head || conditional {
            return self.inner.get_opts(location, options).await;
        }
        let Some((bytes, meta)) = self.cache.file(&self.key(location), self.inner.as_ref(), location).await? else {
            let got = self.inner.get_opts(location, options).await?;
            self.cache.scanned.fetch_add(got.range.end.saturating_sub(got.range.start), Ordering::Relaxed);
            return Ok(got);
        };
        let range = match &options.range {
            None => 0..meta.size,
            Some(r) => r
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic { store: "file cache", source: Box::new(e) })?,
        };
        let slice = bytes.slice(range.start as usize..range.end as usize);
        self.cache.scanned.fetch_add(slice.len() as u64, Ordering::Relaxed);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(slice) }).boxed()),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match self.cache.file(&self.key(location), self.inner.as_ref(), location).await? {
            Some((bytes, meta)) => ranges
                .iter()
                .map(|r| {
                    if r.start > r.end || r.end > meta.size {
                        return Err(object_store::Error::Generic {
                            store: "file cache",
                            source: format!("range {r:?} outside {location} ({} bytes)", meta.size).into(),
                        });
                    }
                    self.cache.scanned.fetch_add(r.end - r.start, Ordering::Relaxed);
                    Ok(bytes.slice(r.start as usize..r.end as usize))
                })
                .collect(),
            None => {
                let got = self.inner.get_ranges(location, ranges).await?;
                let n: u64 = got.iter().map(|b| b.len() as u64).sum();
                self.cache.scanned.fetch_add(n, Ordering::Relaxed);
                Ok(got)
            }
        }
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
// Slices of one range are what these APIs take (row ranges, byte ranges).
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::storage::CountingStore;

    async fn setup() -> (Arc<FileCache>, Arc<CountingStore>, Arc<dyn ObjectStore>) {
        let mem = Arc::new(InMemory::new());
        for (name, size) in [("a.parquet", 100u8), ("b.parquet", 100), ("c.parquet", 100), ("big.parquet", 250)] {
            let data: Vec<u8> = (0..size).collect();
            mem.put(&Path::from(name), data.into()).await.unwrap();
        }
        let counting = Arc::new(CountingStore::new("memory://".into(), mem));
        let cache = Arc::new(FileCache::new(250));
        let store = cache.store("memory://", counting.clone());
        (cache, counting, store)
    }

    #[tokio::test]
    async fn ranges_after_the_first_read_cost_no_request() {
        let (cache, counting, store) = setup().await;
        let a = Path::from("a.parquet");
        assert_eq!(store.get_range(&a, 10..20).await.unwrap().as_ref(), &(10u8..20).collect::<Vec<_>>()[..]);
        let after_first = counting.counters().total_requests();
        assert_eq!(after_first, 1, "one whole get");
        let ranges = store.get_ranges(&a, &[0..3, 97..100]).await.unwrap();
        assert_eq!(ranges[1].as_ref(), &[97, 98, 99]);
        let tail =
            store.get_opts(&a, GetOptions { range: Some(object_store::GetRange::Suffix(2)), ..Default::default() });
        assert_eq!(tail.await.unwrap().bytes().await.unwrap().as_ref(), &[98, 99]);
        assert_eq!(counting.counters().total_requests(), after_first);
        assert!(store.get_ranges(&a, &[90..101]).await.is_err());
        assert_eq!(cache.stats(), FileCacheStats { hits: 3, misses: 1, evictions: 0, bytes: 100 });
    }

    #[tokio::test]
    async fn least_recently_used_files_are_evicted_and_large_ones_not_cached() {
        let (cache, counting, store) = setup().await;
        let (a, b, c, big) =
            (Path::from("a.parquet"), Path::from("b.parquet"), Path::from("c.parquet"), Path::from("big.parquet"));
        store.get_range(&a, 0..1).await.unwrap();
        store.get_range(&b, 0..1).await.unwrap();
        store.get_range(&a, 0..1).await.unwrap(); // a is now more recent than b
        store.get_range(&c, 0..1).await.unwrap(); // 300 bytes > 250: b goes
        let s = cache.stats();
        assert_eq!((s.evictions, s.bytes), (1, 200));
        let before = counting.counters().total_requests();
        store.get_range(&a, 5..6).await.unwrap();
        assert_eq!(counting.counters().total_requests(), before, "a stayed");
        store.get_range(&b, 5..6).await.unwrap();
        assert!(counting.counters().total_requests() > before, "b was evicted");
        // 250 bytes > half the budget: read through, every time.
        assert_eq!(store.get_range(&big, 240..250).await.unwrap().len(), 10);
        let before = counting.counters().total_requests();
        assert_eq!(store.get_range(&big, 0..5).await.unwrap().as_ref(), &[0, 1, 2, 3, 4]);
        assert_eq!(counting.counters().total_requests(), before + 1);
        assert!(cache.stats().bytes <= 250);
    }

    #[tokio::test]
    async fn a_zero_budget_is_no_cache() {
        let cache = Arc::new(FileCache::new(0));
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = cache.store("memory://", mem.clone());
        assert_eq!(store.to_string(), mem.to_string());
    }
}
