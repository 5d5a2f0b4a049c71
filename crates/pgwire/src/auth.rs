//! Startup and authentication: SCRAM-SHA-256 (and -PLUS over TLS), cleartext password only
//! on TLS connections, TLS enforcement and connection limits.
//!
//! The SCRAM exchange (RFC 5802 / RFC 7677) is run here rather than by pgwire's SASL handler,
//! because that handler needs the salted password itself (enough to log in as the user) and
//! one iteration count for everyone. We keep PostgreSQL's verifiers (StoredKey, ServerKey) and
//! check proofs with [`rxgate_auth::ScramVerifier`].
//!
//! Every failure during startup is FATAL: pgwire moves a connection whose startup error is not
//! fatal to ReadyForQuery, which would skip authentication.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::cancel::CancelRegistry;
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, DefaultServerParameterProvider,
    StartupHandler,
};
use pgwire::api::{
    ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use rxgate_auth::{Admission, Credentials, Principal, UserDirectory};
use rxgate_common::{Channel, StatusCode};
use rxgate_engine::{AuditLog, PolicyStore};
use tokio::sync::Notify;

/// SASL mechanism names.
const SCRAM: &str = "SCRAM-SHA-256";
const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel-binding type PostgreSQL defines.
const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 on every connection (SCRAM-SHA-256-PLUS offered over TLS).
    ScramSha256,
    /// Cleartext password on TLS connections; plaintext connections still use SCRAM.
    Password,
}

impl std::str::FromStr for AuthMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "scram-sha-256" => Ok(Self::ScramSha256),
            "password" => Ok(Self::Password),
            other => Err(format!("unknown auth method {other:?} (expected \"scram-sha-256\" or \"password\")")),
        }
    }
}

/// Authentication and admission settings of the PostgreSQL listener.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The method.
    pub method: AuthMethod,
    /// Refuse connections that did not negotiate TLS.
    pub tls_required: bool,
    /// Authenticated connections the server holds at once, all users together.
    pub max_connections: u32,
    /// Of `max_connections`, slots only admin roles may take (PostgreSQL's
    /// `superuser_reserved_connections`); at most `max_connections - 1` are reserved.
    pub reserved_admin_connections: u32,
    /// Connections still authenticating (TLS, startup, SCRAM) at once. A connection beyond it
    /// closes the one that has been authenticating longest, so silent sockets cannot keep
    /// anyone out.
    pub max_authenticating: u32,
    /// Time a connection has to finish TLS, startup and authentication; then it is closed.
    pub auth_timeout: std::time::Duration,
    /// Default per-user connection limit (a user's own `max_connections` wins); `None`: none.
    pub max_connections_per_user: Option<u32>,
    /// Iteration count of new verifiers, reported to clients as `scram_iterations` (psql's
    /// `\password` computes the verifier on the client with it).
    pub scram_iterations: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            method: AuthMethod::ScramSha256,
            tls_required: false,
            max_connections: 100,
            reserved_admin_connections: 3,
            max_authenticating: 32,
            auth_timeout: std::time::Duration::from_secs(10),
            max_connections_per_user: None,
            scram_iterations: rxgate_auth::DEFAULT_ITERATIONS,
        }
    }
}

/// The authenticated user of a connection, kept in its session extensions.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub(crate) Principal);

// --------------------------------------------------------------------------------------------
// Connection limits
// --------------------------------------------------------------------------------------------

/// The next ticket, and the connections still authenticating, oldest first, with their
/// eviction signal.
type Authenticating = (u64, VecDeque<(u64, Arc<Notify>)>);

/// Counts connections: authenticated ones globally (with slots reserved for admin roles) and
/// per user, and those still authenticating. Slots are released when dropped.
#[derive(Debug)]
pub(crate) struct Limits {
    max_total: u32,
    /// Slots of `max_total` only admins may take.
    reserved_admin: u32,
    total: AtomicU32,
    per_user: Mutex<HashMap<String, u32>>,
    max_authenticating: u32,
    /// Connections still authenticating, oldest first, with their eviction signal.
    authenticating: Mutex<Authenticating>,
}

/// One authenticated connection; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct GlobalSlot(Arc<Limits>);

/// One session of a user; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct UserSlot(Arc<Limits>, String);

/// One connection still authenticating; dropping it frees the slot. `evicted` is notified
/// when a newer connection needed the slot: the connection must then close.
#[derive(Debug)]
pub(crate) struct AuthenticatingSlot {
    limits: Arc<Limits>,
    id: u64,
    pub(crate) evicted: Arc<Notify>,
}

