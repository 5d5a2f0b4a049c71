"""Iceberg DBA features (issue 6 §6) over pgwire (psycopg, psql), Flight SQL (ADBC) and the
`rxgate catalog …` CLI: metadata tables, time travel, rollback, schema and partition
evolution, and the policy on all of them.

The module's lakehouse has two deliveries (D1, D2), so every pipeline table has two
snapshots. TEST_USER is an admin; the tests add an analyst (masked npi and names), the
policy's CA state auditor (row filter) and a public user (two report tables only)."""
from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from conftest import D1, D2, D3, TEST_PASSWORD, TEST_USER, add_user, start_server, stop_server
from rxcli import Rxgate, parse_csv

FACTS = "health.prescriber_drug"
KEY = "dba-pseudonym-key-0123456789"
USERS = {"dba_analyst": ("analyst", "analyst-pw"), "auditor_ca": ("state_auditor", "auditor-pw"),
         "dba_public": ("public", "public-pw")}


@pytest.fixture(scope="module")
def lake(rxgate_bin, dataset, tmp_path_factory) -> Rxgate:
    rx = Rxgate(rxgate_bin, tmp_path_factory.mktemp("dba-lake"))
    rx.pipeline(dataset.root, D1)
    rx.pipeline(dataset.root, D2)
    return rx


@pytest.fixture(scope="module")
def srv(rxgate_bin, lake, tmp_path_factory):
    d = tmp_path_factory.mktemp("dba-serve")
    # External tables may point under pytest's temporary directories (never the warehouse).
    config = d / "rxgate.toml"
    config.write_text(f'[external]\nallowed_locations = ["{tmp_path_factory.getbasetemp()}"]\n')
    s = start_server(rxgate_bin, lake.data_dir, d / "serve.log", env={"RXGATE_PSEUDONYM_KEY": KEY},
                     config=config)
    for user, (role, password) in USERS.items():
        add_user(rxgate_bin, s.users_file, user, password, "--role", role)
    yield s
    stop_server(s)


def connect(srv, user=TEST_USER):
    password = TEST_PASSWORD if user == TEST_USER else USERS[user][1]
    return psycopg.connect(srv.dsn(user=user, password=password), autocommit=True)


def q(srv, sql, params=None, user=TEST_USER):
    with connect(srv, user) as conn:
        return conn.execute(sql, params).fetchall()


def one(srv, sql, params=None, user=TEST_USER):
    rows = q(srv, sql, params, user)
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def pg_error(srv, sql, user=TEST_USER) -> psycopg.Error:
    with connect(srv, user) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(sql).fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
        return err.value


