//! Where raw inputs come from: a local path (or `file://` URL), or an object-store location
//! (`gs://bucket/raw/prescribers/`, `s3://…`, `hdfs://…`) read through the lakehouse's stores.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};

/// A local path for local locations (plain paths and `file://` URLs), else `None`.
pub fn local_path(location: &str) -> Option<PathBuf> {
    if let Some(rest) = location.strip_prefix("file://") {
        return url::Url::parse(location)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .or_else(|| Some(PathBuf::from(rest)));
    }
    (!location.contains("://")).then(|| PathBuf::from(location))
}

/// `location/child`, for paths and URLs alike.
pub fn join(location: &str, child: &str) -> String {
    match local_path(location) {
        Some(p) if !location.starts_with("file://") => p.join(child).display().to_string(),
        _ => format!("{}/{child}", location.trim_end_matches('/')),
    }
}

/// The input files: the location itself when it is a file (object), or the `*.ext` files
/// directly under it, sorted.
pub async fn list(lake: &Lakehouse, location: &str, ext: &str) -> Result<Vec<String>> {
    if let Some(path) = local_path(location) {
        return list_local(&path, ext).map(|v| v.into_iter().map(|p| p.display().to_string()).collect());
    }
    let files = lake.storage().list_files(location, ext).await?;
    if files.is_empty() {
        return Err(Error::new(StatusCode::InputUnavailable, format!("no .{ext} files in {location}")));
    }
    Ok(files)
}

fn list_local(path: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    if !path.exists() {
        return Err(Error::new(StatusCode::InputUnavailable, format!("input {} does not exist", path.display())));
    }
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::new(StatusCode::InputUnavailable, format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::new(StatusCode::InputUnavailable, format!("no .{ext} files in {}", path.display())));
    }
    Ok(files)
}

/// Reads one input file whole.
pub async fn read(lake: &Lakehouse, location: &str) -> Result<Bytes> {
    match local_path(location) {
        Some(path) => {
            let data = tokio::task::spawn_blocking(move || std::fs::read(&path).map_err(|e| (path, e)))
                .await
                .map_err(|e| Error::internal(format!("reader task: {e}")))?
                .map_err(|(p, e)| {
                    Error::new(StatusCode::InputUnavailable, format!("cannot read {}: {e}", p.display()))
                })?;
            Ok(Bytes::from(data))
        }
        None => lake.storage().read(location).await,
    }
}

/// The file name part of a location (progress bars).
pub fn file_name(location: &str) -> &str {
    location.trim_end_matches('/').rsplit('/').next().unwrap_or(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_local_paths() {
        assert_eq!(join("gs://b/raw", "cities"), "gs://b/raw/cities");
        assert_eq!(join("gs://b/raw/", "cities"), "gs://b/raw/cities");
        assert_eq!(join("/data/raw", "cities"), "/data/raw/cities");
        assert_eq!(join("file:///data/raw", "cities"), "file:///data/raw/cities");
        assert_eq!(local_path("file:///data/raw"), Some(PathBuf::from("/data/raw")));
        assert_eq!(local_path("var/raw"), Some(PathBuf::from("var/raw")));
        assert_eq!(local_path("s3://b/raw"), None);
        assert_eq!(file_name("gs://b/raw/p.csv"), "p.csv");
    }
}