/// Why an authenticated connection gets no global slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// All `max_connections` are taken.
    All,
    /// Only the slots reserved for admin roles are left.
    ReservedForAdmins,
}

impl Limits {
    pub(crate) fn new(max_total: u32, reserved_admin: u32, max_authenticating: u32) -> Arc<Self> {
        let max_total = max_total.max(1);
        Arc::new(Self {
            max_total,
            reserved_admin: reserved_admin.min(max_total - 1),
            total: AtomicU32::new(0),
            per_user: Mutex::new(HashMap::new()),
            max_authenticating: max_authenticating.max(1),
            authenticating: Mutex::new((0, VecDeque::new())),
        })
    }

    /// A global slot for an authenticated connection: admins may take any of
    /// `max_connections`, others all but the reserved ones.
    pub(crate) fn try_global(self: &Arc<Self>, admin: bool) -> Result<GlobalSlot, Full> {
        let limit = if admin { self.max_total } else { self.max_total - self.reserved_admin };
        match self.total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)) {
            Ok(_) => Ok(GlobalSlot(self.clone())),
            Err(n) if n >= self.max_total => Err(Full::All),
            Err(_) => Err(Full::ReservedForAdmins),
        }
    }

    /// A slot for a connection that starts authenticating. Always granted: when
    /// `max_authenticating` connections are authenticating, the oldest is told to close.
    pub(crate) fn authenticating(self: &Arc<Self>) -> AuthenticatingSlot {
        let mut guard = self.authenticating.lock().unwrap_or_else(|p| p.into_inner());
        let (next, queue) = &mut *guard;
        while queue.len() >= self.max_authenticating as usize {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.notify_one();
            }
        }
        *next += 1;
        let id = *next;
        let evicted = Arc::new(Notify::new());
        queue.push_back((id, evicted.clone()));
        AuthenticatingSlot { limits: self.clone(), id, evicted }
    }

    /// Connections authenticating now.
    pub(crate) fn authenticating_now(&self) -> usize {
        self.authenticating.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }

    /// A slot for `user`, or `None` when the user already holds `limit` sessions.
    pub(crate) fn try_user(self: &Arc<Self>, user: &str, limit: Option<u32>) -> Option<UserSlot> {
        let mut map = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(user.to_string()).or_insert(0);
        if limit.is_some_and(|l| *n >= l) {
            if *n == 0 {
                map.remove(user);
            }
            return None;
        }
        *n += 1;
        Some(UserSlot(self.clone(), user.to_string()))
    }

    /// Authenticated connections open now.
    pub(crate) fn open(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }
}

/// Registers the open connection counts with the metrics registry (read at scrape time).
fn register_metrics(limits: &Arc<Limits>) {
    use rxgate_common::metrics::{Family, MetricType};
    let weak = Arc::downgrade(limits);
    rxgate_common::metrics::register_collector(
        "pgwire",
        Arc::new(move |out: &mut Vec<Family>| {
            let (open, authenticating) = weak.upgrade().map_or((0, 0), |l| (l.open() as usize, l.authenticating_now()));
            out.push(
                Family::new(
                    "rxgate_connections_open",
                    "Client connections open now, logged in or still authenticating.",
                    MetricType::Gauge,
                )
                .sample(&[("protocol", "pgwire")], (open + authenticating) as f64),
            );
        }),
    );
}

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        self.0.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for AuthenticatingSlot {
    fn drop(&mut self) {
        let mut guard = self.limits.authenticating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = guard.1.iter().position(|(id, _)| *id == self.id) {
            guard.1.remove(i);
        }
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut map = self.0.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

// --------------------------------------------------------------------------------------------
// Errors (all FATAL: see the module comment)
// --------------------------------------------------------------------------------------------

/// A FATAL startup error. Its SQLSTATE comes from the one table ([`StatusCode::sqlstate`]);
/// an internal error is shown only with an error id (logged with its detail).
fn fatal(code: StatusCode, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(crate::errors::error_info("FATAL", &rxgate_common::Error::new(code, message))))
}

/// The one answer to a wrong password, an unknown user or a failed proof.
fn auth_failed(user: &str) -> PgWireError {
    fatal(StatusCode::AuthFailed, format!("password authentication failed for user \"{user}\""))
}

fn malformed(what: &str) -> PgWireError {
    fatal(StatusCode::ProtocolViolation, format!("malformed SCRAM message: {what}"))
}

/// A startup error as the FATAL answer. pgwire's own errors (a message of the wrong kind, a
/// malformed one, a broken socket) get their SQLSTATE from our table too: a protocol
/// violation, or an internal error (shown only with an error id) for an API error.
fn fatalize(e: PgWireError) -> ErrorInfo {
    let mut info = match e {
        PgWireError::UserError(info) => *info,
        PgWireError::ApiError(inner) => crate::errors::error_info(
            "FATAL",
            &rxgate_common::Error::internal("startup failed").with_source(inner.as_ref()),
        ),
        other => crate::errors::error_info(
            "FATAL",
            &rxgate_common::Error::new(StatusCode::ProtocolViolation, other.to_string()),
        ),
    };
    info.severity = "FATAL".into();
    info
}

/// The answer to a query on a connection that never authenticated. `Connection::session`
/// gives it, so no engine session opens without a login whatever the protocol state says.
pub(crate) fn not_authenticated() -> PgWireError {
    fatal(StatusCode::InvalidAuthorization, "the connection is not authenticated")
}

// --------------------------------------------------------------------------------------------
// SCRAM messages
// --------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChannelBindingFlag {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<type>`: the client binds to the channel with this type.
    Bound(String),
}

