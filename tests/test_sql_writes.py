"""SQL writes (issue 22), over the real server with real clients, on a lakehouse of its own:

- DDL: CREATE/DROP SCHEMA (RESTRICT 2BP01, CASCADE), CREATE TABLE partitioned by columns and
  transforms, Hive's typed partition columns, TBLPROPERTIES and Trino's WITH (partitioning =
  ARRAY[…]), CTAS, ALTER TABLE RENAME, DROP TABLE [PURGE] (files gone only with PURGE);
- DML: INSERT VALUES / SELECT (command tags with row counts), psycopg executemany with typed
  parameters, DELETE (whole files removed without a rewrite, or rewritten copy-on-write),
  TRUNCATE; each write one Iceberg snapshot;
- policy: each role x each write statement -> the SQLSTATE, and the table unchanged when
  refused; row filters bound INSERT (WITH CHECK, 42501) and DELETE (only visible rows);
  DELETE's predicate sees masked values; every write in the audit trail with its rows and
  snapshot;
- Flight SQL (ADBC): DDL and DML through execute, with the row count; not read-only;
- crash: a server killed right before a write's commit leaves the table as it was, and the
  re-run lands once; concurrent INSERTs both land.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from decimal import Decimal
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest

from sqlclient import Client
from conftest import TEST_PASSWORD, TEST_USER, start_server_with_roles, stop_server

PASSWORD = "writes-test-pw"

_client = Client(PASSWORD)
pg, q, sqlstate, psql = _client.pg, _client.q, _client.sqlstate, _client.psql
USERS = {"ann": "analyst", "auditor_ca": "state_auditor", "pat": "public", "eng": "engineer"}

POLICY = """
[pseudonym]
key_id = "k1"

[roles.admin]
admin = true
[roles.analyst]
description = "reads health, names redacted; may delete from health.rx_w"
[roles.state_auditor]
description = "California's rows of health; may insert and delete them in health.rx_w"
[roles.public]
description = "one column of health.rx_w"
[roles.engineer]
description = "everything in the sandbox schema"

[users.auditor_ca]
roles = ["state_auditor"]
attributes = { state = "CA" }

[[grant]]
roles = ["admin"]

[[grant]]
roles = ["analyst", "state_auditor"]
schema = "health"

[[grant]]
roles = ["state_auditor"]
schema = "health"
table = "rx_w"
privileges = ["insert", "delete"]

[[grant]]
roles = ["analyst"]
schema = "health"
table = "rx_w"
privileges = ["delete"]

[[grant]]
roles = ["public"]
schema = "health"
table = "rx_w"
columns = ["presc_state"]

[[grant]]
roles = ["engineer"]
schema = "sandbox"
privileges = ["all"]

[[mask]]
roles = ["analyst"]
schema = "health"
table = "*"
columns = ["presc_last_name"]
mask = { type = "redact" }

[[row_filter]]
roles = ["state_auditor"]
schema = "health"
table = "rx_w"
filter = "presc_state = attribute('state')"
"""


@pytest.fixture(scope="module")
def wserver(rxgate_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("writes")
    (d / "policies.toml").write_text(POLICY)
    config = d / "rxgate.toml"
    config.write_text(f'[policy]\nfile = "{d / "policies.toml"}"\n[audit]\ndir = "{d / "audit"}"\n')
    data = d / "data"
    data.mkdir()
    s = start_server_with_roles(rxgate_bin, data, d, config, USERS, PASSWORD)
    s.data_dir = data
    s.workdir = d
    s.audit_dir = d / "audit"
    s.bin = rxgate_bin
    q(s, "CREATE SCHEMA lab")
    yield s
    stop_server(s)






def snapshots(server, table) -> list[tuple]:
    return q(server, f'SELECT snapshot_id, operation FROM {table.split(".")[0]}."{table.split(".")[1]}$snapshots" '
                     "ORDER BY committed_at")


def data_files(server, table) -> list[str]:
    schema, name = table.split(".")
    return [r[0] for r in q(server, f'SELECT file_path FROM {schema}."{name}$files" ORDER BY file_path')]


# ----------------------------------------------------------------------------------- DDL + DML

def test_psql_ddl_and_dml_with_tags(wserver):
    out = psql(wserver, """
CREATE SCHEMA IF NOT EXISTS lab;
CREATE TABLE lab.events (id bigint NOT NULL, kind string COMMENT 'what happened', ts timestamp, amount decimal(10,2))
  USING iceberg PARTITIONED BY (days(ts), bucket(4, id)) TBLPROPERTIES ('write.parquet.compression-codec' = 'snappy');
INSERT INTO lab.events VALUES (1, 'a', TIMESTAMP '2024-01-01 10:00:00', 1.50), (2, 'b', TIMESTAMP '2024-01-01 11:00:00', 2.25),
  (3, 'c', TIMESTAMP '2024-01-02 09:30:00', 3.00);
