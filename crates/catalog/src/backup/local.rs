//! File copies between two places on this machine's file system (a local warehouse and a
//! local backup directory), which the object-store path would read whole into fresh memory
//! and write out again: here each file streams through one reused buffer per thread, its
//! CRC32C computed on the way, into a temporary name beside the destination that is renamed
//! into place only once the copy is complete and, when asked, checked. A crash or a failed
//! check leaves nothing under the final name.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};

use object_store::path::Path;
use rxgate_common::{Error, Result, StatusCode};
use url::Url;

use crate::storage::{parse_location, StorageOptions};

/// Bytes read and written at a time.
const CHUNK: usize = 1 << 20;

thread_local! {
    /// The copy buffer of this (blocking-pool) thread: its pages are touched once, not once
    /// per file.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The file behind an object path of a `file://` store, as object_store's local store maps
/// it (the path's percent-encoding decoded).
pub(crate) fn fs_path(path: &Path) -> Option<PathBuf> {
    Url::parse("file:///").ok()?.join(path.as_ref()).ok()?.to_file_path().ok()
}

/// The local file behind a lakehouse location, when the location is on this machine.
pub(crate) fn local_file(location: &str, options: &StorageOptions) -> Option<PathBuf> {
    let loc = parse_location(location, options).ok()?;
    (loc.root.scheme() == "file").then(|| fs_path(&loc.path)).flatten()
}

/// What a copy found: the bytes and their CRC32C.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copied {
    /// Bytes copied.
    pub size: u64,
    /// Their CRC32C.
    pub crc32c: u32,
}

/// Copies `from` to `to` (parents created) through this thread's buffer. `accept` sees the
/// size and CRC32C before the copy takes its name: `Err(problem)` removes it and is returned
/// as the inner error.
pub(crate) fn copy(
    from: &FsPath,
    to: &FsPath,
    accept: impl FnOnce(Copied) -> std::result::Result<(), String>,
) -> Result<std::result::Result<Copied, String>> {
    let io = io_error;
    let mut src = std::fs::File::open(from).map_err(|e| io("open", from, e))?;
    let parent = to.parent().ok_or_else(|| Error::invalid(format!("no directory above {}", to.display())))?;
    std::fs::create_dir_all(parent).map_err(|e| io("create directory", parent, e))?;
    let staging = staging_name(to);
    let written = BUFFER.with_borrow_mut(|buf| -> Result<Copied> {
        buf.resize(CHUNK, 0);
        let mut dst = std::fs::File::create(&staging).map_err(|e| io("create", &staging, e))?;
        let mut copied = Copied { size: 0, crc32c: 0 };
        loop {
            let n = match src.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("read", from, e)),
            };
            copied.crc32c = crc32c::crc32c_append(copied.crc32c, &buf[..n]);
            copied.size += n as u64;
            dst.write_all(&buf[..n]).map_err(|e| io("write", &staging, e))?;
        }
        Ok(copied)
    });
    let copied = match written {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
    };
    if let Err(problem) = accept(copied) {
        let _ = std::fs::remove_file(&staging);
        return Ok(Err(problem));
    }
    std::fs::rename(&staging, to).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        io("rename into", to, e)
    })?;
    Ok(Ok(copied))
}

/// The size and CRC32C of a file, read through this thread's buffer.
pub(crate) fn checksum(path: &FsPath) -> Result<Copied> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error("open", path, e))?;
    BUFFER.with_borrow_mut(|buf| {
        buf.resize(CHUNK, 0);
        let mut sum = Copied { size: 0, crc32c: 0 };
        loop {
            match file.read(buf) {
                Ok(0) => return Ok(sum),
                Ok(n) => {
                    sum.crc32c = crc32c::crc32c_append(sum.crc32c, &buf[..n]);
                    sum.size += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("read", path, e)),
            }
        }
    })
}

/// An I/O failure on `path`; a missing file is `InputUnavailable`, as object_store's
/// NotFound is through `storage_error` (a backup then takes a new cut).
fn io_error(what: &str, path: &FsPath, e: std::io::Error) -> Error {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::InputUnavailable,
        _ => StatusCode::StorageUnavailable,
    };
    Error::new(code, format!("{what} {}: {e}", path.display()))
}

/// `copy` on the blocking pool.
pub(crate) async fn copy_async(
    from: PathBuf,
    to: PathBuf,
    accept: impl FnOnce(Copied) -> std::result::Result<(), String> + Send + 'static,
) -> Result<std::result::Result<Copied, String>> {
    tokio::task::spawn_blocking(move || copy(&from, &to, accept))
        .await
        .map_err(|e| Error::internal(format!("file copy task: {e}")))?
}

/// A hidden sibling of `to`, unique to this process and copy.
fn staging_name(to: &FsPath) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    to.with_file_name(format!(".{name}.{}.{n}.part", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_carries_its_checksum_and_a_refused_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.bin");
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&from, &data).unwrap();
        let to = dir.path().join("x/y/a.bin");
        let copied = copy(&from, &to, |_| Ok(())).unwrap().unwrap();
        assert_eq!(copied.size, data.len() as u64);
        assert_eq!(copied.crc32c, crc32c::crc32c(&data));
        assert_eq!(std::fs::read(&to).unwrap(), data);
        assert_eq!(checksum(&to).unwrap().crc32c, copied.crc32c);
        let refused = dir.path().join("x/y/b.bin");
        let problem = copy(&from, &refused, |_| Err("checksum".into())).unwrap().unwrap_err();
        assert_eq!(problem, "checksum");
        assert!(!refused.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("x/y")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "only the accepted copy remains: {left:?}");
        let missing = copy(&dir.path().join("missing"), &refused, |_| Ok(())).unwrap_err();
        assert_eq!(missing.code, StatusCode::InputUnavailable);
    }

    #[test]
    fn object_paths_map_to_the_files_object_store_uses() {
        let p = Path::from_absolute_path("/tmp/w/state=CA/a b.parquet").unwrap();
        assert_eq!(fs_path(&p).unwrap(), PathBuf::from("/tmp/w/state=CA/a b.parquet"));
        let opts = StorageOptions::default();
        assert_eq!(local_file("file:///tmp/w/x.parquet", &opts).unwrap(), PathBuf::from("/tmp/w/x.parquet"));
        assert_eq!(local_file("/tmp/w/x.parquet", &opts).unwrap(), PathBuf::from("/tmp/w/x.parquet"));
        assert!(local_file("gs://b/x.parquet", &opts).is_none());
    }
}
