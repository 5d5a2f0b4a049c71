//! Console logins and the sessions their cookies stand for.
//!
//! A login checks the password with the users file's SCRAM verifier
//! (`UserDirectory::verify_password`, the check pgwire's `method = "password"` and Flight SQL's
//! Handshake use), behind the one `LoginThrottle`, and every attempt and throttle event goes
//! into the audit trail (`login (http): …`). A successful login gets 256 random bits from the
//! operating system's generator as its session id, kept here with the user, its roles, its
//! users-file entry, a CSRF token and one `EngineSession` (channel `http`) every page's
//! statements run in.
//!
//! A session ends when it was idle for `idle_timeout`, `lifetime` passed since the login, the
//! user's users-file entry changed or disappeared (`rxgate user passwd|remove`), or the user
//! logged out. **Invariant:** no engine session of the console exists without a live session
//! id, and only `login` accepts a password.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rxgate_auth::{random_bytes, Admission, Principal, User, UserDirectory};
use rxgate_common::{Channel, Error, Identity, StatusCode};
use rxgate_engine::{Engine, EngineSession};

/// The cookie that carries the session id.
pub const COOKIE: &str = "rxgate_console";

/// How long console sessions live and how many there may be.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Serve the console at all (`[http] console`, default true).
    pub enabled: bool,
    /// A session unused this long ends (`[http] console_session_idle_secs`, default 1800).
    pub idle_timeout: Duration,
    /// A session ends this long after its login (`[http] console_session_lifetime_secs`,
    /// default 43200).
    pub lifetime: Duration,
    /// Live console sessions of all users together (`[http] console_max_sessions`, default 256).
    pub max_sessions: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout: Duration::from_secs(1800),
            lifetime: Duration::from_secs(43200),
            max_sessions: 256,
        }
    }
}

/// One logged-in browser.
pub(crate) struct ConsoleSession {
    /// Who logged in.
    pub(crate) principal: Principal,
    /// Whether the policy in force at login gave the user an admin role (display only: the
    /// engine decides what each statement may do).
    pub(crate) admin: bool,
    /// The engine session every statement of this console session runs in.
    pub(crate) engine: EngineSession,
    /// Statements of one session run one at a time (the session's policy guard records what
    /// one statement applied, for its audit record).
    pub(crate) serial: tokio::sync::Mutex<()>,
    /// Sent back in `X-CSRF-Token` by every request that changes something.
    pub(crate) csrf: String,
    /// The engine's runtime, where this session's statements run.
    pub(crate) runtime: tokio::runtime::Handle,
    user_at_login: User,
    created: Instant,
    last_used: Mutex<Instant>,
}

/// Why a login was refused.
#[derive(Debug)]
pub(crate) enum LoginError {
    /// Wrong password, unknown user, throttled: 401.
    Refused(String),
    /// Too many console sessions: 503.
    Full(String),
    /// Anything else (the engine session did not open): 500.
    Failed(Error),
}

/// The live console sessions.
pub(crate) struct Sessions {
    users: Arc<UserDirectory>,
    engine: Engine,
    config: ConsoleConfig,
    runtime: tokio::runtime::Handle,
    live: Mutex<HashMap<String, Arc<ConsoleSession>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub(crate) fn new(
        users: Arc<UserDirectory>,
        engine: Engine,
        config: ConsoleConfig,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self { users, engine, config, runtime, live: Mutex::new(HashMap::new()) }
    }

    fn audit(&self, user: &str, roles: &[String], peer: Option<SocketAddr>, error: Option<&Error>) {
        self.engine.audit().login(user, roles, Channel::Http, peer, error);
    }

    fn audit_throttle(&self, user: &str, peer: Option<SocketAddr>, event: &str) {
        tracing::warn!(user, ?peer, "console: login throttle: {event}");
        let err = Error::new(StatusCode::AuthFailed, format!("login throttle: {event}"));
        self.audit(user, &[], peer, Some(&err));
    }

