//! The SQL test corpus (`tests/slt/*.slt`, sqllogictest format) run three ways over the same
//! fixture lakehouse: in-process over `EngineSession` (`inprocess`), through a real
//! `rxgate serve` with tokio-postgres' simple query protocol (`pgwire`), and with Flight SQL
//! (`flight`: GetFlightInfo + DoGet with a bearer token). Each engine is a label, so a record
//! can be limited with `onlyif pgwire` / `skipif flight`.
//!
//! ```text
//! cargo test -p rxgate-server --test sqllogictests                  # all files, all engines
//! cargo test -p rxgate-server --test sqllogictests -- hive          # files whose name contains "hive"
//! cargo test -p rxgate-server --test sqllogictests -- --engine pgwire
//! cargo test -p rxgate-server --test sqllogictests -- --complete    # rewrite the expected results
//! ```
//!
//! `--complete` rewrites each file's expectations from the in-process engine's answers, and
//! those of `onlyif pgwire` / `onlyif flight` records from that engine's; the other engines
//! only check there. A normal run then checks all three.
//!
//! Conventions of the corpus:
//! - Each file runs in its own session. Its first lines may say `# role: R`: the session's user
//!   is R's demo user (`admin`, `analyst`, `auditor_ca` for `state_auditor`, `viewer` for
//!   `public`); default `admin`.
//! - Errors are `SQLSTATE 42P01: message`; expect them with `statement error (42P01)` (the
//!   code) or a regex. Flight SQL errors carry no SQLSTATE, only a gRPC code: in the flight
//!   pass an expected SQLSTATE matches the gRPC code(s) rxgate maps it to
//!   (`rxgate_pgwire::sqlstate` and `rxgate_flightsql::grpc_code` over every status code).
//! - Values: NULL is `NULL`, the empty string `(empty)`, booleans `t`/`f`, timestamps
//!   `YYYY-MM-DD hh:mm:ss`, arrays `{a,b}` (PostgreSQL's text forms). Column types are
//!   `I` (integers), `R` (floats, decimals), `T` (the rest), checked where the engine knows
//!   them (Arrow); pgwire's text results report `?`.
//! - Variables (`control substitution on`): `$snap1_prescriber_drug` / `$snap2_prescriber_drug`
//!   are that table's two snapshot ids (also `$snap1_us_cities`, …), `$ext_dir` the external
//!   tables' fixture directory, `$warehouse` the lakehouse's warehouse.
//!
//! The fixture (built here, deterministic): `rxgate datagen --scale 0.001 --seed 42`, pipeline
//! runs of deliveries 2024-01-31 and 2024-02-29, one lakehouse per engine (files change
//! tables: ALTER, CALL rollback, external tables), a fixed pseudonym key, the repository's
//! policy, users `admin`/`analyst`/`auditor_ca`/`viewer`, `[limits] max_expression_depth = 200`,
//! external locations allowed under the fixture's directory, and CSV/Parquet files in `k=v/`
//! directories for the external tables.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use rxgate_common::{Channel, Identity};
use rxgate_engine::{Engine, EngineSession, QueryOutput};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record, Runner};

const DELIVERIES: [&str; 2] = ["2024-01-31", "2024-02-29"];
const PASSWORD: &str = "slt-password-1";
const PSEUDONYM_KEY: &str = "slt-fixed-pseudonym-key-0123456789";
const ENGINES: [&str; 3] = ["inprocess", "pgwire", "flight"];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn rxgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rxgate"));
    // The fixture decides everything: no RXGATE_* from the caller's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("RXGATE_") {
            c.env_remove(k);
        }
    }
    c.env("NO_COLOR", "1").current_dir(repo_root());
    c
}

