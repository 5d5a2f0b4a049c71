"""The PostgreSQL wire frontend, driven by real clients: the psql binary
(simple query protocol) and psycopg 3 (extended protocol, server-side
parameters), over the reference lakehouse of delivery D1."""
from __future__ import annotations

import shutil
import subprocess
import time

import psycopg
import pytest

from conftest import start_server, stop_server


def psql(server, sql: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("psql")
    assert exe, "psql is not installed (postgresql-client); scripts/test installs it"
    p = subprocess.run([exe, "-h", server.host, "-p", str(server.port), "-U", "rxgate",
                        "-d", "rxgate", "-X", "-Atc", sql],
                       env=server.pg_env(), capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"psql failed ({p.returncode}): {p.stderr}\n" \
                                  f"server log:\n{server.log_text()[-3000:]}"
    return p


def test_psql_count_equals_loaded(server, lakehouse, oracle_d1):
    out = psql(server, "SELECT count(*) FROM health.prescriber_drug").stdout.strip()
    assert out == str(oracle_d1.loaded) == str(lakehouse.pipeline["loaded"])


def busiest_state(oracle) -> str:
    """CA as the brief asks, unless the generated data has none."""
    if oracle.scalar("SELECT count(*) FROM prescriber_drug WHERE presc_state = 'CA'"):
        return "CA"
    return oracle.scalar("SELECT presc_state FROM prescriber_drug GROUP BY 1 "
                         "ORDER BY count(*) DESC, 1 LIMIT 1")


def test_psycopg_extended_protocol_parameter(server, oracle_d1):
    state = busiest_state(oracle_d1)
    want = oracle_d1.scalar("SELECT count(*) FROM prescriber_drug WHERE presc_state = $s",
                            {"s": state})
    assert want > 0
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("select count(*) from health.prescriber_drug where presc_state = %s",
                        (state,))
            assert cur.fetchone()[0] == want
            # Named prepared statement, executed repeatedly (binary after 5 uses
            # in pgjdbc; psycopg prepares server-side on demand).
            for _ in range(3):
                cur.execute("select count(*) from health.prescriber_drug "
                            "where presc_state = %s", (state,), prepare=True)
                assert cur.fetchone()[0] == want
            cur.execute("select count(*) from health.prescriber_drug where presc_state = %s",
                        ("ZZ",))
            assert cur.fetchone()[0] == 0


def test_bad_sql_gets_sqlstate_and_server_survives(server, oracle_d1):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with conn.cursor() as cur:
            with pytest.raises(psycopg.Error) as syntax:
                cur.execute("SELEC count(*) FROM health.prescriber_drug")
            assert syntax.value.sqlstate == "42601", syntax.value
            with pytest.raises(psycopg.Error) as missing:
                cur.execute("SELECT * FROM health.no_such_table")
            assert missing.value.sqlstate == "42P01", missing.value
            # The same connection goes on working.
            cur.execute("SELECT count(*) FROM health.prescriber_drug")
            assert cur.fetchone()[0] == oracle_d1.loaded
    # psql sees an ERROR with a non-zero exit; the server still serves.
    p = psql(server, "SELEC 1", check=False)
    assert p.returncode != 0 and "ERROR" in p.stderr, p
    assert server.alive(), server.log_text()[-3000:]
    assert psql(server, "SELECT 1").stdout.strip() == "1"


def test_serve_fixture_restarts_cleanly(rxgate_bin, lakehouse, tmp_path):
    """Stopping the server frees the port; a second server starts on the data."""
    s = start_server(rxgate_bin, lakehouse.rx.data_dir, tmp_path / "a.log")
    deadline = time.monotonic() + 10
    while "listening" not in s.log_text().lower() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "listening" in s.log_text().lower(), s.log_text()[-2000:]
    stop_server(s)
    assert not s.alive()
    s2 = start_server(rxgate_bin, lakehouse.rx.data_dir, tmp_path / "b.log")
    try:
        assert psql(s2, "SELECT 1").stdout.strip() == "1"
    finally:
        stop_server(s2)


#: The top-5 report's ranking, computed live from the facts (W2's query).
LIVE_TOP5 = """
WITH per_npi AS (
  SELECT npi, presc_state, CAST(sum(trx_cnt) AS BIGINT) AS trx_cnt
  FROM health.prescriber_drug WHERE years_of_exp BETWEEN 20 AND 50
  GROUP BY npi, presc_full_name, presc_state, country_name, years_of_exp
), ranked AS (
  SELECT *, dense_rank() OVER (PARTITION BY presc_state ORDER BY trx_cnt DESC NULLS LAST) AS rank
  FROM per_npi
)
SELECT npi, presc_state, trx_cnt, rank FROM ranked WHERE rank <= 5
"""


@pytest.mark.parametrize("binary", [False, True])
def test_top_n_per_group_prefilter_keeps_the_oracles_rows(server, oracle_d1, binary):
    """`rank <= 5` over a per-state ranking runs with the top-N prefilter (WindowTopKExec
    in the plan), and returns exactly the oracle's rows, ties included."""
    def norm(rows):
        return sorted((str(npi), state, int(trx), int(rank)) for npi, state, trx, rank in rows)
    want = norm(oracle_d1.con.execute("SELECT npi, presc_state, trx_cnt, rank FROM top_prescribers").fetchall())
    assert len(want) > 50
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        plan = "\n".join(r[1] for r in conn.execute("EXPLAIN " + LIVE_TOP5).fetchall())
        assert "WindowTopKExec: k=5" in plan, plan
        with conn.cursor(binary=binary) as cur:
            got = norm(cur.execute(LIVE_TOP5).fetchall())
    assert got == want
