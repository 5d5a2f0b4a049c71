//! The Flight SQL service: every RPC checks the bearer token, then translates to engine calls.
//! Statements (ad hoc, prepared, metadata) are planned by the token's engine session through
//! [`rxgate_engine::EngineSession::plan`]; results leave through tickets (see `tickets`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::common::ParamValues;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use rxgate_auth::random_bytes;
use rxgate_common::StatusCode;
use rxgate_engine::{CancelToken, Planned, QueryOutput};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{FlightSession, Sessions};
use crate::encode::Outgoing;
use crate::metadata;
use crate::prepared::{schema_bytes, Prepared};
use crate::status::{df_status, internal, status, to_status};
use crate::tickets::{Cancelled, Redeemed, ResultEntry, ResultSource, Tickets};

/// How long the first DoGet of a multi-endpoint result waits for the other endpoints to be
/// redeemed before it streams the unredeemed ones itself (parallel clients redeem within
/// milliseconds of each other).
const SIBLING_GRACE: Duration = Duration::from_millis(250);

/// Prepared statements one session may hold at once.
const MAX_PREPARED_PER_SESSION: usize = 1024;

/// Bytes of parameter data one DoPut may bind.
const MAX_PARAMETER_BYTES: usize = 64 << 20;

/// The Flight core action that revokes the caller's token.
const CLOSE_SESSION: &str = "CloseSession";

/// The Flight core action that cancels a query by its FlightInfo.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// `ActionCancelQueryResult.CancelResult` values (the enum is not exported by arrow-flight).
const CANCEL_RESULT_CANCELLED: i32 = 1;
const CANCEL_RESULT_NOT_CANCELLABLE: i32 = 3;

/// `CloseSessionResult` of the Flight specification (status 1 = CLOSED).
#[derive(Clone, PartialEq, prost::Message)]
struct CloseSessionResult {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) sessions: Sessions,
    pub(crate) tickets: Tickets,
}

/// The service tonic serves.
#[derive(Clone)]
pub(crate) struct FlightSqlServiceImpl {
    shared: Arc<Shared>,
}

/// A response stream of `T`s.
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn authorization<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get("authorization").and_then(|v| v.to_str().ok())
}

impl FlightSqlServiceImpl {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn session<T>(&self, request: &Request<T>) -> Result<Arc<FlightSession>, Status> {
        self.shared.sessions.session(authorization(request))
    }

    /// The DoGet messages of a statement ticket: the partition it names (plus the siblings
    /// nobody redeemed in time, see `tickets`), encoded as the client reads.
    pub(crate) async fn statement_messages<T>(
        &self,
        ticket: TicketStatementQuery,
        request: &Request<T>,
    ) -> Result<BoxStream<Outgoing>, Status> {
        let session = self.session(request)?;
        let (entry, schema, streams) = match self.shared.tickets.redeem(session.user(), &ticket.statement_handle)? {
            Redeemed::Drained(schema) => (None, schema, vec![]),
            Redeemed::Partition(entry, partition) => {
                let mut partitions = vec![partition];
                if entry.partitions() > 1 {
                    // Siblings nobody redeemed within the grace are streamed here too (see
                    // `tickets`): a reader of one endpoint at a time never makes the server
                    // buffer the other partitions.
                    partitions.extend(self.shared.tickets.claim_unredeemed(&entry, SIBLING_GRACE).await);
                }
                let streams = partitions.into_iter().map(|p| entry.stream(p)).collect::<Result<Vec<_>, _>>()?;
                (Some(entry.clone()), entry.schema(), streams)
            }
        };
        // One partition, or several merged at the reader's pace (polled in turn, never ahead).
        let batches = futures::stream::select_all(streams).map_err(df_status);
        // The stream keeps its result registered (cancellable) until it ends.
        Ok(Box::pin(crate::encode::messages(schema, batches).map(move |item| {
            let _registered = &entry;
            item
        })))
    }