#[derive(Debug, PartialEq, Eq)]
struct ClientFirst {
    flag: ChannelBindingFlag,
    /// `gs2-cbind-flag "," [authzid] ","`, exactly as sent.
    gs2_header: String,
    /// `client-first-message-bare`, exactly as sent.
    bare: String,
    nonce: String,
}

fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn parse_client_first(msg: &str) -> PgWireResult<ClientFirst> {
    let (flag, rest) = msg.split_once(',').ok_or_else(|| malformed("no GS2 header"))?;
    let flag = match flag {
        "n" => ChannelBindingFlag::None,
        "y" => ChannelBindingFlag::ClientOnly,
        f => match f.strip_prefix("p=") {
            Some(t) if !t.is_empty() => ChannelBindingFlag::Bound(t.to_string()),
            _ => return Err(malformed("bad channel-binding flag")),
        },
    };
    let (authzid, bare) = rest.split_once(',').ok_or_else(|| malformed("no GS2 header"))?;
    if !authzid.is_empty() {
        return Err(fatal(StatusCode::Unsupported, "client uses authorization identity, which is not supported"));
    }
    let gs2_header = msg[..msg.len() - bare.len()].to_string();
    let mut attrs = bare.split(',');
    // PostgreSQL ignores the SCRAM user name (libpq sends it empty): the startup user counts.
    match attrs.next() {
        Some(a) if a.starts_with("n=") => {}
        Some(a) if a.starts_with("m=") => return Err(malformed("mandatory extensions are not supported")),
        _ => return Err(malformed("expected n=")),
    }
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or_else(|| malformed("expected r="))?;
    if !is_printable_nonce(nonce) {
        return Err(malformed("bad nonce"));
    }
    Ok(ClientFirst { flag, gs2_header, bare: bare.to_string(), nonce: nonce.to_string() })
}

/// pgwire decodes a SASLInitialResponse without bounds checks (a cleartext password sent
/// instead panics it, and the connection closed without a word): the raw body must be a
/// mechanism name, then a length that matches the data (or -1 and no data).
fn check_sasl_initial(msg: &PasswordMessageFamily) -> PgWireResult<()> {
    let PasswordMessageFamily::Raw(body) = msg else { return Ok(()) };
    let well_formed = body.iter().position(|&b| b == 0).and_then(|nul| {
        let rest = &body[nul + 1..];
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let data = rest.len() - 4;
        ((len == -1 && data == 0) || usize::try_from(len).is_ok_and(|l| l == data)).then_some(())
    });
    match well_formed {
        Some(()) => Ok(()),
        None => Err(fatal(
            StatusCode::ProtocolViolation,
            "malformed SASL message: expected a SASLInitialResponse (this server does not accept a cleartext password here)",
        )),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    without_proof: &'a str,
    proof: &'a str,
}

fn parse_client_final(msg: &str) -> PgWireResult<ClientFinal<'_>> {
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or_else(|| malformed("expected p="))?;
    let mut attrs = without_proof.split(',');
    let channel_binding = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or_else(|| malformed("expected c="))?;
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or_else(|| malformed("expected r="))?;
    Ok(ClientFinal { channel_binding, nonce, without_proof, proof })
}