fn run_ok(mut c: Command, input: Option<&str>) {
    let what = format!("{c:?}");
    c.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some(text) = input {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The demo user of a policy role.
fn user_of_role(role: &str) -> &'static str {
    match role {
        "admin" => "admin",
        "analyst" => "analyst",
        "state_auditor" => "auditor_ca",
        "public" => "viewer",
        other => panic!("unknown role {other:?} in a `# role:` header"),
    }
}

const USERS: [(&str, &str); 4] =
    [("admin", "admin"), ("analyst", "analyst"), ("auditor_ca", "state_auditor"), ("viewer", "public")];

/// Everything the engines share: raw data, configuration, users, external files.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn build() -> Fixture {
        let dir = tempfile::Builder::new().prefix("rxgate-slt-").tempdir().unwrap();
        let root = dir.path();
        let mut c = rxgate();
        c.args(["datagen", "--scale", "0.001", "--seed", "42", "--out"]).arg(root.join("raw"));
        run_ok(c, None);
        write_external_files(&root.join("ext"));
        let policy = repo_root().join("catalog/policies.toml");
        let config = format!(
            "[engine]\ntarget_partitions = 2\nmemory_limit = \"1GiB\"\nquery_timeout_secs = 120\n\
             [policy]\nfile = {policy:?}\npseudonym_key_file = {key:?}\n\
             [limits]\nmax_expression_depth = 200\n\
             [external]\nallowed_locations = [{root:?}]\n\
             [auth]\nusers_file = {users:?}\nlogin_throttle = false\n",
            policy = policy.display().to_string(),
            key = root.join("pseudonym.key").display().to_string(),
            root = root.display().to_string(),
            users = root.join("users.toml").display().to_string(),
        );
        std::fs::write(root.join("rxgate.toml"), config).unwrap();
        std::fs::write(root.join("pseudonym.key"), PSEUDONYM_KEY).unwrap();
        for (user, role) in USERS {
            let mut c = rxgate();
            c.arg("--config").arg(root.join("rxgate.toml"));
            c.args(["user", "add", user, "--password-stdin", "--role", role]);
            run_ok(c, Some(&format!("{PASSWORD}\n")));
        }
        Fixture { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("rxgate.toml")
    }

    fn ext_dir(&self) -> PathBuf {
        self.dir.path().join("ext")
    }

    /// A lakehouse of its own for one engine: the pipeline for both deliveries.
    fn lakehouse(&self, name: &str) -> PathBuf {
        let data = self.dir.path().join(format!("lake-{name}"));
        for d in DELIVERIES {
            let mut c = rxgate();
            c.arg("--config").arg(self.config()).arg("--data-dir").arg(&data);
            c.args(["pipeline", "run", "-q", "--delivery-date", d, "--input"]).arg(self.dir.path().join("raw"));
            run_ok(c, None);
        }
        data
    }
}

/// Hive-partitioned files for the external-table files: `sales_csv/region=…/` (CSV with a
/// header) and `sales_parquet/year=…/region=…/` (Parquet), small and fixed.
fn write_external_files(ext: &Path) {
    let csv = [
        ("east", "id,item,amount\n1,apple,10\n2,pear,20\n3,plum,\n"),
        ("west", "id,item,amount\n4,apple,5\n5,fig,7\n"),
        ("north", "id,item,amount\n6,kiwi,1\n"),
    ];
    for (region, text) in csv {
        let d = ext.join(format!("sales_csv/region={region}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("part-0.csv"), text).unwrap();
    }
    std::fs::write(ext.join("sales_csv/region=east/_SUCCESS"), "").unwrap();
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("item", DataType::Utf8, true)]));
    for (year, region, ids, items) in [
        ("2023", "east", vec![1i64, 2], vec![Some("a"), Some("b")]),
        ("2023", "west", vec![3], vec![None]),
        ("2024", "east", vec![4, 5, 6], vec![Some("c"), Some("d"), Some("e")]),
    ] {
        let d = ext.join(format!("sales_parquet/year={year}/region={region}"));
        std::fs::create_dir_all(&d).unwrap();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(items))],
        )
        .unwrap();
        let file = std::fs::File::create(d.join("part-0.parquet")).unwrap();
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

// ----------------------------------------------------------------------------- errors --

/// An error as the corpus sees it: `SQLSTATE code: message` (flight: `flight Code: message`).
#[derive(Debug)]
struct SltError {
    sqlstate: Option<String>,
    text: String,
}

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for SltError {}

