//! The users file: one TOML table per user with roles, an optional connection limit and a
//! SCRAM-SHA-256 verifier. Never a password.
//!
//! ```toml
//! [users.analyst]
//! roles = ["analyst"]
//! max_connections = 10          # optional
//! scram_sha_256 = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
//! ```
//!
//! Writes are atomic (a temporary file in the same directory, fsync, rename) and the file is
//! created with mode 0600. Read-modify-write cycles of the CLI hold an exclusive lock on
//! `<file>.lock`, so two `rxgate user …` commands never lose each other's change.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rxgate_common::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::verifier::ScramVerifier;

/// Longest user or role name (PostgreSQL's NAMEDATALEN - 1).
pub const MAX_NAME_LEN: usize = 63;

/// A user as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Roles granted to the user (policies act on them).
    pub roles: Vec<String>,
    /// Concurrent sessions this user may hold; `None` falls back to the server default.
    pub max_connections: Option<u32>,
    /// The password verifier.
    pub verifier: ScramVerifier,
}

/// A user as written in the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    scram_sha_256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    users: BTreeMap<String, UserRecord>,
}

const HEADER: &str = "\
# rxgate users — written by `rxgate user add|passwd|remove`; edit with care.
#
# Passwords are never stored: each user has a SCRAM-SHA-256 verifier in PostgreSQL's
# pg_authid format, SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, which lets the
# server check a password but not recover it or log in with it. Keep this file private (0600):
# a verifier still allows offline guessing at <iterations> PBKDF2 rounds per guess.

";

/// Checks a user or role name: 1–63 characters, a letter or `_` first, then letters, digits,
/// `_`, `.`, `-` or `@`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'));
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {kind} name {name:?}: use 1-{MAX_NAME_LEN} characters, a letter or _ first, then letters, digits, _ . - @"
        )))
    }
}

/// The users of one users file, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<String, User>,
}

impl Users {
    /// Parses the file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: FileFormat =
            toml::from_str(text).map_err(|e| Error::invalid(format!("users file {origin}: {}", e.message())))?;
        let mut users = BTreeMap::new();
        for (name, rec) in file.users {
            let ctx = |e: Error| e.context(format!("users file {origin}, user {name:?}"));
            validate_name("user", &name).map_err(ctx)?;
            for r in &rec.roles {
                validate_name("role", r).map_err(ctx)?;
            }
            let verifier: ScramVerifier = rec.scram_sha_256.parse().map_err(ctx)?;
            users.insert(name.clone(), User { name, roles: rec.roles, max_connections: rec.max_connections, verifier });
        }
        Ok(Self { users })
    }

    /// Reads a users file; a missing file is an empty set of users.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::invalid(format!("cannot read users file {}: {e}", path.display()))),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let file = FileFormat {
            users: self
                .users
                .values()
                .map(|u| {
                    let rec = UserRecord {
                        roles: u.roles.clone(),
                        max_connections: u.max_connections,
                        scram_sha_256: u.verifier.to_string(),
                    };
                    (u.name.clone(), rec)
                })
                .collect(),
        };
        let body = toml::to_string(&file).expect("users serialise to TOML");
        format!("{HEADER}{body}")
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_private_atomically(path, self.render().as_bytes())
    }

    /// A user by name.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// All users in name order.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds a new user; an existing name is an error.
    pub fn add(&mut self, user: User) -> Result<()> {
        validate_name("user", &user.name)?;
        for r in &user.roles {
            validate_name("role", r)?;
        }
        if self.users.contains_key(&user.name) {
            return Err(Error::invalid(format!(
                "user {:?} already exists (change the password with `rxgate user passwd {}`)",
                user.name, user.name
            )));
        }
        self.users.insert(user.name.clone(), user);
        Ok(())
    }

    /// Replaces a user's verifier.
    pub fn set_verifier(&mut self, name: &str, verifier: ScramVerifier) -> Result<()> {
        let user = self.users.get_mut(name).ok_or_else(|| no_such_user(name))?;
        user.verifier = verifier;
        Ok(())
    }

    /// Removes a user.
    pub fn remove(&mut self, name: &str) -> Result<User> {
        self.users.remove(name).ok_or_else(|| no_such_user(name))
    }
}

fn no_such_user(name: &str) -> Error {
    Error::invalid(format!("no user {name:?}"))
}

