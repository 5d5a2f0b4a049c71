//! The running server's view of the users file.
//!
//! Each lookup checks whether the file changed (modification time, size, inode) and re-reads it
//! if so, so `rxgate user add|passwd|remove` take effect on the next login without a restart.
//! A file that becomes unreadable or invalid fails closed: every login is refused (and the
//! reason logged) until the file is fixed.
//!
//! Unknown users get a dummy verifier whose salt depends only on the user name and a
//! per-process key, so a login attempt costs the same and answers the same for an unknown user
//! as for a wrong password.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rxgate_common::{Error, Result, StatusCode};

use crate::store::{User, Users};
use crate::throttle::{LoginThrottle, ThrottleConfig};
use crate::verifier::{random_bytes, ScramVerifier};

/// Who logged in: the user and what the store says about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Login name.
    pub user: String,
    /// Roles granted to the user.
    pub roles: Vec<String>,
    /// The user's own connection limit, if the users file sets one.
    pub max_connections: Option<u32>,
}

impl From<&User> for Principal {
    fn from(u: &User) -> Self {
        Self { user: u.name.clone(), roles: u.roles.clone(), max_connections: u.max_connections }
    }
}

/// What a login checks against: the user's verifier, or a dummy one for an unknown user.
#[derive(Debug, Clone)]
pub struct Credentials {
    verifier: ScramVerifier,
    principal: Option<Principal>,
}

impl Credentials {
    /// The verifier to run the exchange with (a dummy one for unknown users).
    pub fn verifier(&self) -> &ScramVerifier {
        &self.verifier
    }