impl SltError {
    fn engine(e: rxgate_common::Error) -> Self {
        let code = rxgate_pgwire::sqlstate(e.code);
        let line = e.message.lines().next().unwrap_or_default().trim().to_string();
        SltError { sqlstate: Some(code.into()), text: format!("SQLSTATE {code}: {line}") }
    }

    fn other(what: impl std::fmt::Display) -> Self {
        SltError { sqlstate: None, text: format!("client: {what}") }
    }

    /// A Flight SQL error: its SQLSTATE is in the status metadata (`x-rxgate-sqlstate`).
    fn grpc(s: &tonic::Status) -> Self {
        let state = s.metadata().get("x-rxgate-sqlstate").and_then(|v| v.to_str().ok()).map(str::to_string);
        let line = s.message().lines().next().unwrap_or_default().trim().to_string();
        match state {
            Some(code) => SltError { text: format!("SQLSTATE {code}: {line}"), sqlstate: Some(code) },
            None => SltError { sqlstate: None, text: format!("flight {:?}: {line}", s.code()) },
        }
    }
}

// ------------------------------------------------------------------------- values --

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// One cell in PostgreSQL's text form (what pgwire sends), NULL as `NULL`.
fn cell(a: &ArrayRef, row: usize) -> String {
    if a.is_null(row) {
        return "NULL".into();
    }
    match a.data_type() {
        DataType::Boolean => (if a.as_boolean().value(row) { "t" } else { "f" }).into(),
        DataType::Float64 => float(a.as_primitive::<arrow::datatypes::Float64Type>().value(row)),
        DataType::Float32 => float(f64::from(a.as_primitive::<arrow::datatypes::Float32Type>().value(row))),
        // What pgwire (arrow-pg) sends: always six fractional digits.
        DataType::Timestamp(_, None) => {
            let opts = FormatOptions::default().with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.6f"));
            ArrayFormatter::try_new(a.as_ref(), &opts).map(|f| f.value(row).to_string()).unwrap_or_default()
        }
        DataType::Timestamp(..) => display(a, row).replacen('T', " ", 1),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => format!("\\x{}", display(a, row)),
        DataType::List(_) | DataType::LargeList(_) => {
            let values = match a.data_type() {
                DataType::List(_) => a.as_list::<i32>().value(row),
                _ => a.as_list::<i64>().value(row),
            };
            let items: Vec<String> = (0..values.len()).map(|i| array_item(&values, i)).collect();
            format!("{{{}}}", items.join(","))
        }
        _ => display(a, row),
    }
}

fn array_item(a: &ArrayRef, i: usize) -> String {
    let v = cell(a, i);
    if a.is_null(i) {
        return v;
    }
    let quote = v.is_empty()
        || v.eq_ignore_ascii_case("null")
        || v.chars().any(|c| matches!(c, ',' | '{' | '}' | '"' | '\\' | ' '));
    if quote {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v
    }
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        (if v > 0.0 { "Infinity" } else { "-Infinity" }).into()
    } else if v == 0.0 {
        "0".into()
    } else {
        ryu::Buffer::new().format_finite(v).to_string()
    }
}

fn display(a: &ArrayRef, row: usize) -> String {
    let opts = FormatOptions::default();
    ArrayFormatter::try_new(a.as_ref(), &opts).map(|f| f.value(row).to_string()).unwrap_or_else(|e| format!("<{e}>"))
}

/// Text the corpus compares: the empty string as `(empty)`, line breaks escaped.
fn text_value(v: String) -> String {
    if v.is_empty() {
        "(empty)".into()
    } else {
        v.replace('\n', "\\n")
    }
}

fn batches_output(schema: &arrow::datatypes::Schema, batches: &[RecordBatch]) -> DBOutput<DefaultColumnType> {
    let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
    let mut rows = vec![];
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| text_value(cell(c, r))).collect());
        }
    }
    DBOutput::Rows { types, rows }
}

// ---------------------------------------------------------------------- in-process --

/// The engine in this process: one `EngineSession` per file.
struct InProcess {
    session: EngineSession,
}

