//! Where external tables may point: **external locations are confined.** A location (of a
//! table, or of a partition given or discovered) must lie under one of the configured
//! `[external] allowed_locations` prefixes (none by default: nothing is allowed until
//! configured), and must neither lie inside nor contain the warehouse or any Iceberg table's
//! location (an external table over Iceberg data files would read them without the table's
//! masks and row filters, which are matched by table name).
//!
//! Locations are compared after normalising: scheme and host lower-cased, a plain path is a
//! `file://` URL (relative paths made absolute), the path percent-decoded once, empty and `.`
//! segments dropped, `..` segments resolved, trailing slashes ignored; prefixes match whole
//! segments only (`/data/x` is not a prefix of `/data/xyz`). Local paths are also compared in
//! their canonical form (symbolic links resolved, for the longest existing ancestor), and
//! both forms must pass.

use std::path::{Path, PathBuf};

use rxgate_common::{Error, Result, StatusCode};

/// A location reduced to what decides where it points: scheme, authority, path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedLocation {
    scheme: String,
    authority: String,
    segments: Vec<String>,
}

fn invalid(location: &str, why: &str) -> Error {
    Error::new(StatusCode::InvalidArgument, format!("invalid location \"{location}\": {why}"))
}

/// Decodes `%XX` escapes once; a malformed escape is an error.
fn percent_decode(s: &str, location: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(location, "bad percent-encoding"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(location, "percent-encoding is not UTF-8"))
}

/// Splits a decoded path into segments: empty and `.` dropped, `..` resolved (never above
/// the root).
fn segments(path: &str, location: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = vec![];
    for seg in path.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s if s.contains('\0') => return Err(invalid(location, "NUL in path")),
            s => out.push(s.to_string()),
        }
    }
    Ok(out)
}

impl NormalizedLocation {
    /// Normalises a location: a URL (`file:///…`, `s3://bucket/…`, …) or a local path.
    pub fn parse(location: &str) -> Result<Self> {
        let loc = location.trim();
        if loc.is_empty() {
            return Err(invalid(location, "empty"));
        }
        if !loc.contains("://") {
            if loc.contains(':') && !loc.starts_with('/') && !loc.starts_with('.') {
                // `file:/x`, `c:…`: not a form we read.
                return Err(invalid(location, "use a URL with scheme://authority/path or an absolute path"));
            }
            let path = std::path::absolute(Path::new(loc)).map_err(|e| invalid(location, &e.to_string()))?;
            let text = path.to_str().ok_or_else(|| invalid(location, "not UTF-8"))?;
            return Ok(Self { scheme: "file".into(), authority: String::new(), segments: segments(text, location)? });
        }
        let url = url::Url::parse(loc).map_err(|e| invalid(location, &e.to_string()))?;
        let scheme = url.scheme().to_ascii_lowercase();
        let mut authority = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if let Some(port) = url.port() {
            authority.push_str(&format!(":{port}"));
        }
        if scheme == "file" && authority == "localhost" {
            authority.clear();
        }
        let path = percent_decode(url.path(), location)?;
        Ok(Self { scheme, authority, segments: segments(&path, location)? })
    }

    /// Whether `self` is `prefix` or lies under it (whole segments only).
    pub fn starts_with(&self, prefix: &Self) -> bool {
        self.scheme == prefix.scheme
            && self.authority == prefix.authority
            && self.segments.len() >= prefix.segments.len()
            && self.segments.iter().zip(&prefix.segments).all(|(a, b)| a == b)
    }

    /// Whether one of the two lies under the other.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.starts_with(other) || other.starts_with(self)
    }

    /// For a local path, the same location with symbolic links resolved (the longest
    /// existing ancestor canonicalised, the rest appended).
    fn canonical(&self) -> Option<Self> {
        if self.scheme != "file" {
            return None;
        }
        let mut existing = PathBuf::from("/");
        let mut split = 0;
        for (i, s) in self.segments.iter().enumerate() {
            let next = existing.join(s);
            if std::fs::symlink_metadata(&next).is_err() {
                break;
            }
            existing = next;
            split = i + 1;
        }
        let real = std::fs::canonicalize(&existing).ok()?;
        let mut segs = segments(real.to_str()?, "").ok()?;
        segs.extend(self.segments[split..].iter().cloned());
        Some(Self { scheme: self.scheme.clone(), authority: String::new(), segments: segs })
    }

    /// The forms a location is checked in: as written and, for local paths, canonical.
    fn forms(&self) -> Vec<Self> {
        let mut out = vec![self.clone()];
        if let Some(c) = self.canonical().filter(|c| c != self) {
            out.push(c);
        }
        out
    }
}

impl std::fmt::Display for NormalizedLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}/{}", self.scheme, self.authority, self.segments.join("/"))
    }
}

/// The configured `[external] allowed_locations`.
#[derive(Debug, Clone, Default)]
pub struct LocationPolicy {
    allowed: Vec<(String, NormalizedLocation)>,
}

