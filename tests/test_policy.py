"""Access policies (issue 5): each role of the demo policy against each leak class, through
pgwire (psycopg) and Flight SQL (ADBC, pyarrow.flight), plus the audit trail, the admin
statements, hot reload and `rxgate policy check`.

Roles (catalog/policies.toml): admin sees everything; analyst sees NPIs as keyed pseudonyms,
names redacted, small cells (1..10) as NULL; state_auditor (auditor_ca, CA) sees only
California's rows; public sees the two report tables only. The server gets a known pseudonym
key so the expected pseudonyms can be computed here, and a copy of the policy file so the
hot-reload test can edit it."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pyarrow.flight as flight
import pytest

import flightsql_proto as proto
from conftest import TEST_PASSWORD, TEST_USER, start_server_with_roles, stop_server
from rxcli import REPO_ROOT, Rxgate

KEY = "test-pseudonym-key-0123456789"
USERS = {"ann": "analyst", "auditor_ca": "state_auditor", "pat": "public"}
PASSWORD = "policy-test-pw"


#: The system tables every user reads, each showing only its own rows (issue 25).
MONITORING = {"queries", "query_history", "sessions"}

def pseudonym(npi: str) -> str:
    return "k1:" + hmac.new(KEY.encode(), npi.encode(), hashlib.sha256).hexdigest()[:32]


@pytest.fixture(scope="module")
def pserver(rxgate_bin, lakehouse, tmp_path_factory):
    d = tmp_path_factory.mktemp("policy")
    policy = d / "policies.toml"
    shutil.copy(REPO_ROOT / "catalog" / "policies.toml", policy)
    config = d / "rxgate.toml"
    config.write_text(f'[policy]\nfile = "{policy}"\n[audit]\ndir = "{d / "audit"}"\n')
    s = start_server_with_roles(rxgate_bin, lakehouse.rx.data_dir, d, config, USERS, PASSWORD,
                                env={"RXGATE_PSEUDONYM_KEY": KEY})
    s.policy_file = policy
    s.audit_dir = d / "audit"
    yield s
    stop_server(s)


def pg(server, user: str):
    password = TEST_PASSWORD if user == TEST_USER else PASSWORD
    return psycopg.connect(server.dsn(user=user, password=password), autocommit=True)


def rows(server, user: str, sql: str, params=None):
    with pg(server, user) as conn:
        return conn.execute(sql, params).fetchall()


def pg_error(server, user: str, sql: str) -> psycopg.Error:
    with pg(server, user) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(sql).fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
        return err.value


def adbc(server, user: str):
    password = TEST_PASSWORD if user == TEST_USER else PASSWORD
    return flight_sql.connect(server.flight_uri(), db_kwargs={"username": user, "password": password},
                              autocommit=True)


def flight_rows(server, user: str, sql: str):
    with adbc(server, user) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]


@pytest.fixture(scope="module")
def truth(pserver):
    """What the admin sees: real NPIs, names and counts."""
    npis = {r[0] for r in rows(pserver, TEST_USER, "SELECT DISTINCT npi FROM health.prescriber_drug")}
    names = {r[0] for r in rows(pserver, TEST_USER, "SELECT DISTINCT presc_last_name FROM health.prescriber_drug "
                                                    "WHERE presc_last_name IS NOT NULL")}
    ca = rows(pserver, TEST_USER, "SELECT count(*) FROM health.prescriber_drug WHERE presc_state = 'CA'")[0][0]
    total = rows(pserver, TEST_USER, "SELECT count(*) FROM health.prescriber_drug")[0][0]
    small = rows(pserver, TEST_USER, "SELECT count(*) FROM health.prescriber_drug WHERE bene_count BETWEEN 1 AND 10")[0][0]
    assert len(npis) > 100 and ca > 0 and total > ca and small > 0
    return {"npis": npis, "names": names, "ca": ca, "total": total, "small": small}


def assert_no_secret(text: str, truth) -> None:
    """No real NPI, real last name or the key in a result, a message or a plan."""
    assert KEY not in text
    found = set(re.findall(r"\b\d{10}\b", text)) & truth["npis"]
    assert not found, f"real NPIs leaked: {sorted(found)[:3]}"


# --------------------------------------------------------------------------- analyst

ANALYST_QUERIES = {
    "select": "SELECT npi, presc_last_name, presc_full_name FROM health.prescriber_drug",
    "filter": "SELECT npi FROM health.prescriber_drug WHERE npi LIKE '1%' OR npi LIKE 'k1:%'",
    "group": "SELECT npi, count(*) FROM health.prescriber_drug GROUP BY npi",
    "union": "SELECT npi FROM health.prescriber_drug UNION SELECT npi FROM health.top_prescribers",
    "subquery": "SELECT s.npi FROM (SELECT npi FROM health.prescriber_drug WHERE trx_cnt > 0) s "
                "WHERE s.npi IN (SELECT npi FROM health.top_prescribers)",
    "cte": "WITH x AS (SELECT npi, presc_last_name AS n FROM health.prescriber_drug) SELECT npi, n FROM x",
}


@pytest.mark.parametrize("leak", sorted(ANALYST_QUERIES))
@pytest.mark.parametrize("protocol", ["pgwire", "flight"])
def test_analyst_never_sees_raw_npis_or_names(pserver, truth, leak, protocol):
    sql = ANALYST_QUERIES[leak]
    got = rows(pserver, "ann", sql) if protocol == "pgwire" else flight_rows(pserver, "ann", sql)
    assert got
    for r in got:
        npi = r[0]
        assert npi is None or (npi.startswith("k1:") and len(npi) == 35), r
        for v in r[1:]:
            if isinstance(v, str):
                assert v not in truth["names"] and re.fullmatch(r"[xXn '\-.,&/]*", v), r
    assert_no_secret(repr(got), truth)


def test_pseudonyms_are_keyed_stable_and_joinable(pserver, truth):
    real = rows(pserver, TEST_USER, "SELECT npi, count(*) FROM health.prescriber_drug GROUP BY npi ORDER BY npi")
    masked = dict(rows(pserver, "ann", "SELECT npi, count(*) FROM health.prescriber_drug GROUP BY npi"))
    assert masked == {pseudonym(n): c for n, c in real}
    # A filter on the masked column sees masked values: the real NPI finds nothing.
    some = sorted(truth["npis"])[0]
    assert rows(pserver, "ann", "SELECT count(*) FROM health.prescriber_drug WHERE npi = %s", (some,)) == [(0,)]
    assert rows(pserver, "ann", "SELECT count(*) FROM health.prescriber_drug WHERE npi = %s",
                (pseudonym(some),))[0][0] == dict(real)[some]
    # Joins on the pseudonym agree with joins on the real NPI.
    join = ("SELECT count(*) FROM health.prescriber_drug p JOIN health.top_prescribers t "
            "ON p.npi = t.npi AND p.delivery_date = t.delivery_date")
    assert rows(pserver, "ann", join) == rows(pserver, TEST_USER, join) != [(0,)]


def test_aggregates_over_pseudonyms_equal_those_over_real_npis(pserver, truth):
    """The engine counts and groups by the real NPI and masks only the groups (the injective
    mask rule): results equal the admin's with each NPI pseudonymised, and nothing raw shows."""
    distinct = ("SELECT presc_state, count(DISTINCT npi), count(npi), sum(total_drug_cost) FROM health.prescriber_drug "
                "WHERE years_of_exp >= 10 GROUP BY presc_state ORDER BY presc_state")
    assert rows(pserver, "ann", distinct) == rows(pserver, TEST_USER, distinct)
    grouped = ("SELECT npi, presc_state, count(*), count(DISTINCT drug_name) FROM health.prescriber_drug "
               "WHERE presc_state IN ('CA', 'NY') GROUP BY npi, presc_state")
    real = rows(pserver, TEST_USER, grouped)
    masked = rows(pserver, "ann", grouped)
    assert sorted(masked, key=repr) == sorted([(n and pseudonym(n), s, c, d) for n, s, c, d in real], key=repr)
    assert len(masked) > 100
    # Above the aggregate the column is the masked one again: ORDER BY, HAVING and an outer
    # filter see pseudonyms, and max() (not rewritten) too.
    top = rows(pserver, "ann", "SELECT npi, count(*) AS n FROM health.prescriber_drug GROUP BY npi "
                               "HAVING count(*) > 1 AND npi >= 'k1:8' ORDER BY npi LIMIT 5")
    assert top and all(n.startswith("k1:8") or n > "k1:8" for n, _ in top)
    assert top == sorted(top)
    nested = rows(pserver, "ann", "SELECT max(npi), count(*) FROM (SELECT npi FROM health.prescriber_drug "
                                  "GROUP BY npi) g WHERE npi LIKE 'k1:%'")
    real_npis = [n for n in truth["npis"] if n is not None]
    assert nested == [(max(pseudonym(n) for n in real_npis), len(real_npis))]
    plan = "\n".join(r[1] for r in rows(pserver, "ann", "EXPLAIN " + grouped))
    assert "rxgate_pseudonym" in plan
    assert_no_secret(repr(masked) + plan, truth)


