//! Engine errors as gRPC statuses: the conversions every RPC uses to answer with an error.
//!
//! **Invariant:** the gRPC code of every error comes from the one table,
//! [`StatusCode::grpc_code`] in rxgate-common, and so does the SQLSTATE each status carries in
//! its `x-rxgate-sqlstate` metadata (beside `x-rxgate-error-id` when the error has an id). A
//! client sees a code and one line: an internal error only as `internal error (error id …)`,
//! a storage error's redacted first line with its id; the id is logged with the full chain
//! ([`Error::client_message`]).

use datafusion::error::DataFusionError;
use rxgate_common::{Error, StatusCode};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key of a status's SQLSTATE.
pub const SQLSTATE_KEY: &str = "x-rxgate-sqlstate";
/// Metadata key of a status's error id (internal and storage errors).
pub const ERROR_ID_KEY: &str = "x-rxgate-error-id";

/// gRPC code for an engine status code (the table in rxgate-common).
pub fn grpc_code(code: StatusCode) -> Code {
    Code::from_i32(code.grpc_code())
}

/// The status a client sees for an engine error: its code, the first line of its client
/// message, and its SQLSTATE (and error id) as metadata.
pub fn to_status(e: Error) -> Status {
    let shown = e.client_message();
    let line = shown.lines().next().unwrap_or_default().trim().to_string();
    let mut status = Status::new(grpc_code(e.code), line);
    status.metadata_mut().insert(SQLSTATE_KEY, MetadataValue::from_static(e.code.sqlstate()));
    if let Some(id) = shown.rsplit_once("(error id ").and_then(|(_, rest)| rest.strip_suffix(')')) {
        if let Ok(v) = MetadataValue::try_from(id) {
            status.metadata_mut().insert(ERROR_ID_KEY, v);
        }
    }
    status
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
        assert_eq!(grpc_code(StatusCode::StorageUnavailable), Code::Unavailable);
        assert_eq!(grpc_code(StatusCode::Internal), Code::Internal);
        assert_eq!(grpc_code(StatusCode::InvalidAuthorization), Code::Unauthenticated);
    }

    #[test]
    fn messages_are_one_line_and_internal_detail_stays_inside() {
        let s = to_status(Error::new(StatusCode::PlanError, "bad plan\nbacktrace: at foo.rs:1"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "bad plan");
        assert_eq!(s.metadata().get(SQLSTATE_KEY).unwrap(), "42000");
        let s = to_status(Error::internal("lock poisoned at session.rs:42"));
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().starts_with("internal error (error id "), "{}", s.message());
        assert!(!s.message().contains("session.rs"));
        assert_eq!(s.metadata().get(SQLSTATE_KEY).unwrap(), "XX000");
        let id = s.metadata().get(ERROR_ID_KEY).unwrap().to_str().unwrap().to_string();
        assert!(s.message().contains(&id));
    }

    #[test]
    fn storage_errors_are_unavailable_with_58030() {
        let store = datafusion::object_store::Error::NotFound {
            path: "w/t/data/f.parquet".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let s = df_status(DataFusionError::ObjectStore(Box::new(store)));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get(SQLSTATE_KEY).unwrap(), "58030");
        assert!(s.metadata().get(ERROR_ID_KEY).is_some());
    }
}
