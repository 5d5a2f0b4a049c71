"""The Arrow Flight SQL frontend with real clients: ADBC's Flight SQL driver (DB-API) and the raw
pyarrow.flight client, against the same lakehouse and users as pgwire. Every answer is
compared with what pgwire (psycopg) returns for the same query.

Covers: ADBC execute / fetch_arrow_table / prepared statements with parameters /
adbc_get_objects / adbc_get_table_schema / get_info / updates; several endpoints of one query
fetched in parallel; the exact schemas of the key commands; wrong passwords, missing and
revoked tokens; tickets replayed by another user, reused, or expired; CancelFlightInfo of a
running query; TLS with `rxgate cert dev` and client certificates.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import subprocess
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import flightsql_proto as proto
from conftest import TEST_PASSWORD, TEST_USER, add_user, start_server, stop_server
from rxcli import Rxgate

OTHER_USER = "flight_other"
OTHER_PASSWORD = "other-secret"

# How pyarrow reports a connection that failed below gRPC (TLS handshake, plaintext to a TLS
# port): the handshake call's stream fails as "unavailable" or "could not finish writing".
TRANSPORT_ERRORS = (flight.FlightUnavailableError, flight.FlightInternalError)

# A query that cannot finish in the time of a test (10^12 rows), in small steps, so that a
# cancellation is seen at the next batch.
ENDLESS = "SELECT sum(value % 3) AS s FROM generate_series(1, 1000000000000)"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def fserver(rxgate_bin, lakehouse, tmp_path_factory):
    """`rxgate serve` over the shared lakehouse with 4 target partitions (so grouped queries
    have several output partitions whatever the machine), and a second user."""
    d = tmp_path_factory.mktemp("flight")
    config = write(d / "flight.toml", "[engine]\ntarget_partitions = 4\n")
    s = start_server(rxgate_bin, lakehouse.rx.data_dir, d / "serve.log", config=config)
    add_user(rxgate_bin, s.users_file, OTHER_USER, OTHER_PASSWORD, "--role", "admin")
    yield s
    stop_server(s)


def adbc(server, user=TEST_USER, password=TEST_PASSWORD, uri=None, **db_kwargs):
    return flight_sql.connect(uri or server.flight_uri(),
                              db_kwargs={"username": user, "password": password, **db_kwargs},
                              autocommit=True)


def pg_rows(server, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def pg_columns(server, sql: str) -> list[str]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return [c.name for c in conn.execute(sql + " LIMIT 0").description]


class Raw:
    """pyarrow.flight with a bearer token from the basic-auth handshake."""

    def __init__(self, server, user=TEST_USER, password=TEST_PASSWORD, **client_kwargs):
        self.client = flight.FlightClient(client_kwargs.pop("uri", None) or server.flight_uri(),
                                          **client_kwargs)
        header = self.client.authenticate_basic_token(user, password)
        assert header[0] == b"authorization" and header[1].startswith(b"Bearer "), header
        self.options = flight.FlightCallOptions(headers=[header], timeout=120)

    def info(self, descriptor) -> flight.FlightInfo:
        return self.client.get_flight_info(descriptor, self.options)

    def fetch(self, ticket) -> pa.Table:
        return self.client.do_get(ticket, self.options).read_all()

    def query(self, sql: str) -> pa.Table:
        info = self.info(proto.statement_query(sql))
        return pa.concat_tables([self.fetch(e.ticket) for e in info.endpoints])

    def action(self, kind: str, body: bytes = b"") -> list[bytes]:
        return [r.body.to_pybytes() for r in self.client.do_action(flight.Action(kind, body), self.options)]


def sort_rows(rows):
    return sorted(rows, key=lambda r: tuple((v is None, str(v)) for v in r))


def table_rows(table: pa.Table) -> list[tuple]:
    cols = [c.to_pylist() for c in table.columns]
    return list(zip(*cols)) if cols else []


# --------------------------------------------------------------------------
# ADBC
# --------------------------------------------------------------------------

def test_serve_prints_the_flight_uri(fserver):
    assert f"Arrow Flight SQL clients on grpc://127.0.0.1:{fserver.flight_port}" in fserver.log_text()


def test_adbc_execute_and_fetch_arrow_table_equal_pgwire(fserver):
    sql = "SELECT * FROM health.prescriber_drug"
    expected = pg_rows(fserver, sql)
    assert len(expected) > 1000
    with adbc(fserver) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
        assert table.num_rows == len(expected)
        assert table.column_names == pg_columns(fserver, sql)
        assert sort_rows(table_rows(table)) == sort_rows(expected)
        # DB-API row access and an aggregate.
        cur.execute("SELECT count(*) AS n, sum(trx_cnt) AS trx, min(delivery_date) AS d "
                    "FROM health.prescriber_drug")
        row = cur.fetchone()
        assert row == pg_rows(fserver, "SELECT count(*), sum(trx_cnt), min(delivery_date) "
                                       "FROM health.prescriber_drug")[0]
        assert isinstance(row[2], datetime.date)


def test_nested_strings_arrive_as_plain_strings(fserver):
    """Strings inside lists and structs (array_agg, named_struct) reach Flight clients as plain
    `string`, as top-level ones do: older Arrow Java and Go readers have no view types."""
    sql = ("SELECT presc_state, array_agg(DISTINCT description_flag) AS flags, "
           "named_struct('city', min(presc_city), 'n', count(*)) AS s "
           "FROM health.prescriber_drug GROUP BY presc_state")
    table = Raw(fserver).query(sql)
    assert table.schema.field("flags").type == pa.list_(pa.string())
    assert table.schema.field("s").type == pa.struct([("city", pa.string()), ("n", pa.int64())])
    with adbc(fserver) as conn, conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetch_arrow_table().schema == table.schema
    expected = pg_rows(fserver, "SELECT presc_state, array_agg(DISTINCT description_flag), "
                                "min(presc_city), count(*) FROM health.prescriber_drug "
                                "GROUP BY presc_state")
    got = [(r["presc_state"], sorted(r["flags"]), r["s"]["city"], r["s"]["n"])
           for r in table.to_pylist()]
    assert len(got) == len(expected) > 10
    assert sorted(got) == sorted((st, sorted(fl), c, n) for st, fl, c, n in expected)


def test_adbc_prepared_statement_with_parameters(fserver):
    sql = ("SELECT npi, drug_name, trx_cnt FROM health.prescriber_drug "
           "WHERE presc_state = $1 AND trx_cnt > $2 ORDER BY npi, drug_name")
    pg_sql = sql.replace("$1", "%s").replace("$2", "%s")
    states = [r[0] for r in pg_rows(fserver, "SELECT presc_state FROM health.prescriber_drug "
                                             "GROUP BY presc_state ORDER BY count(*) DESC LIMIT 2")]
    with adbc(fserver) as conn, conn.cursor() as cur:
        params = cur.adbc_prepare(sql)
        assert params is not None and params.names == ["$1", "$2"], params
        assert params.field(1).type == pa.int64(), params
        # The same prepared statement, bound twice with different values.
        for state, floor in [(states[0], 20), (states[1], 50)]:
            cur.execute(sql, (state, floor))
            got = cur.fetchall()
            assert got == pg_rows(fserver, pg_sql, (state, floor))
            assert got, f"no rows for {state} > {floor}: pick other values"
        # A value of another type is cast to the parameter's type (text → bigint).
        cur.execute(sql, (states[0], "20"))
        assert cur.fetchall() == pg_rows(fserver, pg_sql, (states[0], 20))


def test_adbc_get_objects_and_table_schema(fserver):
    pg_columns = [r[0] for r in pg_rows(
        fserver, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'health' "
                 "AND table_name = 'prescriber_drug' ORDER BY ordinal_position")]
    pg_tables = sorted(r[0] for r in pg_rows(
        fserver, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'health'"))
    with adbc(fserver) as conn:
        objects = conn.adbc_get_objects(depth="all", db_schema_filter="health").read_all().to_pylist()
        schemas = [s for c in objects for s in (c["catalog_db_schemas"] or [])]
        assert [s["db_schema_name"] for s in schemas] == ["health"], objects
        tables = {t["table_name"]: t for t in schemas[0]["db_schema_tables"]}
        assert sorted(tables) == pg_tables
        assert all(t["table_type"] == "TABLE" for t in tables.values())
        columns = tables["prescriber_drug"]["table_columns"]
        assert [c["column_name"] for c in columns] == pg_columns
        assert [c["ordinal_position"] for c in columns] == list(range(1, len(pg_columns) + 1))

        schema = conn.adbc_get_table_schema("prescriber_drug", db_schema_filter="health")
        assert schema.names == pg_columns
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM health.prescriber_drug LIMIT 1")
            assert cur.fetch_arrow_table().schema.types == schema.types

        types = conn.adbc_get_table_types()
        assert "TABLE" in types and "SYSTEM TABLE" in types, types
        # Catalog listing: the session's catalog, as pgwire's current_database() sees it.
        catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
        assert [c["catalog_name"] for c in catalogs] == [
            pg_rows(fserver, "SELECT table_catalog FROM information_schema.tables "
                             "WHERE table_schema = 'health' LIMIT 1")[0][0]]


def test_adbc_get_info_and_updates(fserver):
    with adbc(fserver) as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "rxgate", info
        assert info["vendor_version"], info
        with conn.cursor() as cur:
            # CommandStatementUpdate: session state lives as long as the token.
            cur.adbc_statement.set_sql_query("SET statement_timeout = '42s'")
            assert cur.adbc_statement.execute_update() in (0, -1)
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone() == ("42s",)
            # A syntax error: one line, the gRPC INVALID_ARGUMENT code.
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute("SELEC 1")
            assert err.value.status_code == adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT, err.value
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute("SELECT * FROM health.no_such_table")
            assert err.value.status_code == adbc_driver_manager.AdbcStatusCode.NOT_FOUND, err.value


def test_adbc_wrong_password(fserver):
    with pytest.raises(adbc_driver_manager.Error) as err:
        with adbc(fserver, password="wrong") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert err.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED, err.value
    assert "password authentication failed" in str(err.value)


# --------------------------------------------------------------------------
# pyarrow.flight: endpoints, tickets, metadata
# --------------------------------------------------------------------------

def test_parallel_endpoints_equal_pgwire(fserver):
    sql = ("SELECT presc_state, count(*) AS n, sum(trx_cnt) AS trx, count(DISTINCT npi) AS npis "
           "FROM health.prescriber_drug GROUP BY presc_state")
    raw = Raw(fserver)
    info = raw.info(proto.statement_query(sql))
    assert len(info.endpoints) >= 2, "a grouped query over 4 partitions is offered as several endpoints"
    assert len({e.ticket.ticket for e in info.endpoints}) == len(info.endpoints)
    # Several clients (each its own login and connection) fetch the endpoints at once.
    clients = [Raw(fserver) for _ in info.endpoints]
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        tables = list(pool.map(lambda ce: ce[0].fetch(ce[1].ticket), zip(clients, info.endpoints)))
    assert all(t.schema == info.schema for t in tables)
    got = sort_rows(r for t in tables for r in table_rows(t))
    assert got == sort_rows(pg_rows(fserver, sql))
    # The whole table through parallel endpoints, compared value for value.
    sql = "SELECT npi, drug_name, trx_cnt, total_drug_cost, delivery_date FROM health.prescriber_drug WHERE trx_cnt > 11"
    info = raw.info(proto.statement_query(sql))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        tables = list(pool.map(lambda e: raw.fetch(e.ticket), info.endpoints))
    got = sort_rows(r for t in tables for r in table_rows(t))
    assert got == sort_rows(pg_rows(fserver, sql))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_do_get_streams_without_materializing_the_result(fserver):
    """A result of ~960 MB (60M rows of two bigints) over several endpoints, read one endpoint
    after the other with a pause: the server's memory stays far below the result's size. DoGet
    produces batches as the reader takes them, and partitions nobody has asked for yet are not
    computed ahead (see tickets.rs)."""
    n = 60_000_000
    raw = Raw(fserver)
    info = raw.info(proto.statement_query(f"SELECT value, value * 2 AS twice FROM generate_series(1, {n})"))
    assert len(info.endpoints) >= 2, "a computed projection is repartitioned"
    base = peak = rss_mb(fserver.proc.pid)
    total = chunks = 0
    for endpoint in info.endpoints:
        reader = raw.client.do_get(endpoint.ticket, raw.options)
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            total += chunk.data.num_rows
            chunks += 1
            if chunks == 50:
                time.sleep(2)  # an idle reader: the server must wait, not run ahead
            if chunks % 100 == 0:
                peak = max(peak, rss_mb(fserver.proc.pid))
    assert total == n
    assert peak - base < 250, f"server memory grew by {peak - base:.0f} MB while streaming 960 MB"


def test_metadata_commands_have_the_spec_schemas(fserver):
    raw = Raw(fserver)
    keys = pa.schema([
        ("pk_catalog_name", pa.utf8()), ("pk_db_schema_name", pa.utf8()),
        pa.field("pk_table_name", pa.utf8(), False), pa.field("pk_column_name", pa.utf8(), False),
        ("fk_catalog_name", pa.utf8()), ("fk_db_schema_name", pa.utf8()),
        pa.field("fk_table_name", pa.utf8(), False), pa.field("fk_column_name", pa.utf8(), False),
        pa.field("key_sequence", pa.int32(), False), ("fk_key_name", pa.utf8()), ("pk_key_name", pa.utf8()),
        pa.field("update_rule", pa.uint8(), False), pa.field("delete_rule", pa.uint8(), False),
    ])
    primary = pa.schema([
        ("catalog_name", pa.utf8()), ("db_schema_name", pa.utf8()),
        pa.field("table_name", pa.utf8(), False), pa.field("column_name", pa.utf8(), False),
        ("key_name", pa.utf8()), pa.field("key_sequence", pa.int32(), False),
    ])
    ref = proto.table_ref("prescriber_drug", "health")
    for message, schema in [("CommandGetPrimaryKeys", primary), ("CommandGetExportedKeys", keys),
                            ("CommandGetImportedKeys", keys)]:
        info = raw.info(proto.command(message, ref))
        assert info.schema == schema, message
        table = raw.fetch(info.endpoints[0].ticket)
        assert table.schema == schema and table.num_rows == 0, message

    info = raw.info(proto.command("CommandGetTableTypes"))
    assert info.schema == pa.schema([pa.field("table_type", pa.utf8(), False)])
    assert "TABLE" in raw.fetch(info.endpoints[0].ticket).column(0).to_pylist()

    # GetTables with include_schema: the IPC schema of each table is what a query returns.
    info = raw.info(proto.get_tables("health", "city_report", include_schema=True))
    assert info.schema.names == ["catalog_name", "db_schema_name", "table_name", "table_type", "table_schema"]
    table = raw.fetch(info.endpoints[0].ticket)
    assert table.column("table_name").to_pylist() == ["city_report"]
    announced = pa.ipc.read_schema(pa.py_buffer(table.column("table_schema")[0].as_py()))
    assert announced.names == raw.query("SELECT * FROM health.city_report LIMIT 0").schema.names

    # GetSchema: a statement's result schema without running it.
    schema = raw.client.get_schema(proto.statement_query("SELECT * FROM health.city_report"), raw.options).schema
    assert schema.names == pg_columns(fserver, "SELECT * FROM health.city_report")

    # GetSqlInfo: server name (0) and read-only (3).
    info = raw.info(proto.get_sql_info(0, 3))
    table = raw.fetch(info.endpoints[0].ticket)
    assert table.column("info_name").to_pylist() == [0, 3]
    assert table.column("value").to_pylist() == ["rxgate", False]  # SQL writes: not read-only

    info = raw.info(proto.command("CommandGetXdbcTypeInfo"))
    names = raw.fetch(info.endpoints[0].ticket).column("type_name").to_pylist()
    assert {"BIGINT", "VARCHAR", "DATE", "DOUBLE"} <= set(names), names


def test_authentication_errors(fserver):
    client = flight.FlightClient(fserver.flight_uri())
    for user, password in [(TEST_USER, "wrong"), ("nobody", TEST_PASSWORD)]:
        with pytest.raises(flight.FlightUnauthenticatedError, match="password authentication failed"):
            client.authenticate_basic_token(user, password)
    # No token, or a made-up one: nothing but the handshake answers.
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(proto.statement_query("SELECT 1"))
    bogus = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer not-a-token")])
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(proto.statement_query("SELECT 1"), bogus)


def test_tickets_are_bound_to_their_user_and_single_use(fserver):
    mine, theirs = Raw(fserver), Raw(fserver, OTHER_USER, OTHER_PASSWORD)
    info = mine.info(proto.statement_query("SELECT count(*) AS n FROM health.prescriber_drug"))
    ticket = info.endpoints[0].ticket
    with pytest.raises(flight.FlightUnauthorizedError, match="another user"):
        theirs.fetch(ticket)
    # The refusal did not use the ticket up: its owner still gets the answer.
    assert mine.fetch(ticket).column("n").to_pylist() == [pg_rows(
        fserver, "SELECT count(*) FROM health.prescriber_drug")[0][0]]
    with pytest.raises(pa.ArrowKeyError, match="ticket not found"):
        mine.fetch(ticket)
    with pytest.raises(pa.ArrowKeyError, match="ticket not found"):
        mine.fetch(flight.Ticket(b"made up"))


def test_tokens_are_revoked_by_close_session_and_password_change(fserver, rxgate_bin):
    raw = Raw(fserver, OTHER_USER, OTHER_PASSWORD)
    assert raw.query("SELECT 1 AS one").column("one").to_pylist() == [1]
    assert proto.first_varint_field(raw.action("CloseSession")[0]) == 1
    with pytest.raises(flight.FlightUnauthenticatedError):
        raw.query("SELECT 1")
    raw = Raw(fserver, OTHER_USER, OTHER_PASSWORD)
    raw.query("SELECT 1")
    new_password = OTHER_PASSWORD + "-2"
    Rxgate(rxgate_bin, None).run("user", "passwd", OTHER_USER, "--password-stdin",
                                 env={"RXGATE_USERS_FILE": str(fserver.users_file)},
                                 input=new_password + "\n")
    with pytest.raises(flight.FlightUnauthenticatedError):
        raw.query("SELECT 1")
    Raw(fserver, OTHER_USER, new_password).query("SELECT 1")
    # Put the password back for the other tests of this module.
    Rxgate(rxgate_bin, None).run("user", "passwd", OTHER_USER, "--password-stdin",
                                 env={"RXGATE_USERS_FILE": str(fserver.users_file)},
                                 input=OTHER_PASSWORD + "\n")


def test_expired_ticket_is_not_found(serve, lakehouse, tmp_path):
    server = serve(lakehouse.rx.data_dir, config=write(tmp_path / "ttl.toml", "[flightsql]\nticket_ttl_secs = 2\n"))
    raw = Raw(server)
    info = raw.info(proto.statement_query("SELECT 1 AS one"))
    time.sleep(3.5)
    with pytest.raises(pa.ArrowKeyError, match="ticket not found"):
        raw.fetch(info.endpoints[0].ticket)
    # A fresh ticket redeemed in time works.
    assert raw.query("SELECT 1 AS one").num_rows == 1


def test_cancel_flight_info_stops_a_running_query(fserver):
    raw = Raw(fserver)
    # Cancelled before it was fetched: its tickets are gone.
    info = raw.info(proto.statement_query(ENDLESS))
    assert proto.first_varint_field(raw.action("CancelFlightInfo", proto.cancel_flight_info_request(info))[0]) == 1
    with pytest.raises(pa.ArrowKeyError, match="ticket not found"):
        raw.fetch(info.endpoints[0].ticket)

    # Cancelled while a client waits on its stream: the stream ends with CANCELLED.
    info = raw.info(proto.statement_query(ENDLESS))
    errors: list[BaseException] = []

    def read(endpoint):
        # Chunk by chunk: pyarrow's read_all() turns a CANCELLED status into a simulated
        # SIGINT of the main thread (its SignalStopHandler), which would stop pytest.
        reader = raw.client.do_get(endpoint.ticket, raw.options)
        try:
            while True:
                reader.read_chunk()
        except StopIteration:
            pass
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    readers = [threading.Thread(target=read, args=(e,)) for e in info.endpoints]
    for t in readers:
        t.start()
    time.sleep(1.0)
    other = Raw(fserver, OTHER_USER, OTHER_PASSWORD)
    with pytest.raises(flight.FlightUnauthorizedError):
        other.action("CancelFlightInfo", proto.cancel_flight_info_request(info))
    started = time.monotonic()
    raw.action("CancelFlightInfo", proto.cancel_flight_info_request(info))
    for t in readers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in readers), "the stream did not end after CancelFlightInfo"
    assert time.monotonic() - started < 60
    assert errors and all(isinstance(e, flight.FlightCancelledError) for e in errors), errors
    # The server is fine afterwards.
    assert raw.query("SELECT 2 AS two").column("two").to_pylist() == [2]


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

def client_certificate(certs: Path) -> tuple[Path, Path]:
    """A client certificate (EKU clientAuth) signed by the development CA, made with openssl."""
    key, csr, crt = certs / "client.key", certs / "client.csr", certs / "client.crt"
    ext = write(certs / "client.ext", "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=rxgate-test-client"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", certs / "ca.crt", "-CAkey", certs / "ca.key",
                    "-CAcreateserial", "-out", crt, "-days", "1", "-extfile", ext],
                   check=True, capture_output=True)
    return crt, key


def test_tls_with_the_pgwire_certificate_and_client_certificates(serve, lakehouse, tmp_path, rxgate_bin):
    certs = tmp_path / "tls"
    Rxgate(rxgate_bin, None).run("cert", "dev", "--out", certs)
    ca = (certs / "ca.crt").read_bytes()
    # Only [pgwire.tls] is configured: Flight SQL uses the same certificate, TLS only.
    config = write(tmp_path / "tls.toml",
                   f'[pgwire.tls]\ncert = "{certs}/server.crt"\nkey = "{certs}/server.key"\n')
    server = serve(lakehouse.rx.data_dir, config=config)
    assert f"Arrow Flight SQL clients on grpc+tls://127.0.0.1:{server.flight_port} (TLS" in server.log_text()
    sql = "SELECT count(*) AS n FROM health.prescriber_drug"
    expected = pg_rows(server, sql)[0][0]
    raw = Raw(server, uri=server.flight_uri(tls=True, host="localhost"), tls_root_certs=ca)
    assert raw.query(sql).column("n").to_pylist() == [expected]
    with adbc(server, uri=server.flight_uri(tls=True, host="localhost"),
              **{"adbc.flight.sql.client_option.tls_root_certs": ca.decode()}) as conn, conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetchone() == (expected,)
    # Plaintext to the TLS port gets no answer (the client reports a transport error); TLS
    # without trusting the CA fails the handshake.
    with pytest.raises(TRANSPORT_ERRORS):
        flight.FlightClient(server.flight_uri()).authenticate_basic_token(TEST_USER, TEST_PASSWORD)
    with pytest.raises(TRANSPORT_ERRORS):
        flight.FlightClient(server.flight_uri(tls=True, host="localhost")).authenticate_basic_token(
            TEST_USER, TEST_PASSWORD)

    # Client certificates required: without one the TLS handshake fails; with one signed by
    # the configured CA the login proceeds as usual (the password is still checked).
    crt, key = client_certificate(certs)
    config = write(tmp_path / "mtls.toml",
                   f'[pgwire.tls]\ncert = "{certs}/server.crt"\nkey = "{certs}/server.key"\n'
                   f'[flightsql.tls]\nclient_ca = "{certs}/ca.crt"\nclient_cert_required = true\n')
    server = serve(lakehouse.rx.data_dir, config=config)
    uri = server.flight_uri(tls=True, host="localhost")
    with pytest.raises(TRANSPORT_ERRORS):
        Raw(server, uri=uri, tls_root_certs=ca)
    raw = Raw(server, uri=uri, tls_root_certs=ca, cert_chain=crt.read_bytes(), private_key=key.read_bytes())
    assert raw.query(sql).column("n").to_pylist() == [expected]
    with pytest.raises(flight.FlightUnauthenticatedError):
        Raw(server, password="wrong", uri=uri, tls_root_certs=ca, cert_chain=crt.read_bytes(),
            private_key=key.read_bytes())
    with adbc(server, uri=uri, **{
        "adbc.flight.sql.client_option.tls_root_certs": ca.decode(),
        "adbc.flight.sql.client_option.mtls_cert_chain": crt.read_text(),
        "adbc.flight.sql.client_option.mtls_private_key": key.read_text(),
    }) as conn, conn.cursor() as cur:
        cur.execute(sql)
        assert cur.fetchone() == (expected,)


def test_flight_tls_setup_failure_fails_closed(rxgate_bin, lakehouse, tmp_path):
    """A Flight-only TLS configuration that cannot be used stops `rxgate serve` at startup."""
    from conftest import free_port
    from rxcli import REPO_ROOT, child_env
    certs = tmp_path / "tls"
    Rxgate(rxgate_bin, None).run("cert", "dev", "--out", certs)
    config = write(tmp_path / "bad.toml",
                   f'[flightsql.tls]\ncert = "{certs}/server.crt"\nkey = "{certs}/ca.key"\n')
    p = subprocess.run([str(rxgate_bin), "--data-dir", str(lakehouse.rx.data_dir), "--config", str(config),
                        "serve", "--pg-listen", f"127.0.0.1:{free_port()}",
                        "--flight-listen", f"127.0.0.1:{free_port()}"],
                       cwd=REPO_ROOT, env=child_env({"RXGATE_USERS_FILE": str(tmp_path / "u.toml")}),
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "do not work together" in p.stderr, p.stderr
    assert "serving" not in p.stdout and "panicked" not in p.stderr
