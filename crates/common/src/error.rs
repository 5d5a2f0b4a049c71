//! One error type and one status-code space for the whole gateway.
//!
//! Codes are numbered by area (1xxx common, 2xxx catalog/storage, 3xxx query, 4xxx auth and
//! policy, 5xxx ingest). [`StatusCode::sqlstate`] and [`StatusCode::grpc_code`] are the one
//! table of SQLSTATEs (pgwire) and gRPC codes (Flight SQL): no frontend writes either by hand.
//!
//! Classification is structural: DataFusion errors by variant, iceberg errors by
//! [`iceberg::ErrorKind`], object_store / Parquet / Arrow / std::io errors by type, found by
//! walking `source()` chains and `External` boxes with downcasts. An [`Error`] keeps a
//! client-safe one-line `message` and, for the server log, the full chain (every line of
//! every source, credentials redacted). [`Error::client_message`] is what a client is shown:
//! an internal error's text never (a stable message with an error id instead), a storage
//! error's redacted first line with an error id; the id is logged with the chain.

use std::error::Error as StdError;
use std::fmt;

/// Area-numbered status of a failed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum StatusCode {
    /// An invariant broke inside the gateway; the client sees only a short message.
    Internal = 1000,
    /// The operation is not supported (yet).
    Unsupported = 1001,
    /// Invalid argument or configuration value.
    InvalidArgument = 1002,
    /// The client broke the wire protocol (a malformed or unexpected message).
    ProtocolViolation = 1003,
    /// The server is starting up or shutting down and takes no new connections.
    CannotConnectNow = 1004,
    /// An I/O error on local disk or an object store (a data or metadata file missing,
    /// unreadable or corrupt, a store unreachable or refusing).
    StorageUnavailable = 2000,
    /// The catalog database could not be reached or answered with an error.
    CatalogUnavailable = 2001,
    /// A table, schema or object does not exist.
    TableNotFound = 2002,
    /// Another writer committed first; the commit may be retried.
    CommitConflict = 2003,
    /// A table, partition or object of that name already exists.
    AlreadyExists = 2004,
    /// A schema (namespace) does not exist.
    SchemaNotFound = 2005,
    /// An object cannot be dropped because others depend on it (a non-empty schema without
    /// CASCADE).
    DependentObjectsExist = 2006,
    /// The object exists but is of the wrong kind for the statement (DROP TABLE of a view,
    /// INSERT into a view).
    WrongObjectType = 2007,
    /// SQL could not be parsed.
    SyntaxError = 3000,
    /// A column does not exist.
    ColumnNotFound = 3001,
    /// The plan is invalid (types, ambiguous names, …).
    PlanError = 3002,
    /// The query was cancelled by the client or by a timeout.
    Cancelled = 3003,
    /// The query exceeded the memory or disk budget.
    ResourcesExhausted = 3004,
    /// Execution failed (division by zero, bad cast, …).
    ExecutionError = 3005,
    /// The query ran longer than the configured timeout.
    Timeout = 3006,
    /// The session was ended by `pg_terminate_backend` (PostgreSQL's admin_shutdown: the
    /// connection closes).
    Terminated = 3018,
    /// A cursor named in FETCH/CLOSE does not exist.
    CursorNotFound = 3007,
    /// DECLARE of a cursor name already in use.
    DuplicateCursor = 3008,
    /// The statement is not allowed in the session's transaction state (a cursor without
    /// HOLD outside a transaction block).
    InvalidTransactionState = 3009,
    /// The statement cannot run inside a transaction block (schema DDL, renames).
    ActiveTransaction = 3015,
    /// A statement of the transaction block failed: only COMMIT/ROLLBACK (which roll back) are
    /// accepted until the block ends.
    InFailedTransaction = 3016,
    /// An object's stored definition cannot be used (a view that refers to itself, or whose
    /// query no longer matches its columns).
    InvalidObjectDefinition = 3017,
    /// A value or the statement text is larger than a configured limit (a string over
    /// `[limits] max_value_bytes`, a query over `max_query_bytes`).
    ProgramLimitExceeded = 3010,
    /// The statement is nested or chained deeper than the planner takes
    /// (`[limits] max_expression_depth`).
    StatementTooComplex = 3011,
    /// A parameter's text is not a value of its type.
    InvalidTextRepresentation = 3012,
    /// A NULL for a column that requires a value.
    NotNullViolation = 3013,
    /// A value does not fit the column's type (an out-of-range number, a bad cast on write).
    DataException = 3014,
    /// Authentication failed: wrong password, unknown user, failed proof.
    AuthFailed = 4000,
    /// The user may not do this.
    PermissionDenied = 4001,
    /// The connection may not log in at all: no user name, plaintext while TLS is required,
    /// a failed channel binding, a login throttle's lockout, no login yet.
    InvalidAuthorization = 4002,
    /// A connection limit (per user, or the server's) is reached.
    TooManyConnections = 4003,
    /// The input file is missing or unreadable.
    InputUnavailable = 5000,
    /// The input file's header or layout is not one we know.
    BadInputLayout = 5001,
}

