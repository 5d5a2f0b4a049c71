"""Views (issue 22): CREATE [OR REPLACE] VIEW / DROP VIEW over the real server with real
clients, on a lakehouse of its own:

- psql: create, query, replace (with a column list), drop, and the SQLSTATEs PostgreSQL gives
  (42P07, 42809 for the wrong kind of object, 42P01, 25001 in a transaction block, 42P17 for a
  view that would refer to itself); a view whose table was dropped is still listed and fails
  with 42P01 when read;
- listings: information_schema.tables (VIEW) and .views (the definition), pg_class (relkind
  v, psql's \\dv), SHOW TABLES, SHOW CREATE TABLE, Flight SQL GetTables (ADBC, type VIEW);
- policy: an invoker's masks and row filters apply beneath a view (the same pseudonyms as the
  table, once), a grant on an invoker view alone reads nothing; a SECURITY DEFINER view (an
  administrator's) lets a role granted only the view read an aggregate of a table it cannot
  see; masks on the view's own name still apply to a definer view; who may create what;
- sharing: views live in the catalog database — a second gateway on the same PostgreSQL
  catalog sees them, they survive a restart, and pyiceberg's SQL catalog (which implements no
  view operations) does not list them as tables.
"""
from __future__ import annotations


import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest

from sqlclient import Client
from conftest import TEST_PASSWORD, TEST_USER, start_server, start_server_with_roles, stop_server

PASSWORD = "views-test-pw"

_client = Client(PASSWORD)
pg, q, sqlstate, psql = _client.pg, _client.q, _client.sqlstate, _client.psql
KEY = "views-pseudonym-key-0123456789"
USERS = {"ann": "analyst", "auditor_ca": "state_auditor", "vic": "public", "eng": "engineer"}

POLICY = """
[pseudonym]
key_id = "k1"

[roles.admin]
admin = true
[roles.analyst]
description = "health, NPI pseudonymised, last names redacted"
[roles.state_auditor]
description = "California's rows of health.rx_v"
[roles.public]
description = "two views of health only"
[roles.engineer]
description = "everything in sandbox; reads health.rx_v"

[users.auditor_ca]
roles = ["state_auditor"]
attributes = { state = "CA" }

[[grant]]
roles = ["admin"]

[[grant]]
roles = ["analyst", "state_auditor"]
schema = "health"

[[grant]]
roles = ["public"]
schema = "health"
table = "state_totals"

[[grant]]
roles = ["public"]
schema = "health"
table = "rx_names"

[[grant]]
roles = ["engineer"]
schema = "sandbox"
privileges = ["all"]

[[grant]]
roles = ["engineer"]
schema = "health"
table = "rx_v"

[[mask]]
roles = ["analyst"]
schema = "health"
table = "*"
columns = ["npi"]
mask = { type = "pseudonym" }

[[mask]]
roles = ["analyst"]
schema = "health"
table = "*"
columns = ["presc_last_name"]
mask = { type = "redact" }

[[row_filter]]
roles = ["state_auditor"]
schema = "health"
table = "rx_v"
filter = "presc_state = attribute('state')"
"""

ROWS = [(1003000001, "Smith", "CA", 10, 100.50), (1003000002, "Jones", "CA", 20, 200.25),
        (1003000003, "Brown", "TX", 30, 300.00), (1003000004, "Lee", "NY", 40, 400.75),
        (1003000005, "Garcia", "TX", 50, 500.00)]