    /// Plans a statement's partitions and offers them as endpoints.
    async fn info_for_planned(
        &self,
        session: &FlightSession,
        planned: &Planned,
        params: Option<ParamValues>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let token = CancelToken::new();
        let query = session.engine.execute_partitioned(planned, params, token.clone()).await.map_err(to_status)?;
        self.info_for(ResultEntry::new(session.user(), ResultSource::Query(query), token), descriptor)
    }

    /// Offers a computed (small) answer as one endpoint.
    fn info_for_batch(
        &self,
        session: &FlightSession,
        batch: RecordBatch,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let rows = batch.num_rows() as i64;
        let source = ResultSource::Batches(batch.schema(), Mutex::new(Some(vec![batch])));
        Ok(self
            .info_for(ResultEntry::new(session.user(), source, CancelToken::new()), descriptor)?
            .with_total_records(rows))
    }

    fn info_for(&self, entry: ResultEntry, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        let schema = entry.schema();
        let endpoints = self.shared.tickets.issue(entry);
        let ordered = endpoints.len() == 1;
        Ok(FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(internal)?
            .with_descriptor(descriptor)
            .with_endpoints(endpoints)
            .with_ordered(ordered)
            .with_total_records(-1)
            .with_total_bytes(-1))
    }

    pub(crate) fn prepared(&self, session: &FlightSession, handle: &[u8]) -> Result<Arc<Prepared>, Status> {
        session.prepared.lock().expect("prepared lock").get(handle).cloned().ok_or_else(|| {
            status(StatusCode::TableNotFound, "prepared statement not found (closed, or of another session)")
        })
    }

    /// Runs a statement that returns no rows, once; answers its record count (the rows a
    /// write affected; 0 for other commands).
    async fn run_update(
        &self,
        session: &FlightSession,
        planned: &Planned,
        params: Option<ParamValues>,
    ) -> Result<i64, Status> {
        if planned.schema().is_some() {
            return Err(status(StatusCode::InvalidArgument, "the statement returns rows: run it as a query"));
        }
        match session.engine.execute(planned, params).await.map_err(to_status)? {
            QueryOutput::Rows { .. } => {
                Err(status(StatusCode::InvalidArgument, "the statement returns rows: run it as a query"))
            }
            QueryOutput::Written { rows, .. } => Ok(i64::try_from(rows).unwrap_or(i64::MAX)),
            _ => Ok(0),
        }
    }

    fn cancel(&self, session: &FlightSession, info: &FlightInfo) -> Result<Cancelled, Status> {
        let tickets = info.endpoint.iter().filter_map(|e| e.ticket.as_ref()).map(|t| t.ticket.as_ref());
        let outcome = self.shared.tickets.cancel(session.user(), tickets)?;
        if outcome == Cancelled::Cancelled {
            tracing::info!(user = %session.user(), "flight sql: query cancelled");
        }
        Ok(outcome)
    }
}