def psql(srv, sql: str) -> str:
    exe = shutil.which("psql")
    assert exe, "psql is not installed (postgresql-client); scripts/test installs it"
    p = subprocess.run([exe, "-h", srv.host, "-p", str(srv.port), "-U", TEST_USER, "-d", "rxgate", "-X",
                        "-v", "ON_ERROR_STOP=1", "-Atc", sql], env=srv.pg_env(), capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"psql failed: {p.stderr}"
    return p.stdout.strip()


def pseudonym(npi: str) -> str:
    return "k1:" + hmac.new(KEY.encode(), npi.encode(), hashlib.sha256).hexdigest()[:32]


def snapshots(srv, table=FACTS):
    """(snapshot_id, parent_id, committed_at) oldest first."""
    db, t = table.split(".")
    return q(srv, f'SELECT snapshot_id, parent_id, committed_at FROM {db}."{t}$snapshots" ORDER BY committed_at')


def current_snapshot(srv, table):
    rows = q(srv, f"DESCRIBE FORMATTED {table}")
    return int(next(r[1] for r in rows if r[0] == "Current Snapshot"))


def data_files_on_disk(lake: Rxgate, table: str) -> set[str]:
    db, t = table.split(".")
    return {str(p) for p in (lake.data_dir / "warehouse" / db / t / "data").rglob("*.parquet")}


# --------------------------------------------------------------------------------------------
# Metadata tables
# --------------------------------------------------------------------------------------------

def test_snapshots_and_history(srv):
    snaps = snapshots(srv)
    assert len(snaps) == 2
    (s1, p1, t1), (s2, p2, t2) = snaps
    assert p1 is None and p2 == s1 and t1 <= t2
    assert current_snapshot(srv, FACTS) == s2
    with connect(srv) as conn:
        cur = conn.execute(f'SELECT * FROM health."prescriber_drug$snapshots" ORDER BY committed_at')
        assert [d.name for d in cur.description] == ["committed_at", "snapshot_id", "parent_id", "operation",
                                                     "manifest_list", "summary"]
        rows = cur.fetchall()
    assert [r[3] for r in rows] == ["append", "append"]
    summaries = [json.loads(r[5]) for r in rows]
    assert [s["rxgate.delivery-date"] for s in summaries] == [D1, D2]
    loaded = [int(s["added-records"]) for s in summaries]
    assert int(summaries[1]["total-records"]) == sum(loaded) == one(srv, f"SELECT count(*) FROM {FACTS}")
    # Spark's name for the same table, and history.
    assert q(srv, "SELECT snapshot_id FROM health.prescriber_drug.snapshots ORDER BY committed_at") == \
        [(s1,), (s2,)]
    hist = q(srv, 'SELECT snapshot_id, parent_id, is_current_ancestor FROM health."prescriber_drug$history" '
                  "ORDER BY made_current_at")
    assert hist == [(s1, None, True), (s2, s1, True)]


def test_files_manifests_partitions_match_the_data(srv, lake):
    files = q(srv, 'SELECT file_path, record_count, file_size_in_bytes, content, file_format, spec_id '
                   'FROM health."prescriber_drug$files"')
    on_disk = data_files_on_disk(lake, FACTS)
    assert {f[0].removeprefix("file://") for f in files} == on_disk and len(files) == len(on_disk) > 2
    assert {(f[3], f[4], f[5]) for f in files} == {(0, "PARQUET", 0)}
    for path, _, size, *_ in files[:5]:
        assert Path(path.removeprefix("file://")).stat().st_size == size
    total = one(srv, f"SELECT count(*) FROM {FACTS}")
    assert sum(f[1] for f in files) == total
    manifests = q(srv, 'SELECT added_snapshot_id, added_data_files_count, existing_data_files_count '
                       'FROM health."prescriber_drug$manifests"')
    assert len(manifests) == 2 and sum(m[1] + m[2] for m in manifests) == len(files)
    assert {m[0] for m in manifests} == {s[0] for s in snapshots(srv)}
    parts = q(srv, 'SELECT partition, record_count, file_count FROM health."prescriber_drug$partitions"')
    assert sum(p[1] for p in parts) == total and sum(p[2] for p in parts) == len(files)
    by_partition = {(json.loads(p[0])["delivery_date"], json.loads(p[0])["presc_state"]): p[1] for p in parts}
    counted = q(srv, f"SELECT CAST(delivery_date AS VARCHAR), presc_state, count(*) FROM {FACTS} GROUP BY 1, 2")
    assert by_partition == {(d, s): n for d, s, n in counted}
    # Projections, filters and aggregates work on metadata tables like on any table.
    assert one(srv, 'SELECT count(*) FROM health."prescriber_drug$files" WHERE record_count > 0') == len(files)


def test_metadata_tables_over_flight_sql(srv):
    with flight_sql.connect(srv.flight_uri(), db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD},
                            autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute('SELECT count(*) AS n FROM health."city_report$snapshots"')
            assert cur.fetch_arrow_table().column("n").to_pylist() == [2]
            s1 = snapshots(srv, "health.city_report")[0][0]
            cur.execute(f"SELECT count(*) AS n FROM health.city_report FOR VERSION AS OF {s1}")
            n = cur.fetch_arrow_table().column("n").to_pylist()[0]
            # DBA statements take the same path (a rollback to a snapshot that does not exist).
            with pytest.raises(flight_sql.ProgrammingError, match="InvalidArgument"):
                cur.execute("CALL system.rollback_to_snapshot('health.city_report', 1)")
    assert n == one(srv, "SELECT count(*) FROM health.city_report WHERE delivery_date = %s", (D1,)) > 0


# --------------------------------------------------------------------------------------------
# Time travel
# --------------------------------------------------------------------------------------------

def test_time_travel_by_version_and_timestamp(srv):
    (s1, _, t1), (s2, _, t2) = snapshots(srv)
    d1 = one(srv, f"SELECT count(*) FROM {FACTS} WHERE delivery_date = %s", (D1,))
    total = one(srv, f"SELECT count(*) FROM {FACTS}")
    assert 0 < d1 < total
    assert one(srv, f"SELECT count(*) FROM {FACTS} FOR VERSION AS OF {s1}") == d1
    assert one(srv, f"SELECT count(*) FROM {FACTS} VERSION AS OF {s2}") == total            # Spark
    assert one(srv, f"SELECT count(*) FROM {FACTS} FOR SYSTEM_VERSION AS OF {s1}") == d1
    ts1 = t1.astimezone().isoformat()
    assert one(srv, f"SELECT count(*) FROM {FACTS} FOR TIMESTAMP AS OF '{ts1}'") == d1
    between = (t1 + (t2 - t1) / 2).strftime("%Y-%m-%d %H:%M:%S.%f")  # naive = UTC
    assert one(srv, f"SELECT count(*) FROM {FACTS} FOR TIMESTAMP AS OF TIMESTAMP '{between}'") == d1
    assert one(srv, f"SELECT count(*) FROM {FACTS} TIMESTAMP AS OF '{t2.isoformat()}'") == total
    # Aliases, qualified columns, a join of two versions, a parameter (extended protocol).
    assert one(srv, f"SELECT count(*) FROM {FACTS} FOR VERSION AS OF {s1} p WHERE p.delivery_date = %s",
               (D2,)) == 0
    assert one(srv, f"SELECT count(prescriber_drug.npi) FROM {FACTS} FOR VERSION AS OF {s1} "
                    f"WHERE prescriber_drug.presc_state = %s", ("CA",)) == \
        one(srv, f"SELECT count(*) FROM {FACTS} WHERE presc_state = 'CA' AND delivery_date = %s", (D1,))
    joined = one(srv, f"SELECT count(*) FROM {FACTS} FOR VERSION AS OF {s1} a "
                      f"JOIN (SELECT DISTINCT presc_state FROM {FACTS} FOR VERSION AS OF {s2}) b "
                      f"ON a.presc_state = b.presc_state")
    assert joined == d1
    # Text that only looks like time travel is untouched.
    assert one(srv, "SELECT 'FROM t FOR VERSION AS OF 1' -- FOR VERSION AS OF 2") == "FROM t FOR VERSION AS OF 1"
    assert psql(srv, f"SELECT count(*) FROM {FACTS} FOR VERSION AS OF {s1}") == str(d1)


def test_time_travel_errors(srv):
    (s1, _, t1), _ = snapshots(srv)
    err = pg_error(srv, f"SELECT count(*) FROM {FACTS} FOR VERSION AS OF 12345")
    assert err.sqlstate == "22023" and "no snapshot 12345" in str(err)
    before = (t1 - timedelta(days=1)).isoformat()
    err = pg_error(srv, f"SELECT count(*) FROM {FACTS} FOR TIMESTAMP AS OF '{before}'")
    assert err.sqlstate == "22023" and "no snapshot at or before" in str(err)
    assert pg_error(srv, f"SELECT 1 FROM {FACTS} FOR TIMESTAMP AS OF 'yesterday'").sqlstate == "22023"
    assert pg_error(srv, f"SELECT 1 FROM {FACTS} FOR VERSION AS OF 'main'").sqlstate == "0A000"
    assert pg_error(srv, f"SELECT 1 FROM health.nope FOR VERSION AS OF {s1}").sqlstate == "42P01"


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

def test_time_travel_keeps_masks_and_row_filters(srv):
    (s1, _, _), _ = snapshots(srv)
    # The analyst's npi is a pseudonym, in time travel too, and the same pseudonym as now.
    raw = {r[0] for r in q(srv, f"SELECT npi FROM {FACTS} FOR VERSION AS OF {s1}")}
    now = {r[0] for r in q(srv, f"SELECT npi FROM {FACTS} WHERE delivery_date = %s", (D1,), user="dba_analyst")}
    past = {r[0] for r in q(srv, f"SELECT npi FROM {FACTS} FOR VERSION AS OF {s1}", user="dba_analyst")}
    assert past == now and len(past) == len(raw) > 10 and not (past & raw)
    assert pseudonym(min(raw)) in past
    names = {r[0] for r in q(srv, f"SELECT presc_last_name FROM {FACTS} FOR VERSION AS OF {s1} LIMIT 50",
                             user="dba_analyst")}
    assert names and not (names & {r[0] for r in q(srv, f"SELECT presc_last_name FROM {FACTS}")})
    # The CA auditor sees CA rows only, as of the snapshot too.
    ca = one(srv, f"SELECT count(*) FROM {FACTS} WHERE presc_state = 'CA' AND delivery_date = %s", (D1,))
    assert one(srv, f"SELECT count(*) FROM {FACTS} FOR VERSION AS OF {s1}", user="auditor_ca") == ca > 0
    assert q(srv, f"SELECT DISTINCT presc_state FROM {FACTS} FOR VERSION AS OF {s1}", user="auditor_ca") == \
        [("CA",)]
    # Public has no grant on the facts: absent, whatever the version.
    assert pg_error(srv, f"SELECT 1 FROM {FACTS} FOR VERSION AS OF {s1}", user="dba_public").sqlstate == "42P01"


@pytest.mark.parametrize("kind", ["snapshots", "history", "files", "manifests", "partitions"])
def test_metadata_tables_only_for_who_sees_the_table_whole(srv, kind):
    sql = f'SELECT count(*) FROM health."prescriber_drug${kind}"'
    assert one(srv, sql) > 0
    # Partition values and record counts would leak the auditor's filtered states and the
    # analyst's masked table: masked or filtered principals do not get metadata tables.
    for user in ("dba_analyst", "auditor_ca", "dba_public"):
        err = pg_error(srv, sql, user=user)
        assert err.sqlstate == "42P01", (user, err)
        err = pg_error(srv, f"SELECT count(*) FROM health.prescriber_drug.{kind}", user=user)
        assert err.sqlstate == "42P01", (user, err)
    # Public sees city_report whole (no mask, no filter): its metadata tables too.
    assert one(srv, f'SELECT count(*) FROM health."city_report${kind}"', user="dba_public") > 0
    # A filtered auditor sees city_report rows of CA only: no metadata table.
    assert pg_error(srv, f'SELECT 1 FROM health."city_report${kind}"', user="auditor_ca").sqlstate == "42P01"


# --------------------------------------------------------------------------------------------
# Rollback
# --------------------------------------------------------------------------------------------

def test_rollback_and_roll_forward(srv, lake):
    table = "health.top_prescribers"
    (s1, _, _), (s2, _, _) = snapshots(srv, table)
    d1 = one(srv, f"SELECT count(*) FROM {table} WHERE delivery_date = %s", (D1,))
    total = one(srv, f"SELECT count(*) FROM {table}")
    assert 0 < d1 < total
    # Only administrators; a table one cannot see is absent first.
    call = f"CALL system.rollback_to_snapshot('{table}', {s1})"
    assert pg_error(srv, call, user="dba_analyst").sqlstate == "42501"
    assert pg_error(srv, f"CALL system.rollback_to_snapshot('health.prescriber_drug', {s1})",
                    user="dba_public").sqlstate == "42P01"
    assert pg_error(srv, f"CALL system.rollback_to_snapshot('{table}', 42)").sqlstate == "22023"
    assert q(srv, call) == [(s2, s1)]
    assert one(srv, f"SELECT count(*) FROM {table}") == d1
    assert current_snapshot(srv, table) == s1
    hist = q(srv, f'SELECT snapshot_id, is_current_ancestor FROM health."top_prescribers$history" '
                  "ORDER BY made_current_at")
    assert hist == [(s1, True), (s2, False), (s1, True)]
    # s2 is no ancestor of s1 now: rollback refuses, set_current_snapshot moves forward.
    assert pg_error(srv, f"CALL system.rollback_to_snapshot('{table}', {s2})").sqlstate == "22023"
    assert q(srv, f"CALL system.set_current_snapshot(table => '{table}', snapshot_id => {s2})") == [(s1, s2)]
    assert one(srv, f"SELECT count(*) FROM {table}") == total
    # Trino's form through psql; then back to s2 with the CLI.
    assert psql(srv, f"ALTER TABLE {table} EXECUTE rollback_to_snapshot({s1})") == "ALTER TABLE EXECUTE"
    assert psql(srv, f"SELECT count(*) FROM {table}") == str(d1)
    assert one(srv, f"SELECT count(*) FROM {table} FOR VERSION AS OF {s2}") == total
    # pyiceberg sees the rollback we committed.
    cat = SqlCatalog("rxgate", uri=f"sqlite:///{lake.data_dir / 'catalog.db'}",
                     warehouse=f"file://{lake.data_dir / 'warehouse'}")
    rolled = cat.load_table(table)
    assert rolled.current_snapshot().snapshot_id == s1 and rolled.scan().to_arrow().num_rows == d1
    lake.run("catalog", "rollback", table, str(s2), "--set-current")
    assert one(srv, f"SELECT count(*) FROM {table}") == total
    # The audit trail has the statements, with their outcome.
    audited = q(srv, "SELECT statement, outcome, error_code FROM system.audit_log "
                     "WHERE statement LIKE 'CALL system.rollback_to_snapshot%'")
    assert (call, "ok", None) in audited and any(r[2] == "PermissionDenied" for r in audited)


# --------------------------------------------------------------------------------------------
# Partition evolution (runs a third delivery through the pipeline)
# --------------------------------------------------------------------------------------------

def test_partition_evolution_new_writes_use_the_new_spec(srv, lake, dataset):
    table = "health.us_cities"
    stmt = f"ALTER TABLE {table} ADD PARTITION FIELD state_id"
    assert pg_error(srv, stmt, user="dba_analyst").sqlstate == "42501"
    assert psql(srv, stmt) == "ALTER TABLE"
    err = pg_error(srv, stmt)
    assert err.sqlstate == "22023" and "already partitioned" in str(err)
    before = one(srv, f'SELECT count(*) FROM health."us_cities$files"')
    lake.pipeline(dataset.root, D3)
    files = q(srv, 'SELECT spec_id, partition, record_count FROM health."us_cities$files"')
    old, new = [f for f in files if f[0] == 0], [f for f in files if f[0] == 1]
    assert len(old) == before
    d3 = one(srv, f"SELECT count(*) FROM {table} WHERE delivery_date = %s", (D3,))
    states = one(srv, f"SELECT count(DISTINCT state_id) FROM {table} WHERE delivery_date = %s", (D3,))
    assert sum(f[2] for f in new) == d3 > 0 and len(new) == states > 1
    assert all(json.loads(f[1])["delivery_date"] == D3 and "state_id" in json.loads(f[1]) for f in new)
    assert {json.loads(f[1])["state_id"] for f in new} == \
        {r[0] for r in q(srv, f"SELECT DISTINCT state_id FROM {table} WHERE delivery_date = %s", (D3,))}
    # Pruning still answers by the old and the new spec; the describe shows the new spec.
    assert one(srv, f"SELECT count(*) FROM {table} WHERE state_id = 'CA' AND delivery_date = %s", (D3,)) == \
        one(srv, f"SELECT count(*) FROM {table} WHERE state_id = 'CA' AND delivery_date = %s", (D1,))
    fmt = q(srv, f"DESCRIBE FORMATTED {table}")
    assert ("state_id", "string", "transform: identity") in fmt
    # Transforms and DROP PARTITION FIELD: new specs (spec ids 2, 3), data unchanged.
    assert psql(srv, f"ALTER TABLE {table} ADD PARTITION FIELD months(delivery_date) AS m") == "ALTER TABLE"
    assert psql(srv, f"ALTER TABLE {table} DROP PARTITION FIELD m") == "ALTER TABLE"
    assert psql(srv, f"ALTER TABLE {table} DROP PARTITION FIELD state_id") == "ALTER TABLE"
    assert ("state_id", "string", "transform: identity") not in q(srv, f"DESCRIBE FORMATTED {table}")
    assert one(srv, f"SELECT count(*) FROM {table}") == sum(f[2] for f in files)
    assert pg_error(srv, f"ALTER TABLE {table} DROP PARTITION FIELD nope").sqlstate == "22023"
    assert pg_error(srv, f"ALTER TABLE {table} ADD PARTITION FIELD years(city)").sqlstate == "22023"


# --------------------------------------------------------------------------------------------
# Schema evolution (its own lakehouse: the pipeline re-adds columns its definitions name)
# --------------------------------------------------------------------------------------------

def test_schema_evolution_reads_old_files_by_field_id(rxgate_bin, dataset, tmp_path, serve):
    rx = Rxgate(rxgate_bin, tmp_path / "lake")
    rx.pipeline(dataset.root, D1)
    srv = serve(rx.data_dir)
    add_user(rxgate_bin, srv.users_file, "dba_analyst", "analyst-pw", "--role", "analyst")
    table = "health.us_cities"
    before = q(srv, f"SELECT city, state_id, population, zip_count, density FROM {table} ORDER BY city, state_id, zips")
    assert len(before) > 1000 and any(r[3] for r in before)
    (s1,) = [s[0] for s in snapshots(srv, table)]
    # Not for non-administrators; malformed and impossible changes are refused.
    assert pg_error(srv, f"ALTER TABLE {table} DROP COLUMN zip_count", user="dba_analyst").sqlstate == "42501"
    assert pg_error(srv, f"ALTER TABLE {table} DROP COLUMN nope").sqlstate == "42703"
    assert pg_error(srv, f"ALTER TABLE {table} ADD COLUMN city string").sqlstate == "22023"
    assert pg_error(srv, f"ALTER TABLE {table} DROP COLUMN delivery_date").sqlstate == "22023"  # partition source
    assert pg_error(srv, f"ALTER TABLE {table} ADD COLUMN x").sqlstate == "42601"
    # Add with a comment (psycopg; names still match the files: the by-name Parquet scan),
    # rename (psql; then iceberg's field-id scan), add several, drop.
    with connect(srv) as conn:
        assert conn.execute(f"ALTER TABLE {table} ADD COLUMN note varchar COMMENT 'free text'").statusmessage == \
            "ALTER TABLE"
    added = q(srv, f"SELECT city, state_id, population, note FROM {table} ORDER BY city, state_id, zips")
    assert added == [(c, s, p, None) for c, s, p, *_ in before]
    assert psql(srv, f"ALTER TABLE {table} RENAME COLUMN population TO pop") == "ALTER TABLE"
    with connect(srv) as conn:
        conn.execute(f"ALTER TABLE {table} ADD COLUMNS (score double, rank_no bigint)")
        conn.execute(f"ALTER TABLE {table} DROP COLUMN zip_count")
    after = q(srv, f"SELECT city, state_id, pop, note, score, rank_no, density FROM {table} ORDER BY city, state_id, zips")
    assert after == [(c, s, p, None, None, None, d) for c, s, p, _, d in before]
    assert pg_error(srv, f"SELECT zip_count FROM {table}").sqlstate == "42703"
    assert pg_error(srv, f"SELECT population FROM {table}").sqlstate == "42703"
    # A column dropped and added again under its old name is a new field: NULL in old files.
    with connect(srv) as conn:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN zip_count int")
    assert one(srv, f"SELECT count(zip_count) FROM {table}") == 0
    with connect(srv) as conn:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN zip_count")
    cols = [r[0] for r in q(srv, f"DESCRIBE {table}")]
    assert "pop" in cols and "note" in cols and "zip_count" not in cols and "population" not in cols
    assert ("note", "string", "free text") in q(srv, f"DESCRIBE {table}")
    assert psql(srv, f"SELECT sum(pop) FROM {table}") == str(sum(r[2] for r in before))
    # Time travel reads the snapshot with its own schema.
    past = q(srv, f"SELECT city, state_id, population, zip_count, density FROM {table} FOR VERSION AS OF {s1} "
                  f"ORDER BY city, state_id, zips")
    assert past == before
    # The analyst reads the evolved table (no mask on these columns).
    assert one(srv, f"SELECT count(pop) FROM {table}", user="dba_analyst") == len(before)
    # The CLI runs the same statements; pyiceberg reads what we committed.
    rx.run("catalog", "alter", table, "RENAME COLUMN pop TO population_2021")
    assert one(srv, f"SELECT sum(population_2021) FROM {table}") == sum(r[2] for r in before)
    cat = SqlCatalog("rxgate", uri=f"sqlite:///{rx.data_dir / 'catalog.db'}",
                     warehouse=f"file://{rx.data_dir / 'warehouse'}")
    arrow = cat.load_table(table).scan(selected_fields=("city", "population_2021", "note")).to_arrow()
    assert arrow.num_rows == len(before)
    assert sum(arrow.column("population_2021").to_pylist()) == sum(r[2] for r in before)
    assert arrow.column("note").null_count == len(before)
    assert "zip_count" not in cat.load_table(table).schema().column_names


def test_cli_prints_metadata_tables(srv, lake):
    header, rows = parse_csv(lake.run("catalog", "snapshots", "health.city_report", "--format", "csv").stdout)
    assert header[:3] == ["committed_at", "snapshot_id", "parent_id"]
    assert [int(r[1]) for r in rows] == [s[0] for s in snapshots(srv, "health.city_report")]
    header, rows = parse_csv(lake.run("catalog", "history", "health.city_report", "--format", "csv").stdout)
    assert header == ["made_current_at", "snapshot_id", "parent_id", "is_current_ancestor"] and len(rows) >= 2
    header, rows = parse_csv(lake.run("catalog", "files", FACTS, "--format", "csv").stdout)
    assert len(rows) == one(srv, 'SELECT count(*) FROM health."prescriber_drug$files"')
    assert sum(int(r[header.index("record_count")]) for r in rows) == one(srv, f"SELECT count(*) FROM {FACTS}")
    header, rows = parse_csv(lake.run("catalog", "partitions", FACTS, "--format", "csv").stdout)
    assert sum(int(r[header.index("record_count")]) for r in rows) == one(srv, f"SELECT count(*) FROM {FACTS}")
    header, rows = parse_csv(lake.run("catalog", "manifests", FACTS, "--format", "csv").stdout)
    assert len(rows) == one(srv, 'SELECT count(*) FROM health."prescriber_drug$manifests"')
    bad = lake.fail("catalog", "rollback", "health.city_report", "1")
    assert "no snapshot 1" in bad.stderr


def test_external_tables_have_no_iceberg_features(srv, lake, tmp_path):
    """A Hive external table in the same schema: DBA statements say it is not an Iceberg table,
    and it has no metadata tables or snapshots. (Over a copy of an Iceberg table's data files:
    the warehouse itself is never an external location.)"""
    location = tmp_path / "us_cities_copy"
    shutil.copytree(lake.data_dir / "warehouse" / "health" / "us_cities" / "data", location)
    with connect(srv) as conn:
        conn.execute(f"CREATE EXTERNAL TABLE health.cities_ext (city STRING) PARTITIONED BY (delivery_date DATE) "
                     f"STORED AS PARQUET LOCATION '{location}'")
    try:
        err = pg_error(srv, "ALTER TABLE health.cities_ext ADD COLUMN x int")
        assert err.sqlstate == "0A000" and "not an Iceberg table" in str(err)
        assert pg_error(srv, "CALL system.rollback_to_snapshot('health.cities_ext', 1)").sqlstate == "0A000"
        assert pg_error(srv, 'SELECT * FROM health."cities_ext$files"').sqlstate == "42P01"
        assert pg_error(srv, "SELECT * FROM health.cities_ext FOR VERSION AS OF 1").sqlstate == "42P01"
        # Hive's partition DDL on it is not claimed by the Iceberg statements.
        with connect(srv) as conn:
            conn.execute(f"ALTER TABLE health.cities_ext ADD PARTITION (delivery_date='{D1}')")
        assert one(srv, "SELECT count(*) FROM health.cities_ext") == \
            one(srv, "SELECT count(*) FROM health.us_cities WHERE delivery_date = %s", (D1,))
    finally:
        with connect(srv) as conn:
            conn.execute("DROP TABLE health.cities_ext")