@pytest.fixture(scope="module")
def vserver(rxgate_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("views")
    (d / "policies.toml").write_text(POLICY)
    config = d / "rxgate.toml"
    config.write_text(f'[policy]\nfile = "{d / "policies.toml"}"\n[audit]\ndir = "{d / "audit"}"\n')
    data = d / "data"
    data.mkdir()
    s = start_server_with_roles(rxgate_bin, data, d, config, USERS, PASSWORD,
                                env={"RXGATE_PSEUDONYM_KEY": KEY})
    q(s, "CREATE SCHEMA IF NOT EXISTS health")
    q(s, "CREATE SCHEMA sandbox")
    q(s, "CREATE TABLE health.rx_v (npi bigint, presc_last_name string, presc_state string, "
         "trx_cnt int, cost double)")
    with pg(s) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO health.rx_v VALUES (%s, %s, %s, %s, %s)", ROWS)
    yield s
    stop_server(s)






# ------------------------------------------------------------------------- statements over psql

def test_psql_create_query_replace_and_drop(vserver):
    out = psql(vserver, """
CREATE VIEW health.by_state AS SELECT presc_state, count(*) AS prescribers, sum(cost) AS cost
  FROM health.rx_v GROUP BY presc_state;
SELECT presc_state, prescribers FROM health.by_state ORDER BY presc_state;
CREATE OR REPLACE VIEW health.by_state (state, n) AS
  SELECT presc_state, count(*) FROM health.rx_v WHERE trx_cnt > 15 GROUP BY presc_state;
CREATE VIEW IF NOT EXISTS health.by_state AS SELECT 1;
\\dv health.*
""")
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert lines.count("CREATE VIEW") == 3, out.stdout
    assert "CA          |           2" in lines, out.stdout
    assert any("by_state" in line and "view" in line for line in lines), out.stdout  # \dv
    # The replacement's columns and query are the ones in force.
    assert q(vserver, "SELECT * FROM health.by_state ORDER BY state") == [("CA", 1), ("NY", 1), ("TX", 2)]
    # A view reads the table's current rows: the next commit shows through it.
    q(vserver, "INSERT INTO health.rx_v VALUES (1003000009, 'Ng', 'WA', 99, 1.0)")
    assert q(vserver, "SELECT n FROM health.by_state WHERE state = 'WA'") == [(1,)]
    q(vserver, "DELETE FROM health.rx_v WHERE presc_state = 'WA'")
    # Views over views, joins and CTEs plan like any query.
    q(vserver, "CREATE VIEW health.busy_states AS WITH s AS (SELECT * FROM health.by_state) "
               "SELECT s.state, s.n, r.npi FROM s JOIN health.rx_v r ON r.presc_state = s.state WHERE s.n > 1")
    assert q(vserver, "SELECT state, count(*) FROM health.busy_states GROUP BY state") == [("TX", 2)]
    assert q(vserver, "DROP VIEW health.busy_states, health.by_state") == "DROP VIEW"
    assert sqlstate(vserver, "SELECT * FROM health.by_state") == "42P01"
    assert sqlstate(vserver, "DROP VIEW health.by_state") == "42P01"
    assert q(vserver, "DROP VIEW IF EXISTS health.by_state") == "DROP VIEW"


def test_the_wrong_kind_of_object_and_bad_definitions(vserver):
    q(vserver, "CREATE VIEW health.ca_rows AS SELECT npi, trx_cnt FROM health.rx_v WHERE presc_state = 'CA'")
    # A name in use, by a table or a view, as PostgreSQL answers.
    assert sqlstate(vserver, "CREATE VIEW health.rx_v AS SELECT 1") == "42P07"
    assert sqlstate(vserver, "CREATE OR REPLACE VIEW health.rx_v AS SELECT 1") == "42809"
    assert sqlstate(vserver, "CREATE VIEW health.ca_rows AS SELECT 1") == "42P07"
    assert sqlstate(vserver, "CREATE TABLE health.ca_rows (a int)") == "42P07"
    # Tables are written and dropped as tables, views as views.
    for stmt in ("DROP TABLE health.ca_rows", "DROP TABLE IF EXISTS health.ca_rows",
                 "INSERT INTO health.ca_rows VALUES (1, 2)", "DELETE FROM health.ca_rows",
                 "UPDATE health.ca_rows SET trx_cnt = 0", "TRUNCATE health.ca_rows",
                 "DROP VIEW health.rx_v"):
        assert sqlstate(vserver, stmt) == "42809", stmt
    # A view that would refer to itself, directly or through another view.
    assert sqlstate(vserver, "CREATE OR REPLACE VIEW health.ca_rows AS SELECT * FROM health.ca_rows") == "42P17"
    q(vserver, "CREATE VIEW health.ca_big AS SELECT * FROM health.ca_rows WHERE trx_cnt > 15")
    assert sqlstate(vserver, "CREATE OR REPLACE VIEW health.ca_rows AS SELECT * FROM health.ca_big") == "42P17"
    assert q(vserver, "SELECT npi FROM health.ca_big") == [(1003000002,)]
    # Names, columns, parameters and schemas are checked when the view is created.
    assert sqlstate(vserver, "CREATE VIEW health.v_bad AS SELECT nope FROM health.rx_v") == "42703"
    assert sqlstate(vserver, "CREATE VIEW health.v_bad AS SELECT * FROM health.nothing") == "42P01"
    assert sqlstate(vserver, "CREATE VIEW health.v_bad (a, b, c) AS SELECT 1, 2") == "42601"
    assert sqlstate(vserver, "CREATE VIEW health.v_bad (a, a) AS SELECT 1, 2") == "42P07"
    assert sqlstate(vserver, "CREATE VIEW nowhere.v AS SELECT 1") == "3F000"
    assert sqlstate(vserver, "CREATE VIEW pg_catalog.v AS SELECT 1") == "42501"
    assert sqlstate(vserver, "CREATE MATERIALIZED VIEW health.v_bad AS SELECT 1") == "0A000"
    # Not inside a transaction block (the catalog row is not staged).
    with pg(vserver) as conn:
        conn.execute("BEGIN")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("CREATE VIEW health.v_txn AS SELECT 1")
        assert err.value.sqlstate == "25001"
        conn.execute("ROLLBACK")
    q(vserver, "DROP VIEW health.ca_big, health.ca_rows")


def test_a_view_over_a_dropped_table_is_listed_and_fails_when_read(vserver):
    q(vserver, "CREATE TABLE sandbox.tmp_src AS SELECT npi, cost FROM health.rx_v")
    q(vserver, "CREATE VIEW sandbox.tmp_view AS SELECT npi FROM sandbox.tmp_src")
    assert q(vserver, "SELECT count(*) FROM sandbox.tmp_view") == [(5,)]
    q(vserver, "DROP TABLE sandbox.tmp_src")
    assert q(vserver, "SELECT table_name, table_type FROM information_schema.tables "
                      "WHERE table_schema = 'sandbox' AND table_name = 'tmp_view'") == [("tmp_view", "VIEW")]
    assert sqlstate(vserver, "SELECT * FROM sandbox.tmp_view") == "42P01"
    # Recreating the table brings the view back.
    q(vserver, "CREATE TABLE sandbox.tmp_src AS SELECT npi, cost FROM health.rx_v WHERE cost > 250")
    assert q(vserver, "SELECT count(*) FROM sandbox.tmp_view") == [(3,)]
    q(vserver, "DROP VIEW sandbox.tmp_view")
    q(vserver, "DROP TABLE sandbox.tmp_src PURGE")


# ----------------------------------------------------------------------------------- listings

def test_views_are_listed_everywhere_with_their_definition(vserver):
    q(vserver, "CREATE VIEW health.cost_by_state AS SELECT presc_state, sum(cost) AS cost FROM health.rx_v "
               "GROUP BY presc_state")
    try:
        assert q(vserver, "SELECT table_type FROM information_schema.tables WHERE table_schema = 'health' "
                          "AND table_name IN ('cost_by_state', 'rx_v') ORDER BY table_name") == [
            ("VIEW",), ("BASE TABLE",)]
        (definition,) = q(vserver, "SELECT view_definition FROM information_schema.views "
                                   "WHERE table_name = 'cost_by_state'")[0]
        assert "sum(cost)" in definition and "health.rx_v" in definition, definition
        assert q(vserver, "SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = 'cost_by_state' ORDER BY ordinal_position") == [
            ("presc_state", "text"), ("cost", "double precision")]
        assert q(vserver, "SELECT relkind FROM pg_catalog.pg_class WHERE relname = 'cost_by_state'") == [("v",)]
        assert ("cost_by_state",) in q(vserver, "SHOW TABLES IN health")
        (create,) = q(vserver, "SHOW CREATE TABLE health.cost_by_state")[0]
        assert create.startswith("CREATE VIEW health.cost_by_state (presc_state, cost) AS SELECT"), create
        # DESCRIBE reads the view's columns like a table's.
        described = [r[0] for r in q(vserver, "DESCRIBE health.cost_by_state")]
        assert described[:2] == ["presc_state", "cost"], described
        # Flight SQL GetTables (ADBC's get_objects): the view, typed VIEW, with its columns.
        with flight_sql.connect(vserver.flight_uri(), db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD},
                                autocommit=True) as conn:
            objects = conn.adbc_get_objects(depth="all", db_schema_filter="health").read_all().to_pylist()
            tables = {t["table_name"]: t for c in objects for s in (c["catalog_db_schemas"] or [])
                      for t in s["db_schema_tables"]}
            assert tables["cost_by_state"]["table_type"] == "VIEW", tables
            assert tables["rx_v"]["table_type"] == "TABLE"
            assert [c["column_name"] for c in tables["cost_by_state"]["table_columns"]] == ["presc_state", "cost"]
            assert "VIEW" in conn.adbc_get_table_types()
            # And a view made through Flight SQL is queried through it.
            with conn.cursor() as cur:
                cur.execute("CREATE VIEW health.tx_only AS SELECT npi FROM health.rx_v WHERE presc_state = 'TX'")
                cur.execute("SELECT count(*) FROM health.tx_only")
                assert cur.fetchall() == [(2,)]
                cur.execute("DROP VIEW health.tx_only")
    finally:
        q(vserver, "DROP VIEW IF EXISTS health.cost_by_state")


