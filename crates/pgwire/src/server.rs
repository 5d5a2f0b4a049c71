//! The PostgreSQL listener: accepts connections and runs each on its own task, so a failing
//! or panicking connection never takes the server down. TLS and authentication are set up at
//! bind time; a TLS setup that fails stops the bind (fail closed).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, SinkExt, StreamExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::{ClientInfo, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message, MaybeTls};
use rxgate_auth::UserDirectory;
use rxgate_common::{Error, Result};
use rxgate_engine::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::auth::{AuthConfig, AuthenticatingSlot, Gatekeeper, Startup};
use crate::handler::{Connection, Handlers};
use crate::tls::{self, TlsConfig};

/// The connection's write buffer is flushed to the socket once it holds this much: large
/// results go out in large writes (tokio-util's default is 8 KiB).
const WRITE_BUFFER: usize = 256 * 1024;

/// Largest Bind or Parse message read whole to be checked before pgwire decodes it; a larger
/// one is left to pgwire's own length limit.
const MAX_CHECKED_MESSAGE: usize = 1 << 30;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct PgServerConfig {
    /// Address to listen on (`127.0.0.1:15432` by default).
    pub listen: String,
    /// Server certificate and key; `None` serves plaintext only.
    pub tls: Option<TlsConfig>,
    /// Authentication method, TLS requirement and connection limits.
    pub auth: AuthConfig,
}

/// A bound PostgreSQL-wire server.
pub struct PgServer {
    engine: Engine,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gatekeeper>,
}

