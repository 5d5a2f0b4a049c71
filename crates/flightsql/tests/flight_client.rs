//! The Flight SQL server end to end with arrow-flight's own `FlightSqlServiceClient`: an
//! embedded lakehouse with the curated (empty) tables, a users file, a server on a free port.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, SqlInfo};
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use rxgate_auth::{ScramVerifier, User, UserDirectory, Users, MIN_ITERATIONS};
use rxgate_catalog::{apply_definitions, parse_definitions, Lakehouse, LakehouseConfig};
use rxgate_engine::{Engine, EngineConfig};
use rxgate_flightsql::{FlightSqlConfig, FlightSqlServer};
use tonic::transport::Channel;

struct Fixture {
    _dir: tempfile::TempDir,
    users_file: std::path::PathBuf,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn add_user(users: &mut Users, name: &str, password: &str) {
    users
        .add(User {
            name: name.into(),
            roles: vec!["admin".into()],
            max_connections: None,
            verifier: ScramVerifier::new(password, MIN_ITERATIONS).unwrap(),
        })
        .unwrap();
}

async fn start(config: FlightSqlConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lakehouse::open(&LakehouseConfig::embedded(dir.path())).await.unwrap();
    let defs = parse_definitions(include_str!("../../../catalog/health.toml"), "health.toml").unwrap();
    apply_definitions(&lake, &defs).await.unwrap();
    let engine = Engine::new(lake, EngineConfig { target_partitions: 4, ..EngineConfig::default() }).unwrap();
    let users_file = dir.path().join("users.toml");
    let mut users = Users::default();
    add_user(&mut users, "ann", "pw-ann");
    add_user(&mut users, "bob", "pw-bob");
    users.save(&users_file).unwrap();
    let directory = Arc::new(UserDirectory::open(&users_file).unwrap());
    let config = FlightSqlConfig { listen: "127.0.0.1:0".into(), ..config };
    let server = FlightSqlServer::bind(engine, &config, directory).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Fixture { _dir: dir, users_file, addr, _stop: stop }
}

async fn client(f: &Fixture) -> FlightSqlServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::new(format!("http://{}", f.addr)).unwrap().connect().await.unwrap();
    FlightSqlServiceClient::new(channel)
}

async fn login(f: &Fixture, user: &str, password: &str) -> FlightSqlServiceClient<Channel> {
    let mut c = client(f).await;
    c.handshake(user, password).await.unwrap();
    assert!(c.token().is_some(), "the handshake answers a bearer token header");
    c
}

// Errors reach the test as text; a status shows its code by the code's description.

fn ticket(info: &FlightInfo, i: usize) -> Ticket {
    info.endpoint[i].ticket.clone().unwrap()
}

async fn fetch(c: &mut FlightSqlServiceClient<Channel>, t: Ticket) -> Result<Vec<RecordBatch>, String> {
    let stream = c.do_get(t).await.map_err(|e| e.to_string())?;
    stream.try_collect().await.map_err(|e| e.to_string())
}