# ------------------------------------------------------------------------------------- policy

def test_an_invokers_masks_and_filters_apply_beneath_the_view(vserver):
    q(vserver, "CREATE VIEW health.rx_names AS SELECT npi, presc_last_name, presc_state, trx_cnt FROM health.rx_v")
    try:
        # The analyst sees through the view what it sees in the table: the same pseudonyms
        # (masked once, not twice), the same redaction.
        direct = q(vserver, "SELECT npi, presc_last_name FROM health.rx_v ORDER BY trx_cnt", user="ann")
        through = q(vserver, "SELECT npi, presc_last_name FROM health.rx_names ORDER BY trx_cnt", user="ann")
        assert through == direct
        assert all(str(npi) not in {str(r[0]) for r in ROWS} for npi, _ in through), through
        assert {name for _, name in through} != {r[1] for r in ROWS}
        # The state auditor's row filter holds beneath the view.
        assert q(vserver, "SELECT DISTINCT presc_state FROM health.rx_names", user="auditor_ca") == [("CA",)]
        assert q(vserver, "SELECT count(*) FROM health.rx_names", user="auditor_ca") == [(2,)]
        # A grant on an invoker view alone reads nothing: the public role cannot read rx_v.
        assert sqlstate(vserver, "SELECT * FROM health.rx_names", user="vic") == "42P01"
        # The admin sees everything.
        assert q(vserver, "SELECT count(*) FROM health.rx_names") == [(5,)]
    finally:
        q(vserver, "DROP VIEW health.rx_names")


