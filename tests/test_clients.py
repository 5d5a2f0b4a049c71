"""Real PostgreSQL clients against `rxgate serve` (issue 3, catalog emulation and session
commands): psql meta-commands, psycopg 3 and psycopg2 with parameters and types, asyncpg
(binary protocol, prepared statements), the SQLAlchemy 2 inspector, pgjdbc DatabaseMetaData,
SET/SHOW/RESET/DISCARD, statement_timeout, and transaction status."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import asyncpg
import psycopg
import psycopg2
import pytest
import sqlalchemy as sa
from psycopg.pq import TransactionStatus

import conftest
from conftest import start_server, stop_server
from rxcli import REPO_ROOT, Rxgate

#: The test login's password when the servers authenticate (conftest's users file).
PASSWORD = getattr(conftest, "TEST_PASSWORD", None)
USER = getattr(conftest, "TEST_USER", "rxgate")

HEALTH_TABLES = {"prescriber_drug", "us_cities", "city_report", "top_prescribers"}
SLOW = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3"


def psql(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("psql")
    assert exe, "psql is not installed (postgresql-client)"
    if hasattr(server, "pg_env"):
        env = server.pg_env()
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGCONNECT_TIMEOUT="10", PGAPPNAME="rxgate-tests")
    p = subprocess.run([exe, "-h", server.host, "-p", str(server.port), "-U", USER, "-d", "rxgate",
                        "-X", "-v", "ON_ERROR_STOP=1", *args],
                       env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0 and "ERROR" not in p.stderr, \
            f"psql {args} failed ({p.returncode}): {p.stderr}\nserver log:\n{server.log_text()[-3000:]}"
    return p


def meta(server, command: str) -> list[list[str]]:
    """A psql meta-command, unaligned and tuples-only: rows of fields."""
    out = psql(server, "-At", "-F", "|", "-c", command).stdout
    return [line.split("|") for line in out.splitlines() if line]


# --------------------------------------------------------------------------- psql

def test_psql_list_databases(server):
    rows = meta(server, r"\l")
    assert [r[0] for r in rows] == ["rxgate"], rows
    assert rows[0][1] == "rxgate" and rows[0][2] == "UTF8", rows  # owner, encoding


def test_psql_list_schemas(server):
    names = {r[0] for r in meta(server, r"\dn")}
    assert {"health", "health_quarantine"} <= names, names
    assert not any(n.startswith("pg_") or n == "information_schema" for n in names), names


def test_psql_list_tables_on_the_search_path(server):
    rows = meta(server, r"\dt")
    assert {(r[0], r[1], r[2]) for r in rows} == {("health", t, "table") for t in HEALTH_TABLES}, rows
    quarantine = meta(server, r"\dt health_quarantine.*")
    assert [(r[0], r[1]) for r in quarantine] == [("health_quarantine", "prescriber_drug_rejects")]


def test_psql_describe_table(server):
    out = psql(server, "-c", r"\d health.prescriber_drug").stdout
    assert 'Table "health.prescriber_drug"' in out, out
    columns = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0] and parts[0] != "Column":
            columns[parts[0]] = parts[1]
    assert columns["npi"] == "text", columns
    assert columns["trx_cnt"] == "bigint", columns
    assert columns["total_drug_cost"] == "double precision", columns
    assert columns["years_of_exp"] == "integer", columns
    assert columns["delivery_date"] == "date", columns
    assert len(columns) == 25, columns
    # \d+ shows the lakehouse's column documentation.
    plus = psql(server, "-c", r"\d+ health.prescriber_drug").stdout
    assert "National Provider Identifier" in plus, plus


def test_psql_list_functions_and_roles(server):
    psql(server, "-c", r"\df")  # no user-defined functions; must run cleanly
    roles = meta(server, r"\du")
    assert USER in [r[0] for r in roles], roles  # beside the roles it holds (admin)


def test_psql_show_and_set(server):
    out = psql(server, "-At", "-c", "SET search_path = health_quarantine",
               "-c", "SHOW search_path", "-c", "SELECT current_schema()",
               "-c", "SELECT count(*) >= 0 FROM prescriber_drug_rejects").stdout.split()
    assert out == ["SET", "health_quarantine", "health_quarantine", "t"], out


# --------------------------------------------------------------------------- psycopg 3

def test_psycopg3_parameters_and_types(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT %s::int AS i, %s::bigint AS b, %s::float8 AS f, %s::text AS t, %s::date AS d, "
            "%s::bool AS ok, %s::numeric AS n",
            (7, 2 ** 40, 1.5, "naïve", dt.date(2024, 1, 31), True, Decimal("12.34"))).fetchone()
        assert row == (7, 2 ** 40, 1.5, "naïve", dt.date(2024, 1, 31), True, Decimal("12.34")), row
        # Types inferred from the table, parameters in a WHERE clause, binary results.
        cur = conn.cursor(binary=True)
        cur.execute("SELECT npi, trx_cnt, total_drug_cost, drug_name, delivery_date, years_of_exp "
                    "FROM health.prescriber_drug WHERE trx_cnt > %s AND delivery_date = %s LIMIT 5",
                    (0, dt.date(2024, 1, 31)))
        rows = cur.fetchall()
        assert rows, "no rows"
        npi, trx, cost, drug, day, years = rows[0]
        assert isinstance(npi, str) and isinstance(trx, int) and isinstance(drug, str)
        assert cost is None or isinstance(cost, float)
        assert day == dt.date(2024, 1, 31)
        assert years is None or isinstance(years, int)
        assert [d.name for d in cur.description] == ["npi", "trx_cnt", "total_drug_cost", "drug_name",
                                                     "delivery_date", "years_of_exp"]


def test_postgres_column_names(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        cur = conn.execute("SELECT (SELECT 1), (SELECT 2), count(*), 1 + 1, version(), "
                           "current_schema, current_database() FROM health.us_cities")
        assert [d.name for d in cur.description] == \
            ["?column?", "?column?", "count", "?column?", "version", "current_schema", "current_database"]
        row = cur.fetchone()
        assert row[:2] == (1, 2) and row[5:] == ("health", "rxgate"), row
        assert row[4].startswith("PostgreSQL 16.6 (rxgate "), row


def test_information_schema_columns_show_postgresql_types(server):
    """data_type and udt_name as PostgreSQL shows them, not Arrow's names."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, udt_schema, udt_name FROM information_schema.columns "
            "WHERE table_schema = 'health' AND table_name = 'prescriber_drug' ORDER BY ordinal_position").fetchall()
        got = {r[0]: r[1:] for r in rows}
        assert len(rows) == 25
        assert got["npi"] == ("text", "pg_catalog", "text")
        assert got["trx_cnt"] == ("bigint", "pg_catalog", "int8")
        assert got["total_drug_cost"] == ("double precision", "pg_catalog", "float8")
        assert got["years_of_exp"] == ("integer", "pg_catalog", "int4")
        assert got["delivery_date"] == ("date", "pg_catalog", "date")
        # Through an alias, in a join, as JDBC-style tools read it.
        rows = conn.execute(
            "SELECT c.column_name, c.data_type, c.udt_name FROM information_schema.columns AS c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_name = 'prescriber_drug' AND c.column_name IN ('bene_count', 'npi') "
            "ORDER BY c.ordinal_position").fetchall()
        assert rows == [("npi", "text", "text"), ("bene_count", "bigint", "int8")], rows


