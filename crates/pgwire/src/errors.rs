//! The one table mapping engine status codes to SQLSTATEs.

use pgwire::error::{ErrorInfo, PgWireError};
use rxgate_common::{Error, StatusCode};

/// SQLSTATE for a status code.
pub fn sqlstate(code: StatusCode) -> &'static str {
    match code {
        StatusCode::SyntaxError => "42601",
        StatusCode::TableNotFound => "42P01",
        StatusCode::ColumnNotFound => "42703",
        StatusCode::PlanError => "42000",
        StatusCode::PermissionDenied => "42501",
        StatusCode::AuthFailed => "28P01",
        StatusCode::Cancelled | StatusCode::Timeout => "57014",
        StatusCode::CursorNotFound => "34000",
        StatusCode::DuplicateCursor => "42P03",
        StatusCode::InvalidTransactionState => "25P01",
        StatusCode::ResourcesExhausted => "53200",
        StatusCode::ProgramLimitExceeded => "54000",
        StatusCode::StatementTooComplex => "54001",
        StatusCode::Unsupported => "0A000",
        StatusCode::InvalidArgument => "22023",
        StatusCode::ExecutionError => "22000",
        StatusCode::CommitConflict => "40001",
        StatusCode::AlreadyExists => "42P07",
        StatusCode::StorageUnavailable | StatusCode::CatalogUnavailable => "58030",
        StatusCode::InputUnavailable | StatusCode::BadInputLayout => "22023",
        StatusCode::Internal => "XX000",
    }
}

/// Converts an engine error into a client-facing PostgreSQL error.
pub(crate) fn to_pg(e: Error) -> PgWireError {
    if e.code == StatusCode::Internal {
        tracing::error!(error = %e.message, "internal error");
    }
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), sqlstate(e.code).into(), e.message)))
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
    }
}