#[async_trait::async_trait]
impl AsyncDB for InProcess {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let statements = self.session.split(sql).map_err(SltError::engine)?;
        let mut last = DBOutput::StatementComplete(0);
        for stmt in statements {
            let planned = self.session.plan(&stmt).await.map_err(SltError::engine)?;
            last = match self.session.execute(&planned, None).await.map_err(SltError::engine)? {
                QueryOutput::Rows { schema, stream }
                | QueryOutput::Fetched { schema, stream }
                | QueryOutput::Copy { schema, stream, .. } => {
                    let batches: Vec<RecordBatch> =
                        stream.try_collect().await.map_err(|e| SltError::engine(e.into()))?;
                    batches_output(&schema, &batches)
                }
                QueryOutput::Written { rows, .. } => DBOutput::StatementComplete(rows),
                QueryOutput::CopyIn(sink) => {
                    sink.abort("no COPY data in sqllogictest");
                    return Err(SltError::engine(rxgate_common::Error::invalid(
                        "COPY FROM STDIN is not run by the .slt runner",
                    )));
                }
                QueryOutput::Command { .. }
                | QueryOutput::TransactionStart
                | QueryOutput::TransactionEnd { .. }
                | QueryOutput::Empty => DBOutput::StatementComplete(0),
            };
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "inprocess"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        err.sqlstate.clone()
    }
}

// -------------------------------------------------------------------------- pgwire --

/// tokio-postgres over `rxgate serve`, simple query protocol (text results); COPY … TO
/// STDOUT goes through `copy_out` and answers one row per line.
struct PgWire {
    client: tokio_postgres::Client,
    _conn: tokio::task::JoinHandle<()>,
}

impl PgWire {
    async fn connect(port: u16, user: &str) -> Result<PgWire, BoxError> {
        let dsn = format!("host=127.0.0.1 port={port} user={user} password={PASSWORD} dbname=rxgate");
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(PgWire { client, _conn: task })
    }
}

fn pg_error(e: tokio_postgres::Error) -> SltError {
    match e.as_db_error() {
        Some(db) => SltError {
            sqlstate: Some(db.code().code().to_string()),
            text: format!("SQLSTATE {}: {}", db.code().code(), db.message()),
        },
        None => SltError::other(e),
    }
}

#[async_trait::async_trait]
impl AsyncDB for PgWire {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if sql.trim_start().get(..4).is_some_and(|w| w.eq_ignore_ascii_case("copy")) {
            let stream = self.client.copy_out(sql).await.map_err(pg_error)?;
            let chunks: Vec<bytes::Bytes> = stream.try_collect().await.map_err(pg_error)?;
            let text = String::from_utf8_lossy(&chunks.concat()).into_owned();
            let rows = text.lines().map(|l| vec![text_value(l.to_string())]).collect();
            return Ok(DBOutput::Rows { types: vec![DefaultColumnType::Text], rows });
        }
        use tokio_postgres::SimpleQueryMessage as M;
        let messages = self.client.simple_query(sql).await.map_err(pg_error)?;
        let mut columns: Option<usize> = None;
        let mut rows = vec![];
        let mut last = DBOutput::StatementComplete(0);
        for m in messages {
            match m {
                M::RowDescription(cols) => {
                    columns = Some(cols.len());
                    rows.clear();
                }
                M::Row(row) => {
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map_or_else(|| "NULL".to_string(), |v| text_value(v.to_string())))
                            .collect(),
                    );
                }
                M::CommandComplete(n) => {
                    last = match columns.take() {
                        Some(k) => {
                            DBOutput::Rows { types: vec![DefaultColumnType::Any; k], rows: std::mem::take(&mut rows) }
                        }
                        None => DBOutput::StatementComplete(n),
                    };
                }
                _ => {}
            }
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "pgwire"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        err.sqlstate.clone()
    }
}

// -------------------------------------------------------------------------- flight --

/// Flight SQL over `rxgate serve`: Handshake for a bearer token, then each statement as
/// GetFlightInfo(CommandStatementQuery) and DoGet of every endpoint in order.
struct Flight {
    client: arrow_flight::flight_service_client::FlightServiceClient<tonic::transport::Channel>,
    token: String,
}