/// gRPC's canonical status codes (the numbers of `google.rpc.Code`), so the table below needs
/// no gRPC library; Flight SQL turns them into `tonic::Code`.
pub mod grpc {
    #![allow(missing_docs)]
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

impl StatusCode {
    /// The SQLSTATE a PostgreSQL client sees. **The one table**: pgwire never writes one.
    pub fn sqlstate(self) -> &'static str {
        use StatusCode as S;
        match self {
            S::SyntaxError => "42601",
            S::TableNotFound => "42P01",
            S::ColumnNotFound => "42703",
            S::PlanError => "42000",
            S::PermissionDenied => "42501",
            S::AuthFailed => "28P01",
            S::InvalidAuthorization => "28000",
            S::ProtocolViolation => "08P01",
            S::TooManyConnections => "53300",
            S::CannotConnectNow => "57P03",
            S::Cancelled | S::Timeout => "57014",
            S::Terminated => "57P01",
            S::CursorNotFound => "34000",
            S::DuplicateCursor => "42P03",
            S::InvalidTransactionState => "25P01",
            S::ResourcesExhausted => "53200",
            S::ProgramLimitExceeded => "54000",
            S::StatementTooComplex => "54001",
            S::Unsupported => "0A000",
            S::InvalidArgument => "22023",
            S::InvalidTextRepresentation => "22P02",
            S::ExecutionError => "22000",
            S::CommitConflict => "40001",
            S::AlreadyExists => "42P07",
            S::SchemaNotFound => "3F000",
            S::DependentObjectsExist => "2BP01",
            S::WrongObjectType => "42809",
            S::InvalidObjectDefinition => "42P17",
            S::NotNullViolation => "23502",
            S::ActiveTransaction => "25001",
            S::InFailedTransaction => "25P02",
            S::DataException => "22000",
            S::StorageUnavailable | S::CatalogUnavailable => "58030",
            S::InputUnavailable | S::BadInputLayout => "22023",
            S::Internal => "XX000",
        }
    }

    /// The gRPC code a Flight SQL client sees (a [`grpc`] number). **The one table**.
    pub fn grpc_code(self) -> i32 {
        use StatusCode as S;
        match self {
            S::Internal => grpc::INTERNAL,
            S::Unsupported => grpc::UNIMPLEMENTED,
            S::InvalidArgument | S::BadInputLayout | S::InvalidTextRepresentation => grpc::INVALID_ARGUMENT,
            S::ProtocolViolation => grpc::INVALID_ARGUMENT,
            S::CannotConnectNow => grpc::UNAVAILABLE,
            S::StorageUnavailable | S::CatalogUnavailable | S::InputUnavailable => grpc::UNAVAILABLE,
            S::TableNotFound | S::CursorNotFound | S::SchemaNotFound => grpc::NOT_FOUND,
            S::DependentObjectsExist | S::WrongObjectType => grpc::FAILED_PRECONDITION,
            S::InvalidObjectDefinition => grpc::INVALID_ARGUMENT,
            S::NotNullViolation | S::DataException => grpc::INVALID_ARGUMENT,
            S::CommitConflict => grpc::ABORTED,
            S::SyntaxError | S::ColumnNotFound | S::PlanError => grpc::INVALID_ARGUMENT,
            S::ExecutionError => grpc::INVALID_ARGUMENT,
            S::Cancelled | S::Terminated => grpc::CANCELLED,
            S::ResourcesExhausted | S::ProgramLimitExceeded | S::TooManyConnections => grpc::RESOURCE_EXHAUSTED,
            S::StatementTooComplex => grpc::INVALID_ARGUMENT,
            S::Timeout => grpc::DEADLINE_EXCEEDED,
            S::DuplicateCursor | S::AlreadyExists => grpc::ALREADY_EXISTS,
            S::InvalidTransactionState | S::ActiveTransaction | S::InFailedTransaction => grpc::FAILED_PRECONDITION,
            S::AuthFailed | S::InvalidAuthorization => grpc::UNAUTHENTICATED,
            S::PermissionDenied => grpc::PERMISSION_DENIED,
        }
    }

