//! Per-connection handlers: startup (SCRAM, see auth.rs), simple and extended query.

use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::into_pg_type;
use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use futures::{stream, Sink, SinkExt, StreamExt};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{send_partial_query_response, ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, Type, DEFAULT_NAME, METADATA_USER,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::RowDescription;
use pgwire::messages::extendedquery::{Describe, Execute, TARGET_TYPE_BYTE_PORTAL};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;
use rxgate_common::{Channel, Error, Identity, StatusCode};
use rxgate_engine::{Engine, EngineSession, Planned, QueryOutput};
use tokio::sync::OnceCell;

use crate::auth::{not_authenticated, Authenticated, Startup};
use crate::cancel::{CancelRegistry, CancelRequests, CancelSlot};
use crate::encode::{pg_fields, RowWriter, Target};
use crate::errors::{df_to_pg, to_pg};

/// State shared by one connection's handlers.
pub(crate) struct Connection {
    engine: Engine,
    session: OnceCell<Arc<EngineSession>>,
    peer: std::net::SocketAddr,
    /// The COPY FROM STDIN receiving data, if any.
    pub(crate) copy: tokio::sync::Mutex<Option<crate::copy::Incoming>>,
}

impl Connection {
    pub(crate) fn new(engine: Engine, peer: std::net::SocketAddr) -> Arc<Self> {
        Arc::new(Self { engine, session: OnceCell::new(), peer, copy: Default::default() })
    }

    /// Fires the cancel token of the statement the connection's session runs, if any (the
    /// client went away).
    pub(crate) fn cancel_running(&self) {
        if let Some(session) = self.session.get() {
            session.canceller().cancel();
        }
    }

    /// Completes when `pg_terminate_backend` ends the connection's session (never, before
    /// the session opens).
    pub(crate) fn terminated(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let session = self.session.get().cloned();
        async move {
            match session {
                Some(s) => s.terminated().await,
                None => std::future::pending().await,
            }
        }
    }

    /// The engine session, opened on first use with the user from the startup message.
    pub(crate) async fn session<C: ClientInfo>(&self, client: &C) -> PgWireResult<Arc<EngineSession>> {
        let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_else(|| "anonymous".into());
        // No login, no session (see auth.rs); the roles come from the users file at login.
        let Some(login) = client.session_extensions().get::<Authenticated>() else {
            return Err(not_authenticated());
        };
        let roles = login.0.roles.clone();
        let identity = Identity { user, roles, channel: Channel::PgWire, client_addr: Some(self.peer) };
        self.session
            .get_or_try_init(|| async {
                let session = self.engine.session(identity).await.map_err(to_pg)?;
                // pg_stat_activity and pg_cancel_backend know the session by its BackendKeyData pid.
                session.set_backend_pid(client.pid_and_secret_key().0);
                session.apply_startup_parameters(client.metadata().iter().map(|(k, v)| (k.as_str(), v.as_str())));
                if let Some(slot) = client.session_extensions().get::<Arc<CancelSlot>>() {
                    slot.bind(session.canceller());
                }
                Ok(Arc::new(session))
            })
            .await
            .cloned()
    }
}

/// Handler bundle for one connection.
pub(crate) struct Handlers {
    conn: Arc<Connection>,
    parser: Arc<Parser>,
    startup: Arc<Startup>,
    cancels: Arc<CancelRequests>,
}

impl Handlers {
    pub(crate) fn new(conn: Arc<Connection>, startup: Startup, cancels: Arc<CancelRegistry>) -> Self {
        Self {
            parser: Arc::new(Parser { conn: conn.clone() }),
            conn,
            startup: Arc::new(startup),
            cancels: Arc::new(CancelRequests(cancels)),
        }
    }
}

impl Handlers {
    /// The connection's shared state.
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(Query { conn: self.conn.clone(), parser: self.parser.clone() })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(Query { conn: self.conn.clone(), parser: self.parser.clone() })
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancels.clone()
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        Arc::new(crate::copy::CopyFrom { conn: self.conn.clone() })
    }
}