impl Flight {
    async fn connect(port: u16, user: &str) -> Result<Flight, BoxError> {
        let channel = tonic::transport::Endpoint::new(format!("http://127.0.0.1:{port}"))?.connect().await?;
        let mut sql = arrow_flight::sql::client::FlightSqlServiceClient::new(channel.clone());
        sql.handshake(user, PASSWORD).await?;
        let token = sql.token().cloned().ok_or("no bearer token from the handshake")?;
        Ok(Flight { client: arrow_flight::flight_service_client::FlightServiceClient::new(channel), token })
    }

    fn request<T>(&self, body: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(body);
        r.metadata_mut().insert("authorization", format!("Bearer {}", self.token).parse().unwrap());
        r
    }
}

#[async_trait::async_trait]
impl AsyncDB for Flight {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        use prost::Message;
        let cmd = CommandStatementQuery { query: sql.to_string(), transaction_id: None };
        let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        let info =
            self.client.get_flight_info(self.request(descriptor)).await.map_err(|s| SltError::grpc(&s))?.into_inner();
        let schema = info.clone().try_decode_schema().map_err(SltError::other)?;
        let mut batches = vec![];
        for ep in &info.endpoint {
            let ticket: Ticket = ep.ticket.clone().ok_or_else(|| SltError::other("endpoint without ticket"))?;
            let stream = self.client.do_get(self.request(ticket)).await.map_err(|s| SltError::grpc(&s))?.into_inner();
            let mut decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                stream.map_err(arrow_flight::error::FlightError::from),
            );
            while let Some(b) = decoded.next().await {
                match b {
                    Ok(b) => batches.push(b),
                    Err(arrow_flight::error::FlightError::Tonic(s)) => return Err(SltError::grpc(&s)),
                    Err(e) => return Err(SltError::other(e)),
                }
            }
        }
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(batches_output(&schema, &batches))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "flight"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await
    }
}

// -------------------------------------------------------------------------- server --

/// `rxgate serve` on free ports over one lakehouse; killed on drop.
struct Server {
    child: Child,
    pg_port: u16,
    flight_port: u16,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    fn start(fixture: &Fixture, data: &Path, name: &str) -> Server {
        let (pg_port, flight_port) = (free_port(), free_port());
        let log = fixture.dir.path().join(format!("serve-{name}.log"));
        let mut c = rxgate();
        c.arg("--config").arg(fixture.config()).arg("--data-dir").arg(data);
        c.arg("serve").arg("--pg-listen").arg(format!("127.0.0.1:{pg_port}"));
        c.arg("--flight-listen").arg(format!("127.0.0.1:{flight_port}"));
        let out = std::fs::File::create(&log).unwrap();
        c.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let child = c.spawn().expect("rxgate serve");
        let mut server = Server { child, pg_port, flight_port, log };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("rxgate serve exited with {status}:\n{}", server.log_text());
            }
            let up = [pg_port, flight_port].iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return server;
            }
            assert!(Instant::now() < deadline, "rxgate serve did not listen:\n{}", server.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// -------------------------------------------------------------------------- runner --

/// The role a file asks for (`# role: R` among its first comment lines).
fn file_role(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .find_map(|l| {
            l.strip_prefix('#').map(str::trim).and_then(|l| l.strip_prefix("role:")).map(|r| r.trim().to_string())
        })
        .unwrap_or_else(|| "admin".into())
}

#[allow(clippy::ptr_arg)] // the signature sqllogictest asks for
fn column_validator(actual: &Vec<DefaultColumnType>, expected: &Vec<DefaultColumnType>) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| *a == DefaultColumnType::Any || *e == DefaultColumnType::Any || a == e)
}

/// Where the engines connect.
#[derive(Clone)]
enum Target {
    InProcess(Arc<Engine>),
    Pg(u16),
    Flight(u16),
}