def test_transaction_status(server):
    with psycopg.connect(server.dsn()) as conn:  # not autocommit: psycopg sends BEGIN
        assert conn.info.transaction_status == TransactionStatus.IDLE
        conn.execute("SELECT 1").fetchone()
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.commit()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM health.no_such_table")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT 2").fetchone() == (2,)
        conn.rollback()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("BEGIN")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.execute("COMMIT")
        assert conn.info.transaction_status == TransactionStatus.IDLE


# --------------------------------------------------------------------------- session commands

def test_set_show_reset_round_trip(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        show = lambda name: conn.execute(f"SHOW {name}").fetchone()[0]  # noqa: E731
        defaults = {n: show(n) for n in ("DateStyle", "TimeZone", "extra_float_digits", "application_name",
                                         "standard_conforming_strings", "client_encoding", "search_path")}
        assert defaults["client_encoding"] == "UTF8" and defaults["search_path"] == "health", defaults
        assert defaults["standard_conforming_strings"] == "on"
        conn.execute("SET DateStyle = 'ISO, DMY'")
        conn.execute("SET TIME ZONE 'Europe/Paris'")
        conn.execute("SET extra_float_digits TO 3")
        conn.execute("SET application_name = 'rxgate-tests'")
        conn.execute("SET SESSION statement_timeout = '2min'")
        assert show("datestyle") == "ISO, DMY"
        assert show("timezone") == "Europe/Paris"
        assert show("extra_float_digits") == "3"
        assert show("application_name") == "rxgate-tests"
        assert show("statement_timeout") == "2min"
        # Parameters the server reports are tracked by the driver (ParameterStatus).
        assert conn.info.parameter_status("application_name") == "rxgate-tests"
        assert conn.info.parameter_status("DateStyle") == "ISO, DMY"
        assert conn.execute("SELECT current_setting('DateStyle')").fetchone()[0] == "ISO, DMY"
        conn.execute("RESET DateStyle")
        assert show("DateStyle") == defaults["DateStyle"]
        all_rows = conn.execute("SHOW ALL").fetchall()
        names = {r[0] for r in all_rows}
        assert {"TimeZone", "search_path", "server_version", "statement_timeout"} <= names
        assert [d.name for d in conn.execute("SHOW ALL").description] == ["name", "setting", "description"]
        assert conn.execute("SELECT setting FROM pg_settings WHERE name = 'application_name'").fetchone() \
            == ("rxgate-tests",)
        conn.execute("DISCARD ALL")
        assert show("TimeZone") == defaults["TimeZone"]
        assert show("application_name") == defaults["application_name"]
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SHOW no_such_parameter")
        assert err.value.sqlstate == "22023", err.value
        with pytest.raises(psycopg.Error):
            conn.execute("SET client_encoding = 'LATIN1'")
        assert conn.execute("SHOW server_version").fetchone()[0] == "16.6"


def test_search_path_changes_unqualified_names(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SET search_path TO health_quarantine, health")
        assert conn.execute("SELECT current_schema()").fetchone()[0] == "health_quarantine"
        assert conn.execute("SELECT current_schemas(false)").fetchone()[0] == ["health_quarantine", "health"]
        conn.execute("SELECT count(*) FROM prescriber_drug_rejects").fetchone()
        conn.execute("RESET search_path")
        assert conn.execute("SELECT count(*) > 0 FROM prescriber_drug").fetchone()[0] is True


def test_statement_timeout_cancels_with_57014(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = 300")
        with pytest.raises(psycopg.Error) as err:
            conn.execute(SLOW).fetchall()
        assert err.value.sqlstate == "57014", err.value
        conn.execute("SET statement_timeout = 0")
        assert conn.execute("SELECT 3").fetchone() == (3,)
    assert server.alive()


# --------------------------------------------------------------------------- node-postgres

def test_node_postgres(server):
    """npm `pg` (node-postgres): scripts/test installs it into the cache (RXGATE_NODE_MODULES)."""
    node = shutil.which("node")
    modules = os.environ.get("RXGATE_NODE_MODULES",
                             str(Path.home() / ".cache" / "rxgate" / "node" / "node_modules"))
    assert node and (Path(modules) / "pg").is_dir(), \
        f"node and npm `pg` are needed in {modules} (scripts/test installs them)"
    p = subprocess.run([node, str(REPO_ROOT / "tests" / "node" / "pg_client.js"), server.host,
                        str(server.port), USER, PASSWORD or ""],
                       env={**os.environ, "NODE_PATH": modules}, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}\n{server.log_text()[-2000:]}"
    out = __import__("json").loads(p.stdout)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        want = conn.execute("SELECT count(*) FROM health.prescriber_drug WHERE presc_state = 'CA'").fetchone()[0]
    assert int(out["ca"]) == want > 0
    assert out["types"] == {"i": 42, "f": 2.5, "b": True, "t": "x", "arr": ["a", "b"], "d": True}
    assert out["fields"] == [23, 701, 16, 25, 1009, 1082]
    assert out["error"] == "42P01" and out["after_error"] == 1


# --------------------------------------------------------------------------- psycopg2

def test_psycopg2_parameters_and_types(server):
    conn = psycopg2.connect(server.dsn())
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT %s::int, %s::bigint, %s::float8, %s, %s::date, %s, %s::numeric",
                    (7, 2 ** 40, 1.5, "text", dt.date(2024, 1, 31), True, Decimal("12.34")))
        assert cur.fetchone() == (7, 2 ** 40, 1.5, "text", dt.date(2024, 1, 31), True, Decimal("12.34"))
        cur.execute("SELECT presc_state, count(*) FROM health.prescriber_drug WHERE presc_state = %s "
                    "GROUP BY presc_state", ("CA",))
        rows = cur.fetchall()
        assert all(isinstance(n, int) for _, n in rows), rows
        assert conn.server_version == 160006
    finally:
        conn.close()


# --------------------------------------------------------------------------- asyncpg

def test_asyncpg_fetch_and_prepared(server, lakehouse):
    async def main():
        conn = await asyncpg.connect(host=server.host, port=server.port, user=USER, database="rxgate",
                                     password=PASSWORD, timeout=10)
        try:
            assert conn.get_server_version().major == 16
            n = await conn.fetchval("SELECT count(*) FROM health.prescriber_drug")
            assert n == lakehouse.pipeline["loaded"]
            row = await conn.fetchrow("SELECT $1::int AS i, $2::text AS t, $3::date AS d, $4::float8 AS f, "
                                      "$5::bool AS b, $6::numeric AS n",
                                      5, "x", dt.date(2024, 1, 31), 2.5, False, Decimal("1.5"))
            assert tuple(row) == (5, "x", dt.date(2024, 1, 31), 2.5, False, Decimal("1.5"))
            stmt = await conn.prepare("SELECT count(*) FROM health.prescriber_drug WHERE presc_state = $1")
            counts = [await stmt.fetchval(s) for s in ("CA", "NY", "CA", "ZZ", "CA", "CA", "CA")]
            assert counts[0] == counts[2] == counts[-1] and counts[3] == 0, counts
            types = [a.name for a in stmt.get_attributes()]
            assert types == ["count"], types
            # Type introspection by name, as set_type_codec and custom codecs do.
            await conn.set_type_codec("numeric", encoder=str, decoder=Decimal, schema="pg_catalog",
                                      format="text")
        finally:
            await conn.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- SQLAlchemy

@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_sqlalchemy_inspector(server, driver):
    login = f"{USER}:{PASSWORD}" if PASSWORD else USER
    engine = sa.create_engine(f"postgresql+{driver}://{login}@{server.host}:{server.port}/rxgate")
    try:
        insp = sa.inspect(engine)
        assert engine.dialect.server_version_info[:2] == (16, 6)
        assert engine.dialect.default_schema_name == "health"
        schemas = insp.get_schema_names()
        assert {"health", "health_quarantine"} <= set(schemas), schemas
        assert set(insp.get_table_names(schema="health")) == HEALTH_TABLES
        assert insp.get_table_names(schema="health_quarantine") == ["prescriber_drug_rejects"]
        assert insp.get_view_names(schema="health") == []
        cols = {c["name"]: c for c in insp.get_columns("prescriber_drug", schema="health")}
        assert isinstance(cols["npi"]["type"], sa.TEXT), cols["npi"]
        assert isinstance(cols["trx_cnt"]["type"], sa.BIGINT), cols["trx_cnt"]
        assert isinstance(cols["total_drug_cost"]["type"], sa.DOUBLE_PRECISION), cols["total_drug_cost"]
        assert isinstance(cols["years_of_exp"]["type"], sa.INTEGER), cols["years_of_exp"]
        assert isinstance(cols["delivery_date"]["type"], sa.DATE), cols["delivery_date"]
        assert cols["delivery_date"]["nullable"] is False and cols["npi"]["nullable"] is True
        # Column documentation of catalog/health.toml, as pg_description comments.
        assert cols["npi"]["comment"].startswith("National Provider Identifier"), cols["npi"]
        assert len(cols) == 25
        assert insp.get_pk_constraint("prescriber_drug", schema="health")["constrained_columns"] == []
        assert insp.get_indexes("prescriber_drug", schema="health") == []
        assert insp.get_foreign_keys("prescriber_drug", schema="health") == []
        assert insp.has_table("us_cities", schema="health")
        assert not insp.has_table("nope", schema="health")
        # The default schema (current_schema()) works without schema=.
        assert set(insp.get_table_names()) == HEALTH_TABLES
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM health.us_cities WHERE state_id = :s"),
                             {"s": "CA"}).scalar()
            assert n >= 0
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- pgjdbc

def test_pgjdbc_database_metadata(server, tmp_path):
    jar = Path("/usr/share/java/postgresql.jar")
    java = shutil.which("java")
    assert java and jar.is_file(), "java 17 and libpostgresql-jdbc-java are needed (scripts/test installs them)"
    src = REPO_ROOT / "tests" / "fixtures" / "java" / "JdbcMetadata.java"
    url = f"jdbc:postgresql://{server.host}:{server.port}/rxgate?user={USER}"
    if PASSWORD:
        url += f"&password={PASSWORD}"
    p = subprocess.run([java, "-cp", str(jar), str(src), url], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}\nserver log:\n{server.log_text()[-3000:]}"
    lines = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    assert lines["product"] == "PostgreSQL" and lines["version"].startswith("16.6"), lines
    assert {"health", "health_quarantine"} <= set(lines["schemas"].split(",")), lines
    assert set(lines["tables.health"].split(",")) == HEALTH_TABLES, lines
    cols = dict(c.split(":") for c in lines["columns.prescriber_drug"].split(","))
    assert cols["npi"] == "text" and cols["trx_cnt"] == "int8" and cols["delivery_date"] == "date", cols
    assert cols["total_drug_cost"] == "float8" and cols["years_of_exp"] == "int4", cols
    assert {"int4", "int8", "text", "date", "float8", "bool", "numeric"} <= set(lines["typeinfo"].split(","))
    assert lines["prepared"] == "7", lines  # executed 7 times: past the switch to binary
    total = int(psql(server, "-Atc", "SELECT count(*) FROM health.prescriber_drug").stdout)
    assert int(lines["fetchsize.rows"]) == total > 500, lines


# --------------------------------------------------------------------------- user tables named pg_*

def test_user_table_named_like_pg(rxgate_bin, lakehouse, tmp_path):
    """A user table whose name starts with pg_ is an ordinary table, qualified or not."""
    data = tmp_path / "lake"
    shutil.copytree(lakehouse.rx.data_dir, data)
    defs = tmp_path / "catalog"
    defs.mkdir()
    (defs / "extra.toml").write_text(
        '[[table]]\nname = "health.pg_notes"\ncomment = "a user table"\n'
        'columns = [ { name = "note", type = "string" } ]\n')
    Rxgate(rxgate_bin, data).run("catalog", "apply", defs)
    s = start_server(rxgate_bin, data, tmp_path / "serve.log")
    try:
        with psycopg.connect(s.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM health.pg_notes").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pg_notes").fetchone() == (0,)
        assert ["health", "pg_notes", "table"] in [r[:3] for r in meta(s, r"\dt")]
    finally:
        stop_server(s)