/// Plans statements for the extended protocol through the engine's entry point.
pub(crate) struct Parser {
    conn: Arc<Connection>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Planned;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Planned>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = self.conn.session(client).await?;
        session.plan(sql).await.map_err(to_pg)
    }

    fn get_parameter_types(&self, stmt: &Planned) -> PgWireResult<Vec<Type>> {
        parameter_types(stmt)
            .into_iter()
            .map(|t| match t {
                Some(t) if is_oid_array(&t) => Ok(Type::OID_ARRAY),
                Some(t) => into_pg_type(&t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    fn get_result_schema(&self, stmt: &Planned, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match stmt.schema() {
            Some(schema) => pg_fields(&schema, format.unwrap_or(&Format::UnifiedBinary)),
            None => Ok(vec![]),
        }
    }
}

/// Parameter types of `$1..$n` in order, as the engine inferred them.
fn parameter_types(stmt: &Planned) -> Vec<Option<DataType>> {
    stmt.parameter_types()
}

fn is_oid_array(t: &DataType) -> bool {
    matches!(t, DataType::List(f) if f.data_type() == &DataType::UInt32)
}

/// An `oid[]` parameter, binary (array header, then length-prefixed big-endian u32s) or text
/// (`{1,2}`), as a list of UInt32.
fn decode_oid_array(raw: Option<&[u8]>, binary: bool) -> PgWireResult<ScalarValue> {
    let bad = || to_pg(Error::new(StatusCode::InvalidTextRepresentation, "invalid oid[] parameter"));
    let Some(raw) = raw else { return Ok(ScalarValue::List(ScalarValue::new_list_nullable(&[], &DataType::UInt32))) };
    let mut values: Vec<ScalarValue> = vec![];
    if binary {
        let int = |b: &[u8], at: usize| -> PgWireResult<i32> {
            Ok(i32::from_be_bytes(b.get(at..at + 4).ok_or_else(bad)?.try_into().map_err(|_| bad())?))
        };
        let ndim = int(raw, 0)?;
        let mut at = 12;
        let mut count = 1i64;
        for _ in 0..ndim {
            count *= i64::from(int(raw, at)?);
            at += 8;
        }
        if ndim == 0 {
            count = 0;
        }
        for _ in 0..count {
            let len = int(raw, at)?;
            at += 4;
            if len < 0 {
                values.push(ScalarValue::UInt32(None));
            } else {
                values.push(ScalarValue::UInt32(Some(int(raw, at)? as u32)));
                at += len as usize;
            }
        }
    } else {
        let text = std::str::from_utf8(raw).map_err(|_| bad())?;
        let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
        for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            values.push(if item.eq_ignore_ascii_case("null") {
                ScalarValue::UInt32(None)
            } else {
                ScalarValue::UInt32(Some(item.parse().map_err(|_| bad())?))
            });
        }
    }
    Ok(ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::UInt32)))
}

/// Simple and extended query handling for one connection.
pub(crate) struct Query {
    conn: Arc<Connection>,
    parser: Arc<Parser>,
}

/// Sends ParameterStatus for the parameters a statement changed (`SET client_encoding`,
/// `SET DateStyle`, …), as PostgreSQL does; drivers track them.
async fn report_parameters<C>(client: &mut C, session: &EngineSession) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for (name, value) in session.take_reported_parameters() {
        client.send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(name, value))).await?;
    }
    Ok(())
}

/// Turns an engine output into a pgwire response, streaming rows as the client reads. A COPY
/// is sent here, on `client` (see copy.rs); its response is the `COPY n` tag.
async fn respond<C>(client: &mut C, conn: &Connection, output: QueryOutput, format: &Format) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    Ok(match output {
        QueryOutput::Empty => Response::EmptyQuery,
        QueryOutput::Command { tag } | QueryOutput::Written { tag, .. } => Response::Execution(Tag::new(&tag)),
        QueryOutput::TransactionStart => Response::TransactionStart(Tag::new("BEGIN")),
        QueryOutput::TransactionEnd { commit } => {
            Response::TransactionEnd(Tag::new(if commit { "COMMIT" } else { "ROLLBACK" }))
        }
        QueryOutput::Rows { schema, stream } => Response::Query(rows_response(schema, stream, format)?),
        QueryOutput::Fetched { schema, stream } => {
            let mut response = rows_response(schema, stream, format)?;
            response.set_command_tag("FETCH");
            Response::Query(response)
        }
        QueryOutput::Copy { schema, stream, options } => {
            crate::copy::send_copy_out(client, schema, stream, &options).await?
        }
        QueryOutput::CopyIn(sink) => crate::copy::start_copy_in(conn, sink).await?,
    })
}

/// Rows as DataRow messages, encoded batch by batch as the client reads them; the rows of a
/// batch share one buffer (see encode.rs).
fn rows_response(schema: SchemaRef, stream: SendableRecordBatchStream, format: &Format) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(pg_fields(&schema, format)?);
    let mut writer = RowWriter::new(fields.clone(), Target::DataRow);
    let rows = stream
        .map(move |batch| match batch.map_err(df_to_pg).and_then(|b| writer.data_rows(&b)) {
            Ok(rows) => stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => stream::iter(vec![Err(e)]),
        })
        .flatten();
    Ok(QueryResponse::new(fields, rows))
}

