//! The Flight service (served through [`crate::doget::Routed`]): arrow-flight's Flight SQL
//! dispatcher (`FlightSqlService`'s blanket `FlightService`), behind a gate that
//! - refuses malformed commands, tickets and action bodies with a short message of ours (the
//!   dispatcher would answer with a protobuf decoder's debug output);
//! - answers GetSchema (which the dispatcher leaves unimplemented) for statements, prepared
//!   statements and metadata commands, planning through the session like GetFlightInfo does.

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo, SchemaAsIpc,
    SchemaResult, Ticket,
};
use futures::TryStreamExt;
use prost::Message;
use rxgate_common::StatusCode;
use tonic::{Request, Response, Status, Streaming};

use crate::encode::Outgoing;
use crate::metadata;
use crate::service::{BoxStream, FlightSqlServiceImpl};
use crate::status::{internal, status, to_status};

/// The gate in front of the Flight SQL dispatcher.
#[derive(Clone)]
pub(crate) struct Gate(pub(crate) FlightSqlServiceImpl);

type Inner = FlightSqlServiceImpl;

fn malformed() -> Status {
    status(StatusCode::InvalidArgument, "malformed Flight SQL command")
}

/// The Flight SQL command in a descriptor or action body, or a clean error.
fn command(bytes: &[u8]) -> Result<Command, Status> {
    let any = Any::decode(bytes).map_err(|_| malformed())?;
    Command::try_from(any).map_err(|_| malformed())
}

impl Gate {
    /// DoGet's messages, before they are encoded (what [`crate::doget`] writes).
    pub(crate) async fn do_get_messages(&self, request: &Request<Ticket>) -> Result<BoxStream<Outgoing>, Status> {
        // Every ticket we issue is a TicketStatementQuery; anything else was not issued here.
        let Ok(Command::TicketStatementQuery(ticket)) = command(&request.get_ref().ticket) else {
            self.0.session(request)?;
            return Err(status(StatusCode::TableNotFound, "ticket not found: unknown, expired or already used"));
        };
        self.0.statement_messages(ticket, request).await
    }
}

#[tonic::async_trait]
impl FlightService for Gate {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.0, request).await
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.0.session(&request)?;
        Err(status(StatusCode::Unsupported, "ListFlights is not supported"))
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        command(&request.get_ref().cmd)?;
        FlightService::get_flight_info(&self.0, request).await
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        self.0.session(&request)?;
        Err(status(StatusCode::Unsupported, "PollFlightInfo is not supported: use GetFlightInfo"))
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let session = self.0.session(&request)?;
        let schema: Schema = match command(&request.get_ref().cmd)? {
            Command::CommandStatementQuery(q) => {
                let planned = session.engine.plan(&q.query).await.map_err(to_status)?;
                planned.schema().map(|s| crate::wire::wire_schema(&s).as_ref().clone()).unwrap_or_else(Schema::empty)
            }
            Command::CommandPreparedStatementQuery(p) => {
                self.0.prepared(&session, &p.prepared_statement_handle)?.dataset_schema().as_ref().clone()
            }
            Command::CommandGetCatalogs(c) => c.into_builder().schema().as_ref().clone(),
            Command::CommandGetDbSchemas(c) => c.into_builder().schema().as_ref().clone(),
            Command::CommandGetTables(c) => c.into_builder().schema().as_ref().clone(),
            Command::CommandGetTableTypes(c) => c.into_builder().schema().as_ref().clone(),
            Command::CommandGetSqlInfo(c) => c.into_builder(metadata::sql_info()).schema().as_ref().clone(),
            Command::CommandGetXdbcTypeInfo(c) => c.into_builder(metadata::xdbc_info()).schema().as_ref().clone(),
            Command::CommandGetPrimaryKeys(_) => metadata::primary_keys_schema().as_ref().clone(),
            Command::CommandGetExportedKeys(_)
            | Command::CommandGetImportedKeys(_)
            | Command::CommandGetCrossReference(_) => metadata::foreign_keys_schema().as_ref().clone(),
            other => {
                return Err(status(
                    StatusCode::Unsupported,
                    format!("GetSchema of {} is not supported", other.type_url()),
                ))
            }
        };
        let result: SchemaResult =
            SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).try_into().map_err(internal)?;
        Ok(Response::new(result))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let messages = self.do_get_messages(&request).await?;
        Ok(Response::new(Box::pin(messages.map_ok(Outgoing::into_flight_data))))
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.0, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.0.session(&request)?;
        Err(status(StatusCode::Unsupported, "DoExchange is not supported"))
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.get_ref();
        let sql_action = !matches!(action.r#type.as_str(), "CancelFlightInfo" | "CloseSession");
        if sql_action && Any::decode(action.body.as_ref()).is_err() {
            return Err(status(StatusCode::InvalidArgument, "malformed action body"));
        }
        FlightService::do_action(&self.0, request).await
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        self.0.session(&request)?;
        FlightService::list_actions(&self.0, request).await
    }
}
