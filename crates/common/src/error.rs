//! One error type and one status-code space for the whole gateway.
//!
//! Codes are numbered by area (1xxx common, 2xxx catalog/storage, 3xxx query, 4xxx auth and
//! policy, 5xxx ingest). Each frontend maps them in exactly one table: pgwire to SQLSTATE,
//! Flight SQL to gRPC codes.

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
    /// An I/O error on local disk or an object store.
    StorageUnavailable = 2000,
    /// The catalog database could not be reached or answered with an error.
    CatalogUnavailable = 2001,
    /// A table, schema or object does not exist.
    TableNotFound = 2002,
    /// Another writer committed first; the commit may be retried.
    CommitConflict = 2003,
    /// A table, partition or object of that name already exists.
    AlreadyExists = 2004,
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
    /// A cursor named in FETCH/CLOSE does not exist.
    CursorNotFound = 3007,
    /// DECLARE of a cursor name already in use.
    DuplicateCursor = 3008,
    /// The statement is not allowed in the session's transaction state (a cursor without
    /// HOLD outside a transaction block).
    InvalidTransactionState = 3009,
    /// A value or the statement text is larger than a configured limit (a string over
    /// `[limits] max_value_bytes`, a query over `max_query_bytes`).
    ProgramLimitExceeded = 3010,
    /// The statement is nested or chained deeper than the planner takes
    /// (`[limits] max_expression_depth`).
    StatementTooComplex = 3011,
    /// Authentication failed.
    AuthFailed = 4000,
    /// The user may not do this.
    PermissionDenied = 4001,
    /// The input file is missing or unreadable.
    InputUnavailable = 5000,
    /// The input file's header or layout is not one we know.
    BadInputLayout = 5001,
}

impl StatusCode {
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
    /// A short, client-safe message.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Result with the rxgate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and message. Passwords of URIs in the message are redacted
    /// ([`crate::redact_secrets`]): no error carries a catalog or storage credential.
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match crate::redact_secrets(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(redacted) => redacted,
        };
        Self { code, message }
    }

    /// Shorthand for [`StatusCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Internal, message)
    }

    /// Shorthand for [`StatusCode::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::InvalidArgument, message)
    }

    /// Adds context in front of the message, keeping the code.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Self::new(self.code, format!("{ctx}: {}", self.message))
    }
}

impl From<iceberg::Error> for Error {
    fn from(e: iceberg::Error) -> Self {
        use iceberg::ErrorKind as K;
        let code = match e.kind() {
            K::CatalogCommitConflicts => StatusCode::CommitConflict,
            K::TableNotFound | K::NamespaceNotFound => StatusCode::TableNotFound,
            K::FeatureUnsupported => StatusCode::Unsupported,
            K::DataInvalid => StatusCode::InvalidArgument,
            _ => StatusCode::StorageUnavailable,
        };
        // iceberg errors carry a source chain; keep the first line of the rendering.
        Error::new(code, e.to_string().lines().next().unwrap_or_default().to_string())
    }
}

impl Error {
    /// The client-facing error of a DataFusion error held by reference.
    pub fn from_datafusion(e: &datafusion::error::DataFusionError) -> Self {
        classify_datafusion(e)
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        classify_datafusion(&e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(StatusCode::StorageUnavailable, e.to_string())
    }
}

/// Maps a DataFusion error to a status code and a message without backtraces.
fn classify_datafusion(e: &datafusion::error::DataFusionError) -> Error {
    use datafusion::error::DataFusionError as D;
    match e {
        D::SQL(inner, _) => Error::new(StatusCode::SyntaxError, first_line(&inner.to_string())),
        D::SchemaError(inner, _) => {
            let msg = first_line(&inner.to_string());
            let code = if msg.contains("No field named") || msg.contains("not found") {
                StatusCode::ColumnNotFound
            } else {
                StatusCode::PlanError
            };
            Error::new(code, msg)
        }
        D::Plan(m) => {
            let code = if m.contains("table") && m.contains("not found") {
                StatusCode::TableNotFound
            } else {
                StatusCode::PlanError
            };
            Error::new(code, first_line(m))
        }
        D::ResourcesExhausted(m) => Error::new(StatusCode::ResourcesExhausted, first_line(m)),
        D::NotImplemented(m) => Error::new(StatusCode::Unsupported, first_line(m)),
        D::Execution(m) if m.contains("cancel") => Error::new(StatusCode::Cancelled, first_line(m)),
        D::Execution(m) => Error::new(StatusCode::ExecutionError, first_line(m)),
        D::ArrowError(inner, _) => Error::new(StatusCode::ExecutionError, first_line(&inner.to_string())),
        D::Context(ctx, inner) => classify_datafusion(inner).context(ctx),
        D::Shared(inner) => classify_datafusion(inner),
        D::Diagnostic(_, inner) => classify_datafusion(inner),
        D::Collection(errors) => match errors.first() {
            Some(first) => classify_datafusion(first),
            None => Error::new(StatusCode::Internal, "unknown error"),
        },
        D::Configuration(m) => Error::new(StatusCode::InvalidArgument, first_line(m)),
        D::ExecutionJoin(inner) => Error::new(StatusCode::Internal, first_line(&inner.to_string())),
        D::External(inner) => {
            if let Some(own) = inner.downcast_ref::<Error>() {
                return Error::new(own.code, own.message.clone());
            }
            Error::new(StatusCode::ExecutionError, first_line(&inner.to_string()))
        }
        D::IoError(inner) => Error::new(StatusCode::StorageUnavailable, first_line(&inner.to_string())),
        other => Error::new(StatusCode::Internal, first_line(&other.to_string())),
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    // DataFusion appends backtraces after a blank line and "backtrace:"; keep the message only.
    line.split("\n\nbacktrace").next().unwrap_or(line).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;

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
}
