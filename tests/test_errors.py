"""Issue 21 §4, the error path, against a real `rxgate serve` over pgwire (psycopg) and Flight
SQL (ADBC):

- a storage error (a data file deleted, a data file corrupted) is SQLSTATE 58030 under
  pgwire and UNAVAILABLE (ADBC: IO) with `x-rxgate-sqlstate: 58030` under Flight SQL; its
  message carries no credential and an error id, the server log carries the id with the full
  chain, and the server answers the next query;
- an internal error (an external table whose stored definition is unreadable) shows the
  client only `internal error (error id …)`; the same id is in the server log with the full
  chain (the definition's parse error included);
- authentication failures keep their SQLSTATEs (28P01, 28000) and gRPC codes.

Every test works on its own lakehouse (`own_lake`): it deletes and corrupts files."""
from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pytest

from conftest import D1, TEST_PASSWORD, TEST_USER, start_server, stop_server
from rxcli import Rxgate
from test_auth_tls import login_error

ERROR_ID = re.compile(r"\(error id ([0-9a-f]{16})\)")
#: A credential in a URI (`scheme://user:password@`), which no client message may carry.
URI_PASSWORD = re.compile(r"://[^/\s@]*:[^/\s@*]+@")


@pytest.fixture(scope="module")
def own_lake(rxgate_bin, dataset, tmp_path_factory):
    """A lakehouse of this module's own (D1), an external CSV table `health.ext_words` on
    it, and a server over it (`[external] allowed_locations` = the CSV directory)."""
    root = tmp_path_factory.mktemp("errors")
    rx = Rxgate(rxgate_bin, root / "data")
    rx.pipeline(dataset.root, D1)
    words = root / "ext" / "words"
    words.mkdir(parents=True)
    (words / "part-0.csv").write_text("1,one\n2,two\n")
    config = root / "rxgate.toml"
    config.write_text(f'[external]\nallowed_locations = ["{root / "ext"}"]\n')
    server = start_server(rxgate_bin, rx.data_dir, root / "serve.log", config=config)
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE EXTERNAL TABLE health.ext_words (n INT, word STRING) STORED AS CSV "
                         f"LOCATION '{words}'")
            assert conn.execute("SELECT sum(n) FROM health.ext_words").fetchone() == (3,)
        yield rx, server
    finally:
        stop_server(server)


def adbc(server, user=TEST_USER, password=TEST_PASSWORD):
    return flight_sql.connect(server.flight_uri(), db_kwargs={"username": user, "password": password},
                              autocommit=True)


def data_files(rx: Rxgate, table: str) -> list[Path]:
    files = sorted((rx.data_dir / "warehouse" / "health" / table / "data").rglob("*.parquet"))
    assert files, f"no data files of {table}"
    return files


def pg_error(server, sql: str) -> psycopg.Error:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(sql).fetchall()
        # The session survives its error, and so does the server.
        assert conn.execute("SELECT 1").fetchone() == (1,)
    return err.value


def flight_error(server, sql: str) -> adbc_driver_manager.Error:
    with adbc(server) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute(sql)
            cur.fetchall()
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]
    return err.value


def details(err: adbc_driver_manager.Error) -> dict[str, str]:
    """The gRPC metadata ADBC hands back with an error (name → text)."""
    out = {}
    for name, value in (err.details or []):
        name = name.decode() if isinstance(name, bytes) else str(name)
        out[name] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return out


def logged(server, error_id: str) -> str:
    """The server log from the line naming `error_id` on (the chain follows it)."""
    text = server.log_text()
    at = text.find(f"error_id={error_id}")
    assert at >= 0, f"error id {error_id} not in the server log:\n{text[-3000:]}"
    return text[at:at + 4000]


def check_storage_error_pg(server, sql: str, chain_says: str) -> str:
    err = pg_error(server, sql)
    msg = str(err)
    assert err.sqlstate == "58030", (err.sqlstate, msg)
    assert not URI_PASSWORD.search(msg) and TEST_PASSWORD not in msg, msg
    assert "\n" not in msg.strip(), msg
    m = ERROR_ID.search(msg)
    assert m, msg
    assert chain_says in logged(server, m.group(1)), logged(server, m.group(1))
    return msg


