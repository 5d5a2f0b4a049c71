"""Issue 20, faults 1, 2 and 4, through pgwire (psycopg) and Flight SQL (ADBC, pyarrow.flight):

* deep statements never take the process down: chains the planner can take are answered,
  deeper ones get 54001, text over `[limits] max_query_bytes` gets 54000;
* EXPLAIN (plain, VERBOSE, ANALYZE) and Flight endpoints tell a governed principal nothing
  about rows or values its policy hides;
* values are bounded: a function that would build a value over `[limits] max_value_bytes`
  gets 54000, builders reserve from the query pool, and the process memory guard cancels the
  statement holding the most memory (53200) before the process passes
  `[limits] process_memory_limit`. The server's peak resident memory (VmHWM) is checked
  against that limit after each case.
"""
from __future__ import annotations

import re
import shutil
import time

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow.flight as flight
import pytest

import flightsql_proto as proto
from conftest import TEST_PASSWORD, TEST_USER, start_server_with_roles, stop_server
from rxcli import REPO_ROOT

PASSWORD = "limits-test-pw"
USERS = {"ann": "analyst", "auditor_ca": "state_auditor", "pat": "public"}
#: The process limit the server runs with; every case must keep its peak resident memory below.
PROCESS_LIMIT = 1536 << 20


@pytest.fixture(scope="module")
def lserver(rxgate_bin, lakehouse, tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    policy = d / "policies.toml"
    shutil.copy(REPO_ROOT / "catalog" / "policies.toml", policy)
    config = d / "rxgate.toml"
    config.write_text(
        f'[policy]\nfile = "{policy}"\n'
        '[engine]\nmemory_limit = "256MiB"\nquery_timeout_secs = 120\n'
        '[limits]\nmax_query_bytes = "1MiB"\nmax_value_bytes = "64MiB"\n'
        f'process_memory_limit = "{PROCESS_LIMIT >> 20}MiB"\n')
    s = start_server_with_roles(rxgate_bin, lakehouse.rx.data_dir, d, config, USERS, PASSWORD)
    yield s
    stop_server(s)


def password(user: str) -> str:
    return TEST_PASSWORD if user == TEST_USER else PASSWORD


def pg(server, user: str = TEST_USER):
    return psycopg.connect(server.dsn(user=user, password=password(user)), autocommit=True)


def adbc(server, user: str = TEST_USER):
    return flight_sql.connect(server.flight_uri(), db_kwargs={"username": user, "password": password(user)},
                              autocommit=True)


def run(server, protocol: str, sql: str, user: str = TEST_USER) -> list[tuple]:
    if protocol == "pg":
        with pg(server, user) as conn:
            return conn.execute(sql).fetchall()
    with adbc(server, user) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]


def refused(server, protocol: str, sql: str, user: str = TEST_USER) -> str:
    """Runs `sql`, which must fail; returns the SQLSTATE (pgwire) or the error text (Flight)."""
    if protocol == "pg":
        with pg(server, user) as conn:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql).fetchall()
            # The connection survives its statement's failure.
            assert conn.execute("SELECT 7").fetchone()[0] == 7
        return err.value.sqlstate
    with adbc(server, user) as conn, conn.cursor() as cur:
        with pytest.raises(Exception) as err:
            cur.execute(sql)
            cur.fetchall()
    return str(err.value)