/// An exclusive lock for a read-modify-write of the users file, released on drop.
#[derive(Debug)]
pub struct UsersFileLock {
    _file: File,
}

impl UsersFileLock {
    /// Blocks until the lock on `<path>.lock` is held.
    pub fn acquire(path: &Path) -> Result<Self> {
        let lock_path = sibling(path, ".lock");
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::invalid(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| Error::invalid(format!("cannot open {}: {e}", lock_path.display())))?;
        file.lock().map_err(|e| Error::invalid(format!("cannot lock {}: {e}", lock_path.display())))?;
        Ok(Self { _file: file })
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: a new 0600 file beside it, fsync, rename, fsync of the
/// directory. Readers see the old or the new content, never a mix, and never a wider mode.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |what: &str, p: &Path, e: std::io::Error| Error::invalid(format!("cannot {what} {}: {e}", p.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| err("create", &dir, e))?;
    let tmp = sibling(path, &format!(".tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err("create", &tmp, e))?;
        // The mode given to open() is filtered by the umask and ignored for an existing file.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| err("chmod", &tmp, e))?;
        f.write_all(bytes).map_err(|e| err("write", &tmp, e))?;
        f.sync_all().map_err(|e| err("sync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| err("replace", path, e))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::DEFAULT_ITERATIONS;

    fn user(name: &str, password: &str, roles: &[&str]) -> User {
        User {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            max_connections: None,
            verifier: ScramVerifier::new(password, DEFAULT_ITERATIONS).unwrap(),
        }
    }

    #[test]
    fn save_load_round_trip_without_plaintext_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/users.toml");
        let mut users = Users::default();
        users.add(user("admin", "hunter2-secret", &["admin"])).unwrap();
        let mut analyst = user("analyst", "another-secret", &["analyst", "reader"]);
        analyst.max_connections = Some(3);
        users.add(analyst).unwrap();
        users.save(&path).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hunter2-secret") && !text.contains("another-secret"), "{text}");
        assert!(text.contains("SCRAM-SHA-256$4096:"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let back = Users::load(&path).unwrap();
        assert_eq!(back, users);
        assert!(back.get("admin").unwrap().verifier.verify_password("hunter2-secret"));
        assert_eq!(back.get("analyst").unwrap().max_connections, Some(3));
        assert_eq!(back.get("analyst").unwrap().roles, vec!["analyst", "reader"]);
        // No temporary files are left behind.
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("users.toml")]);
    }

    #[test]
    fn rewrite_tightens_a_wide_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Users::default().save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn add_passwd_remove() {
        let mut users = Users::default();
        users.add(user("u1", "a", &[])).unwrap();
        assert!(users.add(user("u1", "b", &[])).is_err());
        users.set_verifier("u1", ScramVerifier::new("c", DEFAULT_ITERATIONS).unwrap()).unwrap();
        assert!(users.get("u1").unwrap().verifier.verify_password("c"));
        assert!(users.set_verifier("nobody", ScramVerifier::new("c", DEFAULT_ITERATIONS).unwrap()).is_err());
        users.remove("u1").unwrap();
        assert!(users.remove("u1").is_err());
        assert!(users.is_empty());
    }

    #[test]
    fn missing_file_is_empty_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Users::load(&dir.path().join("none.toml")).unwrap().is_empty());
        for bad in [
            "[users.x]\nscram_sha_256 = \"plaintext\"\n",
            "[users.x]\npassword = \"plaintext\"\nscram_sha_256 = \"x\"\n",
            "[users.\"bad name\"]\nscram_sha_256 = \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA\"\n",
            "users = 3\n",
        ] {
            assert!(Users::parse(bad, "test").is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn names() {
        for ok in ["rxgate", "admin", "_svc", "jane.doe@example.org", "a-b_c.d"] {
            validate_name("user", ok).unwrap();
        }
        for bad in ["", "1abc", "a b", "a\"b", "é", &"x".repeat(64)] {
            assert!(validate_name("user", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lock_is_exclusive_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let held = UsersFileLock::acquire(&path).unwrap();
        let f = OpenOptions::new().write(true).open(sibling(&path, ".lock")).unwrap();
        assert!(f.try_lock().is_err());
        drop(held);
        assert!(f.try_lock().is_ok());
    }
}
