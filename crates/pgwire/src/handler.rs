//! Per-connection handlers: startup (trust for now), simple and extended query.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use futures::{stream, Sink, StreamExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type, METADATA_USER};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use rxgate_common::{Channel, Identity};
use rxgate_engine::{Engine, EngineSession, Planned, QueryOutput};
use tokio::sync::OnceCell;

use crate::errors::{df_to_pg, to_pg};

/// State shared by one connection's handlers.
pub(crate) struct Connection {
    engine: Engine,
    session: OnceCell<Arc<EngineSession>>,
    peer: std::net::SocketAddr,
}

impl Connection {
    pub(crate) fn new(engine: Engine, peer: std::net::SocketAddr) -> Arc<Self> {
        Arc::new(Self { engine, session: OnceCell::new(), peer })
    }

    /// The engine session, opened on first use with the user from the startup message.
    async fn session<C: ClientInfo>(&self, client: &C) -> PgWireResult<Arc<EngineSession>> {
        let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_else(|| "anonymous".into());
        let identity = Identity { user, roles: vec![], channel: Channel::PgWire, client_addr: Some(self.peer) };
        self.session
            .get_or_try_init(|| async { self.engine.session(identity).await.map(Arc::new).map_err(to_pg) })
            .await
            .cloned()
    }
}

/// Handler bundle for one connection.
pub(crate) struct Handlers {
    conn: Arc<Connection>,
    parser: Arc<Parser>,
}

impl Handlers {
    pub(crate) fn new(conn: Arc<Connection>) -> Self {
        Self { parser: Arc::new(Parser { conn: conn.clone() }), conn }
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
        Arc::new(Trust)
    }
}

/// Trust authentication (the foundation's stand-in until SCRAM lands).
struct Trust;

impl NoopStartupHandler for Trust {}

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
            .map(|t| t.map(|t| into_pg_type(&t)).unwrap_or(Ok(Type::UNKNOWN)))
            .collect()
    }

    fn get_result_schema(&self, stmt: &Planned, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match stmt.schema() {
            Some(schema) => arrow_schema_to_pg_fields(&schema, format.unwrap_or(&Format::UnifiedBinary), None),
            None => Ok(vec![]),
        }
    }
}

/// Parameter types of `$1..$n` in order, as the engine inferred them.
fn parameter_types(stmt: &Planned) -> Vec<Option<DataType>> {
    let Planned::Plan(plan) = stmt else { return vec![] };
    let Ok(types) = plan.get_parameter_types() else { return vec![] };
    let ordered: BTreeMap<usize, Option<DataType>> = types
        .into_iter()
        .filter_map(|(k, v)| k.trim_start_matches('$').parse::<usize>().ok().map(|i| (i, v)))
        .collect();
    let n = ordered.keys().max().copied().unwrap_or(0);
    (1..=n).map(|i| ordered.get(&i).cloned().flatten()).collect()
}

/// Simple and extended query handling for one connection.
pub(crate) struct Query {
    conn: Arc<Connection>,
    parser: Arc<Parser>,
}

/// Turns an engine output into a pgwire response, streaming rows as the client reads.
fn respond(output: QueryOutput, format: &Format) -> PgWireResult<Response> {
    Ok(match output {
        QueryOutput::Empty => Response::EmptyQuery,
        QueryOutput::Command { tag } => Response::Execution(Tag::new(&tag)),
        QueryOutput::TransactionStart => Response::TransactionStart(Tag::new("BEGIN")),
        QueryOutput::TransactionEnd { commit } => {
            Response::TransactionEnd(Tag::new(if commit { "COMMIT" } else { "ROLLBACK" }))
        }
        QueryOutput::Rows { schema, stream } => {
            let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, None)?);
            let f = fields.clone();
            let rows = stream
                .map(move |batch| match batch {
                    Ok(b) => stream::iter(encode_recordbatch(f.clone(), b).collect::<Vec<_>>()),
                    Err(e) => stream::iter(vec![Err(df_to_pg(e))]),
                })
                .flatten();
            Response::Query(QueryResponse::new(fields, rows))
        }
    })
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
            match result {
                Ok(output) => out.push(respond(output, &Format::UnifiedText)?),
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
            let refs: Vec<Option<&DataType>> = inferred.iter().map(|t| t.as_ref()).collect();
            Some(deserialize_parameters(portal, &refs)?)
        } else {
            None
        };
        let output = session.execute(planned, params).await.map_err(to_pg)?;
        respond(output, &portal.result_column_format)
    }
}