async fn run_file<D, M>(
    mut runner: Runner<D, M>,
    engine: &str,
    path: &Path,
    complete: bool,
    vars: &[(String, String)],
) -> Result<(), String>
where
    D: AsyncDB<ColumnType = DefaultColumnType, Error = SltError>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    runner.add_label(engine);
    runner.with_column_validator(column_validator);
    for (k, v) in vars {
        runner.set_var(k.clone(), v.clone());
    }
    if complete {
        return complete_file(&mut runner, engine, path).await;
    }
    let records = sqllogictest::parse_file::<DefaultColumnType>(path).map_err(|e| e.to_string())?;
    for record in records {
        runner.run_async(record).await.map_err(|e| e.display(false).to_string())?;
    }
    Ok(())
}

/// `--complete` for one file: every record runs (in order, so session state builds up), and a
/// record's expectation is rewritten from this engine's answer when the engine is `inprocess`,
/// or when the record is `onlyif` this engine (the other engines only check).
async fn complete_file<D, M>(runner: &mut Runner<D, M>, engine: &str, path: &Path) -> Result<(), String>
where
    D: AsyncDB<ColumnType = DefaultColumnType, Error = SltError>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    let records = sqllogictest::parse_file::<DefaultColumnType>(path).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for record in records {
        let conditions = match &record {
            Record::Statement { conditions, .. } | Record::Query { conditions, .. } => Some(conditions.clone()),
            _ => None,
        };
        let mine = conditions.as_ref().is_some_and(|c| {
            engine == "inprocess"
                || c.iter().any(|c| matches!(c, sqllogictest::Condition::OnlyIf { label } if label == engine))
        });
        let output = runner.apply_record(record.clone()).await;
        let updated = sqllogictest::update_record_with_output(
            &record,
            &output,
            " ",
            sqllogictest::default_validator,
            sqllogictest::default_normalizer,
            column_validator,
        );
        match updated {
            Some(new) if mine => out.push_str(&format!("{new}\n")),
            _ => out.push_str(&format!("{record}\n")),
        }
    }
    let text = format!("{}\n", out.trim_end());
    std::fs::write(path, text).map_err(|e| e.to_string())?;
    shorten_errors(path)
}