// --------------------------------------------------------------------------------------------
// The startup handler
// --------------------------------------------------------------------------------------------

/// What all connections share: the users, the method, TLS facts and the counters.
pub(crate) struct Gatekeeper {
    users: Arc<UserDirectory>,
    config: AuthConfig,
    /// `tls-server-end-point` data (hash of the server certificate) when TLS is on and the
    /// certificate's signature algorithm allows it.
    channel_binding: Option<Arc<Vec<u8>>>,
    limits: Arc<Limits>,
    params: DefaultServerParameterProvider,
    pids: RandomPidSecretKeyGenerator,
    cancels: Arc<CancelRegistry>,
    audit: Arc<AuditLog>,
    /// The policy in force, which says which roles are admins (reserved slots).
    policy: Arc<PolicyStore>,
}

impl Gatekeeper {
    pub(crate) fn new(
        users: Arc<UserDirectory>,
        config: AuthConfig,
        channel_binding: Option<Vec<u8>>,
        audit: Arc<AuditLog>,
        policy: Arc<PolicyStore>,
    ) -> Self {
        let mut params = DefaultServerParameterProvider::default();
        params.scram_iterations = config.scram_iterations as usize;
        params.is_superuser = false;
        // What clients learn at startup must agree with what version() and SHOW report.
        params.server_version = rxgate_engine::settings::PG_SERVER_VERSION.to_string();
        params.search_path = "health".to_string();
        let limits = Limits::new(config.max_connections, config.reserved_admin_connections, config.max_authenticating);
        register_metrics(&limits);
        Self {
            users,
            limits,
            config,
            channel_binding: channel_binding.map(Arc::new),
            params,
            pids: RandomPidSecretKeyGenerator::default(),
            cancels: Arc::default(),
            audit,
            policy,
        }
    }

    /// Where logged-in connections are found by their cancel key.
    pub(crate) fn cancels(&self) -> &Arc<CancelRegistry> {
        &self.cancels
    }

    pub(crate) fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    pub(crate) fn config(&self) -> &AuthConfig {
        &self.config
    }
}

struct ScramExchange {
    user: String,
    credentials: Credentials,
    /// What the client's `c=` must be, base64-decoded: GS2 header + channel-binding data.
    expected_binding: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

enum Phase {
    AwaitingStartup,
    AwaitingPassword { user: String },
    AwaitingSaslInitial { user: String, plus_offered: bool },
    AwaitingSaslFinal(Box<ScramExchange>),
    Done,
    Failed,
}

/// The startup handler of one connection.
pub(crate) struct Startup {
    gate: Arc<Gatekeeper>,
    phase: Mutex<Phase>,
}

impl Startup {
    pub(crate) fn new(gate: Arc<Gatekeeper>) -> Self {
        Self { gate, phase: Mutex::new(Phase::AwaitingStartup) }
    }