    /// Checks a user name and password; on success opens a session and returns its id.
    pub(crate) async fn login(
        &self,
        user: &str,
        password: String,
        peer: Option<SocketAddr>,
    ) -> Result<(String, Arc<ConsoleSession>), LoginError> {
        let throttle = self.users.throttle().clone();
        let ip = peer.map(|p| p.ip());
        match throttle.admit(user, ip) {
            Admission::Proceed { delay, event } => {
                if let Some(event) = event {
                    self.audit_throttle(user, peer, &event);
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            Admission::Refused { message } => {
                self.audit_throttle(user, peer, &format!("login refused: {message}"));
                return Err(LoginError::Refused(message));
            }
        }
        let users = self.users.clone();
        let name = user.to_string();
        // PBKDF2 is CPU work: keep it off the async workers.
        let principal = tokio::task::spawn_blocking(move || users.verify_password(&name, &password))
            .await
            .map_err(|e| LoginError::Failed(Error::internal(format!("password check: {e}"))))?;
        let failed = || format!("password authentication failed for user \"{user}\"");
        let Some(principal) = principal else {
            tracing::info!(%user, ?peer, "console: password authentication failed");
            self.audit(user, &[], peer, Some(&Error::new(StatusCode::AuthFailed, failed())));
            for event in throttle.failed(user, ip) {
                self.audit_throttle(user, peer, &event);
            }
            return Err(LoginError::Refused(failed()));
        };
        throttle.succeeded(&principal.user);
        let entry = self
            .users
            .users()
            .map_err(LoginError::Failed)?
            .get(&principal.user)
            .cloned()
            .ok_or_else(|| LoginError::Refused(failed()))?;
        let admin = {
            let (policy, _) = self.engine.policy().current();
            policy.is_admin(&policy.roles_of(&principal.user, &principal.roles))
        };
        self.sweep();
        if self.live.lock().expect("console sessions lock").len() >= self.config.max_sessions {
            let err = Error::new(StatusCode::TooManyConnections, "too many console sessions");
            self.audit(&principal.user, &principal.roles, peer, Some(&err));
            return Err(LoginError::Full(err.message));
        }
        let identity = Identity {
            user: principal.user.clone(),
            roles: principal.roles.clone(),
            channel: Channel::Http,
            client_addr: peer,
        };
        let engine = self.engine.session(identity).await.map_err(LoginError::Failed)?;
        let id = hex(&random_bytes::<32>());
        let now = Instant::now();
        let session = Arc::new(ConsoleSession {
            principal,
            admin,
            engine,
            serial: tokio::sync::Mutex::new(()),
            csrf: hex(&random_bytes::<16>()),
            runtime: self.runtime.clone(),
            user_at_login: entry,
            created: now,
            last_used: Mutex::new(now),
        });
        tracing::info!(user = %session.principal.user, ?peer, "console: logged in");
        self.audit(&session.principal.user, &session.principal.roles, peer, None);
        self.live.lock().expect("console sessions lock").insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session of a session id, if any (and marks it used).
    pub(crate) fn session(&self, id: &str) -> Option<Arc<ConsoleSession>> {
        let session = self.live.lock().expect("console sessions lock").get(id).cloned()?;
        let now = Instant::now();
        let current = self.users.users().ok().and_then(|u| u.get(&session.principal.user).cloned());
        if !self.alive(&session, now) || current.as_ref() != Some(&session.user_at_login) {
            self.live.lock().expect("console sessions lock").remove(id);
            return None;
        }
        *session.last_used.lock().expect("last_used lock") = now;
        Some(session)
    }

    /// Ends a session (logout).
    pub(crate) fn logout(&self, id: &str) -> bool {
        self.live.lock().expect("console sessions lock").remove(id).is_some()
    }

    fn alive(&self, s: &ConsoleSession, now: Instant) -> bool {
        let last = *s.last_used.lock().expect("last_used lock");
        now.duration_since(s.created) < self.config.lifetime && now.duration_since(last) < self.config.idle_timeout
    }

    /// Drops expired sessions (and with them their engine sessions).
    fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<Arc<ConsoleSession>> = {
            let mut live = self.live.lock().expect("console sessions lock");
            let dead: Vec<String> = live.iter().filter(|(_, s)| !self.alive(s, now)).map(|(k, _)| k.clone()).collect();
            dead.iter().filter_map(|k| live.remove(k)).collect()
        };
        drop(expired);
    }
}

/// The session id in a `Cookie` header, if it carries one of the right shape.
pub(crate) fn cookie_id(header: Option<&str>) -> Option<&str> {
    header?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value of a new session: HttpOnly, Secure, SameSite=Strict, the console's
/// path only, no lifetime of its own (the server ends the session).
pub(crate) fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/console")
}

/// The `Set-Cookie` value that removes the cookie (logout).
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age=0")
}

/// Compares two tokens in time independent of where they differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_checked() {
        let id = "a".repeat(64);
        let header = format!("other=1; {COOKIE}={id}; x=y");
        assert_eq!(cookie_id(Some(&header)), Some(id.as_str()));
        assert_eq!(cookie_id(Some(&format!("{COOKIE}=short"))), None);
        assert_eq!(cookie_id(Some(&format!("{COOKIE}={}", "z".repeat(64)))), None);
        assert_eq!(cookie_id(None), None);
    }

    #[test]
    fn the_cookie_is_secure_httponly_and_strict() {
        let c = set_cookie("ab");
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
            assert!(c.contains(part), "{c}");
        }
    }

    #[test]
    fn tokens_compare() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }
}