impl PgServer {
    /// Binds the listener (port 0 picks a free port; see [`PgServer::local_addr`]). Fails when
    /// the TLS certificate or key cannot be used, or when TLS is required but not configured.
    pub async fn bind(engine: Engine, config: &PgServerConfig, users: Arc<UserDirectory>) -> Result<Self> {
        let tls = match &config.tls {
            Some(t) => Some(tls::load(t)?),
            None if config.auth.tls_required => {
                return Err(Error::invalid(
                    "TLS setup failed: TLS is required but no certificate and key are configured",
                ));
            }
            None => None,
        };
        let (acceptor, binding) = match tls {
            Some(t) => (Some(t.acceptor), t.channel_binding),
            None => (None, None),
        };
        register_login_throttle(&users);
        let gate = Arc::new(Gatekeeper::new(
            users,
            config.auth.clone(),
            binding,
            engine.audit().clone(),
            engine.policy().clone(),
        ));
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", config.listen)))?;
        Ok(Self { engine, listener, tls: acceptor, gate })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Whether clients can negotiate TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves; open connections finish on their own tasks.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    // Every connection first takes an authenticating slot (the oldest one
                    // authenticating is closed when they are all taken); the global and
                    // per-user slots are taken once the user is known.
                    let authenticating = self.gate.limits().authenticating();
                    let _ = socket.set_nodelay(true);
                    let startup = Startup::new(self.gate.clone());
                    let conn = Connection::new(self.engine.clone(), peer);
                    let handlers = Arc::new(Handlers::new(conn, startup, self.gate.cancels().clone()));
                    let tls = self.tls.clone();
                    let timeout = self.gate.config().auth_timeout;
                    tokio::spawn(async move {
                        tracing::debug!(%peer, "connection opened");
                        if let Err(e) = serve_connection(socket, tls, handlers, authenticating, timeout).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
    }

    /// The authentication settings in force.
    pub fn auth_config(&self) -> &AuthConfig {
        self.gate.config()
    }
}

/// Makes `system.login_throttle` show the users directory's login throttle (shared with
/// Flight SQL, which uses the same directory).
fn register_login_throttle(users: &Arc<UserDirectory>) {
    let throttle = users.throttle().clone();
    rxgate_engine::set_login_throttle_source(Arc::new(move || {
        throttle
            .snapshot()
            .into_iter()
            .map(|r| rxgate_engine::LoginThrottleRow {
                scope: r.scope.to_string(),
                key: r.key,
                failures: u64::from(r.failures),
                delay_ms: r.delay_ms,
                locked_secs: r.locked_secs,
                last_failure: chrono::DateTime::<chrono::Utc>::from(r.last_failure)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            })
            .collect()
    }));
}

/// One connection: TLS negotiation, then pgwire's message handling, message by message, as
/// pgwire's `process_socket` does, except that:
/// - TLS, startup and authentication must end within `auth_timeout`, and end at once when a
///   newer connection takes this one's authenticating slot (`slot.evicted`);
/// - a message that cannot be decoded, or a Bind/Parse whose counts and lengths do not add
///   up, is answered with FATAL 08P01 (protocol violation) before the connection closes, as
///   PostgreSQL does, and never reaches pgwire's decoder (which panics on some);
/// - while a message is handled, the socket is watched: a peer that goes away cancels the
///   running statement and drops it (and the memory it holds) at once;
/// - the write buffer is larger.
async fn serve_connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Arc<Handlers>,
    slot: AuthenticatingSlot,
    auth_timeout: Duration,
) -> std::io::Result<()> {
    let deadline = tokio::time::sleep(auth_timeout);
    tokio::pin!(deadline);
    let evicted = slot.evicted.clone();
    let mut slot = Some(slot);
    let negotiated = tokio::select! {
        _ = &mut deadline => return Ok(()),
        _ = evicted.notified() => return Ok(()),
        socket = negotiate_tls(tcp, tls) => socket?,
    };
    let Some(mut socket) = negotiated else { return Ok(()) };
    socket.set_backpressure_boundary(WRITE_BUFFER);
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let mut watcher: Option<PeerWatch> = None;
    let peer = socket.socket_addr();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        if !starting && slot.is_some() {
            // Authenticated (or refused and closing): the authenticating slot is free again.
            slot = None;
            watcher = PeerWatch::new(socket.get_ref());
            // The engine session opens at login (not at the first statement), so an idle
            // connection is listed in pg_stat_activity and can be terminated. A refused
            // login has no session (the error is that).
            let _ = handlers.connection().session(&socket).await;
        }
        let next = if starting {
            // pgwire's decoder panics on some truncated messages: that is a malformed message too.
            let read = AssertUnwindSafe(socket.next()).catch_unwind();
            tokio::select! {
                _ = &mut deadline => {
                    tracing::debug!(%peer, "closing a connection that did not authenticate in time");
                    break;
                }
                _ = evicted.notified() => {
                    tracing::info!(%peer, "closing a connection still authenticating: too many connections authenticating");
                    break;
                }
                m = read => m,
            }
        } else {
            let terminated = handlers.connection().terminated();
            let problem = tokio::select! {
                read = read_whole_message(&mut socket) => read?,
                _ = terminated => {
                    terminate(&mut socket, &peer).await;
                    break;
                }
            };
            if let Some(problem) = problem {
                protocol_violation(&mut socket, &problem).await;
                break;
            }
            AssertUnwindSafe(socket.next()).catch_unwind().await
        };
        let undecodable = match next {
            Ok(None | Some(Ok(PgWireFrontendMessage::Terminate(_)))) => break,
            Ok(Some(Ok(m))) => Ok(m),
            Ok(Some(Err(e))) => Err(e.to_string()),
            Err(_) => Err("malformed message".to_string()),
        };
        let message = match undecodable {
            Ok(m) => m,
            Err(e) => {
                protocol_violation(&mut socket, &e).await;
                break;
            }
        };
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        // The end of a COPY FROM STDIN started by a simple query: pgwire would answer
        // ReadyForQuery "idle" even inside a transaction block, and clients (psycopg) would
        // then never send its COMMIT. Finish it here and report the real status.
        if matches!(
            (socket.state(), &message),
            (PgWireConnectionState::CopyInProgress(false), PgWireFrontendMessage::CopyDone(_))
        ) {
            let PgWireFrontendMessage::CopyDone(done) = message else { unreachable!() };
            let result = copy.on_copy_done(&mut socket, done).await;
            socket.set_state(PgWireConnectionState::ReadyForQuery);
            match result {
                Ok(()) => {
                    let status = socket.transaction_status();
                    pgwire::api::query::send_ready_for_query(&mut socket, status)
                        .await
                        .map_err(std::io::Error::other)?;
                }
                Err(e) => process_error(&mut socket, e, false).await?,
            }
            continue;
        }
        let handled = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        );
        let outcome = match watcher.as_ref() {
            Some(w) => {
                w.arm();
                let terminated = handlers.connection().terminated();
                tokio::select! {
                    // A terminated session's statement fails too: the FATAL goes first.
                    biased;
                    _ = terminated => {
                        // pg_terminate_backend: the statement was cancelled with the session;
                        // drop it here and close the connection.
                        handlers.connection().cancel_running();
                        terminate(&mut socket, &peer).await;
                        break;
                    }
                    outcome = handled => outcome,
                    _ = w.gone() => {
                        // The client went away mid-statement: fire the session's cancel token
                        // and drop the statement (its plan, streams and memory) right here.
                        handlers.connection().cancel_running();
                        tracing::info!(%peer, "client disconnected: running statement cancelled");
                        break;
                    }
                }
            }
            None => handled.await,
        };
        if let Err(e) = outcome {
            process_error(&mut socket, e, extended_query).await?;
        }
    }
    Ok(())
}

