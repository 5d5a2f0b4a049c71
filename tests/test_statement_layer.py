"""The statement layer's user-visible gaps (issue 21 §6), over the real server:

- `?` placeholders under Flight SQL, as ADBC's DB-API (paramstyle qmark) and JDBC write them:
  in statements and in prepared statements, numbered in order; mixing `?` with `$n` is a
  syntax error; pgwire keeps PostgreSQL's meaning (`?` is no placeholder there).
- `SHOW PARTITIONS t [PARTITION (k=v)]` on Iceberg tables, from the current snapshot, in
  Hive's `k=v/k2=v2` form, under both protocols; governed like the metadata tables (only a
  principal who sees the table whole gets its partitions).
- Hive's SHOW answers with rows through the extended protocol too (one `returns_rows`).
"""
from __future__ import annotations

import adbc_driver_manager
import psycopg
import pytest

from conftest import TEST_USER
# The policy tests' server (demo roles, the repository's policy, a pseudonym key) and their
# clients, for these tests too.
from test_policy import adbc as policy_adbc, pg as policy_pg, pserver  # noqa: F401  (a fixture)


def pg(server, user=TEST_USER):
    return policy_pg(server, user)


def adbc(server, user=TEST_USER):
    return policy_adbc(server, user)


def flight_rows(server, sql, params=None, user=TEST_USER):
    with adbc(server, user) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return [tuple(r) for r in cur.fetchall()]


# ---------------------------------------------------------------------------- ? placeholders

def test_question_marks_are_parameters_under_flight_sql(pserver):
    with pg(pserver) as conn:
        state, = conn.execute("SELECT presc_state FROM health.prescriber_drug GROUP BY presc_state "
                              "ORDER BY count(*) DESC LIMIT 1").fetchone()
        want = conn.execute("SELECT npi, drug_name FROM health.prescriber_drug WHERE presc_state = %s "
                            "AND trx_cnt > %s ORDER BY npi, drug_name", (state, 20)).fetchall()
    assert want
    sql = ("SELECT npi, drug_name FROM health.prescriber_drug WHERE presc_state = ? AND trx_cnt > ? "
           "ORDER BY npi, drug_name")
    # DB-API execute with qmark parameters (ADBC binds them to a prepared statement).
    assert flight_rows(pserver, sql, (state, 20)) == want
    with adbc(pserver) as conn, conn.cursor() as cur:
        params = cur.adbc_prepare(sql)
        assert params is not None and params.names == ["$1", "$2"], params
        for floor in (20, 50):
            cur.execute(sql, (state, floor))
            with pg(pserver) as c:
                expected = c.execute("SELECT npi, drug_name FROM health.prescriber_drug WHERE presc_state = %s "
                                     "AND trx_cnt > %s ORDER BY npi, drug_name", (state, floor)).fetchall()
            assert [tuple(r) for r in cur.fetchall()] == expected
    # A `?` inside a literal or a quoted name is text, not a parameter.
    assert flight_rows(pserver, "SELECT '?' AS \"q?\", ? AS p", ("x",)) == [("?", "x")]


def test_mixing_question_marks_and_numbered_parameters_is_a_syntax_error(pserver):
    with adbc(pserver) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELECT ? AS a, $1 AS b", ("x",))
            cur.fetchall()
    assert "cannot mix ? and $n placeholders" in str(err.value), err.value
    with adbc(pserver) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]


def test_question_mark_is_no_placeholder_under_pgwire(pserver):
    with pg(pserver) as conn:
        with pytest.raises(psycopg.Error) as err:
            # psycopg sends the text as is (no client-side parameters): `?` is an operator.
            conn.execute("SELECT 1 WHERE 1 = ?", prepare=False)
        assert err.value.sqlstate == "42601", err.value
        assert conn.execute("SELECT 2").fetchone() == (2,)


# ---------------------------------------------------------------------------- SHOW PARTITIONS

def expected_partitions(server, where=""):
    with pg(server) as conn:
        rows = conn.execute("SELECT DISTINCT delivery_date, presc_state FROM health.prescriber_drug "
                            f"{where} ORDER BY 1, 2").fetchall()
    return [f"delivery_date={d}/presc_state={s if s is not None else '__HIVE_DEFAULT_PARTITION__'}"
            for d, s in rows]


def test_show_partitions_of_an_iceberg_table(pserver):
    want = expected_partitions(pserver)
    assert len(want) > 10, want
    with pg(pserver) as conn:
        got = [r[0] for r in conn.execute("SHOW PARTITIONS health.prescriber_drug").fetchall()]
        assert got == want
        ca = [r[0] for r in conn.execute("SHOW PARTITIONS health.prescriber_drug PARTITION (presc_state='CA')")]
        assert ca == expected_partitions(pserver, "WHERE presc_state = 'CA'") and ca
        day = want[0].split("/")[0].split("=")[1]
        one = [r[0] for r in conn.execute(
            f"SHOW PARTITIONS health.prescriber_drug PARTITION (delivery_date='{day}', presc_state='CA')")]
        assert one == [p for p in ca if p.startswith(f"delivery_date={day}/")]
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SHOW PARTITIONS health.prescriber_drug PARTITION (nope='x')")
        assert err.value.sqlstate == "22023", err.value
    assert [r[0] for r in flight_rows(pserver, "SHOW PARTITIONS health.prescriber_drug")] == want


def test_show_partitions_is_governed_like_metadata_tables(pserver):
    # The analyst reads the table masked, the auditor filtered to CA: partition values would
    # show what they cannot query (other states' deliveries), so neither gets them.
    for user in ("ann", "auditor_ca"):
        with pg(pserver, user) as conn:
            with pytest.raises(psycopg.Error) as err:
                conn.execute("SHOW PARTITIONS health.prescriber_drug").fetchall()
            assert err.value.sqlstate == "42501", (user, err.value)
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_hive_show_returns_rows_through_the_extended_protocol(pserver):
    with pg(pserver) as conn:
        # prepare=True sends Parse/Bind/Describe/Execute: the portal must describe rows.
        tables = conn.execute("SHOW TABLES IN health", prepare=True).fetchall()
        assert ("prescriber_drug",) in tables
        cur = conn.execute("SHOW PARTITIONS health.prescriber_drug", prepare=True)
        assert [c.name for c in cur.description] == ["partition"]
        assert len(cur.fetchall()) == len(expected_partitions(pserver))
