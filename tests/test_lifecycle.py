"""Data lifecycle (issue 23 §2, §3): five years of monthly deliveries under a declarative
`[table.lifecycle]` (36 months online, then the archive table on another location, purged after
48 months), through `rxgate lifecycle plan` and `run`:

- the plan names exactly the deliveries to archive and to purge, with files, rows and bytes;
- the run moves each delivery into the archive (one transaction with its removal: counts
  reconcile, nothing twice), purges the old ones from both tables, and proves it: every
  Parquet file left under both locations is read here too, and no purged delivery's row is in
  one; the archive's files are on the archive location;
- a move killed before its commit leaves the delivery where it was; the re-run finishes;
- a second run has nothing to do; the catalog's lifecycle lease keeps a second runner out;
- every action is in system.maintenance_history.
"""
from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from conftest import TEST_PASSWORD, TEST_USER, start_server, stop_server
from rxcli import Rxgate

AS_OF = "2026-12-01"
MONTHS = [datetime.date(2021 + (11 + i) // 12, (11 + i) % 12 + 1, 1) for i in range(60)]  # 2021-12 … 2026-11
ROWS_PER_DELIVERY = 25


def definitions(d: Path, cold: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "life.toml").write_text(f"""
[[table]]
name = "health.rx_life"
partition_by = ["delivery_date"]
sort_by = ["npi"]
columns = [
  {{ name = "npi", type = "string" }},
  {{ name = "trx_cnt", type = "bigint" }},
  {{ name = "delivery_date", type = "date", required = true }},
]

[table.lifecycle]
online_months = 36
archive_table = "health_archive.rx_life"
archive_location = "{cold}"
purge_after_months = 48
""")
    return d


def q(server, sql):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else cur.statusmessage


def dates_in_files(root: Path) -> set[datetime.date]:
    found = set()
    for f in root.rglob("*.parquet"):
        found |= set(pq.read_table(f, columns=["delivery_date"]).column("delivery_date").to_pylist())
    return found


def test_archive_purge_and_proof_over_five_years(rxgate_bin, tmp_path):
    data = tmp_path / "data"
    cold = tmp_path / "cold"
    defs = definitions(tmp_path / "defs", cold)
    rx = Rxgate(rxgate_bin, data)
    rx.run("catalog", "apply", str(defs))
    s = start_server(rxgate_bin, data, tmp_path / "serve.log")
    try:
        for d in MONTHS:  # one commit per delivery, as the pipeline lands them
            q(s, f"INSERT INTO health.rx_life SELECT CAST(1000000000 + x AS VARCHAR), x, DATE '{d}' "
                 f"FROM generate_series(1, {ROWS_PER_DELIVERY}) AS g(x)")
        assert q(s, "SELECT count(*), count(DISTINCT delivery_date) FROM health.rx_life") == [(1500, 60)]
    finally:
        stop_server(s)

    plan = rx.run("lifecycle", "plan", "--definitions", str(defs), "--as-of", AS_OF).stdout.splitlines()
    purged = [d for d in MONTHS if d < datetime.date(2022, 12, 1)]
    archived = [d for d in MONTHS if datetime.date(2022, 12, 1) <= d < datetime.date(2023, 12, 1)]
    assert len(purged) == 12 and len(archived) == 12
    assert [line.split()[2] for line in plan if " archive " in line] == [str(d) for d in archived], plan
    assert [line.split()[2] for line in plan if " purge " in line] == [str(d) for d in purged], plan
    assert all(f"{ROWS_PER_DELIVERY} rows" in line for line in plan if " archive " in line or " purge " in line)

    # A purge killed right before its commit: nothing is gone; then a move killed right before
    # its commit (the purge, first, lands): the delivery stays where it was.
    crash = rx.run("lifecycle", "run", "--definitions", str(defs), "--as-of", AS_OF,
                   env={"RXGATE_FAILPOINT": "lifecycle.before_purge"}, check=False)
    assert crash.returncode != 0
    s = start_server(rxgate_bin, data, tmp_path / "serve-purge.log")
    try:
        assert q(s, "SELECT count(*), count(DISTINCT delivery_date) FROM health.rx_life") == [(1500, 60)]
    finally:
        stop_server(s)
    crash = rx.run("lifecycle", "run", "--definitions", str(defs), "--as-of", AS_OF,
                   env={"RXGATE_FAILPOINT": "lifecycle.before_move"}, check=False)
    assert crash.returncode != 0
    s = start_server(rxgate_bin, data, tmp_path / "serve-crash.log")
    try:
        # The purge ran (it comes first); the first move did not land in either table.
        assert q(s, "SELECT count(*), count(DISTINCT delivery_date) FROM health.rx_life") == [(1200, 48)]
        # The archive table is created by the move's own commit: not there either.
        assert not _exists(s)
    finally:
        stop_server(s)
    # The killed run's lease names a process of this host that is gone: the next run takes it.

    out = rx.run("lifecycle", "run", "--definitions", str(defs), "--as-of", AS_OF).stdout
    assert "done in" in out, out
    s = start_server(rxgate_bin, data, tmp_path / "serve-after.log")
    try:
        online = q(s, "SELECT min(delivery_date), max(delivery_date), count(DISTINCT delivery_date), count(*) "
                      "FROM health.rx_life")
        assert online == [(datetime.date(2023, 12, 1), datetime.date(2026, 11, 1), 36, 900)]
        archive = q(s, "SELECT min(delivery_date), max(delivery_date), count(DISTINCT delivery_date), count(*), "
                       "count(DISTINCT npi) FROM health_archive.rx_life")
        assert archive == [(datetime.date(2022, 12, 1), datetime.date(2023, 11, 1), 12, 300, ROWS_PER_DELIVERY)]
        # Nothing twice: each (npi, delivery) once over both tables.
        assert q(s, "SELECT count(*), count(DISTINCT npi || CAST(delivery_date AS VARCHAR)) FROM "
                    "(SELECT * FROM health.rx_life UNION ALL SELECT * FROM health_archive.rx_life) u") == [(1200, 1200)]
        # The archive's files are on its own location.
        files = [r[0] for r in q(s, 'SELECT file_path FROM health_archive."rx_life$files"')]
        assert files and all(str(cold) in f for f in files), files
        history = q(s, "SELECT action, outcome FROM system.maintenance_history WHERE table_name = 'health.rx_life' "
                       "ORDER BY started_at")
        assert ("lifecycle purge", "ok") in history and ("lifecycle archive", "failed") not in history
        assert sum(1 for h in history if h == ("lifecycle archive", "ok")) == 12, history
        (detail,) = q(s, "SELECT detail FROM system.maintenance_history WHERE action = 'lifecycle purge'")[0]
        assert "none holds a purged delivery" in detail, detail
    finally:
        stop_server(s)
    # Our own proof: every Parquet file left under both locations.
    warehouse = data / "warehouse"
    left = dates_in_files(warehouse / "health" / "rx_life") | dates_in_files(cold)
    assert not left & set(purged), sorted(left & set(purged))
    assert set(archived) <= left
    # Nothing left to do.
    again = rx.run("lifecycle", "run", "--definitions", str(defs), "--as-of", AS_OF).stdout
    assert "nothing to do" in again, again


def _exists(server) -> bool:
    return bool(q(server, "SELECT 1 FROM information_schema.tables WHERE table_schema = 'health_archive' "
                          "AND table_name = 'rx_life'"))


def test_the_lifecycle_lease_keeps_a_second_runner_out(rxgate_bin, tmp_path):
    data = tmp_path / "data"
    defs = definitions(tmp_path / "defs", tmp_path / "cold")
    rx = Rxgate(rxgate_bin, data)
    rx.run("catalog", "apply", str(defs))
    assert "nothing to do" in rx.run("lifecycle", "run", "--definitions", str(defs), "--as-of", AS_OF).stdout
    db = next(data.rglob("*.db"))
    far = int((datetime.datetime.now() + datetime.timedelta(hours=1)).timestamp() * 1000)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO rxgate_locks VALUES ('rxgate', 'lifecycle', 'another-gateway', ?)", (far,))
    busy = rx.run("lifecycle", "run", "--definitions", str(defs), "--as-of", AS_OF, check=False)
    assert busy.returncode != 0 and "another process is running the lifecycle" in busy.stderr, busy.stderr
    # An expired lease (its holder died) is taken over.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE rxgate_locks SET expires_ms = 1")
    assert rx.run("lifecycle", "run", "--definitions", str(defs), "--as-of", AS_OF).returncode == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM rxgate_locks").fetchone() == (0,)


def test_catalog_apply_sets_a_changed_sort_order(rxgate_bin, tmp_path):
    data, defs = tmp_path / "data", tmp_path / "defs"
    defs.mkdir()
    table = """
[[table]]
name = "health.sorted_by_toml"
partition_by = ["delivery_date"]
{sort}
columns = [
  {{ name = "npi", type = "string" }},
  {{ name = "delivery_date", type = "date", required = true }},
]
"""
    rx = Rxgate(rxgate_bin, data)
    (defs / "t.toml").write_text(table.format(sort=""))
    assert "created   health.sorted_by_toml" in rx.run("catalog", "apply", str(defs)).stdout
    (defs / "t.toml").write_text(table.format(sort='sort_by = ["npi"]'))
    assert "sorted    health.sorted_by_toml (by npi)" in rx.run("catalog", "apply", str(defs)).stdout
    assert "unchanged health.sorted_by_toml" in rx.run("catalog", "apply", str(defs)).stdout
    # Every writer follows it: an INSERT's file is sorted by npi.
    rx.run("sql", "INSERT INTO health.sorted_by_toml SELECT CAST((x * 7919) % 10007 AS VARCHAR), DATE '2024-01-01' "
                  "FROM generate_series(1, 5000) AS g(x)")
    (f,) = list((data / "warehouse" / "health" / "sorted_by_toml" / "data").rglob("*.parquet"))
    npis = pq.read_table(f, columns=["npi"]).column("npi").to_pylist()
    assert len(npis) == 5000 and npis == sorted(npis)
