//! The one table mapping engine status codes to gRPC codes, and the conversions every RPC
//! uses to answer with an error.
//!
//! **Invariant:** only this crate knows gRPC codes. A client sees a code and one line; an
//! internal error is logged here with its detail and shown as a short message.

use datafusion::error::DataFusionError;
use rxgate_common::{Error, StatusCode};
use tonic::{Code, Status};

/// gRPC code for an engine status code.
pub fn grpc_code(code: StatusCode) -> Code {
    match code {
        StatusCode::Internal => Code::Internal,
        StatusCode::Unsupported => Code::Unimplemented,
        StatusCode::InvalidArgument | StatusCode::BadInputLayout => Code::InvalidArgument,
        StatusCode::StorageUnavailable | StatusCode::CatalogUnavailable | StatusCode::InputUnavailable => {
            Code::Unavailable
        }
        StatusCode::TableNotFound | StatusCode::CursorNotFound => Code::NotFound,
        StatusCode::CommitConflict => Code::Aborted,
        StatusCode::SyntaxError | StatusCode::ColumnNotFound | StatusCode::PlanError => Code::InvalidArgument,
        StatusCode::ExecutionError => Code::InvalidArgument,
        StatusCode::Cancelled => Code::Cancelled,
        StatusCode::ResourcesExhausted | StatusCode::ProgramLimitExceeded => Code::ResourceExhausted,
        StatusCode::StatementTooComplex => Code::InvalidArgument,
        StatusCode::Timeout => Code::DeadlineExceeded,
        StatusCode::DuplicateCursor | StatusCode::AlreadyExists => Code::AlreadyExists,
        StatusCode::InvalidTransactionState => Code::FailedPrecondition,
        StatusCode::AuthFailed => Code::Unauthenticated,
        StatusCode::PermissionDenied => Code::PermissionDenied,
    }
}

/// The status a client sees for an engine error: its code and the first line of its message.
pub fn to_status(e: Error) -> Status {
    if e.code == StatusCode::Internal {
        tracing::error!(error = %e.message, "internal error");
        return Status::internal("internal error");
    }
    let line = e.message.lines().next().unwrap_or_default().trim().to_string();
    Status::new(grpc_code(e.code), line)
}

/// The status for a DataFusion error (from a result stream, say).
pub fn df_status(e: DataFusionError) -> Status {
    to_status(Error::from(e))
}

/// A status of our own: a code from the table and a fixed message.
pub(crate) fn status(code: StatusCode, message: impl Into<String>) -> Status {
    to_status(Error::new(code, message))
}

/// An arrow or Flight encoding problem on our side.
pub(crate) fn internal(what: impl std::fmt::Display) -> Status {
    to_status(Error::internal(what.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_codes_map_to_grpc_codes() {
        assert_eq!(grpc_code(StatusCode::AuthFailed), Code::Unauthenticated);
        assert_eq!(grpc_code(StatusCode::PermissionDenied), Code::PermissionDenied);
        assert_eq!(grpc_code(StatusCode::TableNotFound), Code::NotFound);
        assert_eq!(grpc_code(StatusCode::SyntaxError), Code::InvalidArgument);
        assert_eq!(grpc_code(StatusCode::Cancelled), Code::Cancelled);
        assert_eq!(grpc_code(StatusCode::Timeout), Code::DeadlineExceeded);
        assert_eq!(grpc_code(StatusCode::ResourcesExhausted), Code::ResourceExhausted);
        assert_eq!(grpc_code(StatusCode::Unsupported), Code::Unimplemented);
    }

    #[test]
    fn messages_are_one_line_and_internal_detail_stays_inside() {
        let s = to_status(Error::new(StatusCode::PlanError, "bad plan\nbacktrace: at foo.rs:1"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "bad plan");
        let s = to_status(Error::internal("lock poisoned at session.rs:42"));
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error");
    }
}