def test_a_definer_view_reads_under_the_owners_grants(vserver):
    q(vserver, "CREATE VIEW health.state_totals SECURITY DEFINER AS SELECT presc_state, count(*) AS prescribers, "
               "sum(trx_cnt) AS trx FROM health.rx_v GROUP BY presc_state")
    q(vserver, "CREATE VIEW health.npi_list WITH (security_invoker = false) AS SELECT npi, presc_state FROM health.rx_v")
    try:
        expected = [("CA", 2, 30), ("NY", 1, 40), ("TX", 2, 80)]
        # The public role is granted the view only: it reads the aggregate of a table it cannot see.
        assert q(vserver, "SELECT * FROM health.state_totals ORDER BY presc_state", user="vic") == expected
        assert sqlstate(vserver, "SELECT * FROM health.rx_v", user="vic") == "42P01"
        assert sqlstate(vserver, "SELECT * FROM health.npi_list", user="vic") == "42P01"
        assert q(vserver, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'health' "
                          "ORDER BY 1", user="vic") == [("state_totals",)]
        # The state auditor's filter is on rx_v, not on the definer's view: every state.
        assert q(vserver, "SELECT * FROM health.state_totals ORDER BY presc_state", user="auditor_ca") == expected
        # Masks on the view's own name apply on top: the analyst's NPI pseudonyms hold through a
        # definer view too (its `table = "*"` mask matches the view's name).
        direct = q(vserver, "SELECT npi FROM health.rx_v ORDER BY npi", user="ann")
        assert sorted(q(vserver, "SELECT npi FROM health.npi_list", user="ann")) == sorted(direct)
        assert q(vserver, "SELECT count(*) FROM health.npi_list WHERE npi = 1003000001", user="ann") == [(0,)]
        assert q(vserver, "SELECT count(*) FROM health.npi_list WHERE npi = 1003000001") == [(1,)]
        # Plans and metrics of what the owner reads are not the public role's to see.
        plan = q(vserver, "EXPLAIN SELECT * FROM health.state_totals", user="vic")
        assert [r[0] for r in plan] == ["logical_plan"], plan
        assert sqlstate(vserver, "EXPLAIN ANALYZE SELECT * FROM health.state_totals", user="vic") == "42501"
        (create,) = q(vserver, "SHOW CREATE TABLE health.state_totals")[0]
        assert "SECURITY DEFINER" in create, create
    finally:
        q(vserver, "DROP VIEW health.state_totals, health.npi_list")