async fn fetch_all(c: &mut FlightSqlServiceClient<Channel>, info: &FlightInfo) -> Vec<RecordBatch> {
    let mut out = vec![];
    for i in 0..info.endpoint.len() {
        out.extend(fetch(c, ticket(info, i)).await.unwrap());
    }
    out
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_metadata_and_tickets() {
    let f = start(FlightSqlConfig::default()).await;

    // Wrong password and unknown user: the same UNAUTHENTICATED answer.
    for (user, pw) in [("ann", "nope"), ("nobody", "pw-ann")] {
        let err = client(&f).await.handshake(user, pw).await.unwrap_err().to_string();
        assert!(
            err.contains(tonic::Code::Unauthenticated.description()) && err.contains("password authentication failed"),
            "{err}"
        );
    }
    // No token: nothing but the handshake works.
    let err = client(&f).await.execute("SELECT 1".into(), None).await.unwrap_err().to_string();
    assert!(err.contains(tonic::Code::Unauthenticated.description()), "{err}");

    let mut ann = login(&f, "ann", "pw-ann").await;

    // A grouped query has one output partition per target partition: several endpoints,
    // fetched in parallel, together holding the whole answer.
    let sql = "SELECT value % 7 AS k, count(*) AS n FROM generate_series(1, 100000) GROUP BY value % 7";
    let info = ann.execute(sql.into(), None).await.unwrap();
    assert!(info.endpoint.len() >= 2, "expected several endpoints, got {}", info.endpoint.len());
    let fetches = (0..info.endpoint.len()).map(|i| {
        let mut c = ann.clone();
        let t = ticket(&info, i);
        tokio::spawn(async move { fetch(&mut c, t).await.unwrap() })
    });
    let parts: Vec<Vec<RecordBatch>> = futures::future::try_join_all(fetches).await.unwrap();
    let batches: Vec<RecordBatch> = parts.into_iter().flatten().collect();
    assert_eq!(rows(&batches), 7);
    let total: i64 = batches
        .iter()
        .map(|b| {
            b.column_by_name("n").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().iter().flatten().sum::<i64>()
        })
        .sum();
    assert_eq!(total, 100000);
    // The schema announced in the FlightInfo is the stream's.
    assert_eq!(info.clone().try_decode_schema().unwrap().fields().len(), 2);

    // A streaming result read one endpoint after the other: the first DoGet waits briefly for
    // its siblings, then streams the unredeemed partitions too; their tickets give no rows.
    // Every row arrives exactly once.
    let sql = "SELECT value, value * 2 AS twice FROM generate_series(1, 200000)";
    let info = ann.execute(sql.into(), None).await.unwrap();
    assert!(info.endpoint.len() >= 2, "a computed projection is repartitioned: {} endpoint(s)", info.endpoint.len());
    let mut per_endpoint = vec![];
    let mut sum = 0i64;
    for i in 0..info.endpoint.len() {
        let batches = fetch(&mut ann, ticket(&info, i)).await.unwrap();
        per_endpoint.push(rows(&batches));
        for b in &batches {
            assert_eq!(b.schema().field(1).name(), "twice");
            sum += b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().iter().flatten().sum::<i64>();
        }
    }
    assert_eq!(per_endpoint.iter().sum::<usize>(), 200000, "{per_endpoint:?}");
    assert_eq!(per_endpoint[0], 200000, "the first reader streamed every partition: {per_endpoint:?}");
    assert_eq!(sum, 200000 * 200001 / 2);

    // Tickets: single use, bound to their user.
    let info = ann.execute("SELECT 42 AS answer".into(), None).await.unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let mut bob = login(&f, "bob", "pw-bob").await;
    let err = fetch(&mut bob, ticket(&info, 0)).await.unwrap_err();
    assert!(err.contains(tonic::Code::PermissionDenied.description()), "{err}");
    let got = fetch(&mut ann, ticket(&info, 0)).await.unwrap();
    assert_eq!(rows(&got), 1);
    let err = fetch(&mut ann, ticket(&info, 0)).await.unwrap_err();
    assert!(err.contains(tonic::Code::NotFound.description()), "{err}");
    let err = fetch(&mut ann, Ticket::new(b"not a ticket".to_vec())).await.unwrap_err();
    assert!(err.contains(tonic::Code::NotFound.description()) && err.contains("ticket not found"), "{err}");

    // GetSchema plans without running.
    let cmd =
        arrow_flight::sql::CommandStatementQuery { query: "SELECT 1 AS one, 'x' AS two".into(), transaction_id: None };
    let mut request = tonic::Request::new(arrow_flight::FlightDescriptor::new_cmd(
        arrow_flight::sql::ProstMessageExt::as_any(&cmd).encode_to_vec(),
    ));
    let bearer = format!("Bearer {}", ann.token().unwrap()).parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let result = ann.inner_mut().get_schema(request).await.unwrap().into_inner();
    let schema = Schema::try_from(&result).unwrap();
    assert_eq!(schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["one", "two"]);

    // Errors carry the mapped code and one line.
    let err = ann.execute("SELEC 1".into(), None).await.unwrap_err().to_string();
    assert!(err.contains(tonic::Code::InvalidArgument.description()), "{err}");
    let err = ann.execute("SELECT * FROM health.no_such_table".into(), None).await.unwrap_err().to_string();
    assert!(err.contains(tonic::Code::NotFound.description()), "{err}");

    // Prepared statement with a parameter bound through DoPut.
    let mut stmt = ann.prepare("SELECT value FROM generate_series(1, 10) WHERE value > $1".into(), None).await.unwrap();
    let params = stmt.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 1);
    assert_eq!(params.field(0).name(), "$1");
    assert_eq!(params.field(0).data_type(), &DataType::Int64);
    assert_eq!(stmt.dataset_schema().unwrap().field(0).name(), "value");
    for (bound, expected) in [(5i64, 5usize), (8, 2)] {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("p", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![bound]))],
        )
        .unwrap();
        stmt.set_parameters(batch).unwrap();
        let info = stmt.execute().await.unwrap();
        assert_eq!(rows(&fetch_all(&mut ann, &info).await), expected);
    }
    stmt.close().await.unwrap();

    // Updates: session commands apply to the token's session.
    assert_eq!(ann.execute_update("SET TimeZone = 'UTC'".into(), None).await.unwrap(), 0);
    let info = ann.execute("SHOW TimeZone".into(), None).await.unwrap();
    let got = fetch_all(&mut ann, &info).await;
    let value = got[0].column(0).as_any().downcast_ref::<StringArray>().unwrap().value(0).to_string();
    assert_eq!(value, "UTC");
    let err = ann.execute_update("SELECT 1".into(), None).await.unwrap_err().to_string();
    assert!(err.contains(tonic::Code::InvalidArgument.description()), "{err}");

    // Metadata through the engine: schemas, tables with their schemas, exact key schemas.
    let info = ann
        .get_db_schemas(CommandGetDbSchemas { catalog: None, db_schema_filter_pattern: Some("health".into()) })
        .await
        .unwrap();
    assert_eq!(rows(&fetch_all(&mut ann, &info).await), 1);
    let info = ann
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("health".into()),
            table_name_filter_pattern: Some("prescriber_drug".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let got = fetch_all(&mut ann, &info).await;
    assert_eq!(rows(&got), 1);
    let types = got[0].column_by_name("table_type").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(types.value(0), "TABLE");
    let ipc = got[0].column_by_name("table_schema").unwrap();
    let ipc = ipc.as_any().downcast_ref::<arrow::array::BinaryArray>().unwrap().value(0).to_vec();
    let table_schema = Schema::try_from(arrow_flight::IpcMessage(ipc.into())).unwrap();
    assert!(table_schema.field_with_name("npi").is_ok() && table_schema.field_with_name("trx_cnt").is_ok());

    let info = ann
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("health".into()),
            table: "prescriber_drug".into(),
        })
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["catalog_name", "db_schema_name", "table_name", "column_name", "key_name", "key_sequence"]);
    assert_eq!(rows(&fetch_all(&mut ann, &info).await), 0);

    let info = ann.get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::FlightSqlServerReadOnly]).await.unwrap();
    assert_eq!(rows(&fetch_all(&mut ann, &info).await), 2);
    let info = ann.get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None }).await.unwrap();
    assert!(rows(&fetch_all(&mut ann, &info).await) >= 10);

    // Changing a user's password revokes their tokens.
    let mut users = Users::load(&f.users_file).unwrap();
    users.set_verifier("bob", ScramVerifier::new("new-pw", MIN_ITERATIONS).unwrap()).unwrap();
    users.save(&f.users_file).unwrap();
    let err = bob.execute("SELECT 1".into(), None).await.unwrap_err().to_string();
    assert!(err.contains(tonic::Code::Unauthenticated.description()), "{err}");
    let mut bob = login(&f, "bob", "new-pw").await;
    let info = bob.execute("SELECT 1".into(), None).await.unwrap();
    assert_eq!(rows(&fetch_all(&mut bob, &info).await), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_flight_info_stops_the_query() {
    let f = start(FlightSqlConfig::default()).await;
    let mut ann = login(&f, "ann", "pw-ann").await;
    // 10^12 rows in batches: never finishes within a test, and sees a cancellation at once.
    let slow = "SELECT sum(value % 3) AS s FROM generate_series(1, 1000000000000)";
    let cancel = |info: &FlightInfo| Action {
        r#type: "CancelFlightInfo".into(),
        body: CancelFlightInfoRequest::new(info.clone()).encode_to_vec().into(),
    };

    // Cancelled before anyone fetched: its tickets are gone.
    let info = ann.execute(slow.into(), None).await.unwrap();
    let mut results = ann.do_action(cancel(&info)).await.unwrap();
    let body = results.message().await.unwrap().unwrap().body;
    assert_eq!(CancelFlightInfoResult::decode(body).unwrap().status, CancelStatus::Cancelled as i32);
    let err = fetch(&mut ann, ticket(&info, 0)).await.unwrap_err();
    assert!(err.contains(tonic::Code::NotFound.description()), "{err}");

    // Cancelled while streaming: the stream ends with CANCELLED well before the query could finish.
    let info = ann.execute(slow.into(), None).await.unwrap();
    let mut reader = ann.clone();
    let tickets: Vec<Ticket> = (0..info.endpoint.len()).map(|i| ticket(&info, i)).collect();
    let running = tokio::spawn(async move {
        let mut errors = vec![];
        for t in tickets {
            if let Err(e) = fetch(&mut reader, t).await {
                errors.push(e);
            }
        }
        errors
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let mut bob = login(&f, "bob", "pw-bob").await;
    let err = bob.do_action(cancel(&info)).await.unwrap_err().to_string();
    assert!(err.contains(tonic::Code::PermissionDenied.description()), "another user cannot cancel: {err}");
    ann.do_action(cancel(&info)).await.unwrap();
    let errors = tokio::time::timeout(Duration::from_secs(30), running).await.expect("cancel took effect").unwrap();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e.contains(tonic::Code::Cancelled.description())),
        "{errors:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tickets_are_not_found() {
    let f = start(FlightSqlConfig { ticket_ttl: Duration::from_millis(300), ..FlightSqlConfig::default() }).await;
    let mut ann = login(&f, "ann", "pw-ann").await;
    let info = ann.execute("SELECT 1".into(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let err = fetch(&mut ann, ticket(&info, 0)).await.unwrap_err();
    assert!(err.contains(tonic::Code::NotFound.description()), "{err}");
}