/// Tells the client its session was ended by `pg_terminate_backend`: FATAL 57P01, as
/// PostgreSQL's admin_shutdown (the caller then closes).
async fn terminate<S>(socket: &mut S, peer: &SocketAddr)
where
    S: futures::Sink<PgWireBackendMessage> + Unpin,
{
    let e = rxgate_common::Error::new(
        rxgate_common::StatusCode::Terminated,
        "terminating connection due to administrator command",
    );
    let info = crate::errors::error_info("FATAL", &e);
    tracing::info!(%peer, "connection terminated (pg_terminate_backend)");
    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
    let _ = socket.flush().await;
}

/// Answers a message that cannot be decoded with FATAL 08P01 (the caller then closes).
async fn protocol_violation<S>(socket: &mut S, problem: &str)
where
    S: futures::Sink<PgWireBackendMessage> + Unpin,
{
    let e = rxgate_common::Error::new(
        rxgate_common::StatusCode::ProtocolViolation,
        format!("invalid frontend message: {problem}"),
    );
    let info = crate::errors::error_info("FATAL", &e);
    tracing::debug!(error = %problem, "closing a connection on a message that cannot be decoded");
    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
}

/// Watches a connection's socket (a duplicate of its descriptor) for the peer closing it
/// or resetting it, without reading: the protocol's own reads are pgwire's.
struct PeerWatch(TcpStream);