    fn take_phase(&self) -> Phase {
        std::mem::replace(&mut *self.phase.lock().unwrap_or_else(|p| p.into_inner()), Phase::Failed)
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    async fn step<C>(&self, client: &mut C, phase: Phase, message: PgWireFrontendMessage) -> PgWireResult<Phase>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match (phase, message) {
            (Phase::AwaitingStartup, PgWireFrontendMessage::Startup(startup)) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                if self.gate.config.tls_required && !client.is_secure() {
                    tracing::info!(peer = %client.socket_addr(), "refused: plaintext connection while TLS is required");
                    return Err(fatal(
                        StatusCode::InvalidAuthorization,
                        "TLS is required: this server refuses unencrypted connections (connect with sslmode=require or verify-full)",
                    ));
                }
                let user = client.metadata().get(METADATA_USER).cloned().filter(|u| !u.is_empty());
                let Some(user) = user else {
                    return Err(fatal(
                        StatusCode::InvalidAuthorization,
                        "no PostgreSQL user name specified in startup packet",
                    ));
                };
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                if self.gate.config.method == AuthMethod::Password && client.is_secure() {
                    client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
                    return Ok(Phase::AwaitingPassword { user });
                }
                let plus_offered = client.is_secure() && self.gate.channel_binding.is_some();
                let mut mechanisms = vec![];
                if plus_offered {
                    mechanisms.push(SCRAM_PLUS.to_string());
                }
                mechanisms.push(SCRAM.to_string());
                client.send(PgWireBackendMessage::Authentication(Authentication::SASL(mechanisms))).await?;
                Ok(Phase::AwaitingSaslInitial { user, plus_offered })
            }
            (Phase::AwaitingPassword { user }, PgWireFrontendMessage::PasswordMessageFamily(msg)) => {
                let password = msg.into_password()?.password;
                self.throttle(client, &user).await?;
                let users = self.gate.users.clone();
                let u = user.clone();
                // PBKDF2 off the async workers; the same work for unknown users.
                let principal = tokio::task::spawn_blocking(move || users.verify_password(&u, &password))
                    .await
                    .map_err(|_| fatal(StatusCode::Internal, "password check failed"))?;
                match principal {
                    Some(p) => {
                        self.admit(client, p, None).await?;
                        Ok(Phase::Done)
                    }
                    None => Err(self.reject(client, &user)),
                }
            }
            (Phase::AwaitingSaslInitial { user, plus_offered }, PgWireFrontendMessage::PasswordMessageFamily(msg)) => {
                check_sasl_initial(&msg)?;
                let initial = msg.into_sasl_initial_response()?;
                let data = initial.data.ok_or_else(|| malformed("empty client-first-message"))?;
                let text = std::str::from_utf8(&data).map_err(|_| malformed("not UTF-8"))?;
                let first = parse_client_first(text)?;
                let binding_data: &[u8] = match (initial.auth_method.as_str(), &first.flag) {
                    (SCRAM_PLUS, ChannelBindingFlag::Bound(t)) if plus_offered && t == TLS_SERVER_END_POINT => {
                        self.gate.channel_binding.as_deref().map(|v| v.as_slice()).unwrap_or_default()
                    }
                    (SCRAM_PLUS, ChannelBindingFlag::Bound(t)) if plus_offered => {
                        return Err(fatal(
                            StatusCode::Unsupported,
                            format!("unsupported SCRAM channel-binding type \"{t}\""),
                        ));
                    }
                    (SCRAM_PLUS, _) => {
                        return Err(fatal(StatusCode::ProtocolViolation, "SCRAM channel binding negotiation error"));
                    }
                    (SCRAM, ChannelBindingFlag::None) => &[],
                    // The client could bind but believes we cannot: a downgrade if we offered it.
                    (SCRAM, ChannelBindingFlag::ClientOnly) if !plus_offered => &[],
                    (SCRAM, _) => {
                        return Err(fatal(StatusCode::ProtocolViolation, "SCRAM channel binding negotiation error"))
                    }
                    (other, _) => {
                        return Err(fatal(
                            StatusCode::ProtocolViolation,
                            format!("client selected an invalid SASL authentication mechanism \"{other}\""),
                        ));
                    }
                };
                let credentials = self.gate.users.credentials(&user);
                let verifier = credentials.verifier();
                let nonce = format!("{}{}", first.nonce, B64.encode(rxgate_auth::random_bytes::<18>()));
                let server_first = format!("r={nonce},s={},i={}", B64.encode(verifier.salt()), verifier.iterations());
                let mut expected_binding = first.gs2_header.clone().into_bytes();
                expected_binding.extend_from_slice(binding_data);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(Bytes::from(
                        server_first.clone(),
                    ))))
                    .await?;
                Ok(Phase::AwaitingSaslFinal(Box::new(ScramExchange {
                    user,
                    credentials,
                    expected_binding,
                    client_first_bare: first.bare,
                    server_first,
                    nonce,
                })))
            }
            (Phase::AwaitingSaslFinal(x), PgWireFrontendMessage::PasswordMessageFamily(msg)) => {
                let response = msg.into_sasl_response()?;
                let text = std::str::from_utf8(&response.data).map_err(|_| malformed("not UTF-8"))?;
                let fin = parse_client_final(text)?;
                let binding = B64.decode(fin.channel_binding).map_err(|_| malformed("bad channel binding"))?;
                if binding != x.expected_binding {
                    return Err(fatal(StatusCode::InvalidAuthorization, "SCRAM channel binding check failed"));
                }
                if fin.nonce != x.nonce {
                    return Err(malformed("nonce mismatch"));
                }
                let proof = B64.decode(fin.proof).map_err(|_| malformed("bad proof"))?;
                self.throttle(client, &x.user).await?;
                let auth_message = format!("{},{},{}", x.client_first_bare, x.server_first, fin.without_proof);
                let verifier = x.credentials.verifier().clone();
                let ok = verifier.verify_client_proof(auth_message.as_bytes(), &proof);
                match x.credentials.accept(ok) {
                    Some(p) => {
                        let signature = B64.encode(verifier.server_signature(auth_message.as_bytes()));
                        self.admit(client, p, Some(Bytes::from(format!("v={signature}")))).await?;
                        Ok(Phase::Done)
                    }
                    None => Err(self.reject(client, &x.user)),
                }
            }
            (Phase::AwaitingStartup, _) => Err(fatal(StatusCode::ProtocolViolation, "expected a startup message")),
            (Phase::Done | Phase::Failed, _) => {
                Err(fatal(StatusCode::ProtocolViolation, "unexpected message during authentication"))
            }
            (_, _) => Err(fatal(StatusCode::ProtocolViolation, "expected a password response")),
        }
    }

    fn reject<C: ClientInfo>(&self, client: &C, user: &str) -> PgWireError {
        let known = self.gate.users.users().map(|u| u.get(user).is_some()).unwrap_or(false);
        // The log says which part was wrong; the client never learns it.
        tracing::warn!(
            peer = %client.socket_addr(),
            user,
            reason = if known { "wrong password" } else { "no such user" },
            "authentication failed"
        );
        let err = rxgate_common::Error::new(StatusCode::AuthFailed, "password authentication failed");
        self.gate.audit.login(user, &[], Channel::PgWire, Some(client.socket_addr()), Some(&err));
        for event in self.gate.users.throttle().failed(user, Some(client.socket_addr().ip())) {
            tracing::warn!(peer = %client.socket_addr(), user, "login throttle: {event}");
            self.audit_throttle(client, user, &event);
        }
        auth_failed(user)
    }

    /// Asks the login throttle before a password or proof is checked: waits the delay it
    /// gives, or refuses (28000) while the user or the address is locked out. Both are
    /// recorded in the audit trail.
    async fn throttle<C: ClientInfo>(&self, client: &C, user: &str) -> PgWireResult<()> {
        let peer = client.socket_addr();
        match self.gate.users.throttle().admit(user, Some(peer.ip())) {
            Admission::Proceed { delay, event } => {
                if let Some(event) = event {
                    tracing::warn!(%peer, user, "login throttle: {event}");
                    self.audit_throttle(client, user, &event);
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(())
            }
            Admission::Refused { message } => {
                tracing::warn!(%peer, user, "login throttle: refused: {message}");
                self.audit_throttle(client, user, &format!("login refused: {message}"));
                Err(fatal(StatusCode::InvalidAuthorization, message))
            }
        }
    }

    fn audit_throttle<C: ClientInfo>(&self, client: &C, user: &str, event: &str) {
        let err = rxgate_common::Error::new(StatusCode::AuthFailed, format!("login throttle: {event}"));
        self.gate.audit.login(user, &[], Channel::PgWire, Some(client.socket_addr()), Some(&err));
    }

    /// Takes a per-user slot, records who logged in and finishes the startup.
    async fn admit<C>(&self, client: &mut C, principal: Principal, sasl_final: Option<Bytes>) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.gate.users.throttle().succeeded(&principal.user);
        let limit = principal.max_connections.or(self.gate.config.max_connections_per_user);
        let Some(slot) = self.gate.limits.try_user(&principal.user, limit) else {
            tracing::info!(peer = %client.socket_addr(), user = %principal.user, "refused: per-user connection limit");
            let err = rxgate_common::Error::new(StatusCode::ResourcesExhausted, "too many connections for user");
            self.gate.audit.login(
                &principal.user,
                &principal.roles,
                Channel::PgWire,
                Some(client.socket_addr()),
                Some(&err),
            );
            return Err(fatal(
                StatusCode::TooManyConnections,
                format!("too many connections for user \"{}\"", principal.user),
            ));
        };
        let admin = {
            let (policy, _) = self.gate.policy.current();
            policy.is_admin(&policy.roles_of(&principal.user, &principal.roles))
        };
        let global = match self.gate.limits.try_global(admin) {
            Ok(g) => g,
            Err(full) => {
                let max = self.gate.config.max_connections;
                let message = match full {
                    Full::All => format!("sorry, too many connections (max_connections is {max})"),
                    Full::ReservedForAdmins => format!(
                        "too many connections: the remaining connection slots of {max} are reserved for admin roles"
                    ),
                };
                tracing::info!(peer = %client.socket_addr(), user = %principal.user, "refused: {message}");
                let err = rxgate_common::Error::new(StatusCode::ResourcesExhausted, message.clone());
                self.gate.audit.login(
                    &principal.user,
                    &principal.roles,
                    Channel::PgWire,
                    Some(client.socket_addr()),
                    Some(&err),
                );
                return Err(fatal(StatusCode::TooManyConnections, message));
            }
        };
        self.gate.audit.login(&principal.user, &principal.roles, Channel::PgWire, Some(client.socket_addr()), None);
        if let Some(data) = sasl_final {
            client.feed(PgWireBackendMessage::Authentication(Authentication::SASLFinal(data))).await?;
        }
        tracing::info!(
            peer = %client.socket_addr(),
            user = %principal.user,
            roles = %principal.roles.join(","),
            tls = client.is_secure(),
            "authenticated"
        );
        client.session_extensions().insert(slot);
        client.session_extensions().insert(global);
        client.session_extensions().insert(Authenticated(principal));
        let (pid, secret_key) = self.gate.pids.generate(&*client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (slot, guard) = self.gate.cancels.register(pid, &secret_key);
        client.session_extensions().insert(slot);
        if let Some(guard) = guard {
            client.session_extensions().insert(guard);
        }
        finish_authentication(client, &self.gate.params).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let phase = self.take_phase();
        match self.step(client, phase, message).await {
            Ok(next) => {
                self.set_phase(next);
                Ok(())
            }
            Err(e) => {
                // The phase stays Failed. pgwire 0.40 answers a startup error, shuts the socket
                // for writing, marks the connection ready for queries and goes on reading: a
                // client could still send queries (their answers would be lost, their effects
                // not). So we answer and shut the socket here; pgwire's own answer then fails
                // and ends the connection. `Connection::session` refuses any query anyway.
                let info = fatalize(e);
                let copy = ErrorInfo::new(info.severity.clone(), info.code.clone(), info.message.clone());
                let _ = client.send(PgWireBackendMessage::ErrorResponse(copy.into())).await;
                let _ = client.close().await;
                Err(PgWireError::UserError(Box::new(info)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_parses_like_libpq_sends_it() {
        let m = parse_client_first("n,,n=,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(m.flag, ChannelBindingFlag::None);
        assert_eq!(m.gs2_header, "n,,");
        assert_eq!(m.bare, "n=,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(m.nonce, "rOprNGfwEbeRWgbNEkqO");

        let p = parse_client_first("p=tls-server-end-point,,n=,r=abc,ext=1").unwrap();
        assert_eq!(p.flag, ChannelBindingFlag::Bound("tls-server-end-point".into()));
        assert_eq!(p.gs2_header, "p=tls-server-end-point,,");
        assert_eq!(p.bare, "n=,r=abc,ext=1");

        assert_eq!(parse_client_first("y,,n=user,r=x").unwrap().flag, ChannelBindingFlag::ClientOnly);
    }

    #[test]
    fn client_first_rejects_malformed_input() {
        for bad in [
            "",
            "n",
            "n,",
            "x,,n=,r=abc",
            "p=,,n=,r=a",
            "n,a=admin,n=,r=abc",
            "n,,m=ext,n=,r=a",
            "n,,n=",
            "n,,n=,r=",
            "n,,n=,r=a b",
        ] {
            assert!(parse_client_first(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn client_final_parses() {
        let f = parse_client_final("c=biws,r=abcdef,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        assert_eq!(f.channel_binding, "biws");
        assert_eq!(f.nonce, "abcdef");
        assert_eq!(f.without_proof, "c=biws,r=abcdef");
        assert_eq!(f.proof, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert!(parse_client_final("c=biws,r=abc").is_err());
        assert!(parse_client_final("r=abc,c=biws,p=x").is_err());
    }

    /// A whole exchange as a client computes it, checked with the server's verifier.
    #[test]
    fn full_exchange_against_a_stored_verifier() {
        use rxgate_auth::ScramVerifier;
        let salt = b"0123456789abcdef";
        let verifier = ScramVerifier::with_salt("pencil", salt, 4096);
        let first = parse_client_first("n,,n=,r=clientnonce").unwrap();
        let server_first = format!("r=clientnonceSERVER,s={},i=4096", B64.encode(salt));
        let without_proof = format!("c={},r=clientnonceSERVER", B64.encode(first.gs2_header.as_bytes()));
        let auth = format!("{},{server_first},{without_proof}", first.bare);

        // Client side (RFC 5802 §3), written out independently of the verifier code.
        use aws_lc_rs::{digest, hmac, pbkdf2};
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(4096).unwrap(),
            salt,
            b"pencil",
            &mut salted,
        );
        let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let signature = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()), auth.as_bytes());
        let proof: Vec<u8> = client_key.as_ref().iter().zip(signature.as_ref()).map(|(a, b)| a ^ b).collect();
        let server_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Server Key");
        let expected_server_sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()), auth.as_bytes());

        let fin_text = format!("{without_proof},p={}", B64.encode(&proof));
        let fin = parse_client_final(&fin_text).unwrap();
        assert_eq!(fin.without_proof, without_proof);
        assert!(verifier.verify_client_proof(auth.as_bytes(), &B64.decode(fin.proof).unwrap()));
        assert_eq!(verifier.server_signature(auth.as_bytes()).as_slice(), expected_server_sig.as_ref());
        assert!(!ScramVerifier::with_salt("pencil!", salt, 4096).verify_client_proof(auth.as_bytes(), &proof));
    }

    #[test]
    fn limits_count_and_release() {
        // Three slots, one of them reserved for admins.
        let limits = Limits::new(3, 1, 2);
        let a = limits.try_global(false).unwrap();
        let _b = limits.try_global(false).unwrap();
        assert_eq!(limits.try_global(false).unwrap_err(), Full::ReservedForAdmins);
        let _c = limits.try_global(true).unwrap();
        assert_eq!(limits.try_global(true).unwrap_err(), Full::All);
        assert_eq!(limits.open(), 3);
        drop(a);
        // Two held: the third slot is the reserved one.
        assert_eq!(limits.try_global(false).unwrap_err(), Full::ReservedForAdmins);
        assert!(limits.try_global(true).is_ok());
        // Never every slot reserved.
        assert!(Limits::new(2, 5, 1).try_global(false).is_ok());

        // Authenticating: the oldest is evicted when a third arrives.
        let first = limits.authenticating();
        let second = limits.authenticating();
        assert_eq!(limits.authenticating_now(), 2);
        let third = limits.authenticating();
        assert_eq!(limits.authenticating_now(), 2);
        let evicted = first.evicted.clone();
        assert!(futures::FutureExt::now_or_never(evicted.notified()).is_some(), "the oldest was told to close");
        assert!(futures::FutureExt::now_or_never(second.evicted.notified()).is_none());
        drop(first);
        assert_eq!(limits.authenticating_now(), 2);
        drop((second, third));
        assert_eq!(limits.authenticating_now(), 0);

        let u1 = limits.try_user("alice", Some(1)).unwrap();
        assert!(limits.try_user("alice", Some(1)).is_none());
        assert!(limits.try_user("bob", Some(1)).is_some());
        drop(u1);
        let _u2 = limits.try_user("alice", Some(1)).unwrap();
        // No limit: always admitted; a limit of 0 locks the user out.
        let _many: Vec<_> = (0..10).map(|_| limits.try_user("carol", None).unwrap()).collect();
        assert!(limits.try_user("dave", Some(0)).is_none());
        assert!(!limits.per_user.lock().unwrap().contains_key("dave"));
    }

    #[test]
    fn sasl_initial_response_is_checked_before_pgwire_decodes_it() {
        let raw = |b: &[u8]| PasswordMessageFamily::Raw(bytes::BytesMut::from(b));
        assert!(check_sasl_initial(&raw(b"SCRAM-SHA-256\0\0\0\0\x03abc")).is_ok());
        assert!(check_sasl_initial(&raw(b"SCRAM-SHA-256\0\xff\xff\xff\xff")).is_ok());
        for bad in [&b"secret\0"[..], b"secret", b"SCRAM-SHA-256\0\0\0\0\x09abc", b"M\0\xff\xff\xff\xfe"] {
            let e = check_sasl_initial(&raw(bad)).unwrap_err();
            assert_eq!(fatalize(e).code, "08P01", "{bad:?}");
        }
    }

    #[test]
    fn every_startup_error_is_fatal() {
        let info =
            fatalize(PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), "42000".into(), "x".into()))));
        assert!(info.is_fatal() && info.code == "42000");
        assert!(fatalize(PgWireError::InvalidSASLState).is_fatal());
        assert_eq!(fatalize(PgWireError::FailedToCoercePasswordMessage).code, "08P01");
        let api = fatalize(PgWireError::ApiError("secret detail".into()));
        assert_eq!(api.code, "XX000");
        assert!(
            api.message.starts_with("internal error (error id ") && !api.message.contains("secret"),
            "{}",
            api.message
        );
    }
}