/// Reads the record batches of a DoPut (parameters), within [`MAX_PARAMETER_BYTES`].
async fn read_batches(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, Status> {
    // The first message (peeked by the dispatcher, still in the stream) may carry only the
    // descriptor; the decoder wants IPC messages.
    let data = stream.try_filter(|d| futures::future::ready(!d.data_header.is_empty()));
    let mut decoded = FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from));
    let mut batches = vec![];
    let mut bytes = 0;
    while let Some(batch) = decoded.next().await {
        let batch = batch.map_err(|e| match e {
            FlightError::Tonic(s) => *s,
            other => status(StatusCode::InvalidArgument, format!("bad parameter data: {other}")),
        })?;
        bytes += batch.get_array_memory_size();
        if bytes > MAX_PARAMETER_BYTES {
            return Err(status(StatusCode::ResourcesExhausted, "too much parameter data in one DoPut"));
        }
        batches.push(batch);
    }
    Ok(batches)
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServiceImpl {
    type FlightService = FlightSqlServiceImpl;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let token = self.shared.sessions.login(authorization(&request), request.remote_addr()).await?;
        let bearer = format!("Bearer {token}").parse().map_err(internal)?;
        let reply = HandshakeResponse { protocol_version: 0, payload: token.into_bytes().into() };
        let replies: BoxStream<HandshakeResponse> = Box::pin(futures::stream::iter(vec![Ok(reply)]));
        let mut response = Response::new(replies);
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let planned = session.engine.plan(&query.query).await.map_err(to_status)?;
        let info = self.info_for_planned(&session, &planned, None, request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let prepared = self.prepared(&session, &cmd.prepared_statement_handle)?;
        let params = prepared.bound.lock().expect("bound lock").clone();
        if params.is_none() && !prepared.parameter_types.is_empty() {
            return Err(status(
                StatusCode::InvalidArgument,
                format!("the statement takes {} parameter(s): bind them first", prepared.parameter_types.len()),
            ));
        }
        let info = self.info_for_planned(&session, &prepared.planned, params, request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::catalogs(&session.engine, query).await?;
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::db_schemas(&session.engine, query).await?;
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::tables(&session.engine, query).await?;
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::table_types(&session.engine, query).await?;
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = query.into_builder(metadata::sql_info()).build().map_err(internal)?;
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::empty(metadata::primary_keys_schema());
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::empty(metadata::foreign_keys_schema());
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::empty(metadata::foreign_keys_schema());
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = metadata::empty(metadata::foreign_keys_schema());
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let batch = query.into_builder(metadata::xdbc_info()).build().map_err(internal)?;
        Ok(Response::new(self.info_for_batch(&session, batch, request.into_inner())?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let messages = self.statement_messages(ticket, &request).await?;
        let flight: <Self as FlightService>::DoGetStream = Box::pin(messages.map_ok(Outgoing::into_flight_data));
        Ok(Response::new(flight))
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session(&request)?;
        let planned = session.engine.plan(&cmd.query).await.map_err(to_status)?;
        self.run_update(&session, &planned, None).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let session = self.session(&request)?;
        let prepared = self.prepared(&session, &cmd.prepared_statement_handle)?;
        let batches = read_batches(request.into_inner()).await?;
        let mut rows = batches.iter().filter(|b| b.num_rows() > 0);
        let bound = match (rows.next(), rows.next()) {
            (None, _) => None,
            (Some(b), None) if b.num_rows() == 1 => Some(prepared.row_params(b, 0)?),
            _ => {
                return Err(status(StatusCode::InvalidArgument, "a query takes exactly one row of parameters"));
            }
        };
        *prepared.bound.lock().expect("bound lock") = bound;
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(cmd.prepared_statement_handle) })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = self.session(&request)?;
        let prepared = self.prepared(&session, &cmd.prepared_statement_handle)?;
        let batches = read_batches(request.into_inner()).await?;
        if prepared.parameter_types.is_empty() {
            return self.run_update(&session, &prepared.planned, None).await;
        }
        if prepared.planned.schema().is_some() {
            return Err(status(StatusCode::InvalidArgument, "the statement returns rows: run it as a query"));
        }
        let mut rows = vec![];
        for batch in &batches {
            for row in 0..batch.num_rows() {
                rows.push(prepared.row_params(batch, row)?);
            }
        }
        // All the parameter rows in one call: an INSERT … VALUES writes them in one commit.
        let count = session.engine.execute_rows(&prepared.planned, rows).await.map_err(to_status)?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        use arrow_flight::sql::{TableExistsOption as Exists, TableNotExistOption as Missing};
        use rxgate_engine::IngestMode;
        let session = self.session(&request)?;
        if cmd.temporary {
            return Err(status(StatusCode::Unsupported, "temporary tables are not supported"));
        }
        let options = cmd.table_definition_options.unwrap_or_default();
        let missing = Missing::try_from(options.if_not_exist).unwrap_or(Missing::Unspecified);
        let exists = Exists::try_from(options.if_exists).unwrap_or(Exists::Unspecified);
        let mode = match (missing, exists) {
            (Missing::Create, Exists::Replace) => IngestMode::Replace,
            (Missing::Create, Exists::Append) => IngestMode::CreateAppend,
            (Missing::Create, _) => IngestMode::Create,
            (_, Exists::Replace) => IngestMode::Replace,
            (_, _) => IngestMode::Append,
        };
        let mut table = vec![];
        if let Some(schema) = cmd.schema.filter(|s| !s.is_empty()) {
            table.push(schema);
        }
        table.push(cmd.table);
        let data = request.into_inner().try_filter(|d| futures::future::ready(!d.data_header.is_empty()));
        let mut decoded = FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from));
        let first = decoded.next().await.transpose().map_err(|e| match e {
            FlightError::Tonic(s) => *s,
            other => status(StatusCode::InvalidArgument, format!("bad ingest data: {other}")),
        })?;
        let schema = match (&first, decoded.schema()) {
            (Some(b), _) => b.schema(),
            (None, Some(s)) => s.clone(),
            (None, None) => return Err(status(StatusCode::InvalidArgument, "ingest without a schema")),
        };
        let rest = decoded.map(|r| r.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e))));
        let batches = futures::stream::iter(first.map(Ok)).chain(rest);
        let stream = Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, batches));
        let rows = session.engine.ingest(&table, mode, stream).await.map_err(to_status)?;
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self.session(&request)?;
        let planned = session.engine.plan(&query.query).await.map_err(to_status)?;
        let prepared = Prepared::new(planned);
        let handle = random_bytes::<16>().to_vec();
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.clone().into(),
            dataset_schema: schema_bytes(&prepared.dataset_schema())?,
            parameter_schema: if prepared.parameter_types.is_empty() {
                Default::default()
            } else {
                schema_bytes(&prepared.parameter_schema())?
            },
        };
        let mut all = session.prepared.lock().expect("prepared lock");
        if all.len() >= MAX_PREPARED_PER_SESSION {
            return Err(status(StatusCode::ResourcesExhausted, "too many open prepared statements: close some"));
        }
        all.insert(handle, prepared);
        tracing::debug!(user = %session.user(), open = all.len(), "flight sql: prepared statement created");
        Ok(result)
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let session = self.session(&request)?;
        // Closing a handle that is gone already is not an error: the client's intent holds.
        let mut all = session.prepared.lock().expect("prepared lock");
        all.remove(query.prepared_statement_handle.as_ref());
        tracing::debug!(user = %session.user(), open = all.len(), "flight sql: prepared statement closed");
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let session = self.session(&request)?;
        let info = FlightInfo::decode(query.info).map_err(|_| status(StatusCode::InvalidArgument, "bad FlightInfo"))?;
        let result = match self.cancel(&session, &info)? {
            Cancelled::Cancelled => CANCEL_RESULT_CANCELLED,
            Cancelled::Unknown => CANCEL_RESULT_NOT_CANCELLABLE,
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let session = self.session(&request)?;
        let body = match request.get_ref().r#type.as_str() {
            CANCEL_FLIGHT_INFO => {
                let req = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
                    .map_err(|_| status(StatusCode::InvalidArgument, "bad CancelFlightInfoRequest"))?;
                let info = req
                    .info
                    .ok_or_else(|| status(StatusCode::InvalidArgument, "CancelFlightInfo without a FlightInfo"))?;
                match self.cancel(&session, &info)? {
                    Cancelled::Cancelled => CancelFlightInfoResult::new(CancelStatus::Cancelled).encode_to_vec(),
                    Cancelled::Unknown => {
                        return Err(status(
                            StatusCode::TableNotFound,
                            "no running or pending query for this FlightInfo",
                        ))
                    }
                }
            }
            CLOSE_SESSION => {
                self.shared.sessions.close(authorization(&request));
                tracing::info!(user = %session.user(), "flight sql: session closed by the client");
                CloseSessionResult { status: 1 }.encode_to_vec()
            }
            other => {
                return Err(status(StatusCode::Unsupported, format!("unknown action {other:?}")));
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        let results: <Self as FlightService>::DoActionStream = Box::pin(futures::stream::iter(vec![Ok(result)]));
        Ok(Response::new(results))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![
            Ok(ActionType {
                r#type: CANCEL_FLIGHT_INFO.into(),
                description: "Cancel a query by its FlightInfo.\nRequest: CancelFlightInfoRequest\nResult: CancelFlightInfoResult".into(),
            }),
            Ok(ActionType {
                r#type: CLOSE_SESSION.into(),
                description: "End the caller's session: its bearer token stops working.".into(),
            }),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