    /// Whether a client is shown an error id for errors of this code (and the server logs
    /// the error's full chain under it): internal errors and storage / catalog failures,
    /// whose detail is the operator's business.
    pub fn gets_error_id(self) -> bool {
        matches!(self, StatusCode::Internal | StatusCode::StorageUnavailable | StatusCode::CatalogUnavailable)
    }

    /// Numeric value, stable across releases.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

/// The error type of all rxgate crates.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    /// What kind of failure this is.
    pub code: StatusCode,
    /// A short, client-safe message (one line, credentials redacted). An internal error's
    /// message is still never shown to a client: see [`Error::client_message`].
    pub message: String,
    /// The full chain for the server log (every line of every `source()`, redacted) when it
    /// says more than `message`.
    detail: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Result with the rxgate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn redacted(text: String) -> String {
    match crate::redact_secrets(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(r) => r,
    }
}

impl Error {
    /// An error with a code and message. Passwords of URIs in the message are redacted
    /// ([`crate::redact_secrets`]): no error carries a catalog or storage credential.
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self { code, message: redacted(message.into()), detail: None }
    }

    /// Shorthand for [`StatusCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Internal, message)
    }

    /// Shorthand for [`StatusCode::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::InvalidArgument, message)
    }

    /// Adds context in front of the message (and of the logged chain), keeping the code.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        let detail = self.detail.map(|d| redacted(format!("{ctx}: {d}")));
        Self { detail, ..Self::new(self.code, format!("{ctx}: {}", self.message)) }
    }

    /// Records `source`'s full chain (all its lines and all its `source()`s) for the server
    /// log, after this error's message. The message a client may see is unchanged.
    pub fn with_source(mut self, source: &(dyn StdError + 'static)) -> Self {
        let chain = chain_text(source);
        self.detail =
            Some(redacted(format!("{}\ncaused by: {chain}", self.detail.as_deref().unwrap_or(&self.message))));
        self
    }

    /// Replaces the logged detail (redacted); `None` when it would say only the message.
    fn with_detail(mut self, detail: String) -> Self {
        let detail = redacted(detail);
        self.detail = (detail.trim() != self.message).then_some(detail);
        self
    }

    /// What the server log gets: the full chain when one was kept, else the message.
    pub fn detail(&self) -> &str {
        self.detail.as_deref().unwrap_or(&self.message)
    }

    /// The message a client is shown; call it once per error sent to a client.
    ///
    /// An internal error's text is never shown: the client gets `internal error (error id
    /// …)`. A storage or catalog failure keeps its (redacted) first line and gets the id
    /// appended. Either way the id is logged here with the code and the full chain, so an
    /// operator finds the cause from what the user reports. Other errors are their message.
    pub fn client_message(&self) -> String {
        if !self.code.gets_error_id() {
            return self.message.clone();
        }
        let id = error_id();
        if self.code == StatusCode::Internal {
            tracing::error!(error_id = %id, sqlstate = self.code.sqlstate(), error = %self.detail(), "internal error");
            format!("internal error (error id {id})")
        } else {
            tracing::warn!(error_id = %id, sqlstate = self.code.sqlstate(), error = %self.detail(), "storage error");
            format!("{} (error id {id})", self.message)
        }
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        Self { code: self.code, message: self.message.clone(), detail: self.detail.clone() }
    }
}

/// A fresh 16-hex-digit id for one reported error: a process-wide counter mixed with
/// per-process random keys (std's `RandomState`) and the time, so ids differ across
/// restarts without a random-number crate.
fn error_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = KEYS.get_or_init(std::collections::hash_map::RandomState::new).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

