"""Table maintenance (issue 23 §1, §4): snapshot expiry, orphan-file removal and compaction,
in Spark's `CALL system.…` and Trino's `ALTER TABLE … EXECUTE …` spellings, over the real
server:

- expiry: many small appends and partition re-ingests, then expiry to `retain_last`: the
  snapshot count is the retained number, the files on disk drop, every query answers as
  before, the table properties are the defaults, a time-travel read of an expired snapshot
  fails cleanly;
- orphans: files left by a killed write (and a stray file) are found by a dry run that deletes
  nothing, then deleted exactly; a window inside `[maintenance] min_orphan_age_secs` is 22023;
- compaction: 40 files of one partition become one, with the same count, sums and checksum,
  in one Replace snapshot; Trino's `optimize … WHERE` compacts only the partitions asked;
  pyiceberg reads the result; a compaction racing an append of another partition: both land;
- crashes: kill -9 at compaction's commit leaves the table as it was (a re-run compacts); kill
  -9 right after expiry's commit leaves a pending list that the next run finishes;
- policy: the analyst and the auditor get 42501 for every procedure; an admin's runs are in the
  audit trail and in system.maintenance_history.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from sqlclient import Client
from conftest import TEST_PASSWORD, TEST_USER, start_server_with_roles, stop_server

PASSWORD = "maint-test-pw"

_client = Client(PASSWORD)
pg, q, sqlstate = _client.pg, _client.q, _client.sqlstate
USERS = {"ann": "analyst", "auditor_ca": "state_auditor"}
FUTURE = "TIMESTAMP '2100-01-01 00:00:00'"


def config_text(d: Path, min_orphan_age: int | None = 0) -> str:
    text = f'[audit]\ndir = "{d / "audit"}"\n'
    if min_orphan_age is not None:
        text += f"[maintenance]\nmin_orphan_age_secs = {min_orphan_age}\n"
    return text


def start(rxgate_bin, d: Path, data: Path, env=None, min_orphan_age: int | None = 0):
    d.mkdir(parents=True, exist_ok=True)
    config = d / "rxgate.toml"
    config.write_text(config_text(d, min_orphan_age))
    s = start_server_with_roles(rxgate_bin, data, d, config, USERS, PASSWORD, env=env)
    s.data_dir, s.audit_dir = data, d / "audit"
    return s


@pytest.fixture(scope="module")
def mserver(rxgate_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("maint")
    data = d / "data"
    data.mkdir()
    s = start(rxgate_bin, d / "server", data)
    q(s, "CREATE SCHEMA lab")
    yield s
    stop_server(s)





def table_dir(server, table: str) -> Path:
    schema, name = table.split(".")
    (loc,) = q(server, f'SELECT file_path FROM {schema}."{name}$files" LIMIT 1')[0]
    path = Path(loc.removeprefix("file://"))
    while path.name != "data":
        path = path.parent
    return path.parent


def files_on_disk(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def answers(server, table: str) -> list:
    return q(server, f"SELECT d, count(*), sum(v), min(s), max(s) FROM {table} GROUP BY d ORDER BY d")


def snapshot_count(server, table: str) -> int:
    schema, name = table.split(".")
    return q(server, f'SELECT count(*) FROM {schema}."{name}$snapshots"')[0][0]


# ------------------------------------------------------------------------------------- expiry

def test_expiry_keeps_the_retained_snapshots_and_every_answer(mserver):
    t = "lab.exp"
    q(mserver, f"CREATE TABLE {t} (v int, s string, d date) PARTITIONED BY (d) "
               "TBLPROPERTIES ('history.expire.min-snapshots-to-keep' = '2')")
    with pg(mserver) as conn:  # 100 small deliveries, 20 re-ingests of one
        for i in range(100):
            conn.execute(f"INSERT INTO {t} VALUES ({i}, 'r{i}', DATE '2024-01-0{1 + i % 3}')")
        for i in range(20):  # each replaces the partition
            conn.execute(f"INSERT OVERWRITE TABLE {t} PARTITION (d = '2024-01-04') SELECT {i} AS v, 'again{i}' AS s")
    before = answers(mserver, t)
    assert snapshot_count(mserver, t) == 120
    root = table_dir(mserver, t)
    files_before = files_on_disk(root)
    (row,) = q(mserver, f"CALL system.expire_snapshots(table => '{t}', older_than => {FUTURE}, retain_last => 5)")
    deleted_data, deleted_manifests, deleted_lists, deleted_metadata, expired = row
    assert expired == 115 and deleted_lists == 115, row
    # The re-ingests' files live only in expired snapshots: the first 15 of 20 (the last 5
    # snapshots each hold one of the others).
    assert deleted_data == 15, row
    assert deleted_manifests > 0 and deleted_metadata >= 0, row
    assert snapshot_count(mserver, t) == 5
    files_after = files_on_disk(root)
    added = files_after - files_before
    assert len(added) == 1 and next(iter(added)).name.endswith(".metadata.json"), added  # the commit's
    assert len(files_before - files_after) >= deleted_data + deleted_manifests + deleted_lists
    assert answers(mserver, t) == before
    # Trino's spelling, with the table's own default: keep 2 (history.expire.min-snapshots-to-keep).
    assert q(mserver, f"ALTER TABLE {t} EXECUTE expire_snapshots(retention_threshold => '0s')") == \
        "ALTER TABLE EXECUTE"
    assert snapshot_count(mserver, t) == 2
    assert answers(mserver, t) == before
    history = q(mserver, "SELECT action, outcome, files_removed FROM system.maintenance_history "
                         f"WHERE table_name = '{t}' ORDER BY started_at")
    assert [h[:2] for h in history] == [("expire_snapshots", "ok"), ("expire_snapshots", "ok")]
    assert history[0][2] >= deleted_data + deleted_lists


def test_a_read_of_an_expired_snapshot_fails_cleanly(mserver):
    t = "lab.exp_tt"
    q(mserver, f"CREATE TABLE {t} (v int, s string, d date) PARTITIONED BY (d)")
    q(mserver, f"INSERT INTO {t} VALUES (1, 'a', DATE '2024-01-01')")
    (old,) = q(mserver, 'SELECT snapshot_id FROM lab."exp_tt$snapshots"')[0]
    q(mserver, f"INSERT OVERWRITE TABLE {t} PARTITION (d = '2024-01-01') SELECT 2 AS v, 'b' AS s")
    assert q(mserver, f"SELECT v FROM {t} FOR VERSION AS OF {old}") == [(1,)]
    q(mserver, f"CALL system.expire_snapshots('{t}', older_than => {FUTURE})")
    # The snapshot is gone from the metadata: a clear error, never wrong rows.
    assert sqlstate(mserver, f"SELECT v FROM {t} FOR VERSION AS OF {old}") in ("22023", "42P01", "22000")
    assert q(mserver, f"SELECT v FROM {t}") == [(2,)]


# ------------------------------------------------------------------------------------ orphans

def test_orphans_are_listed_by_a_dry_run_and_deleted_exactly(rxgate_bin, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    s = start(rxgate_bin, tmp_path / "a", data)
    try:
        q(s, "CREATE SCHEMA lab")
        q(s, "CREATE TABLE lab.orph (i bigint, s string) PARTITIONED BY (bucket(4, i))")
        q(s, "INSERT INTO lab.orph SELECT v, 'row ' || v FROM generate_series(1, 1000) AS t(v)")
    finally:
        stop_server(s)
    # A write killed right before its commit leaves its data files behind.
    s = start(rxgate_bin, tmp_path / "crash", data, env={"RXGATE_FAILPOINT": "write.before_commit"})
    try:
        with pytest.raises(psycopg.OperationalError):
            q(s, "INSERT INTO lab.orph SELECT v, 'lost' FROM generate_series(2000, 5000) AS t(v)")
        s.proc.wait(timeout=30)
    finally:
        stop_server(s)
    s = start(rxgate_bin, tmp_path / "b", data)
    try:
        root = table_dir(s, "lab.orph")
        live = {r[0].removeprefix("file://") for r in q(s, 'SELECT file_path FROM lab."orph$files"')}
        stray = root / "data" / "stray.parquet"
        stray.write_bytes(b"not referenced")
        orphans = {str(p) for p in files_on_disk(root / "data")} - live
        assert len(orphans) >= 2, orphans  # the killed write's files and the stray one
        # Young files are never orphans by default (7 days).
        assert q(s, "CALL system.remove_orphan_files(table => 'lab.orph')") == []
        listed = q(s, f"CALL system.remove_orphan_files(table => 'lab.orph', older_than => {FUTURE}, "
                      "dry_run => true)")
        assert {r[0].removeprefix("file://") for r in listed} == orphans
        assert {str(p) for p in files_on_disk(root / "data")} >= orphans  # nothing deleted
        deleted = q(s, f"CALL system.remove_orphan_files(table => 'lab.orph', older_than => {FUTURE})")
        assert {r[0].removeprefix("file://") for r in deleted} == orphans
        assert {str(p) for p in files_on_disk(root / "data")} == live
        assert q(s, "SELECT count(*), sum(i) FROM lab.orph") == [(1000, 500500)]
        # Trino's spelling; nothing left to find.
        assert q(s, "ALTER TABLE lab.orph EXECUTE remove_orphan_files(retention_threshold => '0s')") == \
            "ALTER TABLE EXECUTE"
        assert q(s, "SELECT outcome FROM system.maintenance_history WHERE action = 'remove_orphan_files' "
                    "ORDER BY started_at") == [("ok",), ("dry run",), ("ok",), ("ok",)]
    finally:
        stop_server(s)
    # Without the override, a window shorter than 7 days is refused.
    s = start(rxgate_bin, tmp_path / "c", data, min_orphan_age=None)
    try:
        assert sqlstate(s, f"CALL system.remove_orphan_files(table => 'lab.orph', older_than => {FUTURE})") == "22023"
        assert sqlstate(s, "ALTER TABLE lab.orph EXECUTE remove_orphan_files(retention_threshold => '1d')") == \
            "22023"
    finally:
        stop_server(s)


# --------------------------------------------------------------------------------- compaction

def test_compaction_keeps_every_row_in_one_replace_snapshot(mserver):
    t = "lab.frag"
    q(mserver, f"CREATE TABLE {t} (v int, s string, d date) PARTITIONED BY (d)")
    for i in range(40):
        q(mserver, f"INSERT INTO {t} SELECT x, 'v' || x, DATE '2024-02-01' FROM generate_series({i * 50}, "
                   f"{i * 50 + 49}) AS g(x)")
    for i in range(3):
        q(mserver, f"INSERT INTO {t} VALUES ({10_000 + i}, 'other', DATE '2024-02-02')")
    before = answers(mserver, t)
    assert q(mserver, 'SELECT count(*) FROM lab."frag$files"') == [(43,)]
    # Trino's optimize with a WHERE: only the partition asked for.
    assert q(mserver, f"ALTER TABLE {t} EXECUTE optimize WHERE d = DATE '2024-02-02'") == "ALTER TABLE EXECUTE"
    assert q(mserver, 'SELECT partition, count(*) FROM lab."frag$files" GROUP BY 1 ORDER BY 1') == [
        ('{"d":"2024-02-01"}', 40), ('{"d":"2024-02-02"}', 1)]
    (row,) = q(mserver, f"CALL system.rewrite_data_files(table => '{t}', options => map('min-input-files', '2'))")
    assert row == (40, 1, row[2], 0) and row[2] > 0, row
    assert q(mserver, 'SELECT count(*) FROM lab."frag$files"') == [(2,)]
    assert answers(mserver, t) == before
    assert q(mserver, f"SELECT count(*), count(DISTINCT v), sum(v) FROM {t}") == [(2003, 2003, 1999000 + 30003)]
    assert q(mserver, f'SELECT operation FROM lab."frag$snapshots" ORDER BY committed_at DESC LIMIT 1') == [
        ("replace",)]
    # Nothing small enough is left: a second run does nothing.
    assert q(mserver, f"CALL system.rewrite_data_files('{t}')")[0][:2] == (0, 0)


def test_pyiceberg_reads_a_compacted_table(mserver):
    from pyiceberg.catalog.sql import SqlCatalog
    t = "lab.frag_py"
    q(mserver, f"CREATE TABLE {t} (v int, d date) PARTITIONED BY (d)")
    for i in range(10):
        q(mserver, f"INSERT INTO {t} VALUES ({i}, DATE '2024-03-01')")
    q(mserver, f"CALL system.rewrite_data_files(table => '{t}')")
    data = mserver.data_dir
    catalog_db = next(data.rglob("*.db"))
    cat = SqlCatalog("rxgate", uri=f"sqlite:///{catalog_db}", warehouse=f"file://{data / 'warehouse'}")
    arrow = cat.load_table("lab.frag_py").scan().to_arrow()
    assert sorted(arrow.column("v").to_pylist()) == list(range(10))


def test_compaction_racing_an_append_of_another_partition_both_land(mserver):
    t = "lab.race"
    q(mserver, f"CREATE TABLE {t} (v int, d date) PARTITIONED BY (d)")
    for i in range(30):
        q(mserver, f"INSERT INTO {t} SELECT x, DATE '2024-04-01' FROM generate_series({i * 100}, {i * 100 + 99}) AS g(x)")
    errors = []

    def append():
        try:
            for i in range(10):
                q(mserver, f"INSERT INTO {t} VALUES ({100_000 + i}, DATE '2024-04-02')")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    th = threading.Thread(target=append)
    th.start()
    (row,) = q(mserver, f"CALL system.rewrite_data_files(table => '{t}', where => 'd = DATE ''2024-04-01''')")
    th.join()
    assert not errors, errors
    assert row[0] == 30 and row[1] >= 1, row
    assert q(mserver, f"SELECT d, count(*), sum(v) FROM {t} GROUP BY d ORDER BY d") == [
        (__import__("datetime").date(2024, 4, 1), 3000, 4498500),
        (__import__("datetime").date(2024, 4, 2), 10, 1000045)]


# ------------------------------------------------------------------------------------ crashes

def test_kill_during_compaction_and_after_expiry_commit(rxgate_bin, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    s = start(rxgate_bin, tmp_path / "a", data)
    try:
        q(s, "CREATE SCHEMA lab")
        q(s, "CREATE TABLE lab.k (v int, d date) PARTITIONED BY (d)")
        for i in range(12):
            q(s, f"INSERT INTO lab.k SELECT x, DATE '2024-05-01' FROM generate_series({i * 10}, {i * 10 + 9}) AS g(x)")
        before = q(s, "SELECT count(*), sum(v) FROM lab.k")
    finally:
        stop_server(s)
    for failpoint, stmt in [("compact.before_commit", "CALL system.rewrite_data_files(table => 'lab.k')"),
                            ("expire.after_commit",
                             f"CALL system.expire_snapshots(table => 'lab.k', older_than => {FUTURE})")]:
        s = start(rxgate_bin, tmp_path / failpoint, data, env={"RXGATE_FAILPOINT": failpoint})
        try:
            with pytest.raises(psycopg.OperationalError):
                q(s, stmt)
            s.proc.wait(timeout=30)
            assert s.proc.returncode == -signal.SIGABRT
        finally:
            stop_server(s)
        s = start(rxgate_bin, tmp_path / (failpoint + "-after"), data)
        try:
            assert q(s, "SELECT count(*), sum(v) FROM lab.k") == before
            if failpoint == "compact.before_commit":
                assert q(s, 'SELECT count(*) FROM lab."k$files"') == [(12,)]  # unchanged
            else:
                # Expiry committed; the pending list is there until the next run finishes it.
                root = table_dir(s, "lab.k")
                assert list((root / "metadata").glob("rxgate-expire-*.pending.json"))
                q(s, "CALL system.expire_snapshots(table => 'lab.k')")
                assert not list((root / "metadata").glob("rxgate-expire-*.pending.json"))
                live = {r[0].removeprefix("file://") for r in q(s, 'SELECT file_path FROM lab."k$files"')}
                on_disk = {str(p) for p in (root / "data").rglob("*.parquet")}
                assert live <= on_disk
                # What is left is the killed compaction's files: orphans, removed as such.
                orphans = q(s, f"CALL system.remove_orphan_files(table => 'lab.k', older_than => {FUTURE})")
                assert {r[0].removeprefix("file://") for r in orphans} == on_disk - live
                assert {str(p) for p in (root / "data").rglob("*.parquet")} == live
        finally:
            stop_server(s)
    s = start(rxgate_bin, tmp_path / "rerun", data)
    try:
        # The killed compaction never landed: the re-run does the job.
        assert q(s, "CALL system.rewrite_data_files(table => 'lab.k')")[0][:2] == (12, 1)
        assert q(s, 'SELECT count(*) FROM lab."k$files"') == [(1,)]
        assert q(s, "SELECT count(*), sum(v) FROM lab.k") == before
    finally:
        stop_server(s)


# ------------------------------------------------------------------------------------- policy

def test_procedures_are_for_admins_and_audited(mserver):
    # The demo policy grants the analyst and the auditor schema health (to read).
    q(mserver, "CREATE SCHEMA IF NOT EXISTS health")
    q(mserver, "CREATE TABLE IF NOT EXISTS health.pol (v int, presc_state string)")
    for user in ("ann", "auditor_ca"):
        for stmt in ("CALL system.expire_snapshots(table => 'health.pol')",
                     "CALL system.remove_orphan_files(table => 'health.pol')",
                     "CALL system.rewrite_data_files(table => 'health.pol')",
                     "ALTER TABLE health.pol EXECUTE optimize",
                     "ALTER TABLE health.pol EXECUTE expire_snapshots(retention_threshold => '7d')",
                     "ALTER TABLE health.pol EXECUTE remove_orphan_files(retention_threshold => '7d')"):
            assert sqlstate(mserver, stmt, user=user) == "42501", (user, stmt)
        # A table the role cannot see is absent first.
        assert sqlstate(mserver, "CALL system.expire_snapshots(table => 'lab.exp')", user=user) == "42P01"
    q(mserver, "CREATE TABLE IF NOT EXISTS lab.pol (v int)")
    q(mserver, "CALL system.expire_snapshots(table => 'lab.pol')")
    audited = q(mserver, "SELECT statement FROM system.audit_log WHERE statement LIKE 'CALL system.expire_snapshots%'")
    assert ("CALL system.expire_snapshots(table => 'lab.pol')",) in audited
    assert sqlstate(mserver, "CALL system.expire_snapshots(table => 'lab.nope')") == "42P01"
    assert sqlstate(mserver, "CALL system.rewrite_data_files(table => 'lab.pol', options => map('bogus', '1'))") == \
        "0A000"
    assert sqlstate(mserver, "ALTER TABLE lab.pol EXECUTE expire_snapshots(retention_threshold => '7 weeks')") == \
        "42601"


def test_a_sort_order_is_followed_by_compaction(mserver):
    import pyarrow.parquet as pq
    t = "lab.sorted"
    q(mserver, f"CREATE TABLE {t} (npi bigint, v int)")
    for i in range(8):
        q(mserver, f"INSERT INTO {t} SELECT (x * 7919) % 100003, x FROM generate_series({i * 2000}, {i * 2000 + 1999}) AS g(x)")
    assert q(mserver, f"ALTER TABLE {t} WRITE ORDERED BY npi DESC NULLS LAST") == "ALTER TABLE"
    assert q(mserver, f"ALTER TABLE {t} WRITE LOCALLY ORDERED BY (npi)") == "ALTER TABLE"
    before = q(mserver, f"SELECT count(*), sum(npi), sum(v) FROM {t}")
    (row,) = q(mserver, f"CALL system.rewrite_data_files(table => '{t}', strategy => 'sort')")
    assert row[:2] == (8, 1), row
    assert q(mserver, f"SELECT count(*), sum(npi), sum(v) FROM {t}") == before
    (path,) = q(mserver, 'SELECT file_path FROM lab."sorted$files"')[0]
    npis = pq.read_table(path.removeprefix("file://")).column("npi").to_pylist()
    assert len(npis) == 16000 and npis == sorted(npis), "rows sorted by npi"
    assert q(mserver, f"SELECT v FROM {t} WHERE npi = 7919") == [(1,)]
    # A new order: the one file is large enough to be left alone, unless rewrite-all says so.
    assert q(mserver, f"ALTER TABLE {t} WRITE ORDERED BY v DESC") == "ALTER TABLE"
    (row,) = q(mserver, f"CALL system.rewrite_data_files(table => '{t}')")
    assert row[:2] == (0, 0), row
    (row,) = q(mserver, f"CALL system.rewrite_data_files(table => '{t}', options => map('rewrite-all', 'true'))")
    assert row[:2] == (1, 1), row
    (path,) = q(mserver, 'SELECT file_path FROM lab."sorted$files"')[0]
    vs = pq.read_table(path.removeprefix("file://")).column("v").to_pylist()
    assert vs == sorted(vs, reverse=True), "rows sorted by the new order"
    assert q(mserver, f"SELECT count(*), sum(npi), sum(v) FROM {t}") == before
    assert q(mserver, f"ALTER TABLE {t} WRITE UNORDERED") == "ALTER TABLE"
    assert sqlstate(mserver, f"ALTER TABLE {t} WRITE ORDERED BY nope") in ("22023", "42703")


def test_a_point_lookup_skips_the_files_its_bloom_filters_rule_out(mserver):
    """Files whose npi bloom filters cannot hold the value are dropped before the scan opens
    them (`rxgate_catalog::bloom`); the answers are those of a full scan."""
    t = "lab.blooms"
    q(mserver, f"CREATE TABLE {t} (npi string, st string, v bigint) PARTITIONED BY (st) "
               "TBLPROPERTIES ('write.parquet.bloom-filter-enabled.column.npi' = 'true')")
    # 8 partitions, each npi in exactly one of them.
    q(mserver, f"INSERT INTO {t} SELECT CAST(1000000 + x AS VARCHAR), 'S' || CAST(x % 8 AS VARCHAR), x "
               "FROM generate_series(0, 7999) AS g(x)")
    q(mserver, f"INSERT INTO {t} (npi, st, v) VALUES (NULL, 'S0', -1)")

    def pruned() -> int:
        return q(mserver, "SELECT bloom_pruned_files FROM system.data_cache")[0][0]

    def lookup(where: str) -> tuple[list, int]:
        before = pruned()
        rows = q(mserver, f"SELECT npi, st, v FROM {t} WHERE {where} ORDER BY v")
        return rows, pruned() - before

    files = q(mserver, f'SELECT count(*) FROM lab."blooms$files"')[0][0]
    assert files == 9, files
    rows, skipped = lookup("npi = '1000013'")
    # Iceberg's own column bounds already drop the file of the NULL row; the bloom filters
    # drop the 7 other partitions' files.
    assert rows == [("1000013", "S5", 13)] and skipped == 7, (rows, skipped)
    rows, skipped = lookup("npi = '10000135'")  # inside every file's bounds
    assert rows == [] and skipped >= 7, (rows, skipped)  # a false positive may keep one
    # Values above every file's lower bound, so that iceberg's bounds keep all 8 files.
    rows, skipped = lookup("npi IN ('1000011', '1000012') AND v >= 0")
    assert [r[2] for r in rows] == [11, 12] and skipped == 6, (rows, skipped)
    rows, skipped = lookup("v = 13")  # no bloom filter on v: nothing is skipped
    assert rows == [("1000013", "S5", 13)] and skipped == 0, (rows, skipped)
    rows, skipped = lookup("npi IS NULL")
    assert rows == [(None, "S0", -1)] and skipped == 0
    assert q(mserver, f"SELECT count(*) FROM {t} WHERE npi = '1000013' OR v = 2") == [(2,)]
    assert q(mserver, "SELECT bloom_filter_bytes > 0 FROM system.data_cache") == [(True,)]


def test_manifests_are_merged_with_the_same_files(mserver):
    t = "lab.manif"
    q(mserver, f"CREATE TABLE {t} (v int, d date) PARTITIONED BY (d)")
    for i in range(15):
        q(mserver, f"INSERT INTO {t} VALUES ({i}, DATE '2024-06-0{1 + i % 3}')")
    files = q(mserver, 'SELECT file_path FROM lab."manif$files" ORDER BY 1')
    assert q(mserver, 'SELECT count(*) FROM lab."manif$manifests"') == [(15,)]
    assert q(mserver, f"CALL system.rewrite_manifests('{t}')") == [(15, 1)]
    assert q(mserver, 'SELECT count(*) FROM lab."manif$manifests"') == [(1,)]
    assert q(mserver, 'SELECT file_path FROM lab."manif$files" ORDER BY 1') == files
    assert q(mserver, f"SELECT count(*), sum(v) FROM {t}") == [(15, 105)]
    assert q(mserver, f'SELECT operation FROM lab."manif$snapshots" ORDER BY committed_at DESC LIMIT 1') == [
        ("replace",)]
    # Nothing left to merge; Trino's spelling.
    assert q(mserver, f"ALTER TABLE {t} EXECUTE optimize_manifests") == "ALTER TABLE EXECUTE"
    assert q(mserver, f"CALL system.rewrite_manifests(table => '{t}', use_caching => false)") == [(0, 0)]


def test_remove_orphan_files_while_an_insert_is_in_flight_loses_nothing(mserver):
    t = "lab.inflight"
    q(mserver, f"CREATE TABLE {t} (i bigint, s string) PARTITIONED BY (bucket(8, i))")
    q(mserver, f"INSERT INTO {t} VALUES (0, 'seed')")
    errors, scans = [], []

    def insert():
        try:
            q(mserver, f"INSERT INTO {t} SELECT v, 'row ' || v FROM generate_series(1, 600000) AS g(v)")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    th = threading.Thread(target=insert)
    th.start()
    # A minute's window, as an operator would use at the least: the insert's files are younger.
    while th.is_alive():
        scans.append(q(mserver, f"CALL system.remove_orphan_files(table => '{t}', "
                                "older_than => TIMESTAMP '" + time.strftime("%Y-%m-%d %H:%M:%S",
                                                                           time.gmtime(time.time() - 60)) + "')"))
        time.sleep(0.05)
    th.join()
    assert not errors, errors
    assert len(scans) >= 2 and all(s == [] for s in scans), scans
    assert q(mserver, f"SELECT count(*), count(DISTINCT i) FROM {t}") == [(600001, 600001)]


def test_maintenance_on_gcs_with_the_postgresql_catalog(rxgate_bin, postgres, tmp_path):
    from test_object_storage import Gcs, fake_gcs_binary, stop, wait_port  # the real fake-gcs-server
    from conftest import free_port
    import subprocess
    port = free_port()
    log = tmp_path / "fake-gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend",
             "memory", "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc, log)
        gcs = Gcs(f"http://127.0.0.1:{port}")
        gcs.create_bucket("rx-maint")
        db = postgres.create_database("rxmaint")
        d = tmp_path / "server"
        d.mkdir()
        config = d / "rxgate.toml"
        config.write_text(f'[catalog]\nuri = "{postgres.uri(db)}"\nwarehouse = "gs://rx-maint/warehouse"\n'
                          f'[storage.gcs]\nendpoint = "http://127.0.0.1:{port}"\n'
                          f'[maintenance]\nmin_orphan_age_secs = 0\n[audit]\ndir = "{d / "audit"}"\n')
        s = start_server_with_roles(rxgate_bin, d / "data", d, config, USERS, PASSWORD)
        try:
            q(s, "CREATE SCHEMA lab")
            q(s, "CREATE TABLE lab.g (v int, s string, d date) PARTITIONED BY (d)")
            for i in range(20):
                q(s, f"INSERT INTO lab.g VALUES ({i}, 'r{i}', DATE '2024-07-0{1 + i % 2}')")
            for i in range(5):
                q(s, f"INSERT OVERWRITE TABLE lab.g PARTITION (d = '2024-07-03') SELECT {i} AS v, 'o{i}' AS s")
            before = answers(s, "lab.g")
            objects = set(gcs.names("rx-maint", "warehouse/lab/g/"))
            assert q(s, f"CALL system.expire_snapshots(table => 'lab.g', older_than => {FUTURE}, retain_last => 3)")[0][4] == 22
            assert snapshot_count(s, "lab.g") == 3
            after = set(gcs.names("rx-maint", "warehouse/lab/g/"))
            assert len(objects - after) >= 22, "manifest lists and replaced files deleted from the bucket"
            assert q(s, "CALL system.rewrite_data_files(table => 'lab.g')")[0][:2] == (20, 2)  # 07-03 has one file
            assert q(s, "CALL system.rewrite_manifests('lab.g')")[0][1] == 1
            assert answers(s, "lab.g") == before
            gcs.upload("rx-maint", "warehouse/lab/g/data/d=2024-07-01/stray.parquet", b"orphan")
            listed = q(s, f"CALL system.remove_orphan_files(table => 'lab.g', older_than => {FUTURE}, dry_run => true)")
            assert ("gs://rx-maint/warehouse/lab/g/data/d=2024-07-01/stray.parquet",) in listed, listed
            q(s, f"CALL system.remove_orphan_files(table => 'lab.g', older_than => {FUTURE})")
            assert "warehouse/lab/g/data/d=2024-07-01/stray.parquet" not in gcs.names("rx-maint", "warehouse/lab/g/")
            assert answers(s, "lab.g") == before
            # On PostgreSQL, the history is the catalog database's.
            assert q(s, "SELECT action, outcome FROM system.maintenance_history ORDER BY started_at") == [
                ("expire_snapshots", "ok"), ("rewrite_data_files", "ok"), ("rewrite_manifests", "ok"),
                ("remove_orphan_files", "dry run"), ("remove_orphan_files", "ok")]
        finally:
            stop_server(s)
    finally:
        stop(proc)