INSERT INTO lab.events (id, kind) SELECT id + 10, upper(kind) FROM lab.events WHERE id < 3;
SELECT count(*), sum(amount) FROM lab.events;
DELETE FROM lab.events WHERE id = 11;
SELECT id, kind FROM lab.events ORDER BY id;
""")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for tag in ("CREATE SCHEMA", "CREATE TABLE", "INSERT 0 3", "INSERT 0 2", "DELETE 1"):
        assert tag in lines, (tag, out.stdout)
    assert q(wserver, "SELECT id, kind, amount FROM lab.events ORDER BY id") == [
        (1, "a", Decimal("1.50")), (2, "b", Decimal("2.25")), (3, "c", Decimal("3.00")), (12, "B", None)]
    # The partition spec holds the transforms, and the files are laid out by them.
    desc = q(wserver, "DESCRIBE FORMATTED lab.events")
    text = "\n".join(" ".join(str(c) for c in r) for r in desc)
    assert "day" in text.lower() and "bucket" in text.lower(), text
    files = data_files(wserver, "lab.events")
    assert any("ts_day=2024-01-01" in f for f in files), files
    assert all("id_bucket_4=" in f for f in files), files
    # Three writes, three snapshots: append, append, and the delete (a file removed, or
    # rewritten without the row, depending on which rows share its partition).
    ops = [op for _, op in snapshots(wserver, "lab.events")]
    assert ops[:2] == ["append", "append"] and ops[2] in ("delete", "overwrite") and len(ops) == 3, ops


def test_delete_of_whole_partitions_rewrites_nothing(wserver):
    q(wserver, "CREATE TABLE lab.by_state (id int, state string) PARTITIONED BY (state)")
    q(wserver, "INSERT INTO lab.by_state SELECT CAST(v AS int), CASE WHEN v % 3 = 0 THEN 'CA' WHEN v % 3 = 1 "
               "THEN 'TX' ELSE 'NY' END FROM generate_series(1, 300) AS t(v)")
    before = set(data_files(wserver, "lab.by_state"))
    with pg(wserver) as conn:
        cur = conn.execute("DELETE FROM lab.by_state WHERE state = 'TX'")
        assert cur.statusmessage == "DELETE 100"
    after = set(data_files(wserver, "lab.by_state"))
    assert after < before, "no file was written: a metadata delete"
    assert q(wserver, "SELECT state, count(*) FROM lab.by_state GROUP BY state ORDER BY state") == [
        ("CA", 100), ("NY", 100)]
    assert [op for _, op in snapshots(wserver, "lab.by_state")][-1] == "delete"
    # A predicate inside partitions rewrites their files without the rows.
    assert q(wserver, "DELETE FROM lab.by_state WHERE id > 290") == "DELETE 7"
    assert q(wserver, "SELECT count(*) FROM lab.by_state") == [(193,)]
    assert q(wserver, "DELETE FROM lab.by_state WHERE id < 0") == "DELETE 0"
    assert q(wserver, "TRUNCATE TABLE lab.by_state") == "TRUNCATE TABLE"
    assert q(wserver, "SELECT count(*) FROM lab.by_state") == [(0,)]


def test_psycopg_executemany_ctas_rename_and_drops(wserver):
    q(wserver, "CREATE TABLE IF NOT EXISTS lab.people (id int NOT NULL, name varchar(20), born date, score double)")
    with pg(wserver) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO lab.people (id, name, born, score) VALUES (%s, %s, %s, %s)",
                        [(i, f"n{i}", f"2000-01-{i:02d}", i / 4) for i in range(1, 21)])
        cur.execute("INSERT INTO lab.people (id, name) VALUES (%s, %s)", (21, "it's"))
    assert q(wserver, "SELECT count(*), sum(score), max(born) FROM lab.people")[0][:2] == (21, pytest.approx(52.5))
    assert q(wserver, "SELECT name FROM lab.people WHERE id = 21") == [("it's",)]
    # NOT NULL holds: an omitted or NULL id is 23502, and nothing is written.
    assert sqlstate(wserver, "INSERT INTO lab.people (name) VALUES ('x')") == "23502"
    assert sqlstate(wserver, "INSERT INTO lab.people VALUES (NULL, 'x', NULL, NULL)") == "23502"
    assert sqlstate(wserver, "INSERT INTO lab.people VALUES (1, 2)") == "42601"
    assert sqlstate(wserver, "INSERT INTO lab.people (nope) VALUES (1)") == "42703"
    assert q(wserver, "SELECT count(*) FROM lab.people") == [(21,)]
    # CTAS, in the PostgreSQL and the Spark spelling; its tag counts the rows.
    assert q(wserver, "CREATE TABLE lab.adults AS SELECT id, name FROM lab.people WHERE id > 10") == "SELECT 11"
    assert q(wserver, "CREATE TABLE lab.adults2 USING iceberg PARTITIONED BY (bucket(2, id)) AS "
                      "SELECT id, score FROM lab.people") == "SELECT 21"
    assert q(wserver, "SELECT count(*) FROM lab.adults2") == [(21,)]
    assert sqlstate(wserver, "CREATE TABLE lab.adults (a int)") == "42P07"
    assert q(wserver, "CREATE TABLE IF NOT EXISTS lab.adults (a int)") == "CREATE TABLE"
    # Rename keeps the rows; the old name is gone.
    assert q(wserver, "ALTER TABLE lab.adults RENAME TO grownups") == "ALTER TABLE"
    assert q(wserver, "SELECT count(*) FROM lab.grownups") == [(11,)]
    assert sqlstate(wserver, "SELECT * FROM lab.adults") == "42P01"
    # DROP TABLE keeps the files, PURGE removes them.
    kept = [Path(f.removeprefix("file://")) for f in data_files(wserver, "lab.grownups")]
    purged = [Path(f.removeprefix("file://")) for f in data_files(wserver, "lab.adults2")]
    assert kept and purged and all(p.exists() for p in kept + purged)
    assert q(wserver, "DROP TABLE lab.grownups") == "DROP TABLE"
    assert q(wserver, "DROP TABLE lab.adults2 PURGE") == "DROP TABLE"
    assert all(p.exists() for p in kept)
    assert not any(p.exists() for p in purged)
    assert sqlstate(wserver, "DROP TABLE lab.grownups") == "42P01"
    assert q(wserver, "DROP TABLE IF EXISTS lab.grownups") == "DROP TABLE"


def test_hive_and_trino_create_table_spellings(wserver):
    q(wserver, "CREATE DATABASE IF NOT EXISTS hivedb")
    q(wserver, "CREATE TABLE hivedb.sales (id int, amount double) PARTITIONED BY (region string, day date)")
    q(wserver, "INSERT INTO hivedb.sales VALUES (1, 2.5, 'west', DATE '2024-05-01'), (2, 1.0, 'east', DATE '2024-05-02')")
    assert q(wserver, "SHOW PARTITIONS hivedb.sales") == [("region=east/day=2024-05-02",), ("region=west/day=2024-05-01",)]
    q(wserver, "CREATE TABLE hivedb.trino (id bigint, ts timestamp, name varchar) "
               "WITH (format = 'PARQUET', partitioning = ARRAY['month(ts)', 'truncate(name, 2)'])")
    q(wserver, "INSERT INTO hivedb.trino VALUES (1, TIMESTAMP '2024-03-05 00:00:00', 'alpha')")
    # iceberg-rust names month partitions by their ordinal (months since 1970).
    assert any("ts_month=650" in f and "name_trunc_2=al" in f for f in data_files(wserver, "hivedb.trino"))
    assert sqlstate(wserver, "CREATE TABLE hivedb.bad (a int) PARTITIONED BY (nope)") == "42703"
    assert sqlstate(wserver, "CREATE TABLE hivedb.bad (a int) PARTITIONED BY (frobnicate(a))") == "42601"
    assert sqlstate(wserver, "CREATE TABLE hivedb.bad (a int) USING delta") == "0A000"
    # RESTRICT refuses a schema with tables; CASCADE drops them.
    assert sqlstate(wserver, "DROP SCHEMA hivedb") == "2BP01"
    assert q(wserver, "DROP DATABASE hivedb CASCADE") == "DROP SCHEMA"
    assert sqlstate(wserver, "SELECT * FROM hivedb.sales") == "42P01"
    assert sqlstate(wserver, "DROP SCHEMA hivedb") == "3F000"
    assert sqlstate(wserver, "CREATE TABLE system.t (a int)") == "42501"


# ------------------------------------------------------------------------------------- policy

RX_W = ("CREATE TABLE health.rx_w (npi bigint, presc_last_name string, presc_state string, trx_cnt int) "
        "PARTITIONED BY (presc_state)")


@pytest.fixture(scope="module")
def rx_w(wserver):
    q(wserver, "CREATE SCHEMA IF NOT EXISTS health")
    q(wserver, "CREATE SCHEMA IF NOT EXISTS sandbox")
    q(wserver, RX_W)
    q(wserver, "INSERT INTO health.rx_w VALUES (1000000001, 'SMITH', 'CA', 5), (1000000002, 'JONES', 'CA', 50), "
               "(1000000003, 'SMITH', 'TX', 7), (1000000004, 'BROWN', 'NY', 12)")
    return "health.rx_w"


def table_state(server):
    return q(server, "SELECT npi, presc_last_name, presc_state, trx_cnt FROM health.rx_w ORDER BY npi")


# Each role x each write statement: the SQLSTATE it gets (None: allowed). Statements that
# would change health.rx_w are refused without changing it.
MATRIX = {
    "INSERT INTO health.rx_w VALUES (1, 'X', 'TX', 1)": {
        "ann": "42501", "auditor_ca": "42501", "pat": "42501", "eng": "42P01"},
    "DELETE FROM health.rx_w": {"pat": "42501", "eng": "42P01"},
    "TRUNCATE health.rx_w": {"ann": None, "auditor_ca": "42501", "pat": "42501", "eng": "42P01"},
    "DROP TABLE health.rx_w": {"ann": "42501", "auditor_ca": "42501", "pat": "42501", "eng": "42P01"},
    "ALTER TABLE health.rx_w RENAME TO rx_x": {"ann": "42501", "auditor_ca": "42501", "pat": "42501",
                                               "eng": "42P01"},
    "CREATE TABLE health.t_new (a int)": {"ann": "42501", "auditor_ca": "42501", "pat": "42501", "eng": "42501"},
    "CREATE SCHEMA other": {"ann": "42501", "auditor_ca": "42501", "pat": "42501", "eng": "42501"},
    "DROP SCHEMA health CASCADE": {"ann": "42501", "auditor_ca": "42501", "pat": "42501", "eng": "42501"},
}


def test_policy_matrix_refusals_leave_the_table_unchanged(wserver, rx_w):
    before = table_state(wserver)
    for sql, by_user in MATRIX.items():
        for user, want in by_user.items():
            if want is None:
                continue
            got = sqlstate(wserver, sql, user=user)
            assert got == want, (user, sql, got)
            assert table_state(wserver) == before, (user, sql)
    # The engineer owns the sandbox: create, load, delete, rename, drop.
    for sql, tag in [("CREATE TABLE sandbox.t (a int, b string)", "CREATE TABLE"),
                     ("INSERT INTO sandbox.t VALUES (1, 'x'), (2, 'y')", "INSERT 0 2"),
                     ("DELETE FROM sandbox.t WHERE a = 1", "DELETE 1"),
                     ("ALTER TABLE sandbox.t RENAME TO u", "ALTER TABLE"),
                     ("DROP TABLE sandbox.u", "DROP TABLE")]:
        assert q(wserver, sql, user="eng") == tag, sql


def test_row_filter_bounds_writes(wserver, rx_w):
    before = table_state(wserver)
    # A Texas row is outside the auditor's filter: refused, nothing written.
    assert sqlstate(wserver, "INSERT INTO health.rx_w VALUES (2000000001, 'NEW', 'TX', 1)", user="auditor_ca") == "42501"
    assert sqlstate(wserver, "INSERT INTO health.rx_w VALUES (2000000001, 'NEW', 'CA', 1), "
                             "(2000000002, 'NEW', 'TX', 1)", user="auditor_ca") == "42501"
    assert table_state(wserver) == before
    assert q(wserver, "INSERT INTO health.rx_w VALUES (2000000001, 'NEW', 'CA', 1)", user="auditor_ca") == "INSERT 0 1"
    # DELETE touches only the rows the auditor sees: Texas is out of reach.
    assert q(wserver, "DELETE FROM health.rx_w WHERE presc_state = 'TX'", user="auditor_ca") == "DELETE 0"
    assert q(wserver, "DELETE FROM health.rx_w WHERE npi = 2000000001", user="auditor_ca") == "DELETE 1"
    assert table_state(wserver) == before
    # The analyst's predicate sees redacted names: the real name matches nothing.
    assert q(wserver, "DELETE FROM health.rx_w WHERE presc_last_name = 'SMITH'", user="ann") == "DELETE 0"
    assert table_state(wserver) == before
    assert q(wserver, "DELETE FROM health.rx_w WHERE presc_last_name = 'XXXXX' AND presc_state = 'TX'",
             user="ann") == "DELETE 1"
    assert [r for r in table_state(wserver) if r[2] == "TX"] == []
    q(wserver, "INSERT INTO health.rx_w VALUES (1000000003, 'SMITH', 'TX', 7)")
    assert table_state(wserver) == before


def test_writes_are_audited_with_rows_and_snapshot(wserver, rx_w):
    q(wserver, "INSERT INTO health.rx_w VALUES (3000000001, 'AUDIT', 'NY', 3), (3000000002, 'AUDIT', 'NY', 4)")
    q(wserver, "DELETE FROM health.rx_w WHERE presc_last_name = 'AUDIT'")
    records = [json.loads(line) for line in (wserver.audit_dir / "audit.jsonl").read_text().splitlines()]
    writes = [r for r in records if r.get("written_table") == "health.rx_w" and "AUDIT" in r["statement"]]
    assert [(r["rows"], r["outcome"]) for r in writes] == [(2, "ok"), (2, "ok")], writes
    snaps = {s for s, _ in snapshots(wserver, "health.rx_w")}
    assert all(r["snapshot_id"] in snaps for r in writes), (writes, snaps)
    refused = [r for r in records if r["outcome"] == "error" and r["user"] == "pat" and "rx_w" in r["statement"]]
    assert refused and all(r["error_code"] == "PermissionDenied" for r in refused)


# --------------------------------------------------------------------------------- Flight SQL

def test_flight_sql_ddl_and_dml(wserver):
    with flight_sql.connect(wserver.flight_uri(), db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD},
                            autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE lab.flight (a int, b string)")
        cur.execute("INSERT INTO lab.flight VALUES (1, 'x'), (2, 'y'), (3, 'z')")
        # executemany: a prepared INSERT with bound parameters (DoPut, CommandPreparedStatementUpdate).
        cur.executemany("INSERT INTO lab.flight VALUES (?, ?)", [(4, "w"), (5, "v")])
        assert cur.rowcount == 2
        cur.execute("DELETE FROM lab.flight WHERE a > 2")
        cur.execute("SELECT a, b FROM lab.flight ORDER BY a")
        assert [tuple(r) for r in cur.fetchall()] == [(1, "x"), (2, "y")]
        info = conn.adbc_get_info()
    assert q(wserver, "SELECT count(*) FROM lab.flight") == [(2,)]
    assert info.get("vendor_name") or info  # the driver read GetSqlInfo


def adbc(server, user=TEST_USER):
    password = TEST_PASSWORD if user == TEST_USER else PASSWORD
    return flight_sql.connect(server.flight_uri(), db_kwargs={"username": user, "password": password},
                              autocommit=True)


def test_adbc_ingest_modes_and_batched_prepared_insert(wserver):
    import pyarrow as pa
    data = pa.table({"id": pa.array(range(1000), pa.int64()), "state": ["CA", "TX"] * 500,
                     "cost": pa.array([i / 2 for i in range(1000)], pa.float64())})
    with adbc(wserver) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("ing", data, mode="create", db_schema_name="lab") == 1000
        with pytest.raises(Exception):
            cur.adbc_ingest("ing", data, mode="create", db_schema_name="lab")
        assert cur.adbc_ingest("ing", data.slice(0, 10), mode="append", db_schema_name="lab") == 10
        assert cur.adbc_ingest("ing", data.slice(0, 5), mode="create_append", db_schema_name="lab") == 5
        assert cur.adbc_ingest("ing2", data.slice(0, 7), mode="create_append", db_schema_name="lab") == 7
        with pytest.raises(Exception):
            cur.adbc_ingest("missing", data, mode="append", db_schema_name="lab")
    assert q(wserver, "SELECT count(*), sum(cost) FROM lab.ing") == [(1015, sum(i / 2 for i in range(1000)) + 22.5 + 5.0)]
    with adbc(wserver) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("ing", data.slice(0, 3), mode="replace", db_schema_name="lab") == 3
    assert q(wserver, "SELECT count(*) FROM lab.ing") == [(3,)]
    assert q(wserver, "SELECT count(*) FROM lab.ing2") == [(7,)]
    # 10,000 rows bound to a prepared INSERT in batches: one commit (one snapshot), not one per row.
    before = len(snapshots(wserver, "lab.ing2"))
    with adbc(wserver) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO lab.ing2 (id, state, cost) VALUES (?, ?, ?)",
                        [(i, "NY", i * 1.0) for i in range(10000)])
        assert cur.rowcount == 10000
    assert len(snapshots(wserver, "lab.ing2")) == before + 1
    assert q(wserver, "SELECT count(*), max(id) FROM lab.ing2 WHERE state = 'NY'") == [(10000, 9999)]
    # Policy: the public role may not ingest, nor the auditor outside California.
    with adbc(wserver, "pat") as conn, conn.cursor() as cur:
        with pytest.raises(Exception) as err:
            cur.adbc_ingest("rx_w", data.slice(0, 1), mode="append", db_schema_name="health")
        assert "permission" in str(err.value).lower() or "does not exist" in str(err.value), err.value


# ------------------------------------------------------------------------- crash, concurrency

def test_concurrent_inserts_both_land(wserver):
    q(wserver, "CREATE TABLE lab.race (w int, i int)")
    errors = []

    def writer(w):
        try:
            for k in range(5):
                q(wserver, f"INSERT INTO lab.race SELECT {w}, CAST(v AS int) FROM generate_series(1, 200) AS t(v)")
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert q(wserver, "SELECT w, count(*) FROM lab.race GROUP BY w ORDER BY w") == [(1, 1000), (2, 1000)]


def test_crash_before_commit_leaves_the_table_and_the_rerun_lands_once(rxgate_bin, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "rxgate.toml"
    config.write_text("")
    users = {}
    s = start_server_with_roles(rxgate_bin, data, tmp_path, config, users, PASSWORD)
    try:
        q(s, "CREATE SCHEMA lab")
        q(s, "CREATE TABLE lab.big (i bigint, s string) PARTITIONED BY (bucket(8, i))")
        q(s, "INSERT INTO lab.big VALUES (0, 'seed')")
    finally:
        stop_server(s)
    insert = "INSERT INTO lab.big SELECT v, 'row ' || v FROM generate_series(1, 500000) AS t(v)"
    # Killed right before the commit: the files are written, the catalog is not changed.
    (tmp_path / "crash").mkdir()
    s = start_server_with_roles(rxgate_bin, data, tmp_path / "crash", config, users, PASSWORD,
                                env={"RXGATE_FAILPOINT": "write.before_commit"})
    try:
        with pytest.raises(psycopg.OperationalError):
            q(s, insert)
        s.proc.wait(timeout=30)
        assert s.proc.returncode == -signal.SIGABRT
    finally:
        stop_server(s)
    # The same during a COPY FROM STDIN: the server dies at its commit.
    rows = "".join(f"{v}\tcopied {v}\n" for v in range(1_000_001, 1_200_001))
    (tmp_path / "crash-copy").mkdir()
    s = start_server_with_roles(rxgate_bin, data, tmp_path / "crash-copy", config, users, PASSWORD,
                                env={"RXGATE_FAILPOINT": "write.before_commit"})
    try:
        with pytest.raises(psycopg.OperationalError):
            with pg(s) as conn, conn.cursor() as cur:
                with cur.copy("COPY lab.big FROM STDIN") as copy:
                    copy.write(rows)
        s.proc.wait(timeout=30)
        assert s.proc.returncode == -signal.SIGABRT
    finally:
        stop_server(s)
    (tmp_path / "after").mkdir()
    s = start_server_with_roles(rxgate_bin, data, tmp_path / "after", config, users, PASSWORD)
    try:
        assert q(s, "SELECT count(*) FROM lab.big") == [(1,)]
        assert q(s, insert) == "INSERT 0 500000"
        with pg(s) as conn, conn.cursor() as cur:
            with cur.copy("COPY lab.big FROM STDIN") as copy:
                copy.write(rows)
        assert q(s, "SELECT count(*), count(DISTINCT i) FROM lab.big") == [(700001, 700001)]
    finally:
        stop_server(s)


# ------------------------------------------------------------------------------- transactions

def test_psql_transaction_rollback_leaves_nothing(wserver):
    out = psql(wserver, """