/// An error's text and the texts of all its sources, one `caused by:` per source that the
/// text before it does not already contain (many errors print their source inline).
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str("\ncaused by: ");
            text.push_str(&t);
        }
        next = s.source();
    }
    text
}

// --------------------------------------------------------------------------------------------
// Classification
// --------------------------------------------------------------------------------------------

impl From<iceberg::Error> for Error {
    fn from(e: iceberg::Error) -> Self {
        classify_iceberg(&e)
    }
}

impl Error {
    /// The client-facing error of a DataFusion error held by reference.
    pub fn from_datafusion(e: &datafusion::error::DataFusionError) -> Self {
        classify_datafusion(e)
    }

    /// The error of any error value, classified by its type and its `source()` chain
    /// (an rxgate error keeps its code; DataFusion, iceberg, object_store, Parquet, Arrow
    /// and std::io errors are classified as by their own conversions).
    pub fn from_dyn(e: &(dyn StdError + Send + Sync + 'static)) -> Self {
        classify_dyn(e)
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        classify_datafusion(&e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        classify_io(&e)
    }
}

impl From<datafusion::object_store::Error> for Error {
    fn from(e: datafusion::object_store::Error) -> Self {
        classify_object_store(&e)
    }
}

/// An error of `code` whose client message is the first line of `e`'s text and whose logged
/// detail is `e`'s full chain.
fn leaf(code: StatusCode, e: &(dyn StdError + 'static)) -> Error {
    Error::new(code, first_line(&e.to_string())).with_detail(chain_text(e))
}

/// Maps a DataFusion error to a status code by its variant (and, inside `External`,
/// `ArrowError::ExternalError` and `ParquetError::External`, by the wrapped error's type).
fn classify_datafusion(e: &datafusion::error::DataFusionError) -> Error {
    use datafusion::error::DataFusionError as D;
    match e {
        D::SQL(inner, _) => leaf(StatusCode::SyntaxError, inner.as_ref()),
        D::SchemaError(inner, _) => {
            use datafusion::common::SchemaError as S;
            let code = match inner.as_ref() {
                S::FieldNotFound { .. } => StatusCode::ColumnNotFound,
                _ => StatusCode::PlanError,
            };
            leaf(code, inner.as_ref())
        }
        D::Plan(m) => {
            // Message text: DataFusion's table resolution reports a missing table only as
            // `Plan("table '…' not found")`, with no variant or type of its own.
            let code = if m.contains("table") && m.contains("not found") {
                StatusCode::TableNotFound
            } else {
                StatusCode::PlanError
            };
            Error::new(code, first_line(m)).with_detail(m.clone())
        }
        D::ResourcesExhausted(m) => Error::new(StatusCode::ResourcesExhausted, first_line(m)).with_detail(m.clone()),
        D::NotImplemented(m) => Error::new(StatusCode::Unsupported, first_line(m)).with_detail(m.clone()),
        // Message text: DataFusion reports a cancelled stream only as `Execution("…cancel…")`;
        // our own cancellations are `External(rxgate Error)` with the code `Cancelled`.
        D::Execution(m) if m.contains("cancel") => {
            Error::new(StatusCode::Cancelled, first_line(m)).with_detail(m.clone())
        }
        D::Execution(m) => Error::new(StatusCode::ExecutionError, first_line(m)).with_detail(m.clone()),
        D::ArrowError(inner, _) => classify_arrow(inner),
        D::ParquetError(inner) => classify_parquet(inner),
        D::ObjectStore(inner) => classify_object_store(inner),
        D::IoError(inner) => classify_io(inner),
        D::Context(ctx, inner) => classify_datafusion(inner).context(ctx),
        D::Shared(inner) => classify_datafusion(inner),
        D::Diagnostic(_, inner) => classify_datafusion(inner),
        D::Collection(errors) => match errors.first() {
            Some(first) => classify_datafusion(first),
            None => Error::new(StatusCode::Internal, "unknown error"),
        },
        D::Configuration(m) => Error::new(StatusCode::InvalidArgument, first_line(m)).with_detail(m.clone()),
        D::ExecutionJoin(inner) => leaf(StatusCode::Internal, inner.as_ref()),
        D::External(inner) => classify_dyn(inner.as_ref()),
        other => Error::new(StatusCode::Internal, first_line(&other.to_string())).with_detail(chain_text(other)),
    }
}

/// An error of unknown type: its own type first, then its sources', by downcasts; an error
/// of no known type anywhere in its chain is an execution error with its first line.
fn classify_dyn(e: &(dyn StdError + 'static)) -> Error {
    known(e).unwrap_or_else(|| {
        let mut next = e.source();
        while let Some(s) = next {
            if let Some(found) = known(s) {
                return Error::new(found.code, first_line(&e.to_string())).with_detail(chain_text(e));
            }
            next = s.source();
        }
        leaf(StatusCode::ExecutionError, e)
    })
}

/// The classification of `e` when it is of a type we know.
fn known(e: &(dyn StdError + 'static)) -> Option<Error> {
    use datafusion::arrow::error::ArrowError;
    use datafusion::parquet::errors::ParquetError;
    if let Some(own) = e.downcast_ref::<Error>() {
        return Some(own.clone());
    }
    if let Some(d) = e.downcast_ref::<datafusion::error::DataFusionError>() {
        return Some(classify_datafusion(d));
    }
    if let Some(i) = e.downcast_ref::<iceberg::Error>() {
        return Some(classify_iceberg(i));
    }
    if let Some(o) = e.downcast_ref::<datafusion::object_store::Error>() {
        return Some(classify_object_store(o));
    }
    if let Some(p) = e.downcast_ref::<ParquetError>() {
        return Some(classify_parquet(p));
    }
    if let Some(a) = e.downcast_ref::<ArrowError>() {
        return Some(classify_arrow(a));
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return Some(classify_io(io));
    }
    None
}

/// Whether some error in `e`'s chain (itself included) is a storage failure: the code of
/// the first one found, if so.
fn storage_in_chain(e: &(dyn StdError + 'static)) -> Option<StatusCode> {
    let mut next = Some(e);
    while let Some(s) = next {
        let code = if let Some(o) = s.downcast_ref::<datafusion::object_store::Error>() {
            Some(classify_object_store(o).code)
        } else if s.is::<std::io::Error>() {
            Some(StatusCode::StorageUnavailable)
        } else {
            None
        };
        if code.is_some() {
            return code;
        }
        next = s.source();
    }
    None
}

/// iceberg errors by [`iceberg::ErrorKind`]; a kind that says only "unexpected" or "data
/// invalid" is a storage error when an object-store or I/O error caused it.
fn classify_iceberg(e: &iceberg::Error) -> Error {
    use iceberg::ErrorKind as K;
    let from_store = e.source().and_then(storage_in_chain);
    let code = match e.kind() {
        K::CatalogCommitConflicts => StatusCode::CommitConflict,
        K::TableNotFound | K::NamespaceNotFound => StatusCode::TableNotFound,
        K::TableAlreadyExists | K::NamespaceAlreadyExists => StatusCode::AlreadyExists,
        K::FeatureUnsupported => StatusCode::Unsupported,
        K::DataInvalid => from_store.unwrap_or(StatusCode::InvalidArgument),
        // Unexpected (I/O, the catalog database), PreconditionFailed and kinds added later.
        _ => from_store.unwrap_or(StatusCode::StorageUnavailable),
    };
    // iceberg renders its kind, message, context and source on one line.
    leaf(code, e)
}

/// object_store errors by variant. Access refusals keep only their path: the store's own
/// text may quote a signed request.
fn classify_object_store(e: &datafusion::object_store::Error) -> Error {
    use datafusion::object_store::Error as O;
    match e {
        O::NotSupported { .. } | O::NotImplemented { .. } => leaf(StatusCode::Unsupported, e),
        O::InvalidPath { .. } | O::UnknownConfigurationKey { .. } => leaf(StatusCode::InvalidArgument, e),
        O::PermissionDenied { path, .. } | O::Unauthenticated { path, .. } => {
            Error::new(StatusCode::StorageUnavailable, format!("the object store refused access to {path}"))
                .with_detail(chain_text(e))
        }
        // NotFound, Generic (connection, HTTP status), AlreadyExists, Precondition, a failed
        // blocking task (JoinError, when object_store has tokio), …
        _ => leaf(StatusCode::StorageUnavailable, e),
    }
}

/// Parquet errors: the wrapped error of `External` (an object-store read, usually) by its
/// type; every other variant means a data file that cannot be decoded: a storage error,
/// except a feature the reader lacks.
fn classify_parquet(e: &datafusion::parquet::errors::ParquetError) -> Error {
    use datafusion::parquet::errors::ParquetError as P;
    match e {
        P::External(inner) => known(inner.as_ref())
            .map(|k| Error::new(k.code, first_line(&e.to_string())).with_detail(chain_text(e)))
            .unwrap_or_else(|| leaf(StatusCode::StorageUnavailable, e)),
        P::NYI(_) => leaf(StatusCode::Unsupported, e),
        _ => {
            Error::new(StatusCode::StorageUnavailable, format!("unreadable data file: {}", first_line(&e.to_string())))
                .with_detail(chain_text(e))
        }
    }
}

/// Arrow errors: I/O and Parquet ones are storage errors, an external one by its type,
/// the rest (casts, arithmetic, parsing) execution errors.
fn classify_arrow(e: &datafusion::arrow::error::ArrowError) -> Error {
    use datafusion::arrow::error::ArrowError as A;
    match e {
        A::IoError(..) | A::ParquetError(_) => leaf(StatusCode::StorageUnavailable, e),
        A::ExternalError(inner) => known(inner.as_ref())
            .map(|k| Error::new(k.code, first_line(&e.to_string())).with_detail(chain_text(e)))
            .unwrap_or_else(|| leaf(StatusCode::ExecutionError, e)),
        A::MemoryError(_) => leaf(StatusCode::ResourcesExhausted, e),
        _ => leaf(StatusCode::ExecutionError, e),
    }
}

/// std::io errors are storage errors; an I/O error that wraps one of ours keeps its code.
fn classify_io(e: &std::io::Error) -> Error {
    if let Some(inner) = e.get_ref() {
        if let Some(k) = known(inner) {
            if k.code != StatusCode::ExecutionError {
                return Error::new(k.code, first_line(&e.to_string())).with_detail(chain_text(e));
            }
        }
    }
    leaf(StatusCode::StorageUnavailable, e)
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    // DataFusion appends backtraces after a blank line and "backtrace:"; keep the message only.
    line.split("\n\nbacktrace").next().unwrap_or(line).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::error::ArrowError;
    use datafusion::error::DataFusionError;
    use datafusion::object_store;
    use datafusion::parquet::errors::ParquetError;
    use std::sync::Arc;

    fn not_found() -> object_store::Error {
        object_store::Error::NotFound {
            path: "warehouse/health/t/data/part-0.parquet".into(),
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "No such file or directory (os error 2)",
            )),
        }
    }

    #[test]
    fn resources_exhausted_maps_to_its_code() {
        let e: Error = DataFusionError::ResourcesExhausted("Failed to allocate".into()).into();
        assert_eq!(e.code, StatusCode::ResourcesExhausted);
        assert_eq!(e.message, "Failed to allocate");
    }

    #[test]
    fn external_rxgate_error_keeps_its_code() {
        let inner = Error::new(StatusCode::PermissionDenied, "no");
        let e: Error = DataFusionError::External(Box::new(inner)).into();
        assert_eq!(e.code, StatusCode::PermissionDenied);
        assert_eq!(e.message, "no");
    }

    #[test]
    fn table_not_found_plan_error() {
        let e: Error = DataFusionError::Plan("table 'rxgate.health.nope' not found".into()).into();
        assert_eq!(e.code, StatusCode::TableNotFound);
        let wrapped = DataFusionError::Diagnostic(
            Box::new(datafusion::common::Diagnostic::new_error("x", None)),
            Box::new(DataFusionError::Plan("table 'a.b.c' not found".into())),
        );
        assert_eq!(Error::from(wrapped).code, StatusCode::TableNotFound);
    }

    #[test]
    fn a_missing_column_is_found_by_the_schema_error_variant() {
        let e = datafusion::common::field_not_found(
            None::<datafusion::common::TableReference>,
            "nope",
            &datafusion::common::DFSchema::empty(),
        );
        assert_eq!(Error::from(e).code, StatusCode::ColumnNotFound);
    }

    #[test]
    fn storage_errors_are_found_in_every_wrapping() {
        let cases: Vec<(&str, DataFusionError)> = vec![
            ("ObjectStore", DataFusionError::ObjectStore(Box::new(not_found()))),
            ("IoError", DataFusionError::IoError(std::io::Error::other("disk on fire"))),
            (
                "Parquet corrupt",
                DataFusionError::ParquetError(Box::new(ParquetError::General(
                    "Invalid Parquet file. Corrupt footer".into(),
                ))),
            ),
            (
                "Parquet EOF",
                DataFusionError::ParquetError(Box::new(ParquetError::EOF("file size of 3 is less than footer".into()))),
            ),
            (
                "Parquet(External(object_store))",
                DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(not_found())))),
            ),
            (
                "Arrow IoError",
                DataFusionError::ArrowError(
                    Box::new(ArrowError::IoError("read".into(), std::io::Error::other("x"))),
                    None,
                ),
            ),
            (
                "Arrow(External(Parquet))",
                DataFusionError::ArrowError(
                    Box::new(ArrowError::ExternalError(Box::new(ParquetError::EOF("eof".into())))),
                    None,
                ),
            ),
            ("External(object_store)", DataFusionError::External(Box::new(not_found()))),
            ("External(io)", DataFusionError::External(Box::new(std::io::Error::other("x")))),
            (
                "Context(Shared(ObjectStore))",
                DataFusionError::Context(
                    "scanning".into(),
                    Box::new(DataFusionError::Shared(Arc::new(DataFusionError::ObjectStore(Box::new(not_found()))))),
                ),
            ),
            (
                "External(DataFusion(ObjectStore))",
                DataFusionError::External(Box::new(DataFusionError::ObjectStore(Box::new(not_found())))),
            ),
            (
                "External(iceberg with object_store source)",
                DataFusionError::External(Box::new(
                    iceberg::Error::new(iceberg::ErrorKind::DataInvalid, "warehouse/t/metadata/1.json: not found")
                        .with_source(not_found()),
                )),
            ),
        ];
        for (what, e) in cases {
            let got = Error::from(e);
            assert_eq!(got.code, StatusCode::StorageUnavailable, "{what}: {got:?}");
            assert_eq!(got.code.sqlstate(), "58030", "{what}");
            assert_eq!(got.code.grpc_code(), grpc::UNAVAILABLE, "{what}");
            assert!(!got.message.contains('\n'), "{what}: {}", got.message);
        }
    }

    #[test]
    fn object_store_variants_map_by_structure() {
        let refused = object_store::Error::PermissionDenied {
            path: "bucket/t/x.parquet".into(),
            source: "403 Forbidden https://s3.example/x?X-Amz-Signature=deadbeef".into(),
        };
        let e = Error::from(refused);
        assert_eq!(e.code, StatusCode::StorageUnavailable);
        assert_eq!(e.message, "the object store refused access to bucket/t/x.parquet");
        assert!(!e.detail().contains("deadbeef"), "{}", e.detail());
        let unsupported = object_store::Error::NotImplemented { operation: "copy".into(), implementer: "x".into() };
        assert_eq!(Error::from(unsupported).code, StatusCode::Unsupported);
        let generic =
            object_store::Error::Generic { store: "S3", source: "connect to https://k:secret@host/b failed".into() };
        let e = Error::from(generic);
        assert_eq!(e.code, StatusCode::StorageUnavailable);
        assert!(!e.message.contains("secret") && !e.detail().contains("secret"), "{e:?}");
    }

    #[test]
    fn iceberg_errors_map_by_kind() {
        use iceberg::{Error as I, ErrorKind as K};
        assert_eq!(Error::from(I::new(K::CatalogCommitConflicts, "x")).code, StatusCode::CommitConflict);
        assert_eq!(Error::from(I::new(K::TableNotFound, "x")).code, StatusCode::TableNotFound);
        assert_eq!(Error::from(I::new(K::TableAlreadyExists, "x")).code, StatusCode::AlreadyExists);
        assert_eq!(Error::from(I::new(K::FeatureUnsupported, "x")).code, StatusCode::Unsupported);
        assert_eq!(Error::from(I::new(K::DataInvalid, "bad")).code, StatusCode::InvalidArgument);
        let io = I::new(K::DataInvalid, "metadata").with_source(not_found());
        assert_eq!(Error::from(io).code, StatusCode::StorageUnavailable);
    }

    #[test]
    fn other_errors_keep_their_codes() {
        let div = DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None);
        assert_eq!(Error::from(div).code, StatusCode::ExecutionError);
        let nyi = DataFusionError::ParquetError(Box::new(ParquetError::NYI("encoding".into())));
        assert_eq!(Error::from(nyi).code, StatusCode::Unsupported);
        assert_eq!(Error::from(DataFusionError::Internal("bug".into())).code, StatusCode::Internal);
        assert_eq!(Error::from(DataFusionError::External("something else".into())).code, StatusCode::ExecutionError);
        let own = Error::new(StatusCode::Cancelled, "canceling statement due to user request");
        let e = Error::from(DataFusionError::Context("ctx".into(), Box::new(DataFusionError::External(Box::new(own)))));
        assert_eq!(e.code, StatusCode::Cancelled);
    }