impl PeerWatch {
    fn new(stream: &MaybeTls) -> Option<Self> {
        let tcp = match stream {
            MaybeTls::Plain(t) => t,
            MaybeTls::Tls(t) => t.get_ref().0,
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        let dup = std::os::fd::AsFd::as_fd(tcp).try_clone_to_owned().ok()?;
        let std = std::net::TcpStream::from(dup);
        TcpStream::from_std(std).ok().map(Self)
    }

    /// Forgets readiness seen so far (bytes the client sent are pgwire's business): from
    /// now on only a new event wakes [`PeerWatch::gone`].
    fn arm(&self) {
        let _ = self.0.try_io(Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
    }

    /// Resolves when the peer has closed or reset the connection.
    async fn gone(&self) {
        loop {
            match self.0.ready(Interest::READABLE).await {
                Ok(r) if r.is_read_closed() || r.is_error() => return,
                Ok(_) => self.arm(),
                Err(_) => return,
            }
        }
    }
}

/// Before pgwire decodes a Bind or Parse (its decoder trusts their counts and lengths and
/// panics on a short message), reads the whole message into the connection's buffer and
/// checks it. `Some(problem)`: a protocol violation, nothing was decoded.
async fn read_whole_message<S, C>(socket: &mut tokio_util::codec::Framed<S, C>) -> std::io::Result<Option<String>>
where
    S: AsyncRead + Unpin,
{
    loop {
        let buf = socket.read_buffer();
        if buf.len() >= 5 {
            let tag = buf[0];
            if tag != b'B' && tag != b'P' {
                return Ok(None);
            }
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let Ok(len) = usize::try_from(len) else { return Ok(Some(format!("invalid message length {len}"))) };
            if !(4..=MAX_CHECKED_MESSAGE).contains(&len) {
                return Ok(None);
            }
            if buf.len() > len {
                let body = &buf[5..1 + len];
                let checked = if tag == b'B' { check_bind(body) } else { check_parse(body) };
                return Ok(checked.err());
            }
        } else if !buf.is_empty() && buf[0] != b'B' && buf[0] != b'P' {
            return Ok(None);
        }
        let mut chunk = bytes::BytesMut::with_capacity(64 * 1024);
        if socket.get_mut().read_buf(&mut chunk).await? == 0 {
            // End of stream: pgwire's next read sees it too.
            return Ok(None);
        }
        socket.read_buffer_mut().extend_from_slice(&chunk);
    }
}

/// A Bind body: portal, statement, parameter formats, parameters (each a length, -1 for
/// NULL, then its bytes), result formats, and nothing after.
fn check_bind(body: &[u8]) -> std::result::Result<(), String> {
    let mut r = Reader(body);
    r.cstring().ok_or("Bind: unterminated portal name")?;
    r.cstring().ok_or("Bind: unterminated statement name")?;
    let formats = r.u16().ok_or("Bind: missing parameter format count")?;
    r.skip(2 * formats as usize).ok_or("Bind: fewer parameter formats than announced")?;
    let params = r.u16().ok_or("Bind: missing parameter count")?;
    for i in 1..=params {
        let len = r.i32().ok_or_else(|| format!("Bind: {params} parameters announced, fewer sent"))?;
        match len {
            -1 => {}
            n if n < 0 => return Err(format!("Bind: invalid length {n} of parameter {i}")),
            n => {
                r.skip(n as usize).ok_or_else(|| format!("Bind: parameter {i} is shorter than its length {n}"))?;
            }
        }
    }
    let results = r.u16().ok_or("Bind: missing result format count")?;
    r.skip(2 * results as usize).ok_or("Bind: fewer result formats than announced")?;
    if !r.0.is_empty() {
        return Err("Bind: bytes after the message's end".into());
    }
    Ok(())
}

/// A Parse body: statement name, query, parameter type count and that many type OIDs.
fn check_parse(body: &[u8]) -> std::result::Result<(), String> {
    let mut r = Reader(body);
    r.cstring().ok_or("Parse: unterminated statement name")?;
    r.cstring().ok_or("Parse: unterminated query")?;
    let types = r.u16().ok_or("Parse: missing parameter type count")?;
    r.skip(4 * types as usize).ok_or("Parse: fewer parameter types than announced")?;
    if !r.0.is_empty() {
        return Err("Parse: bytes after the message's end".into());
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn skip(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn cstring(&mut self) -> Option<()> {
        let nul = self.0.iter().position(|&b| b == 0)?;
        self.skip(nul + 1).map(|_| ())
    }
    fn u16(&mut self) -> Option<u16> {
        self.skip(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.skip(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(params: &[i32], payload: &[u8]) -> Vec<u8> {
        let mut b = b"\0\0".to_vec();
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for &p in params {
            b.extend_from_slice(&p.to_be_bytes());
            if p > 0 {
                b.extend_from_slice(&payload[..p as usize]);
            }
        }
        b.extend_from_slice(&0u16.to_be_bytes());
        b
    }

    #[test]
    fn bind_messages_are_checked() {
        assert!(check_bind(&bind(&[1, -1, 0], b"x")).is_ok());
        assert!(check_bind(&bind(&[], b"")).is_ok());
        assert!(check_bind(&bind(&[-2], b"")).unwrap_err().contains("invalid length -2"));
        // Three announced, one sent.
        let mut short = b"\0\0\0\0\0\x03".to_vec();
        short.extend_from_slice(&1i32.to_be_bytes());
        short.push(b'x');
        assert!(check_bind(&short).is_err());
        let mut long = bind(&[1], b"x");
        long.push(0);
        assert!(check_bind(&long).is_err());
        assert!(check_bind(b"portal").is_err());
    }

    #[test]
    fn parse_messages_are_checked() {
        assert!(check_parse(b"\0SELECT 1\0\0\0").is_ok());
        assert!(check_parse(b"\0SELECT $1\0\0\x01\0\0\0\x17").is_ok());
        assert!(check_parse(b"\0SELECT $1\0\0\x02\0\0\0\x17").is_err());
        assert!(check_parse(b"\0SELECT 1").is_err());
    }
}