impl LocationPolicy {
    /// A policy allowing locations under `prefixes` (URLs or absolute paths). An invalid
    /// prefix is an error (a configuration mistake must not widen or silently narrow it).
    pub fn new(prefixes: &[String]) -> Result<Self> {
        let allowed = prefixes
            .iter()
            .map(|p| NormalizedLocation::parse(p).map(|n| (p.clone(), n)))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| {
                Error::new(StatusCode::InvalidArgument, format!("[external] allowed_locations: {}", e.message))
            })?;
        Ok(Self { allowed })
    }

    /// The prefixes as configured.
    pub fn prefixes(&self) -> Vec<&str> {
        self.allowed.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// Ok when `location` lies under an allowed prefix and overlaps none of `protected`
    /// (`(what, location)`: the warehouse, Iceberg tables' locations); else 42501.
    pub fn check(&self, location: &str, protected: &[(String, String)]) -> Result<()> {
        let denied = |why: String| {
            Error::new(StatusCode::PermissionDenied, format!("external location \"{location}\" is not allowed: {why}"))
        };
        if self.allowed.is_empty() {
            return Err(denied("no external locations are allowed ([external] allowed_locations is empty)".into()));
        }
        let forms = NormalizedLocation::parse(location)?.forms();
        let prefixes: Vec<NormalizedLocation> = self.allowed.iter().flat_map(|(_, n)| n.forms()).collect();
        for form in &forms {
            if !prefixes.iter().any(|p| form.starts_with(p)) {
                return Err(denied(format!(
                    "it is not under [external] allowed_locations ({})",
                    self.prefixes().join(", ")
                )));
            }
        }
        for (what, loc) in protected {
            let Ok(p) = NormalizedLocation::parse(loc) else { continue };
            let pforms = p.forms();
            if forms.iter().any(|f| pforms.iter().any(|p| f.overlaps(p))) {
                return Err(denied(format!("it overlaps {what}, whose data is governed by the policy")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NormalizedLocation {
        NormalizedLocation::parse(s).unwrap()
    }

    #[test]
    fn normalises_scheme_authority_dots_encoding_and_slashes() {
        assert_eq!(n("/data/x"), n("file:///data/x/"));
        assert_eq!(n("/data/x"), n("FILE://localhost/data//x///"));
        assert_eq!(n("/data/x/./y/../"), n("/data/x"));
        assert_eq!(n("file:///data/%78"), n("/data/x"));
        assert_eq!(n("S3://Bucket/a/b/"), n("s3://bucket/a/b"));
        assert_ne!(n("s3://bucket/a"), n("gs://bucket/a"));
        assert_ne!(n("s3://bucket/a"), n("s3://other/a"));
        // Encoded dots and slashes resolve as what object_store reads.
        assert_eq!(n("file:///data/x/%2e%2e/%2E%2E/etc"), n("/etc"));
        assert_eq!(n("file:///data/x/..%2F..%2Fetc"), n("/etc"));
        assert_eq!(n("/data/x/../../../etc"), n("/etc"));
        assert!(NormalizedLocation::parse("file:///data/%zz").is_err());
        assert!(NormalizedLocation::parse("").is_err());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(n("/data/x/t").starts_with(&n("/data/x")));
        assert!(n("/data/x").starts_with(&n("/data/x/")));
        assert!(!n("/data/xyz").starts_with(&n("/data/x")));
        assert!(!n("/data/x/../xyz").starts_with(&n("/data/x")));
        assert!(!n("s3://b/data/x").starts_with(&n("/data/x")));
        assert!(n("/data").overlaps(&n("/data/x/t")));
    }

    #[test]
    fn policy_allows_only_under_prefixes_and_never_over_protected() {
        let none = LocationPolicy::new(&[]).unwrap();
        assert_eq!(none.check("/data/x", &[]).unwrap_err().code, StatusCode::PermissionDenied);
        let p = LocationPolicy::new(&["/data/ext".into(), "s3://lake/raw/".into()]).unwrap();
        p.check("/data/ext/t", &[]).unwrap();
        p.check("file:///data/ext/t/", &[]).unwrap();
        p.check("s3://LAKE/raw/t", &[]).unwrap();
        for bad in [
            "/data/extra",
            "/etc/default",
            "/data/ext/../../etc",
            "file:///data/ext/%2e%2e/x",
            "s3://lake/rawx",
            "gs://lake/raw/t",
        ] {
            assert_eq!(p.check(bad, &[]).unwrap_err().code, StatusCode::PermissionDenied, "{bad}");
        }
        let protected = vec![("the warehouse".to_string(), "file:///data/ext/wh".to_string())];
        assert_eq!(p.check("/data/ext/wh/health/t/data", &protected).unwrap_err().code, StatusCode::PermissionDenied);
        assert_eq!(p.check("/data/ext", &protected).unwrap_err().code, StatusCode::PermissionDenied);
        p.check("/data/ext/other", &protected).unwrap();
        assert!(LocationPolicy::new(&["file:///x/%zz".into()]).is_err());
    }

    #[test]
    fn symlinks_are_resolved_for_local_paths() {
        let dir = std::env::temp_dir().join(format!("rxgate-loc-{}", std::process::id()));
        let allowed = dir.join("allowed");
        let secret = dir.join("secret");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        let link = allowed.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let p = LocationPolicy::new(&[allowed.display().to_string()]).unwrap();
        p.check(&allowed.join("plain").display().to_string(), &[]).unwrap();
        let err = p.check(&link.join("t").display().to_string(), &[]).unwrap_err();
        assert_eq!(err.code, StatusCode::PermissionDenied);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