def vm_hwm(server) -> int:
    """Peak resident memory of the server process, in bytes."""
    status = open(f"/proc/{server.proc.pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def alive_and_bounded(server) -> None:
    assert server.alive(), server.log_text()[-3000:]
    assert run(server, "pg", "SELECT 1") == [(1,)]
    assert vm_hwm(server) < PROCESS_LIMIT, f"peak RSS {vm_hwm(server) >> 20} MiB"


FLIGHT_CODES = {"54000": "RESOURCE_EXHAUSTED", "53200": "RESOURCE_EXHAUSTED", "54001": "INVALID_ARGUMENT",
                "42501": "PERMISSION_DENIED", "42601": "INVALID_ARGUMENT"}


def assert_refused(server, protocol: str, sql: str, sqlstate: str, words: str, user: str = TEST_USER) -> None:
    got = refused(server, protocol, sql, user)
    if protocol == "pg":
        assert got == sqlstate, got
    else:
        assert FLIGHT_CODES[sqlstate] in got.upper().replace(" ", "_") or words in got, got
        assert words in got, got


# ---------------------------------------------------------------------------------------------
# Fault 1: deep statements
# ---------------------------------------------------------------------------------------------

def plus_chain(n: int) -> str:
    return "SELECT " + "+".join(["1"] * n)


@pytest.mark.parametrize("protocol", ["pg", "flight"])
def test_long_chains_are_answered_not_crashed(lserver, protocol):
    # 2,000 terms crashed the server before (stack overflow in a tokio worker).
    assert run(lserver, protocol, plus_chain(2000)) == [(2000,)]
    assert run(lserver, protocol, plus_chain(4000), user="pat") == [(4000,)]
    # A BI tool's long OR chain, as a governed role (the policy rewrite walks it too).
    # OR and AND chains are balanced after parsing, so 20,000 terms plan like a short list.
    ors = " OR ".join(f"population = {i}" for i in range(20_000))
    want = run(lserver, "pg", "SELECT count(*) FROM health.us_cities WHERE population >= 0 AND population < 20000",
               user="ann")
    assert run(lserver, protocol, f"SELECT count(*) FROM health.us_cities WHERE {ors}", user="ann") == want
    # Long UNION chains become deep plans as well.
    unions = " UNION ALL ".join(f"SELECT {i} AS x" for i in range(1500))
    assert run(lserver, protocol, f"SELECT count(*), sum(x) FROM ({unions}) u") == [(1500, 1500 * 1499 // 2)]
    alive_and_bounded(lserver)


@pytest.mark.parametrize("protocol", ["pg", "flight"])
def test_ten_thousand_item_in_lists_work(lserver, protocol):
    npis = [r[0] for r in run(lserver, "pg", "SELECT DISTINCT npi FROM health.prescriber_drug ORDER BY npi LIMIT 300")]
    items = npis + [f"{9_000_000_000 + i}" for i in range(10_000 - len(npis))]
    sql = "SELECT count(DISTINCT npi) FROM health.prescriber_drug WHERE npi IN ({})".format(
        ", ".join(f"'{x}'" for x in items))
    assert run(lserver, protocol, sql) == [(len(npis),)]


@pytest.mark.parametrize("protocol", ["pg", "flight"])
def test_too_deep_gets_54001_and_the_server_stays_up(lserver, protocol):
    for sql in (plus_chain(6000),
                # A balanced OR chain does not hide a long chain inside one of its terms.
                "SELECT 1 FROM health.us_cities WHERE " + " OR ".join(f"population = {i}" for i in range(1000))
                + " OR population = " + "+".join(["1"] * 6000),
                plus_chain(200_000),
                "SELECT " + "||".join(["'x'"] * 8000),
                "SELECT " + " * ".join(["1"] * 8000)):
        assert_refused(lserver, protocol, sql, "54001", "too complex", user="ann")
    # Deep nesting is the parser's own limit, as before.
    assert_refused(lserver, protocol, "SELECT " + "(" * 500 + "1" + ")" * 500, "42601", "recursion")
    alive_and_bounded(lserver)


@pytest.mark.parametrize("protocol", ["pg", "flight"])
def test_statement_text_over_the_limit_gets_54000(lserver, protocol):
    # 2 MiB of comment after a valid statement: refused before it is parsed.
    sql = "SELECT 1 -- " + "x" * (2 << 20)
    assert_refused(lserver, protocol, sql, "54000", "max_query_bytes")
    alive_and_bounded(lserver)


# ---------------------------------------------------------------------------------------------
# Fault 2: nothing about hidden rows leaks from plans
# ---------------------------------------------------------------------------------------------

def explain_text(server, protocol: str, user: str, sql: str) -> str:
    return "\n".join(f"{r[0]}: {r[1]}" for r in run(server, protocol, sql, user))


PROBES = {
    # An NPI prefix search and a national-maximum search: the two binary searches the
    # adversarial pass ran.
    "npi": ("SELECT 1 FROM health.top_prescribers WHERE npi >= '{}'",
            ["0", "1", "1000000000", "1500000000", "1999999999", "5", "9", "z"]),
    "trx_cnt": ("SELECT 1 FROM health.top_prescribers WHERE trx_cnt >= {}",
                ["0", "10", "1000", "100000", "10000000", "1000000000000"]),
    "population": ("SELECT 1 FROM health.us_cities WHERE population >= {}",
                   ["0", "1000", "100000", "1000000", "8000000", "100000000"]),
}


def normalised_plans(server, protocol: str, user: str, template: str, values: list[str], prefix: str) -> set[str]:
    """The EXPLAIN outputs of the probes, each with its own literal replaced by `?`."""
    out = set()
    for v in values:
        text = explain_text(server, protocol, user, prefix + template.format(v))
        # A string probe shows quoted, a number as Int64(v).
        around = ("[\"']", "[\"']") if "'{}'" in template else (r"\(", r"\)")
        out.add(re.sub(f"(?<={around[0]}){re.escape(v)}(?={around[1]})", "?", text))
    return out


def test_explain_on_unmasked_data_still_shows_physical_plans(lserver):
    """The admin's probes do tell plans apart (so the governed checks below can fail): with
    pruning by statistics, a threshold above every value gives another physical plan."""
    template, values = PROBES["trx_cnt"]
    plans = normalised_plans(lserver, "pg", TEST_USER, template, values, "EXPLAIN ")
    assert len(plans) > 1, plans
    assert any("physical_plan" in p for p in plans)


#: Each governed role with each table it reads through a mask or a row filter (the analyst
#: reads us_cities whole: no policy hides anything of it from her).
GOVERNED_PROBES = [("ann", "npi"), ("ann", "trx_cnt"), ("auditor_ca", "npi"), ("auditor_ca", "trx_cnt"),
                   ("auditor_ca", "population")]


@pytest.mark.parametrize("protocol", ["pg", "flight"])
@pytest.mark.parametrize("user,probe", GOVERNED_PROBES)
def test_binary_search_over_explain_learns_nothing(lserver, protocol, user, probe):
    template, values = PROBES[probe]
    for prefix in ("EXPLAIN ", "EXPLAIN VERBOSE "):
        plans = normalised_plans(lserver, protocol, user, template, values, prefix)
        assert len(plans) == 1, "\n----\n".join(sorted(plans))
        (plan,) = plans
        assert "logical_plan" in plan
        assert not re.search(r"physical_plan|DataSourceExec|EmptyExec|Rows=|statistics", plan), plan


@pytest.mark.parametrize("protocol", ["pg", "flight"])
@pytest.mark.parametrize("user", ["ann", "auditor_ca"])
def test_explain_analyze_is_refused_under_masks_and_filters(lserver, protocol, user):
    for v in ("0", "1000000000000"):
        assert_refused(lserver, protocol, f"EXPLAIN ANALYZE SELECT 1 FROM health.top_prescribers WHERE trx_cnt >= {v}",
                       "42501", "EXPLAIN ANALYZE", user=user)
    # Ungoverned principals keep EXPLAIN ANALYZE (the admin sees everything anyway).
    assert "metrics" in explain_text(lserver, protocol, TEST_USER, "EXPLAIN ANALYZE SELECT count(*) FROM health.top_prescribers").lower() \
        or "output_rows" in explain_text(lserver, protocol, TEST_USER, "EXPLAIN ANALYZE SELECT count(*) FROM health.top_prescribers")


@pytest.mark.parametrize("user", ["ann", "auditor_ca"])
def test_flight_endpoints_do_not_count_surviving_files(lserver, user):
    """The number of endpoints follows the physical plan's partitions, which follow the files
    that survive pruning: a governed result always has one."""
    client = flight.FlightClient(lserver.flight_uri())
    token = client.authenticate_basic_token(user, PASSWORD)
    options = flight.FlightCallOptions(headers=[token])
    counts = set()
    for v in PROBES["trx_cnt"][1]:
        info = client.get_flight_info(proto.statement_query(PROBES["trx_cnt"][0].format(v)), options)
        counts.add(len(info.endpoints))
        for e in info.endpoints:
            client.do_get(e.ticket, options).read_all()
    assert counts == {1}


# ---------------------------------------------------------------------------------------------
# Fault 4: memory beyond the pool
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["pg", "flight"])
def test_values_over_the_limit_get_54000_before_they_are_built(lserver, protocol):
    for sql in ("SELECT length(lpad('x', 1000000000, 'y'))",
                "SELECT length(rpad('x', 500000000))",
                "SELECT length(repeat('abc', 100000000))",
                "SELECT cardinality(array_repeat(1, 1000000000))",
                "SELECT cardinality(range(1, 10000000000))",
                "SELECT length(repeat(city, 100000000)) FROM health.us_cities"):
        assert_refused(lserver, protocol, sql, "54000", "max_value_bytes", user="ann")
    # Under the limit they work.
    assert run(lserver, protocol, "SELECT length(lpad('x', 1000000, 'y')), length(repeat('ab', 1000))") == [(1000000, 2000)]
    alive_and_bounded(lserver)


@pytest.mark.parametrize("protocol", ["pg", "flight"])
def test_string_agg_is_bounded(lserver, protocol):
    sql = "SELECT length(string_agg(repeat('x', 1000), '')) FROM generate_series(1, 5000000)"
    got = refused(lserver, protocol, sql, user="ann")
    if protocol == "pg":
        # The pool (53200) or the value limit (54000) stops it, whichever comes first.
        assert got in ("53200", "54000"), got
    alive_and_bounded(lserver)


@pytest.mark.parametrize("protocol", ["pg", "flight"])
def test_doubling_a_value_each_round_is_bounded(lserver, protocol):
    """`||` doubles a value each round of a recursive query: no single call sees a large count,
    and the operator is bounded like the functions (54000 at 64 MiB)."""
    sql = ("WITH RECURSIVE t AS (SELECT 1 AS n, 'x' AS s UNION ALL SELECT n + 1, s || s FROM t WHERE n < 40) "
           "SELECT max(n), max(length(s)) FROM t")
    assert_refused(lserver, protocol, sql, "54000", "max_value_bytes", user="ann")
    assert run(lserver, protocol, sql.replace("n < 40", "n < 10")) == [(10, 512)]
    alive_and_bounded(lserver)


def test_memory_guard_cancels_the_largest_statement_with_53200(serve, lakehouse, tmp_path):
    """The process guard: a statement whose memory grows (here an array of 60M values, held in
    the pool) is cancelled with 53200 when the process nears `process_memory_limit`, before
    the pool's own limit would stop it, and the process's peak stays under the limit."""
    limit = 512 << 20
    config = tmp_path / "guard.toml"
    config.write_text('[engine]\nmemory_limit = "500MiB"\n'
                      f'[limits]\nprocess_memory_limit = "{limit >> 20}MiB"\n')
    server = serve(lakehouse.rx.data_dir, config=config)
    # An idle session holds nothing; the busy one is the one cancelled.
    with pg(server) as idle, pg(server) as busy:
        assert idle.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.Error) as err:
            busy.execute("SELECT cardinality(array_agg(x)) FROM generate_series(1, 60000000) t(x)").fetchall()
        assert err.value.sqlstate == "53200", err.value
        assert "process_memory_limit" in str(err.value)
        assert idle.execute("SELECT 2").fetchone() == (2,)
        assert busy.execute("SELECT 3").fetchone() == (3,)
    assert server.alive()
    assert vm_hwm(server) < limit, f"peak RSS {vm_hwm(server) >> 20} MiB"
