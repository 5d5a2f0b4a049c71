//! Handshake (HTTP basic credentials → bearer token) and the sessions bearer tokens stand for.
//!
//! A token is 32 random bytes (base64url), bound to the user who logged in and to one engine
//! session. It stops working when:
//! - it was not used for `token_idle_timeout`, or `token_lifetime` passed since the login;
//! - the user's entry in the users file changed (password, roles, limit) or disappeared:
//!   every request compares it with the entry seen at login, so `rxgate user passwd|remove`
//!   revokes that user's tokens at their next use;
//! - the client closed its session (the `CloseSession` action).
//!
//! **Invariant:** no engine session is reachable without a live token; the handshake is the
//! only call that accepts a password, and it runs the same password check (same work, same
//! answer) for an unknown user as for a wrong password.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rxgate_auth::{random_bytes, Admission, Principal, User, UserDirectory};
use rxgate_common::{Channel, Identity, StatusCode};
use rxgate_engine::{Engine, EngineSession};
use tonic::Status;

use crate::prepared::Prepared;
use crate::status::{status, to_status};

/// Standard base64 that accepts credentials with or without padding (Go's Flight client
/// sends them unpadded).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How long tokens live and how many there may be.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// A token unused this long expires.
    pub idle_timeout: Duration,
    /// A token expires this long after the login, used or not.
    pub lifetime: Duration,
    /// Live tokens of all users together.
    pub max_sessions: u32,
    /// Live tokens of one user, unless the users file gives the user their own limit.
    pub max_sessions_per_user: Option<u32>,
    /// Of `max_sessions`, tokens only admin roles may take (at most `max_sessions - 1`).
    pub reserved_admin_sessions: u32,
    /// Time a Handshake may take, throttle delay and password check included.
    pub auth_timeout: Duration,
}

/// One logged-in client: its user, its engine session and its prepared statements.
pub(crate) struct FlightSession {
    /// Who logged in.
    pub(crate) principal: Principal,
    /// The engine session every statement of this token runs in.
    pub(crate) engine: EngineSession,
    /// The user's entry at login; a different entry now revokes the token.
    user_at_login: User,
    created: Instant,
    last_used: Mutex<Instant>,
    /// Prepared statements by handle.
    pub(crate) prepared: Mutex<HashMap<Vec<u8>, Arc<Prepared>>>,
}

impl FlightSession {
    pub(crate) fn user(&self) -> &str {
        &self.principal.user
    }
}

/// The live tokens.
pub(crate) struct Sessions {
    users: Arc<UserDirectory>,
    engine: Engine,
    limits: SessionLimits,
    tokens: Mutex<HashMap<String, Arc<FlightSession>>>,
}

fn unauthenticated() -> Status {
    status(StatusCode::AuthFailed, "missing, expired or revoked bearer token: log in again (Handshake)")
}

impl Sessions {
    pub(crate) fn new(users: Arc<UserDirectory>, engine: Engine, limits: SessionLimits) -> Self {
        Self { users, engine, limits, tokens: Mutex::new(HashMap::new()) }
    }

    /// Checks `authorization: Basic …` credentials and opens a session: returns its token.
    /// The whole login is bounded by the authentication timeout.
    pub(crate) async fn login(&self, authorization: Option<&str>, peer: Option<SocketAddr>) -> Result<String, Status> {
        match tokio::time::timeout(self.limits.auth_timeout, self.login_inner(authorization, peer)).await {
            Ok(r) => r,
            Err(_) => Err(status(StatusCode::AuthFailed, "authentication timed out")),
        }
    }

    /// Records a login attempt, or a throttle event (`error`), in the audit trail.
    fn audit(&self, user: &str, roles: &[String], peer: Option<SocketAddr>, error: Option<&rxgate_common::Error>) {
        self.engine.audit().login(user, roles, Channel::FlightSql, peer, error);
    }

    fn audit_throttle(&self, user: &str, peer: Option<SocketAddr>, event: &str) {
        tracing::warn!(user, ?peer, "flight sql: login throttle: {event}");
        let err = rxgate_common::Error::new(StatusCode::AuthFailed, format!("login throttle: {event}"));
        self.audit(user, &[], peer, Some(&err));
    }