    /// The user, when a check against [`Credentials::verifier`] succeeded — never for an
    /// unknown user, whatever the check said.
    pub fn accept(self, check_passed: bool) -> Option<Principal> {
        if check_passed {
            self.principal
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Option<Stamp>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
struct Snapshot {
    stamp: Option<Stamp>,
    /// `Err` holds why the current file cannot be used.
    users: std::result::Result<Arc<Users>, String>,
}

/// The users file as the server sees it.
#[derive(Debug)]
pub struct UserDirectory {
    path: PathBuf,
    dummy_key: [u8; 32],
    snapshot: RwLock<Snapshot>,
    throttle: Arc<LoginThrottle>,
}

impl UserDirectory {
    /// Opens the users file at `path`. A missing file means no users (every login fails); an
    /// unreadable or invalid one is an error, so a server never starts on a broken file.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let stamp = stamp(&path).map_err(|e| Error::invalid(format!("users file {}: {e}", path.display())))?;
        let users = Users::load(&path)?;
        if stamp.is_some() {
            warn_if_readable_by_others(&path);
        }
        Ok(Self {
            path,
            dummy_key: random_bytes::<32>(),
            snapshot: RwLock::new(Snapshot { stamp, users: Ok(Arc::new(users)) }),
            throttle: Arc::new(LoginThrottle::default()),
        })
    }

    /// The same directory with a login throttle of these settings (the default otherwise).
    pub fn with_throttle(mut self, config: ThrottleConfig) -> Self {
        self.throttle = Arc::new(LoginThrottle::new(config));
        self
    }

    /// The failed-login counters every frontend consults before checking a password.
    pub fn throttle(&self) -> &Arc<LoginThrottle> {
        &self.throttle
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users as of now (re-read if the file changed).
    pub fn users(&self) -> Result<Arc<Users>> {
        self.refresh();
        let snap = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        snap.users.clone().map_err(|e| Error::new(StatusCode::AuthFailed, e))
    }

    /// The credentials to check a login of `user` against. An unknown user, or any user while
    /// the file is broken, gets a dummy verifier that accepts nothing.
    pub fn credentials(&self, user: &str) -> Credentials {
        let found = match self.users() {
            Ok(users) => users.get(user).map(|u| (u.verifier.clone(), Principal::from(u))),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e.message, "users file unusable: refusing logins");
                None
            }
        };
        match found {
            Some((verifier, principal)) => Credentials { verifier, principal: Some(principal) },
            None => Credentials { verifier: ScramVerifier::dummy(&self.dummy_key, user), principal: None },
        }
    }

    /// Checks a cleartext password (TLS-only password authentication, Flight SQL basic auth).
    /// Runs one PBKDF2 whether or not the user exists.
    pub fn verify_password(&self, user: &str, password: &str) -> Option<Principal> {
        let creds = self.credentials(user);
        let ok = creds.verifier().verify_password(password);
        creds.accept(ok)
    }

    fn refresh(&self) {
        let now = stamp(&self.path);
        {
            let snap = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
            if matches!(&now, Ok(s) if *s == snap.stamp) {
                return;
            }
        }
        let mut snap = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        match now {
            Ok(s) if s == snap.stamp => {}
            Ok(s) => {
                snap.users = Users::load(&self.path).map(Arc::new).map_err(|e| e.message);
                match &snap.users {
                    Ok(u) => tracing::info!(path = %self.path.display(), users = u.len(), "users file reloaded"),
                    Err(e) => tracing::error!(path = %self.path.display(), error = %e, "users file invalid"),
                }
                snap.stamp = s;
            }
            Err(e) => {
                snap.users = Err(format!("users file {}: {e}", self.path.display()));
                snap.stamp = None;
            }
        }
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", m.permissions().mode() & 0o777),
                "users file is readable by other users; `chmod 600` it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::DEFAULT_ITERATIONS;

    fn add(path: &Path, name: &str, password: &str, roles: &[&str]) {
        let mut users = Users::load(path).unwrap();
        users
            .add(User {
                name: name.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                max_connections: None,
                verifier: ScramVerifier::new(password, DEFAULT_ITERATIONS).unwrap(),
            })
            .unwrap();
        users.save(path).unwrap();
    }

    #[test]
    fn unknown_user_and_wrong_password_look_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        add(&path, "alice", "correct horse", &["analyst"]);
        let d = UserDirectory::open(&path).unwrap();

        let p = d.verify_password("alice", "correct horse").unwrap();
        assert_eq!(p, Principal { user: "alice".into(), roles: vec!["analyst".into()], max_connections: None });
        assert!(d.verify_password("alice", "wrong").is_none());
        assert!(d.verify_password("mallory", "correct horse").is_none());

        // Same iteration count, stable salt per unknown name, different across names.
        let real = d.credentials("alice");
        let ghost1 = d.credentials("mallory");
        let ghost2 = d.credentials("mallory");
        assert_eq!(real.verifier().iterations(), ghost1.verifier().iterations());
        assert_eq!(real.verifier().salt().len(), ghost1.verifier().salt().len());
        assert_eq!(ghost1.verifier().salt(), ghost2.verifier().salt());
        assert_ne!(ghost1.verifier().salt(), d.credentials("trudy").verifier().salt());
        // Even a "passed" check never admits an unknown user.
        assert!(ghost1.accept(true).is_none());
    }

    #[test]
    fn changes_to_the_file_are_seen_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let d = UserDirectory::open(&path).unwrap();
        assert!(d.verify_password("bob", "pw-1").is_none());
        add(&path, "bob", "pw-1", &[]);
        assert!(d.verify_password("bob", "pw-1").is_some());

        let mut users = Users::load(&path).unwrap();
        users.set_verifier("bob", ScramVerifier::new("pw-2", DEFAULT_ITERATIONS).unwrap()).unwrap();
        users.save(&path).unwrap();
        assert!(d.verify_password("bob", "pw-1").is_none());
        assert!(d.verify_password("bob", "pw-2").is_some());

        let mut users = Users::load(&path).unwrap();
        users.remove("bob").unwrap();
        users.save(&path).unwrap();
        assert!(d.verify_password("bob", "pw-2").is_none());
    }

    #[test]
    fn a_broken_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        add(&path, "carol", "pw", &[]);
        let d = UserDirectory::open(&path).unwrap();
        assert!(d.verify_password("carol", "pw").is_some());
        std::fs::write(&path, "this is [not toml").unwrap();
        assert!(d.verify_password("carol", "pw").is_none());
        assert!(d.users().is_err());
        // And a server does not start on it.
        assert!(UserDirectory::open(&path).is_err());
    }
}