def test_small_cells_are_suppressed(pserver, truth):
    assert rows(pserver, "ann", "SELECT count(*) FROM health.prescriber_drug WHERE bene_count BETWEEN 1 AND 10") == [(0,)]
    nulls = rows(pserver, "ann", "SELECT count(*) FROM health.prescriber_drug WHERE bene_count IS NULL")[0][0]
    real_nulls = rows(pserver, TEST_USER, "SELECT count(*) FROM health.prescriber_drug WHERE bene_count IS NULL")[0][0]
    assert nulls == real_nulls + truth["small"]
    # Unmasked columns are untouched, types included.
    q = "SELECT round(sum(total_drug_cost)), min(delivery_date), max(npi IS NULL) FROM health.prescriber_drug"
    assert rows(pserver, "ann", q) == rows(pserver, TEST_USER, q)


def test_explain_errors_and_prepared_statements_leak_nothing(pserver, truth):
    some = sorted(truth["npis"])[1]
    plan = rows(pserver, "ann", f"EXPLAIN SELECT npi FROM health.prescriber_drug WHERE npi = '{pseudonym(some)}'")
    text = repr(plan)
    assert "rxgate_pseudonym" in text and KEY not in text
    err = pg_error(pserver, "ann", "SELECT CAST(npi AS bigint) FROM health.prescriber_drug")
    assert_no_secret(str(err), truth)
    err = pg_error(pserver, "ann", "SELECT no_such_column FROM health.prescriber_drug")
    assert err.sqlstate == "42703"
    with pg(pserver, "ann") as conn:
        for _ in range(3):
            got = conn.execute("SELECT npi FROM health.prescriber_drug WHERE presc_state = %s LIMIT 20",
                               ("CA",), prepare=True).fetchall()
            assert got and all(r[0].startswith("k1:") for r in got)
    # The pseudonym function cannot be called by users (it would make a dictionary).
    assert pg_error(pserver, "ann", f"SELECT rxgate_pseudonym('{some}')").sqlstate in ("42883", "42000", "0A000", "42601", "22000")