    async fn login_inner(&self, authorization: Option<&str>, peer: Option<SocketAddr>) -> Result<String, Status> {
        let (user, password) = parse_basic(authorization.ok_or_else(|| {
            status(StatusCode::AuthFailed, "authentication required: send HTTP basic credentials with the Handshake")
        })?)?;
        let throttle = self.users.throttle().clone();
        let ip = peer.map(|p| p.ip());
        match throttle.admit(&user, ip) {
            Admission::Proceed { delay, event } => {
                if let Some(event) = event {
                    self.audit_throttle(&user, peer, &event);
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            Admission::Refused { message } => {
                self.audit_throttle(&user, peer, &format!("login refused: {message}"));
                return Err(status(StatusCode::AuthFailed, message));
            }
        }
        let users = self.users.clone();
        let name = user.clone();
        // PBKDF2 is CPU work: keep it off the async workers.
        let principal = tokio::task::spawn_blocking(move || users.verify_password(&name, &password))
            .await
            .map_err(crate::status::internal)?;
        let Some(principal) = principal else {
            tracing::info!(%user, ?peer, "flight sql: password authentication failed");
            let message = format!("password authentication failed for user \"{user}\"");
            self.audit(&user, &[], peer, Some(&rxgate_common::Error::new(StatusCode::AuthFailed, message.clone())));
            for event in throttle.failed(&user, ip) {
                self.audit_throttle(&user, peer, &event);
            }
            return Err(status(StatusCode::AuthFailed, message));
        };
        throttle.succeeded(&principal.user);
        let admin = {
            let (policy, _) = self.engine.policy().current();
            policy.is_admin(&policy.roles_of(&principal.user, &principal.roles))
        };
        let entry = self.users.users().map_err(to_status)?.get(&principal.user).cloned().ok_or_else(|| {
            status(StatusCode::AuthFailed, format!("password authentication failed for user \"{user}\""))
        })?;
        self.sweep();
        {
            let tokens = self.tokens.lock().expect("tokens lock");
            let max = self.limits.max_sessions.max(1);
            let reserved = self.limits.reserved_admin_sessions.min(max - 1);
            if tokens.len() >= max as usize {
                return Err(status(StatusCode::TooManyConnections, "too many Flight SQL sessions"));
            }
            if !admin && tokens.len() >= (max - reserved) as usize {
                return Err(status(
                    StatusCode::TooManyConnections,
                    "too many Flight SQL sessions: the remaining ones are reserved for admin roles",
                ));
            }
            let limit = entry.max_connections.or(self.limits.max_sessions_per_user);
            if let Some(limit) = limit {
                let held = tokens.values().filter(|s| s.principal.user == principal.user).count();
                if held >= limit as usize {
                    return Err(status(
                        StatusCode::TooManyConnections,
                        format!("too many sessions for user \"{}\"", principal.user),
                    ));
                }
            }
        }
        let identity = Identity {
            user: principal.user.clone(),
            roles: principal.roles.clone(),
            channel: Channel::FlightSql,
            client_addr: peer,
        };
        let engine = self.engine.session(identity).await.map_err(to_status)?;
        // ADBC's DB-API (paramstyle qmark) and JDBC write `?` placeholders.
        engine.set_question_mark_parameters(true);
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let now = Instant::now();
        let session = Arc::new(FlightSession {
            principal,
            engine,
            user_at_login: entry,
            created: now,
            last_used: Mutex::new(now),
            prepared: Mutex::new(HashMap::new()),
        });
        tracing::info!(user = %session.principal.user, ?peer, "flight sql: logged in");
        self.audit(&session.principal.user, &session.principal.roles, peer, None);
        self.tokens.lock().expect("tokens lock").insert(token.clone(), session);
        Ok(token)
    }

    /// The session of `authorization: Bearer <token>`, if the token is live.
    pub(crate) fn session(&self, authorization: Option<&str>) -> Result<Arc<FlightSession>, Status> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(unauthenticated)?;
        let session = self.tokens.lock().expect("tokens lock").get(token).cloned().ok_or_else(unauthenticated)?;
        let now = Instant::now();
        if !self.alive(&session, now) {
            self.tokens.lock().expect("tokens lock").remove(token);
            return Err(unauthenticated());
        }
        // The users file is re-read when it changed; a changed or removed entry revokes.
        let current = self.users.users().ok().and_then(|u| u.get(session.user()).cloned());
        if current.as_ref() != Some(&session.user_at_login) {
            tracing::info!(user = %session.user(), "flight sql: token revoked (user changed or removed)");
            self.tokens.lock().expect("tokens lock").remove(token);
            return Err(unauthenticated());
        }
        *session.last_used.lock().expect("last_used lock") = now;
        Ok(session)
    }

    /// Ends the session of a token (the client's CloseSession).
    pub(crate) fn close(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim) else { return false };
        self.tokens.lock().expect("tokens lock").remove(token).is_some()
    }

    fn alive(&self, s: &FlightSession, now: Instant) -> bool {
        let last = *s.last_used.lock().expect("last_used lock");
        // A session ended by pg_terminate_backend loses its token (its statements were
        // cancelled with it).
        now.duration_since(s.created) < self.limits.lifetime
            && now.duration_since(last) < self.limits.idle_timeout
            && !s.engine.is_terminated()
    }

    /// Drops expired tokens (and with them their engine sessions and prepared statements).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<Arc<FlightSession>> = {
            let mut tokens = self.tokens.lock().expect("tokens lock");
            let dead: Vec<String> =
                tokens.iter().filter(|(_, s)| !self.alive(s, now)).map(|(k, _)| k.clone()).collect();
            dead.iter().filter_map(|k| tokens.remove(k)).collect()
        };
        // Engine sessions are dropped outside the lock.
        drop(expired);
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(authorization: &str) -> Result<(String, String), Status> {
    let bad = || status(StatusCode::AuthFailed, "malformed basic credentials");
    let encoded = authorization
        .strip_prefix("Basic ")
        .or_else(|| authorization.strip_prefix("basic "))
        .ok_or_else(|| status(StatusCode::AuthFailed, "authentication required: send HTTP basic credentials"))?;
    let decoded = LENIENT_BASE64.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    if user.is_empty() {
        return Err(bad());
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_with_and_without_padding() {
        let padded = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ann:s3cr:et"));
        assert_eq!(parse_basic(&padded).unwrap(), ("ann".into(), "s3cr:et".into()));
        let unpadded = format!("Basic {}", base64::engine::general_purpose::STANDARD_NO_PAD.encode("bo:x"));
        assert_eq!(parse_basic(&unpadded).unwrap(), ("bo".into(), "x".into()));
        for bad in ["Bearer abc", "Basic !!!", "Basic ", "Basic Zm9v"] {
            assert_eq!(parse_basic(bad).unwrap_err().code(), tonic::Code::Unauthenticated, "{bad}");
        }
    }
}