/// After `--complete`: an error the runner wrote as its whole escaped message is kept as its
/// SQLSTATE only (`statement error SQLSTATE 42P01`), so messages may change, codes may not.
fn shorten_errors(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let re = regex::Regex::new(r"(?m)^((?:statement|query) error SQLSTATE [0-9A-Z]{5}):.*$").unwrap();
    let short = re.replace_all(&text, "$1");
    if short != text {
        std::fs::write(path, short.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn run_engine(
    target: Target,
    engine: &str,
    files: &[PathBuf],
    complete: bool,
    vars: &[(String, String)],
) -> Vec<String> {
    let mut failures = vec![];
    for path in files {
        let text = std::fs::read_to_string(path).unwrap();
        let user = user_of_role(&file_role(&text)).to_string();
        let started = Instant::now();
        let result = match target.clone() {
            Target::InProcess(engine_arc) => {
                let runner = Runner::new(move || {
                    let engine = engine_arc.clone();
                    let user = user.clone();
                    async move {
                        let roles = USERS.iter().find(|(u, _)| *u == user).map(|(_, r)| vec![r.to_string()]).unwrap();
                        let identity = Identity { user: user.clone(), roles, channel: Channel::Cli, client_addr: None };
                        let session = engine.session(identity).await.map_err(SltError::engine)?;
                        Ok::<_, SltError>(InProcess { session })
                    }
                });
                run_file(runner, engine, path, complete, vars).await
            }
            Target::Pg(port) => {
                let runner = Runner::new(move || {
                    let user = user.clone();
                    async move { PgWire::connect(port, &user).await.map_err(SltError::other) }
                });
                run_file(runner, engine, path, complete, vars).await
            }
            Target::Flight(port) => {
                let runner = Runner::new(move || {
                    let user = user.clone();
                    async move { Flight::connect(port, &user).await.map_err(SltError::other) }
                });
                run_file(runner, engine, path, complete, vars).await
            }
        };
        let name = path.file_name().unwrap().to_string_lossy();
        match result {
            Ok(()) => println!("  {engine:<9} {name:<40} ok ({:.1}s)", started.elapsed().as_secs_f64()),
            Err(e) => {
                println!("  {engine:<9} {name:<40} FAILED");
                failures.push(format!("[{engine}] {name}: {e}"));
            }
        }
    }
    failures
}

/// The substitution variables of one lakehouse: snapshot ids are random per commit, so each
/// engine's lakehouse has its own.
async fn lake_vars(engine: &Engine, fixture: &Fixture, data: &Path) -> Vec<(String, String)> {
    let session = engine.session(Identity::cli("slt")).await.unwrap();
    let mut vars = vec![
        ("ext_dir".to_string(), fixture.ext_dir().display().to_string()),
        ("warehouse".to_string(), data.join("warehouse").display().to_string()),
    ];
    for table in ["prescriber_drug", "us_cities"] {
        let sql = format!("SELECT snapshot_id FROM health.\"{table}$snapshots\" ORDER BY committed_at, snapshot_id");
        let out = session.sql(&sql).await.unwrap();
        let QueryOutput::Rows { stream, .. } = out else { panic!("no rows") };
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        let mut ids = vec![];
        for b in &batches {
            let c = b.column(0);
            match c.data_type() {
                DataType::Int64 => ids.extend(c.as_primitive::<Int64Type>().iter().flatten().map(|v| v.to_string())),
                DataType::Int32 => ids.extend(c.as_primitive::<Int32Type>().iter().flatten().map(|v| v.to_string())),
                other => panic!("snapshot_id is {other}"),
            }
        }
        for (i, id) in ids.iter().enumerate() {
            vars.push((format!("snap{}_{table}", i + 1), id.clone()));
        }
    }
    vars
}

async fn open_engine(fixture: &Fixture, data: &Path) -> Arc<Engine> {
    let file = rxgate_server::config::load_file(Some(&fixture.config())).unwrap();
    let settings =
        rxgate_server::config::resolve(file, Some(data.to_path_buf()), rxgate_server::config::ListenFlags::default())
            .unwrap();
    let lake = rxgate_catalog::Lakehouse::open(&settings.lakehouse).await.unwrap();
    Arc::new(Engine::new(lake, settings.engine.clone()).unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let mut engines: Vec<String> = vec![];
    let mut filters: Vec<String> = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--engine" => engines.push(it.next().expect("--engine NAME").clone()),
            "--complete" => {}
            s if s.starts_with('-') => {} // libtest's flags (cargo test passes some): ignored
            s => filters.push(s.to_string()),
        }
    }
    if engines.is_empty() {
        engines = ENGINES.iter().map(|s| s.to_string()).collect();
    }
    let dir = repo_root().join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| filters.is_empty() || filters.iter().any(|f| p.to_string_lossy().contains(f.as_str())))
        .collect();
    files.sort();
    assert!(!files.is_empty() || !filters.is_empty(), "no .slt files in {}", dir.display());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(rxgate_engine::limits::WORKER_STACK_BYTES)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let fixture = Fixture::build();
    println!("sqllogictests: {} files, engines {engines:?}{}", files.len(), if complete { ", --complete" } else { "" });
    let mut failures = vec![];
    for engine in &engines {
        let data = fixture.lakehouse(engine);
        let local = rt.block_on(open_engine(&fixture, &data));
        let vars = rt.block_on(lake_vars(&local, &fixture, &data));
        let (target, _server) = match engine.as_str() {
            "inprocess" => (Target::InProcess(local), None),
            "pgwire" | "flight" => {
                drop(local);
                let server = Server::start(&fixture, &data, engine);
                let t =
                    if engine == "pgwire" { Target::Pg(server.pg_port) } else { Target::Flight(server.flight_port) };
                (t, Some(server))
            }
            other => panic!("unknown engine {other}"),
        };
        let f = rt.block_on(run_engine(target, engine, &files, complete, &vars));
        failures.extend(f);
    }
    println!("sqllogictests: {:.1}s", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("\n{f}");
        }
        eprintln!("\n{} file run(s) failed", failures.len());
        std::process::exit(1);
    }
}