def test_views_need_the_create_privilege(pserver):
    # The analyst reads health but may not create in it (tests/test_views.py covers views).
    err = pg_error(pserver, "ann", "CREATE VIEW v AS SELECT npi FROM health.prescriber_drug")
    assert err.sqlstate == "42501"


# --------------------------------------------------------------------------- state auditor

AUDITOR_QUERIES = {
    "select": "SELECT DISTINCT presc_state FROM health.prescriber_drug",
    "filter": "SELECT DISTINCT presc_state FROM health.prescriber_drug WHERE presc_state <> 'CA' OR presc_state = 'CA'",
    "union": "SELECT presc_state FROM health.prescriber_drug UNION SELECT presc_state FROM health.top_prescribers",
    "subquery": "SELECT DISTINCT presc_state FROM (SELECT * FROM health.prescriber_drug) s",
    "cte": "WITH x AS (SELECT presc_state FROM health.prescriber_drug) SELECT DISTINCT presc_state FROM x",
    "join": "SELECT DISTINCT p.presc_state FROM health.prescriber_drug p JOIN health.us_cities c "
            "ON c.state_id = p.presc_state",
}


@pytest.mark.parametrize("leak", sorted(AUDITOR_QUERIES))
@pytest.mark.parametrize("protocol", ["pgwire", "flight"])
def test_state_auditor_sees_only_her_state(pserver, leak, protocol):
    sql = AUDITOR_QUERIES[leak]
    got = rows(pserver, "auditor_ca", sql) if protocol == "pgwire" else flight_rows(pserver, "auditor_ca", sql)
    assert got == [("CA",)]