BEGIN;
CREATE TABLE lab.tx_roll (a int);
INSERT INTO lab.tx_roll VALUES (1), (2);
SELECT count(*) FROM lab.tx_roll;
ROLLBACK;
""")
    assert out.returncode == 0, out.stderr
    assert " 2\n" in out.stdout and "ROLLBACK" in out.stdout, out.stdout
    assert sqlstate(wserver, "SELECT * FROM lab.tx_roll") == "42P01"


def test_transaction_over_two_tables_lands_at_commit(wserver):
    q(wserver, "CREATE TABLE lab.tx_a (a int)")
    q(wserver, "CREATE TABLE lab.tx_b (b int)")
    with pg(wserver, autocommit=False) as conn:
        conn.execute("INSERT INTO lab.tx_a VALUES (1), (2)")
        conn.execute("INSERT INTO lab.tx_b VALUES (10)")
        conn.execute("DELETE FROM lab.tx_a WHERE a = 2")
        # The block sees its own writes; others see nothing yet.
        assert conn.execute("SELECT count(*) FROM lab.tx_a").fetchone() == (1,)
        assert q(wserver, "SELECT count(*) FROM lab.tx_a") == [(0,)]
        assert q(wserver, "SELECT count(*) FROM lab.tx_b") == [(0,)]
        conn.commit()
    assert q(wserver, "SELECT a FROM lab.tx_a") == [(1,)]
    assert q(wserver, "SELECT b FROM lab.tx_b") == [(10,)]
    # The audit trail says what the COMMIT landed: each table with the snapshot it committed.
    records = [json.loads(line) for line in (wserver.audit_dir / "audit.jsonl").read_text().splitlines()]
    commits = {r["written_table"]: r["snapshot_id"] for r in records if r["statement"] == "COMMIT"}
    assert commits.get("lab.tx_a") in {sid for sid, _ in snapshots(wserver, "lab.tx_a")}
    assert commits.get("lab.tx_b") in {sid for sid, _ in snapshots(wserver, "lab.tx_b")}
    # A failed statement aborts the block: 25P02 until it ends, and COMMIT rolls back.
    with pg(wserver, autocommit=False) as conn:
        conn.execute("INSERT INTO lab.tx_a VALUES (3)")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("INSERT INTO lab.tx_a (nope) VALUES (1)")
        assert err.value.sqlstate == "42703"
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT 1")
        assert err.value.sqlstate == "25P02"
        conn.rollback()
    assert q(wserver, "SELECT a FROM lab.tx_a") == [(1,)]
    # Schema DDL cannot be staged.
    with pg(wserver, autocommit=False) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("CREATE SCHEMA lab2")
        assert err.value.sqlstate == "25001"


def test_pandas_to_sql_and_read_sql(wserver):
    pd = pytest.importorskip("pandas")
    import sqlalchemy as sa
    url = (f"postgresql+psycopg://{TEST_USER}:{TEST_PASSWORD}@{wserver.host}:{wserver.port}/rxgate")
    engine = sa.create_engine(url)
    df = pd.DataFrame({"id": [1, 2, 3], "name": ["a", "b", None], "score": [0.5, 1.5, 2.5]})
    df.to_sql("frame", engine, schema="lab", index=False)
    with pytest.raises(ValueError):
        df.to_sql("frame", engine, schema="lab", index=False, if_exists="fail")
    df.to_sql("frame", engine, schema="lab", index=False, if_exists="append")
    back = pd.read_sql("SELECT id, name, score FROM lab.frame ORDER BY id, score", engine)
    assert len(back) == 6 and list(back["id"]) == [1, 1, 2, 2, 3, 3]
    df.iloc[:2].to_sql("frame", engine, schema="lab", index=False, if_exists="replace")
    back = pd.read_sql("SELECT id, name, score FROM lab.frame ORDER BY id", engine)
    assert back.to_dict("list") == {"id": [1, 2], "name": ["a", "b"], "score": [0.5, 1.5]}
    engine.dispose()


def test_killed_transaction_leaves_nothing(rxgate_bin, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "rxgate.toml"
    config.write_text("")
    (tmp_path / "one").mkdir()
    s = start_server_with_roles(rxgate_bin, data, tmp_path / "one", config, {}, PASSWORD)
    try:
        q(s, "CREATE SCHEMA lab")
        q(s, "CREATE TABLE lab.x (a int)")
        q(s, "CREATE TABLE lab.y (b int)")
        conn = pg(s, autocommit=False)
        conn.execute("INSERT INTO lab.x VALUES (1)")
        conn.execute("INSERT INTO lab.y VALUES (2)")
        os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(timeout=10)
    finally:
        stop_server(s)
    (tmp_path / "two").mkdir()
    s = start_server_with_roles(rxgate_bin, data, tmp_path / "two", config, {}, PASSWORD)
    try:
        assert q(s, "SELECT count(*) FROM lab.x") == [(0,)]
        assert q(s, "SELECT count(*) FROM lab.y") == [(0,)]
    finally:
        stop_server(s)


# ------------------------------------------------------------------------------ COPY FROM STDIN

def test_psql_copy_from_stdin(wserver, tmp_path):
    q(wserver, "CREATE TABLE lab.loaded (id int NOT NULL, name string, amount double, day date)")
    csv = tmp_path / "rows.csv"
    csv.write_text("id,name,amount,day\n1,\"Smith, J\",1.5,2024-01-01\n2,,2.5,2024-01-02\n3,\"say \"\"hi\"\"\",,\n")
    out = psql(wserver, f"\\copy lab.loaded FROM '{csv}' WITH (FORMAT csv, HEADER)\n")
    assert out.returncode == 0, out.stderr
    assert "COPY 3" in out.stdout, out.stdout
    text = tmp_path / "rows.txt"
    text.write_text("4\tTab\\there\t\\N\t2024-02-01\n5\t\\N\t9.75\t\\N\n")
    out = psql(wserver, f"\\copy lab.loaded (id, name, amount, day) FROM '{text}'\n")
    assert out.returncode == 0 and "COPY 2" in out.stdout, (out.stdout, out.stderr)
    assert q(wserver, "SELECT id, name, amount, CAST(day AS string) FROM lab.loaded ORDER BY id") == [
        (1, "Smith, J", 1.5, "2024-01-01"), (2, None, 2.5, "2024-01-02"), (3, 'say "hi"', None, None),
        (4, "Tab\there", None, "2024-02-01"), (5, None, 9.75, None)]
    # A malformed row aborts the whole COPY with 22P02 and its line; nothing is committed.
    bad = tmp_path / "bad.csv"
    bad.write_text("10,ok,1,2024-01-01\n11,ok,not-a-number,2024-01-01\n")
    out = psql(wserver, f"\\copy lab.loaded FROM '{bad}' WITH (FORMAT csv)\n")
    assert out.returncode != 0 and "line 2" in out.stderr and "amount" in out.stderr, out.stderr
    assert q(wserver, "SELECT count(*) FROM lab.loaded") == [(5,)]


def test_psycopg_copy_rows_and_errors(wserver):
    q(wserver, "CREATE TABLE lab.copied (id bigint, state string, trx int) PARTITIONED BY (state)")
    with pg(wserver) as conn, conn.cursor() as cur:
        with cur.copy("COPY lab.copied (id, state, trx) FROM STDIN") as copy:
            for i in range(20000):
                copy.write_row((i, ["CA", "TX", "NY"][i % 3], i % 100))
        assert cur.rowcount == 20000
        with cur.copy("COPY lab.copied FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write("20000,CA,1\n20001,TX,2\n")
    assert q(wserver, "SELECT state, count(*) FROM lab.copied GROUP BY state ORDER BY state") == [
        ("CA", 6668), ("NY", 6666), ("TX", 6668)]
    with pg(wserver) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg.Error) as err:
            with cur.copy("COPY lab.copied FROM STDIN") as copy:
                copy.write("1\tCA\t1\n2\tCA\n")
        assert err.value.sqlstate == "22P02" and "line 2" in str(err.value), err.value
    # Inside a transaction the rows land at COMMIT with everything else.
    with pg(wserver, autocommit=False) as conn, conn.cursor() as cur:
        with cur.copy("COPY lab.copied FROM STDIN") as copy:
            copy.write("30000\tWA\t7\n")
        assert q(wserver, "SELECT count(*) FROM lab.copied WHERE state = 'WA'") == [(0,)]
        conn.commit()
    assert q(wserver, "SELECT count(*) FROM lab.copied WHERE state = 'WA'") == [(1,)]
    assert sqlstate(wserver, "COPY lab.copied FROM STDIN", user="ann") == "42P01"


# ---------------------------------------------------------------------------- pyiceberg interop

def test_pyiceberg_reads_sql_written_tables_and_rxgate_reads_its_appends(wserver):
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.expressions import EqualTo
    q(wserver, "CREATE TABLE lab.interop (id bigint, ts timestamp, state string) "
               "PARTITIONED BY (days(ts), bucket(4, id), state)")
    q(wserver, "INSERT INTO lab.interop SELECT v, CAST(to_timestamp(1709251200 + v * 3600) AS timestamp), "
               "CASE WHEN v % 2 = 0 THEN 'CA' ELSE 'TX' END FROM generate_series(1, 100) AS t(v)")
    q(wserver, "DELETE FROM lab.interop WHERE id > 90")
    cat = SqlCatalog("rxgate", uri=f"sqlite:///{wserver.data_dir / 'catalog.db'}",
                     warehouse=f"file://{wserver.data_dir / 'warehouse'}")
    table = cat.load_table("lab.interop")
    spec = [(f.name, str(f.transform)) for f in table.spec().fields]
    assert spec == [("ts_day", "day"), ("id_bucket_4", "bucket[4]"), ("state", "identity")], spec
    assert table.scan().to_arrow().num_rows == 90
    assert table.scan(row_filter=EqualTo("state", "CA")).to_arrow().num_rows == 45
    # pyiceberg appends; rxgate reads the rows.
    table.append(pa.table({"id": pa.array([1000, 1001], pa.int64()),
                           "ts": pa.array([None, None], pa.timestamp("us")),
                           "state": ["WA", "WA"]}))
    assert q(wserver, "SELECT count(*) FROM lab.interop") == [(92,)]
    assert q(wserver, "SELECT id FROM lab.interop WHERE state = 'WA' ORDER BY id") == [(1000,), (1001,)]


def test_insert_overwrite_replaces_only_the_partitions_it_writes(wserver):
    q(wserver, "CREATE TABLE lab.ow (id int, region string, day date) PARTITIONED BY (region, day)")
    q(wserver, "INSERT INTO lab.ow VALUES (1, 'east', DATE '2024-01-01'), (2, 'east', DATE '2024-01-02'), "
               "(3, 'west', DATE '2024-01-01')")
    before = len(snapshots(wserver, "lab.ow"))
    # Dynamic: only east/2024-01-01 is produced, so only it is replaced, in one snapshot.
    assert q(wserver, "INSERT OVERWRITE TABLE lab.ow SELECT 10, 'east', DATE '2024-01-01'") == "INSERT 0 1"
    assert q(wserver, "SELECT id, region, CAST(day AS string) FROM lab.ow ORDER BY id") == [
        (2, "east", "2024-01-02"), (3, "west", "2024-01-01"), (10, "east", "2024-01-01")]
    assert [op for _, op in snapshots(wserver, "lab.ow")][before:] == ["overwrite"]
    # Hive's static partition value: the column comes from PARTITION (…), not from the query.
    assert q(wserver, "INSERT OVERWRITE TABLE lab.ow PARTITION (region = 'west', day) "
                      "SELECT 20, DATE '2024-01-01'") == "INSERT 0 1"
    assert q(wserver, "SELECT id FROM lab.ow WHERE region = 'west'") == [(20,)]
    assert sqlstate(wserver, "INSERT OVERWRITE TABLE lab.ow PARTITION (id = 1) SELECT 'x', DATE '2024-01-01'") == "22023"
    # An unpartitioned table is replaced whole.
    q(wserver, "CREATE TABLE lab.ow_flat AS SELECT 1 AS a")
    q(wserver, "INSERT OVERWRITE TABLE lab.ow_flat SELECT 2")
    assert q(wserver, "SELECT a FROM lab.ow_flat") == [(2,)]


def test_update_copy_on_write_and_policy(wserver, rx_w):
    q(wserver, "CREATE TABLE lab.upd (id int, state string, n int) PARTITIONED BY (state)")
    q(wserver, "INSERT INTO lab.upd VALUES (1, 'CA', 10), (2, 'CA', 20), (3, 'TX', 30)")
    assert q(wserver, "UPDATE lab.upd SET n = n + 1 WHERE id = 2") == "UPDATE 1"
    # A changed partition column moves the row to its new partition.
    assert q(wserver, "UPDATE lab.upd SET state = 'NY', n = 0 WHERE id = 3") == "UPDATE 1"
    assert q(wserver, "SELECT id, state, n FROM lab.upd ORDER BY id") == [(1, "CA", 10), (2, "CA", 21), (3, "NY", 0)]
    assert sorted(q(wserver, "SHOW PARTITIONS lab.upd")) == [("state=CA",), ("state=NY",)]
    assert q(wserver, "UPDATE lab.upd SET n = 5 WHERE id > 100") == "UPDATE 0"
    assert sqlstate(wserver, "UPDATE lab.upd SET nope = 1") == "42703"
    # Policy: UPDATE needs its privilege.
    before = table_state(wserver)
    assert sqlstate(wserver, "UPDATE health.rx_w SET trx_cnt = 0", user="auditor_ca") == "42501"
    assert sqlstate(wserver, "UPDATE health.rx_w SET trx_cnt = 0", user="pat") == "42501"
    assert table_state(wserver) == before


def test_psycopg_binary_copy(wserver):
    import datetime
    q(wserver, "CREATE TABLE lab.bin (id bigint, name string, n int, amount decimal(10,2), day date, "
               "ts timestamp, ok boolean, score double)")
    rows = [(1, "a", 7, Decimal("12345.67"), datetime.date(2024, 2, 29), datetime.datetime(2024, 3, 1, 12, 30, 5, 250000),
             True, 0.5),
            (2, None, None, Decimal("-0.05"), None, None, False, None),
            (3, "ünïcode", -3, Decimal("20000"), datetime.date(1999, 12, 31), datetime.datetime(1970, 1, 1), None, -1e10)]
    with pg(wserver) as conn, conn.cursor() as cur:
        with cur.copy("COPY lab.bin FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "int4", "numeric", "date", "timestamp", "bool", "float8"])
            for r in rows:
                copy.write_row(r)
        assert cur.rowcount == 3
    assert q(wserver, "SELECT * FROM lab.bin ORDER BY id") == rows