def check_storage_error_flight(server, sql: str, chain_says: str) -> str:
    err = flight_error(server, sql)
    msg = str(err)
    assert err.status_code == adbc_driver_manager.AdbcStatusCode.IO, (err.status_code, msg)
    meta = details(err)
    assert meta.get("x-rxgate-sqlstate") == "58030", (meta, msg)
    assert not URI_PASSWORD.search(msg) and TEST_PASSWORD not in msg, msg
    m = ERROR_ID.search(msg)
    assert m and meta.get("x-rxgate-error-id") == m.group(1), (meta, msg)
    assert chain_says in logged(server, m.group(1))
    return msg


def test_a_deleted_data_file_is_a_storage_error(own_lake):
    rx, server = own_lake
    victim = data_files(rx, "us_cities")[0]
    victim.unlink()
    sql = "SELECT * FROM health.us_cities"
    check_storage_error_pg(server, sql, "No such file or directory")
    check_storage_error_flight(server, sql, "No such file or directory")
    # What needs no storage still works, on a new connection too.
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
    assert server.alive()


def test_a_corrupt_data_file_is_a_storage_error(own_lake):
    rx, server = own_lake
    for victim in data_files(rx, "prescriber_drug"):
        victim.write_bytes(b"\x13" * victim.stat().st_size)  # same size, no Parquet footer
    sql = "SELECT sum(trx_cnt) FROM health.prescriber_drug"
    pg = check_storage_error_pg(server, sql, "Parquet")
    assert "unreadable data file" in pg, pg
    check_storage_error_flight(server, sql, "Parquet")
    assert server.alive()


def test_an_internal_error_shows_only_its_id(own_lake):
    rx, server = own_lake
    # The definition is JSON in the catalog database; break it.
    with sqlite3.connect(rx.data_dir / "catalog.db") as db:
        n = db.execute("UPDATE rxgate_external_tables SET definition = '{\"columns\": [broken' "
                       "WHERE table_name = 'ext_words'").rowcount
        assert n == 1
    sql = "SELECT * FROM health.ext_words"
    err = pg_error(server, sql)
    msg = str(err).strip()
    assert err.sqlstate == "XX000", (err.sqlstate, msg)
    m = re.fullmatch(r"internal error \(error id ([0-9a-f]{16})\)", msg)
    assert m, msg
    chain = logged(server, m.group(1))
    assert "unreadable definition of health.ext_words" in chain, chain
    assert "caused by: expected value" in chain, chain  # serde_json's own text: the source

    ferr = flight_error(server, sql)
    fmsg = str(ferr)
    assert ferr.status_code == adbc_driver_manager.AdbcStatusCode.INTERNAL, (ferr.status_code, fmsg)
    assert details(ferr).get("x-rxgate-sqlstate") == "XX000", details(ferr)
    m2 = ERROR_ID.search(fmsg)
    assert m2 and m2.group(1) != m.group(1), fmsg
    assert "unreadable definition" not in fmsg and "expected value" not in fmsg, fmsg
    assert "unreadable definition of health.ext_words" in logged(server, m2.group(1))
    assert server.alive()


def test_auth_failures_keep_their_codes(own_lake):
    _, server = own_lake
    for user, password in [(TEST_USER, "wrong"), ("nobody", "whatever")]:
        message = login_error(server.dsn(user=user, password=password))
        assert f'FATAL:  28P01: password authentication failed for user "{user}"' in message, message
        with pytest.raises(adbc_driver_manager.Error) as ferr:
            with adbc(server, user=user, password=password) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        assert ferr.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED, ferr.value
    # No user name in the startup packet is 28000 (libpq would fill one in: send it raw).
    import socket
    import struct
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        body = struct.pack("!i", 196608) + b"database\0rxgate\0\0"
        s.sendall(struct.pack("!i", len(body) + 4) + body)
        reply = s.recv(4096)
    assert reply[:1] == b"E", reply
    assert b"C28000\0" in reply and b"SFATAL\0" in reply, reply