def test_state_auditor_counts_and_unmasked_columns(pserver, truth):
    assert rows(pserver, "auditor_ca", "SELECT count(*) FROM health.prescriber_drug") == [(truth["ca"],)]
    assert rows(pserver, "auditor_ca", "SELECT count(*) FROM health.prescriber_drug WHERE presc_state = 'NY'") == [(0,)]
    npis = {r[0] for r in rows(pserver, "auditor_ca", "SELECT DISTINCT npi FROM health.prescriber_drug")}
    assert npis <= truth["npis"] and npis  # all columns, real values
    states = rows(pserver, "auditor_ca", "SELECT DISTINCT state_name FROM health.city_report")
    assert states == [("CALIFORNIA",)]


# --------------------------------------------------------------------------- public

def test_public_sees_only_the_reports(pserver):
    assert pg_error(pserver, "pat", "SELECT count(*) FROM health.prescriber_drug").sqlstate == "42P01"
    assert pg_error(pserver, "pat", "SELECT npi FROM health.top_prescribers").sqlstate == "42703"
    assert pg_error(pserver, "pat", "SELECT * FROM system.audit_log").sqlstate == "42P01"
    assert rows(pserver, "pat", "SELECT count(*) FROM health.city_report")[0][0] > 0
    cols = [c for (c,) in rows(pserver, "pat", "SELECT column_name FROM information_schema.columns "
                                               "WHERE table_name = 'top_prescribers' ORDER BY ordinal_position")]
    assert "npi" not in cols and "presc_full_name" not in cols and "trx_cnt" in cols
    tables = {r[0] for r in rows(pserver, "pat", "SELECT relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                                                 "ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')")}
    # Besides its grants, every user reads the self-filtered monitoring tables of system.
    assert tables == {"city_report", "top_prescribers"} | MONITORING, tables


def test_catalog_listings_show_only_what_may_be_queried(pserver):
    def schemas(user):
        return {r[0] for r in rows(pserver, user, "SELECT schema_name FROM information_schema.schemata")}
    assert {"health", "health_quarantine", "system"} <= schemas(TEST_USER)
    assert "health" in schemas("ann") and "health_quarantine" not in schemas("ann")
    system = {r[0] for r in rows(pserver, "ann", "SELECT table_name FROM information_schema.tables "
                                                "WHERE table_schema = 'system'")}
    assert system == MONITORING, system
    with adbc(pserver, "pat") as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    listed = {t["table_name"] for c in objects for s in c["catalog_db_schemas"] or [] for t in s["db_schema_tables"] or []
              if s["db_schema_name"] not in ("pg_catalog", "information_schema")}
    assert listed == {"city_report", "top_prescribers"} | MONITORING, listed
    with adbc(pserver, "pat") as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error):
            cur.execute("SELECT count(*) FROM health.prescriber_drug")
            cur.fetchall()


def test_flight_ticket_of_another_user_is_refused(pserver):
    admin = flight.FlightClient(pserver.flight_uri())
    token = admin.authenticate_basic_token(TEST_USER, TEST_PASSWORD)
    info = admin.get_flight_info(proto.statement_query("SELECT npi FROM health.prescriber_drug LIMIT 5"),
                                 flight.FlightCallOptions(headers=[token]))
    analyst = flight.FlightClient(pserver.flight_uri())
    token2 = analyst.authenticate_basic_token("ann", PASSWORD)
    with pytest.raises(flight.FlightUnauthorizedError if hasattr(flight, "FlightUnauthorizedError") else flight.FlightError) as err:
        analyst.do_get(info.endpoints[0].ticket, flight.FlightCallOptions(headers=[token2])).read_all()
    assert not re.search(r"\b\d{10}\b", str(err.value))


@pytest.mark.parametrize("user", ["ann", "auditor_ca"])
def test_flight_prepared_statements_are_secured(pserver, user):
    sql = "SELECT npi, presc_state FROM health.prescriber_drug WHERE trx_cnt > $1 ORDER BY npi LIMIT 200"
    with adbc(pserver, user) as conn, conn.cursor() as cur:
        cur.adbc_prepare(sql)
        cur.execute(sql, (20,))
        got = cur.fetchall()
    assert got
    if user == "ann":
        assert all(r[0].startswith("k1:") for r in got)
    else:
        assert {r[1] for r in got} == {"CA"}
    assert got == [tuple(r) for r in rows(pserver, user, sql.replace("$1", "%s"), (20,))]


def test_pgwire_and_flight_agree_for_the_analyst(pserver):
    sql = "SELECT npi, presc_full_name, bene_count FROM health.prescriber_drug ORDER BY npi, drug_name LIMIT 300"
    assert rows(pserver, "ann", sql) == flight_rows(pserver, "ann", sql)


# --------------------------------------------------------------------------- admin statements

def test_show_grants_and_policies(pserver):
    mine = rows(pserver, "ann", "SHOW GRANTS")
    assert {(r[0], r[1]) for r in mine} >= {("analyst", "SELECT"), ("analyst", "MASK")}
    assert any(r[1] == "MASK" and r[4] == "pseudonym" for r in mine)
    assert pg_error(pserver, "ann", "SHOW GRANTS FOR auditor_ca").sqlstate == "42501"
    assert pg_error(pserver, "ann", "SHOW POLICIES").sqlstate == "42501"
    theirs = rows(pserver, TEST_USER, "SHOW GRANTS FOR auditor_ca")
    assert any(r[1] == "ROW FILTER" and "attribute('state')" in r[4] for r in theirs)
    policies = rows(pserver, TEST_USER, "SHOW POLICIES")
    assert policies[0][0] == "STATUS" and "reload errors: 0" in policies[0][4]
    assert {r[0] for r in policies} >= {"ROLE", "GRANT", "MASK", "ROW FILTER"}


def test_policy_check_prints_the_rewritten_plan(pserver, rxgate_bin, lakehouse):
    rx = Rxgate(rxgate_bin, lakehouse.rx.data_dir)
    out = rx.run("policy", "check", "--user", "ann", "SELECT npi FROM health.prescriber_drug WHERE presc_state = 'CA'",
                 env={"RXGATE_USERS_FILE": str(pserver.users_file), "RXGATE_POLICY_FILE": str(pserver.policy_file),
                      "RXGATE_PSEUDONYM_KEY": KEY}).stdout
    assert "roles: analyst" in out and "health.prescriber_drug.npi: pseudonym" in out
    assert "rxgate_pseudonym" in out and "TableScan" in out
    out = rx.run("policy", "check", "--user", "auditor_ca", "SELECT count(*) FROM health.prescriber_drug",
                 env={"RXGATE_USERS_FILE": str(pserver.users_file), "RXGATE_POLICY_FILE": str(pserver.policy_file),
                      "RXGATE_PSEUDONYM_KEY": KEY}).stdout
    assert "presc_state = 'CA'" in out


# --------------------------------------------------------------------------- audit

def test_audit_records_statements_and_logins(pserver):
    marker = "audit-marker-7731"
    assert rows(pserver, "ann", f"SELECT npi, '{marker}' AS m FROM health.prescriber_drug LIMIT 7")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pserver.dsn(user="ann", password="wrong"), autocommit=True)
    pg_error(pserver, "pat", f"SELECT '{marker}-denied' FROM health.prescriber_drug")
    time.sleep(0.3)
    lines = [json.loads(l) for l in (pserver.audit_dir / "audit.jsonl").read_text().splitlines()]
    mine = [r for r in lines if marker in r["statement"] and r["user"] == "ann"]
    assert len(mine) == 1, mine
    r = mine[0]
    assert r["kind"] == "statement" and r["protocol"] == "pgwire" and r["roles"] == ["analyst"]
    assert r["rows"] == 7 and r["outcome"] == "ok" and r["duration_ms"] >= 0
    assert r["client_addr"].startswith("127.0.0.1:")
    assert "rxgate.health.prescriber_drug" in r["tables"]
    assert "health.prescriber_drug.npi: pseudonym" in r["masks"]
    denied = [r for r in lines if f"{marker}-denied" in r["statement"]]
    assert denied and denied[0]["outcome"] == "error" and denied[0]["error_code"] == "TableNotFound"
    logins = [r for r in lines if r["kind"] == "login" and r["user"] == "ann"]
    assert any(r["outcome"] == "error" and r["error_code"] == "AuthFailed" for r in logins)
    assert any(r["outcome"] == "ok" for r in logins)
    # Admins read the trail in SQL; others cannot see it.
    got = rows(pserver, TEST_USER, "SELECT \"user\", rows, outcome FROM system.audit_log WHERE statement LIKE %s",
               (f"%{marker}' AS m%",))
    assert ("ann", 7, "ok") in got
    assert pg_error(pserver, "ann", "SELECT count(*) FROM system.audit_log").sqlstate == "42P01"
    # Flight statements are audited too.
    flight_rows(pserver, "ann", f"SELECT '{marker}-flight' AS m")
    time.sleep(0.3)
    lines = [json.loads(l) for l in (pserver.audit_dir / "audit.jsonl").read_text().splitlines()]
    fl = [r for r in lines if f"{marker}-flight" in r["statement"]]
    assert fl and fl[-1]["protocol"] == "flightsql" and fl[-1]["rows"] == 1


