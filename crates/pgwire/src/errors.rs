//! Engine errors as PostgreSQL errors. The SQLSTATE of every error this crate sends, the
//! start-up and authentication ones included, comes from the one table,
//! [`StatusCode::sqlstate`] in rxgate-common.

use pgwire::error::{ErrorInfo, PgWireError};
use rxgate_common::{Error, StatusCode};

/// SQLSTATE for a status code (the table in rxgate-common).
pub fn sqlstate(code: StatusCode) -> &'static str {
    code.sqlstate()
}

/// An error response of `severity` for an engine error: its SQLSTATE and the message a client
/// may see ([`Error::client_message`]: an internal error only as `internal error (error id
/// …)`, a storage error with its id; the id is logged with the full chain).
pub(crate) fn error_info(severity: &str, e: &Error) -> ErrorInfo {
    ErrorInfo::new(severity.into(), e.code.sqlstate().into(), e.client_message())
}

/// Converts an engine error into a client-facing PostgreSQL error.
pub(crate) fn to_pg(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info("ERROR", &e)))
}

/// Converts a DataFusion error (e.g. from a result stream) into a client-facing error.
pub(crate) fn df_to_pg(e: datafusion::error::DataFusionError) -> PgWireError {
    to_pg(Error::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_codes_map_to_postgres_sqlstates() {
        assert_eq!(sqlstate(StatusCode::SyntaxError), "42601");
        assert_eq!(sqlstate(StatusCode::TableNotFound), "42P01");
        assert_eq!(sqlstate(StatusCode::ColumnNotFound), "42703");
        assert_eq!(sqlstate(StatusCode::PermissionDenied), "42501");
        assert_eq!(sqlstate(StatusCode::Cancelled), "57014");
        assert_eq!(sqlstate(StatusCode::ResourcesExhausted), "53200");
        assert_eq!(sqlstate(StatusCode::Internal), "XX000");
        assert_eq!(sqlstate(StatusCode::StorageUnavailable), "58030");
    }

    #[test]
    fn internal_text_never_reaches_the_client() {
        let PgWireError::UserError(info) = to_pg(Error::internal("lock poisoned at session.rs:42")) else { panic!() };
        assert_eq!(info.code, "XX000");
        assert!(info.message.starts_with("internal error (error id "), "{}", info.message);
        assert!(!info.message.contains("session.rs"));
        let store = datafusion::object_store::Error::NotFound {
            path: "w/t/data/f.parquet".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let PgWireError::UserError(info) = df_to_pg(datafusion::error::DataFusionError::ObjectStore(Box::new(store)))
        else {
            panic!()
        };
        assert_eq!(info.code, "58030");
        assert!(info.message.contains("(error id "), "{}", info.message);
    }
}