def test_who_may_create_and_drop_views(vserver):
    # Only administrators create definer views; the engineer creates invoker views in its schema.
    assert sqlstate(vserver, "CREATE VIEW sandbox.v_def SECURITY DEFINER AS SELECT npi FROM health.rx_v",
                    user="eng") == "42501"
    assert q(vserver, "CREATE VIEW sandbox.v_inv SECURITY INVOKER AS SELECT npi, cost FROM health.rx_v",
             user="eng") == "CREATE VIEW"
    assert q(vserver, "SELECT count(*) FROM sandbox.v_inv", user="eng") == [(5,)]
    # No create privilege in health: the engineer and the analyst are refused (42501).
    for user in ("eng", "ann"):
        assert sqlstate(vserver, "CREATE VIEW health.v_x AS SELECT 1", user=user) == "42501", user
    # A query the creator cannot read cannot become a view of it (the name looks absent).
    assert sqlstate(vserver, "CREATE VIEW sandbox.v_hidden AS SELECT * FROM health.nothing_here",
                    user="eng") == "42P01"
    q(vserver, "CREATE VIEW health.v_admin AS SELECT 1 AS one")
    assert sqlstate(vserver, "DROP VIEW health.v_admin", user="ann") == "42501"
    assert sqlstate(vserver, "DROP VIEW health.v_admin", user="vic") == "42P01"
    assert q(vserver, "SELECT one FROM health.v_admin") == [(1,)]
    assert q(vserver, "DROP VIEW sandbox.v_inv", user="eng") == "DROP VIEW"
    q(vserver, "DROP VIEW health.v_admin")
    # DROP SCHEMA: views count as objects (RESTRICT 2BP01), CASCADE drops them.
    q(vserver, "CREATE SCHEMA scratch")
    q(vserver, "CREATE VIEW scratch.v AS SELECT 1 AS one")
    assert sqlstate(vserver, "DROP SCHEMA scratch") == "2BP01"
    assert q(vserver, "DROP SCHEMA scratch CASCADE") == "DROP SCHEMA"
    q(vserver, "CREATE SCHEMA scratch")
    assert sqlstate(vserver, "SELECT * FROM scratch.v") == "42P01"
    q(vserver, "DROP SCHEMA scratch")


# ------------------------------------------------------------------------------------ sharing

def test_views_are_shared_by_gateways_and_survive_a_restart(rxgate_bin, postgres, tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog
    db = postgres.create_database("rxviews")
    warehouse = tmp_path / "warehouse"
    config = tmp_path / "rxgate.toml"
    config.write_text(f'[catalog]\nuri = "{postgres.uri(db)}"\nwarehouse = "{warehouse}"\nname = "rxgate"\n')
    servers = []

    def serve(name):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        s = start_server(rxgate_bin, d, tmp_path / f"{name}.log", config=config)
        servers.append(s)
        return s

    try:
        a, b = serve("a"), serve("b")
        q(a, "CREATE SCHEMA lab")
        q(a, "CREATE TABLE lab.t AS SELECT CAST(v AS int) AS v FROM generate_series(1, 10) AS g(v)")
        q(a, "CREATE VIEW lab.evens AS SELECT v FROM lab.t WHERE v % 2 = 0")
        # Gateway b, running since before, reads it and lists it.
        assert q(b, "SELECT sum(v) FROM lab.evens") == [(30,)]
        assert q(b, "SELECT table_type FROM information_schema.tables WHERE table_name = 'evens'") == [("VIEW",)]
        # OR REPLACE on b (PostgreSQL's upsert), seen by a.
        q(b, "CREATE OR REPLACE VIEW lab.evens AS SELECT v FROM lab.t WHERE v % 2 = 0 AND v > 4")
        assert q(a, "SELECT sum(v) FROM lab.evens") == [(24,)]
        # A restart keeps it.
        stop_server(a)
        a = serve("a")
        assert q(a, "SELECT count(*) FROM lab.evens") == [(3,)]
        # pyiceberg's SQL catalog has no views: they are not listed as tables either.
        cat = SqlCatalog("rxgate", uri=postgres.sqlalchemy_uri(db), warehouse=f"file://{warehouse}")
        assert [t[-1] for t in cat.list_tables("lab")] == ["t"]
        with pytest.raises(NotImplementedError):
            cat.list_views("lab")
        q(b, "DROP VIEW lab.evens")
        assert sqlstate(a, "SELECT * FROM lab.evens") == "42P01"
    finally:
        for s in servers:
            stop_server(s)