# --------------------------------------------------------------------------- hot reload (last)

def test_hot_reload_keeps_the_last_good_policy(pserver):
    original = pserver.policy_file.read_text()
    try:
        # Grant public the fact table: takes effect without a restart.
        pserver.policy_file.write_text(original + '\n[[grant]]\nroles = ["public"]\nschema = "health"\n'
                                                  'table = "prescriber_drug"\ncolumns = ["presc_state"]\n')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                got = rows(pserver, "pat", "SELECT count(DISTINCT presc_state) FROM health.prescriber_drug")
                break
            except psycopg.Error:
                time.sleep(0.3)
        else:
            raise AssertionError("the new grant never took effect")
        assert got[0][0] > 10
        # A broken file: the last good policy stays in force, SHOW POLICIES says why.
        pserver.policy_file.write_text(original + "\n[[grant]]\nroles = [\"nobody\"]\n")
        time.sleep(1.5)
        assert rows(pserver, "pat", "SELECT count(DISTINCT presc_state) FROM health.prescriber_drug")[0][0] > 10
        status = rows(pserver, TEST_USER, "SHOW POLICIES")[0]
        assert "reload errors: 1" in status[4] and "nobody" in status[4]
        assert "policy file invalid" in pserver.log_text()
    finally:
        pserver.policy_file.write_text(original)
        time.sleep(1.5)
    assert pg_error(pserver, "pat", "SELECT count(*) FROM health.prescriber_drug").sqlstate == "42P01"