#[async_trait]
impl SimpleQueryHandler for Query {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.conn.session(client).await?;
        let statements = session.split(query).map_err(to_pg)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = vec![];
        for sql in statements {
            let result = async {
                let planned = session.plan(&sql).await?;
                session.execute(&planned, None).await
            }
            .await;
            report_parameters(client, &session).await?;
            match result {
                Ok(output) => out.push(respond(client, &self.conn, output, &Format::UnifiedText).await?),
                Err(e) => {
                    out.push(Response::Error(Box::new(match to_pg(e) {
                        PgWireError::UserError(info) => *info,
                        other => return Err(other),
                    })));
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Query {
    type Statement = Planned;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // A cursor made with DECLARE is a portal too: psycopg describes it by name.
        if message.target_type == TARGET_TYPE_BYTE_PORTAL {
            let name = message.name.clone().unwrap_or_default();
            if client.portal_store().get_portal(&name).is_none() {
                let session = self.conn.session(client).await?;
                if let Some(schema) = session.cursor_schema(&name) {
                    let fields = pg_fields(&schema, &Format::UnifiedText)?;
                    let description = RowDescription::new(fields.iter().map(Into::into).collect());
                    client.send(PgWireBackendMessage::RowDescription(description)).await?;
                    return Ok(());
                }
            }
        }
        self._on_describe(client, message).await
    }

    /// An Execute without a row limit (`max_rows` 0: JDBC, psycopg with binary results,
    /// asyncpg's `fetch`) streams its rows as they are computed. pgwire's own Execute gathers
    /// every row of an unlimited fetch in memory before sending the first (`Portal::fetch`),
    /// which would hold a whole table export in the server; so would the rest of a portal a
    /// row limit suspended. Row limits and statements that return no rows take pgwire's path.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(p) if message.max_rows == 0 && p.statement.statement.returns_rows() => p,
            _ => return self._on_execute(client, message).await,
        };
        let state = portal.state();
        let mut state = state.lock().await;
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery)
            || !matches!(*state, PortalExecutionState::Initial | PortalExecutionState::Suspended(_))
        {
            drop(state);
            return self._on_execute(client, message).await;
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        // `take` leaves an unstarted portal as it was until its query has started.
        let mut rows = match std::mem::take(&mut *state) {
            // The rest of a portal that a row limit suspended.
            PortalExecutionState::Suspended(rows) => rows,
            _ => match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await? {
                Response::Query(rows) => rows,
                _ => return Err(PgWireError::ApiError("a row-returning statement answered without rows".into())),
            },
        };
        *state = PortalExecutionState::Finished;
        drop(state);
        send_partial_query_response(client, &mut rows, 0).await?;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Planned>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.conn.session(client).await?;
        let planned = &portal.statement.statement;
        let inferred = parameter_types(planned);
        let params = if portal.parameter_len() > 0 {
            // oid[] parameters (the engine types them List<UInt32>) are decoded here: arrow-pg
            // has no oid type. They go through arrow-pg as opaque text first, then get replaced.
            let opaque = DataType::Null;
            // A NULL of a type neither side named (psycopg sends None untyped) is a text NULL:
            // arrow-pg's fallback skips NULLs, which would shift every later parameter.
            let text = DataType::Utf8;
            let refs: Vec<Option<&DataType>> = (0..portal.parameter_len())
                .map(|i| match inferred.get(i).and_then(|t| t.as_ref()) {
                    Some(t) if is_oid_array(t) => Some(&opaque),
                    Some(t) => Some(t),
                    None if portal.parameters.get(i).is_some_and(|p| p.is_none()) => Some(&text),
                    None => None,
                })
                .collect();
            // When every parameter is an oid[] (asyncpg's introspection), arrow-pg is skipped:
            // it would read a binary oid[] as text and fail on bytes that are not UTF-8.
            let all_oid_arrays = inferred.len() == portal.parameter_len()
                && inferred.iter().all(|t| t.as_ref().is_some_and(is_oid_array));
            let mut params = if all_oid_arrays {
                ParamValues::List(vec![ScalarValue::Null.into(); portal.parameter_len()])
            } else {
                deserialize_parameters(portal, &refs)?
            };
            if let ParamValues::List(values) = &mut params {
                for (i, t) in inferred.iter().enumerate() {
                    if t.as_ref().is_some_and(is_oid_array) {
                        if let (Some(slot), Some(raw)) = (values.get_mut(i), portal.parameters.get(i)) {
                            *slot = decode_oid_array(raw.as_deref(), portal.parameter_format.is_binary(i))?.into();
                        }
                    }
                }
            }
            Some(params)
        } else {
            None
        };
        let output = session.execute(planned, params).await;
        report_parameters(client, &session).await?;
        respond(client, &self.conn, output.map_err(to_pg)?, &portal.result_column_format).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_arrays_decode_from_text_and_binary() {
        let want = ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::UInt32(Some(1700)), ScalarValue::UInt32(Some(25))],
            &DataType::UInt32,
        ));
        assert_eq!(decode_oid_array(Some(b"{1700,25}"), false).unwrap(), want);
        let mut raw = vec![];
        for v in [1i32, 0, 26, 2, 1, 4, 1700, 4, 25] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(decode_oid_array(Some(&raw), true).unwrap(), want);
        assert!(decode_oid_array(Some(b"{x}"), false).is_err());
        assert!(decode_oid_array(Some(&raw[..10]), true).is_err());
    }
}