    #[test]
    fn internal_errors_show_only_an_id_and_keep_the_full_chain() {
        let source = std::io::Error::other("line one\nline two");
        let e = Error::internal("lock poisoned at session.rs:42").with_source(&source);
        let shown = e.client_message();
        assert!(shown.starts_with("internal error (error id "), "{shown}");
        assert!(!shown.contains("session.rs") && !shown.contains("line"), "{shown}");
        let id = shown.trim_start_matches("internal error (error id ").trim_end_matches(')');
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_ne!(e.client_message(), shown, "every report gets its own id");
        assert_eq!(e.detail(), "lock poisoned at session.rs:42\ncaused by: line one\nline two");
        // A DataFusion internal error: every line and source in the detail, none shown.
        let df = DataFusionError::Context(
            "while planning".into(),
            Box::new(DataFusionError::Internal("Physical input schema should be the same\nleft: a\nright: b".into())),
        );
        let e = Error::from(df);
        assert_eq!(e.code, StatusCode::Internal);
        assert!(e.detail().contains("right: b") && e.detail().contains("while planning"), "{}", e.detail());
        assert!(e.client_message().starts_with("internal error (error id "));
    }

    #[test]
    fn storage_errors_show_their_first_line_redacted_and_an_id() {
        let e = Error::from(DataFusionError::External(Box::new(object_store::Error::Generic {
            store: "GCS",
            source: "error sending request for url (http://u:pw@127.0.0.1:1/b/o?token=abc)\nconnection refused".into(),
        })));
        assert_eq!(e.code, StatusCode::StorageUnavailable);
        let shown = e.client_message();
        assert!(shown.contains("(error id "), "{shown}");
        assert!(
            !shown.contains("pw@") && !shown.contains("token=abc") && !shown.contains("connection refused"),
            "{shown}"
        );
        assert!(e.detail().contains("connection refused") && !e.detail().contains("pw@"), "{}", e.detail());
        // Other errors are shown as they are.
        assert_eq!(Error::new(StatusCode::SyntaxError, "bad").client_message(), "bad");
    }

    #[test]
    fn every_code_has_a_sqlstate_and_a_grpc_code() {
        use StatusCode as S;
        for (code, state) in [
            (S::AuthFailed, "28P01"),
            (S::InvalidAuthorization, "28000"),
            (S::ProtocolViolation, "08P01"),
            (S::TooManyConnections, "53300"),
            (S::CannotConnectNow, "57P03"),
            (S::StorageUnavailable, "58030"),
            (S::InvalidTextRepresentation, "22P02"),
            (S::Internal, "XX000"),
        ] {
            assert_eq!(code.sqlstate(), state, "{code:?}");
        }
        assert_eq!(S::AuthFailed.grpc_code(), grpc::UNAUTHENTICATED);
        assert_eq!(S::InvalidAuthorization.grpc_code(), grpc::UNAUTHENTICATED);
        assert_eq!(S::TooManyConnections.grpc_code(), grpc::RESOURCE_EXHAUSTED);
        assert_eq!(S::Internal.grpc_code(), grpc::INTERNAL);
    }
}
