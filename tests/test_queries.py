"""Issue 25, query management, under pgwire (psycopg) and Flight SQL (ADBC):

* `system.queries`, `system.sessions` and `pg_stat_activity` list the running statements and
  the sessions: an analyst its own, an admin everyone's;
* a long statement is killed by its owner with `pg_cancel_backend(pid)` from a second
  connection, by an admin with `CALL system.kill_query('<id>')` (both 57014), and the
  analyst's attempt on the admin's statement is 42501 while that statement goes on; the
  query pool's reservation (`system.memory`) is back near zero once a killed statement ends;
* `pg_terminate_backend(pid)` closes a pgwire connection (57P01) and revokes a Flight SQL
  session;
* `system.query_history` shows finished statements with their outcome and SQLSTATE (an
  analyst only its own); statements over `[monitoring] slow_query_ms` are logged with their
  plan's metrics.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pytest

from conftest import TEST_PASSWORD, TEST_USER, start_server_with_roles, stop_server
from sqlclient import Client

PASSWORD = "queries-test-pw"
USERS = {"ann": "analyst", "bob": "analyst"}
_client = Client(PASSWORD)
pg, q, sqlstate = _client.pg, _client.q, _client.sqlstate

#: Runs for hours and holds a hash table of millions of groups in the query pool.
LONG = ("SELECT k, count(*) FROM (SELECT x % 3000000 AS k FROM generate_series(1, 100000000000) AS t(x)) s "
        "GROUP BY k ORDER BY 2 DESC LIMIT 1")
#: Marks a statement so the tests find it in the listings.
SLOW_MS = 1500


@pytest.fixture(scope="module")
def qserver(rxgate_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("queries")
    data = d / "data"
    data.mkdir()
    config = d / "rxgate.toml"
    config.write_text(f'[audit]\ndir = "{d / "audit"}"\n'
                      '[engine]\nmemory_limit = "1GiB"\nquery_timeout_secs = 600\n'
                      f'[monitoring]\nslow_query_ms = {SLOW_MS}\nquery_history_size = 50\n')
    s = start_server_with_roles(rxgate_bin, data, d, config, USERS, PASSWORD)
    q(s, "CREATE SCHEMA lab")
    q(s, "CREATE TABLE lab.t AS SELECT x, 'row ' || x AS s FROM generate_series(1, 200000) AS g(x)")
    yield s
    stop_server(s)


class Background:
    """A statement running on its own connection (thread); `.error` is what it failed with."""

    def __init__(self, server, user: str, sql: str = LONG, marker: str = ""):
        self.conn = pg(server, user)
        self.pid = self.conn.info.backend_pid
        self.sql = f"{sql} -- {marker}" if marker else sql
        self.error: BaseException | None = None
        self.rows = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.rows = self.conn.execute(self.sql).fetchall()
        except BaseException as e:  # noqa: BLE001 - kept for the test to assert on
            self.error = e

    def wait(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the statement did not end"

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running(server, marker: str, user: str = TEST_USER):
    """The system.queries rows (query_id, pid, user, state, memory_bytes) of statements
    whose text has `marker`, as `user` sees them."""
    return [r for r in q(server, "SELECT query_id, pid, \"user\", state, memory_bytes, query FROM system.queries",
                         user=user) if marker in r[5]]


def pool_reserved(server) -> int:
    return q(server, "SELECT pool_reserved_bytes FROM system.memory")[0][0]


def holding_memory(server, marker: str, user: str = TEST_USER):
    rows = running(server, marker, user)
    return rows if rows and rows[0][4] > (1 << 20) else None


def test_owner_cancels_own_query_with_pg_cancel_backend(qserver):
    long = Background(qserver, "ann", marker="own-cancel")
    try:
        rows = wait_for(lambda: holding_memory(qserver, "own-cancel", "ann"), what="the query to hold pool memory")
        assert rows[0][1] == long.pid and rows[0][2] == "ann" and rows[0][3] == "RUNNING"
        assert pool_reserved(qserver) > (1 << 20)
        # The owner, from a second connection.
        assert q(qserver, f"SELECT pg_cancel_backend({long.pid})", user="ann") == [(True,)]
        long.wait()
        assert isinstance(long.error, psycopg.Error) and long.error.sqlstate == "57014", long.error
        # The connection goes on, and the statement and its memory are gone.
        assert long.conn.execute("SELECT 1").fetchone() == (1,)
        assert running(qserver, "own-cancel") == []
        wait_for(lambda: pool_reserved(qserver) < (1 << 20), what="the pool to be released")
    finally:
        long.close()


def test_admin_kills_analysts_query_with_kill_query(qserver):
    long = Background(qserver, "ann", marker="admin-kill")
    try:
        rows = wait_for(lambda: holding_memory(qserver, "admin-kill"), what="the query to hold pool memory")
        query_id = rows[0][0]
        assert q(qserver, f"CALL system.kill_query('{query_id}')") == "CALL"
        long.wait()
        assert isinstance(long.error, psycopg.Error) and long.error.sqlstate == "57014", long.error
        assert "killed" in str(long.error)
        wait_for(lambda: pool_reserved(qserver) < (1 << 20), what="the pool to be released")
        # The statement is gone: killing it again names no running query.
        assert sqlstate(qserver, f"CALL system.kill_query('{query_id}')") == "22023"
        assert sqlstate(qserver, "CALL system.kill_query(query_id => 'nope')") == "22023"
    finally:
        long.close()


#: Keeps every core busy for hours: a nested-loop join never waits on anything.
CPU_BOUND = "SELECT count(*) FROM lab.t a CROSS JOIN lab.t b WHERE (a.x * 7 + b.x) % 1000003 = 5"


def test_a_cpu_bound_query_starves_nobody_and_is_killed(qserver):
    """Statements compute on the query runtime: while one keeps both cores busy, other
    sessions are answered, system.queries lists it, and a kill ends it."""
    heavy = Background(qserver, TEST_USER, sql=CPU_BOUND, marker="cpu-bound")
    try:
        rows = wait_for(lambda: running(qserver, "cpu-bound") or heavy.error, what="the join to be listed")
        assert heavy.error is None, heavy.error
        time.sleep(1)  # well into the join
        assert heavy.thread.is_alive()
        # A new connection and another session's statement are served meanwhile.
        assert q(qserver, "SELECT count(*) FROM generate_series(1, 100000)", user="bob") == [(100000,)]
        assert q(qserver, "SELECT count(*) FROM lab.t") == [(200000,)]
        assert q(qserver, f"CALL system.kill_query('{rows[0][0]}')") == "CALL"
        heavy.wait()
        assert isinstance(heavy.error, psycopg.Error) and heavy.error.sqlstate == "57014", heavy.error
        assert running(qserver, "cpu-bound") == []
        wait_for(lambda: pool_reserved(qserver) < (1 << 20), what="the pool to be released")
    finally:
        heavy.close()


def test_analyst_cannot_kill_admins_query(qserver):
    long = Background(qserver, TEST_USER, marker="admins-own")
    try:
        rows = wait_for(lambda: running(qserver, "admins-own"), what="the admin's query")
        query_id = rows[0][0]
        # The analyst does not even see it, and may not kill it by id or by pid.
        assert running(qserver, "admins-own", user="ann") == []
        assert sqlstate(qserver, f"CALL system.kill_query('{query_id}')", user="ann") == "42501"
        assert sqlstate(qserver, f"SELECT pg_cancel_backend({long.pid})", user="ann") == "42501"
        assert sqlstate(qserver, f"SELECT pg_terminate_backend({long.pid})", user="ann") == "42501"
        time.sleep(0.5)
        assert long.thread.is_alive() and long.error is None
        assert running(qserver, "admins-own")[0][3] == "RUNNING"
        # An unknown pid is no error: false, as in PostgreSQL.
        assert q(qserver, "SELECT pg_cancel_backend(1)", user="ann") == [(False,)]
        assert q(qserver, f"SELECT pg_cancel_backend({long.pid})") == [(True,)]
        long.wait()
        assert long.error.sqlstate == "57014"
    finally:
        long.close()


def test_pg_terminate_backend_closes_the_connection(qserver):
    idle = pg(qserver, "bob")
    long = Background(qserver, "ann", marker="terminated")
    try:
        wait_for(lambda: running(qserver, "terminated"), what="the query")
        assert q(qserver, f"SELECT pg_terminate_backend({long.pid})") == [(True,)]
        long.wait()
        assert isinstance(long.error, psycopg.Error) and long.error.sqlstate == "57P01", long.error
        with pytest.raises(psycopg.OperationalError):
            long.conn.execute("SELECT 1").fetchall()
        # An idle connection, terminated by its own user from another connection.
        assert q(qserver, f"SELECT pg_terminate_backend({idle.info.backend_pid})", user="bob") == [(True,)]
        with pytest.raises(psycopg.OperationalError):
            idle.execute("SELECT 1").fetchall()
        gone = {long.pid, idle.info.backend_pid}
        wait_for(lambda: not gone & {r[0] for r in q(qserver, "SELECT pid FROM pg_stat_activity")},
                 what="the terminated sessions to leave pg_stat_activity")
    finally:
        long.close()
        idle.close()


def test_visibility_per_role(qserver):
    ann, bob, admin = pg(qserver, "ann"), pg(qserver, "bob"), pg(qserver)
    long = Background(qserver, "bob", marker="bobs-query")
    try:
        wait_for(lambda: running(qserver, "bobs-query"), what="bob's query")
        # system.queries: own rows for an analyst (its own SELECT on system.queries is one).
        mine = ann.execute('SELECT "user", protocol, state, query FROM system.queries').fetchall()
        assert {r[0] for r in mine} == {"ann"} and all(r[1] == "pgwire" for r in mine)
        assert any("system.queries" in r[3] for r in mine)
        everyone = admin.execute('SELECT "user" FROM system.queries').fetchall()
        assert {"bob", TEST_USER} <= {r[0] for r in everyone}
        # pg_stat_activity: the same sessions, PostgreSQL's columns.
        rows = ann.execute("SELECT pid, usename, state, query, backend_type, datname "
                           "FROM pg_stat_activity").fetchall()
        assert {r[1] for r in rows} == {"ann"}
        me = [r for r in rows if r[0] == ann.info.backend_pid]
        assert me and me[0][2] == "active" and "pg_stat_activity" in me[0][3]
        assert me[0][4] == "client backend" and me[0][5] == "rxgate"
        rows = admin.execute("SELECT pid, usename, state, query FROM pg_stat_activity").fetchall()
        bobs = [r for r in rows if r[0] == long.pid]
        assert bobs and bobs[0][1] == "bob" and bobs[0][2] == "active" and "bobs-query" in bobs[0][3]
        idle = [r for r in rows if r[0] == bob.info.backend_pid]
        assert idle and idle[0][1] == "bob" and idle[0][2] == "idle"
        assert {"ann", "bob", TEST_USER} <= {r[1] for r in rows}
        # pg_backend_pid is the pid clients got at login (BackendKeyData).
        assert ann.execute("SELECT pg_backend_pid()").fetchone() == (ann.info.backend_pid,)
        # system.sessions.
        sessions = ann.execute('SELECT "user", protocol, state FROM system.sessions').fetchall()
        assert {r[0] for r in sessions} == {"ann"} and {r[1] for r in sessions} == {"pgwire"}
        assert {"ann", "bob"} <= {r[0] for r in admin.execute('SELECT "user" FROM system.sessions').fetchall()}
        # The analyst can read these tables, not the admin-only ones.
        with pytest.raises(psycopg.Error) as err:
            ann.execute("SELECT * FROM system.memory")
        assert err.value.sqlstate == "42P01"
    finally:
        q(qserver, f"SELECT pg_cancel_backend({long.pid})")
        long.wait()
        long.close()
        for c in (ann, bob, admin):
            c.close()


def test_psql_reads_pg_stat_activity(qserver):
    out = _client.psql(qserver, "SELECT pid, usename, state, query FROM pg_stat_activity;", user="ann")
    assert out.returncode == 0, out.stderr
    assert "ann" in out.stdout and "active" in out.stdout and "(1 row)" in out.stdout


def adbc(server, user: str):
    password = TEST_PASSWORD if user == TEST_USER else PASSWORD
    return flight_sql.connect(server.flight_uri(), db_kwargs={"username": user, "password": password},
                              autocommit=True)


def test_flight_sessions_are_listed_and_terminated(qserver):
    conn = adbc(qserver, "ann")
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT "user", protocol, query FROM system.queries')
            rows = cur.fetchall()
        assert [r[:2] for r in rows] == [("ann", "flightsql")] and "system.queries" in rows[0][2]
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (pid,), = cur.fetchall()
        sessions = q(qserver, 'SELECT pid, "user", protocol FROM system.sessions')
        assert (pid, "ann", "flightsql") in sessions
        assert ("ann",) in q(qserver, f"SELECT usename FROM pg_stat_activity WHERE pid = {pid}")
        # Another analyst may not end it; the admin may.
        assert sqlstate(qserver, f"SELECT pg_terminate_backend({pid})", user="bob") == "42501"
        assert q(qserver, f"SELECT pg_terminate_backend({pid})") == [(True,)]
        with pytest.raises(adbc_driver_manager.Error):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        wait_for(lambda: pid not in [r[0] for r in q(qserver, "SELECT pid FROM system.sessions")],
                 what="the Flight session to be dropped")
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def test_query_history(qserver):
    q(qserver, "SELECT 41 + 1 AS history_marker_ok", user="bob")
    assert sqlstate(qserver, "SELECT * FROM no_such_table_history_marker", user="bob") == "42P01"
    history = q(qserver, "SELECT \"user\", outcome, error_code, rows, duration_ms, query, query_id "
                         "FROM system.query_history", user="bob")
    assert {r[0] for r in history} == {"bob"}
    ok = [r for r in history if "history_marker_ok" in r[5]]
    assert ok and ok[-1][1:4] == ("ok", None, 1) and ok[-1][4] >= 0 and ok[-1][6]
    missing = [r for r in history if "no_such_table_history_marker" in r[5]]
    assert missing and missing[-1][1:3] == ("error", "42P01")
    # Analysts see only their own; the admin everyone's, the killed statements of the tests
    # above with 57014 as their clients saw it.
    assert {r[0] for r in q(qserver, 'SELECT "user" FROM system.query_history', user="ann")} == {"ann"}
    admin_history = q(qserver, 'SELECT "user", outcome, error_code, query FROM system.query_history')
    assert {"bob", TEST_USER} <= {r[0] for r in admin_history}
    assert len(admin_history) == 50, "[monitoring] query_history_size"
    # Bytes scanned come from the executed plan's scan metrics.
    assert q(qserver, "SELECT sum(x) FROM lab.t WHERE s LIKE 'row 1%' -- bytes-marker")[0][0] > 0
    scanned = [r for r in q(qserver, "SELECT bytes_scanned, query FROM system.query_history") if "bytes-marker" in r[1]]
    assert scanned and scanned[-1][0] > 100_000, scanned
    q(qserver, "SELECT 1 AS fresh_marker", user="ann")
    mine = q(qserver, 'SELECT outcome, error_code, query FROM system.query_history', user="ann")
    assert any("fresh_marker" in r[2] for r in mine)
    killed = [r for r in mine if "own-cancel" in r[2] and "system.queries" not in r[2]]
    assert killed and killed[-1][:2] == ("error", "57014")


def test_slow_query_log(qserver):
    # A statement that ends (here: cancelled) after running longer than slow_query_ms.
    long = Background(qserver, "bob", marker="slow-marker")
    try:
        wait_for(lambda: [r for r in q(qserver, "SELECT elapsed_ms, query FROM system.queries")
                          if "slow-marker" in r[1] and r[0] > SLOW_MS + 200], what="the query to pass the threshold")
        assert q(qserver, f"SELECT pg_cancel_backend({long.pid})", user="bob") == [(True,)]
        long.wait()
    finally:
        long.close()
    log = wait_for(lambda: "slow-marker" in qserver.log_text() and qserver.log_text(), what="the slow-query log")
    lines = log.splitlines()
    at = next(i for i, l in enumerate(lines) if "slow query" in l and "slow-marker" in l)
    line = lines[at]
    assert "WARN" in line and "user=bob" in line and "outcome=error" in line and "duration_ms=" in line
    # The executed plan, with its metrics, follows.
    plan = "\n".join(lines[at:at + 30])
    assert "AggregateExec" in plan and "metrics=[output_rows=" in plan
    # A fast statement is not logged.
    assert not [l for l in lines if "slow query" in l and "history_marker_ok" in l]
