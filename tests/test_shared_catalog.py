"""Issue 6 §2 and §3: the Iceberg SQL catalog on a real PostgreSQL 15 server shared by several
rxgate processes, and interoperability with pyiceberg and DuckDB in both directions.

- Two `rxgate serve` processes on one PostgreSQL catalog and one warehouse: a pipeline commit
  made by the CLI is seen by both gateways' next query, over pgwire and Flight SQL, in sessions
  opened before the commit.
- Two `rxgate ingest prescribers` of different deliveries race for the same table: a row lock
  taken by the test on the table's catalog row holds both commits until both wait, so one of
  them must lose the compare-and-swap and retry. Both deliveries land with exact counts.
- Several processes opening and applying the catalog on a fresh database at once all succeed.
- rxgate's tables (appends and a partition overwrite) read by pyiceberg's SqlCatalog on the
  same database (PostgreSQL and SQLite) and by DuckDB's iceberg extension (DuckDB 1.5.5 and
  the extension from PyPI, see duckdb_iceberg.py), compared value by value with rxgate.
- A table pyiceberg creates and appends to (new namespace, partitioned) queried through
  rxgate's pgwire and Flight SQL, values checked.
"""
from __future__ import annotations

import collections
import datetime
import decimal
import subprocess
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, EqualTo
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (BooleanType, DateType, DecimalType, DoubleType, IntegerType,
                             LongType, NestedField, StringType, TimestampType)

import duckdb_iceberg
from conftest import D1, D2, D3, TEST_PASSWORD, TEST_USER, generate, start_server, stop_server
from rxcli import REPO_ROOT, Rxgate, child_env, describe, last_json_line, parse_csv

CATALOG = "rxgate"
FACTS = "health.prescriber_drug"
REJECTS = "health_quarantine.prescriber_drug_rejects"
COUNTS = "SELECT CAST(delivery_date AS VARCHAR) AS d, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1"


# --------------------------------------------------------------------------- helpers

class SharedLake:
    """One catalog database on the test PostgreSQL server and one warehouse, configured the way
    a deployment would be: a config file with `[catalog] uri/warehouse/name`. Every process
    gets its own data dir (users, audit), so nothing but the catalog and warehouse is shared."""

    def __init__(self, binary: Path, pg, root: Path, scheme: str = "postgres"):
        self.binary, self.pg, self.root = binary, pg, root
        self.db = pg.create_database("rxlake")
        self.uri = pg.uri(self.db, scheme)
        self.warehouse = root / "warehouse"
        self.config = root / "rxgate.toml"
        self.config.write_text(f'[catalog]\nuri = "{self.uri}"\nwarehouse = "{self.warehouse}"\n'
                               f'name = "{CATALOG}"\n')

    def rx(self, name: str = "cli") -> Rxgate:
        d = self.root / name
        d.mkdir(exist_ok=True)
        return Rxgate(self.binary, d)

    def run(self, *args, name: str = "cli", **kw) -> subprocess.CompletedProcess:
        return self.rx(name).run("--config", self.config, *args, **kw)

    def json(self, *args, name: str = "cli") -> dict:
        return last_json_line(self.run(*args, "--json", name=name))

    def pipeline(self, dataset, date: str, *extra) -> dict:
        return self.json("pipeline", "run", "--input", dataset.root, "--delivery-date", date, *extra)

    def ingest(self, path: Path, date: str) -> dict:
        return self.json("ingest", "prescribers", path, "--delivery-date", date)

    def sql(self, query: str) -> list[list[str]]:
        return parse_csv(self.run("sql", query, "--format", "csv").stdout)[1]

    def counts(self, table: str) -> dict[str, int]:
        return {d: int(n) for d, n in self.sql(COUNTS.format(t=table))}

    def pyiceberg(self) -> SqlCatalog:
        return SqlCatalog(CATALOG, uri=self.pg.sqlalchemy_uri(self.db),
                          warehouse=f"file://{self.warehouse}")

    def metadata_location(self, table: str) -> str:
        ns, name = table.rsplit(".", 1)
        with psycopg.connect(self.pg.dsn(self.db)) as conn:
            (loc,) = conn.execute(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = %s "
                "AND table_namespace = %s AND table_name = %s", (CATALOG, ns, name)).fetchone()
        return loc

    def serve(self, name: str) -> "Server":
        d = self.root / name
        d.mkdir(exist_ok=True)
        return start_server(self.binary, d, self.root / f"{name}.log", config=self.config)


def pg_counts(conn: psycopg.Connection, table: str = FACTS) -> dict[str, int]:
    return dict(conn.execute(COUNTS.format(t=table)).fetchall())


def flight_connect(server):
    return flight_sql.connect(server.flight_uri(),
                              db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD},
                              autocommit=True)


def flight_counts(conn, table: str = FACTS) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(COUNTS.format(t=table))
        return {d: int(n) for d, n in cur.fetchall()}


def step_rows(summary: dict) -> dict[str, int]:
    return {s["name"]: s["rows"] for s in summary["steps"]}


def sort_key(row):
    return tuple((v is None, v if v is not None else 0) for v in row)


@pytest.fixture(scope="module")
def second_dataset(rxgate_bin, tmp_path_factory):
    """Another delivery's raw files: a different seed and size, so counts tell deliveries apart."""
    return generate(rxgate_bin, tmp_path_factory.mktemp("raw2"), scale="0.005", seed="7")


@pytest.fixture
def shared_lake(rxgate_bin, postgres, tmp_path) -> SharedLake:
    return SharedLake(rxgate_bin, postgres, tmp_path)


# --------------------------------------------------------------------------- §2 shared catalog

def test_two_gateways_see_each_others_commits(shared_lake, dataset, second_dataset):
    lake = shared_lake
    p1 = lake.pipeline(dataset, D1)
    a, b = lake.serve("gateway-a"), lake.serve("gateway-b")
    try:
        with psycopg.connect(b.dsn(), autocommit=True) as pg_b, flight_connect(a) as fl_a:
            # Sessions opened before the commit.
            assert pg_counts(pg_b) == {D1: p1["loaded"]}
            assert flight_counts(fl_a) == {D1: p1["loaded"]}

            p2 = lake.pipeline(second_dataset, D2)     # another process commits
            assert p2["loaded"] != p1["loaded"]
            want = {D1: p1["loaded"], D2: p2["loaded"]}

            # The next query of the same sessions sees the new snapshot.
            assert pg_counts(pg_b) == want
            assert flight_counts(fl_a) == want
            assert pg_counts(pg_b, REJECTS) == {D1: p1["quarantined"], D2: p2["quarantined"]}

        # New sessions on both gateways, both protocols, every table the pipeline wrote.
        s1, s2 = step_rows(p1), step_rows(p2)
        for server in (a, b):
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                assert pg_counts(conn) == want
                assert pg_counts(conn, "health.city_report") == {D1: s1["city-report"],
                                                                 D2: s2["city-report"]}
                assert pg_counts(conn, "health.top_prescribers") == {D1: s1["top-prescribers"],
                                                                     D2: s2["top-prescribers"]}
                assert pg_counts(conn, "health.us_cities") == {D1: s1["ingest-cities"],
                                                               D2: s2["ingest-cities"]}
            with flight_connect(server) as conn:
                assert flight_counts(conn) == want
        # The CLI, a third process, agrees.
        assert lake.counts(FACTS) == want
    finally:
        stop_server(a)
        stop_server(b)


def test_concurrent_ingests_both_commit(rxgate_bin, postgres, tmp_path, dataset, second_dataset):
    # Catalog from the environment this time (RXGATE_CATALOG_URI / RXGATE_WAREHOUSE).
    db = postgres.create_database("rxrace")
    env = {"RXGATE_CATALOG_URI": postgres.uri(db), "RXGATE_WAREHOUSE": str(tmp_path / "warehouse")}
    base_rx = Rxgate(rxgate_bin, tmp_path / "base")
    base_rx.run("catalog", "apply", REPO_ROOT / "catalog", env=env)
    base = last_json_line(base_rx.run("ingest", "prescribers", dataset.prescribers,
                                      "--delivery-date", D1, "--json", env=env))

    jobs = {D2: dataset.prescribers, D3: second_dataset.prescribers}
    with psycopg.connect(postgres.dsn(db)) as holder, \
            psycopg.connect(postgres.dsn(db), autocommit=True) as monitor:
        # Hold the fact table's catalog row: both ingests write their files, then block in
        # their compare-and-swap UPDATE until both are there.
        holder.execute("SELECT metadata_location FROM iceberg_tables WHERE catalog_name = %s "
                       "AND table_namespace = 'health' AND table_name = 'prescriber_drug' "
                       "FOR UPDATE", (CATALOG,))
        procs = {}
        for date, path in jobs.items():
            rx = Rxgate(rxgate_bin, tmp_path / f"ingest-{date}")
            procs[date] = subprocess.Popen(
                rx.argv("-v", "ingest", "prescribers", path, "--delivery-date", date, "--json"),
                cwd=REPO_ROOT, env=child_env(env), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline, waiting = time.monotonic() + 180, 0
        while time.monotonic() < deadline:
            (waiting,) = monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE iceberg_tables%%'",
                (db,)).fetchone()
            if waiting >= 2 or any(p.poll() is not None for p in procs.values()):
                break
            time.sleep(0.1)
        holder.rollback()                                  # release: one wins, one retries
    results, logs = {}, {}
    for date, p in procs.items():
        out, err = p.communicate(timeout=300)
        proc = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        assert p.returncode == 0, "ingest failed\n" + describe(proc)
        results[date], logs[date] = last_json_line(proc), err
    assert waiting == 2, f"both commits should have waited on the row lock, saw {waiting}"

    # The loser of the compare-and-swap said so and retried on the fresh table.
    retried = [d for d, log in logs.items()
               if 'commit conflict, retrying on the fresh table table="health.prescriber_drug"' in log]
    assert len(retried) == 1, logs

    rx = Rxgate(rxgate_bin, tmp_path / "check")
    want = {D1: base["loaded"], D2: results[D2]["loaded"], D3: results[D3]["loaded"]}
    assert results[D2]["loaded"] != results[D3]["loaded"]
    for table, expected in ((FACTS, want),
                            (REJECTS, {D1: base["quarantined"], D2: results[D2]["quarantined"],
                                       D3: results[D3]["quarantined"]})):
        rows = parse_csv(rx.run("sql", COUNTS.format(t=table), "--format", "csv", env=env).stdout)[1]
        assert {d: int(n) for d, n in rows} == expected, table

    # pyiceberg sees one linear history: three appends, each on top of the previous one.
    cat = SqlCatalog(CATALOG, uri=postgres.sqlalchemy_uri(db), warehouse=f"file://{tmp_path}/warehouse")
    table = cat.load_table(FACTS)
    snaps = sorted(table.snapshots(), key=lambda s: s.sequence_number)
    assert [s.summary.operation.value for s in snaps] == ["append"] * 3
    assert [s.parent_snapshot_id for s in snaps[1:]] == [s.snapshot_id for s in snaps[:-1]]
    assert table.current_snapshot().snapshot_id == snaps[-1].snapshot_id
    assert int(snaps[-1].summary["total-records"]) == sum(want.values())
    assert table.scan().to_arrow().num_rows == sum(want.values())


def test_processes_initialise_a_fresh_catalog_together(rxgate_bin, postgres, tmp_path):
    """Four `catalog apply` at once on an empty database (postgresql:// scheme): the catalog's
    own tables and every table are created exactly once, and nobody fails."""
    lake = SharedLake(rxgate_bin, postgres, tmp_path, scheme="postgresql")
    procs = [subprocess.Popen(lake.rx(f"p{i}").argv("--config", lake.config, "catalog", "apply",
                                                     REPO_ROOT / "catalog"),
                              cwd=REPO_ROOT, env=child_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    actions = collections.Counter()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, describe(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        actions.update(tuple(line.split()) for line in out.splitlines() if line.strip())
    tables = {"health.prescriber_drug", "health.us_cities", "health.city_report",
              "health.top_prescribers", REJECTS}
    assert {t for (a, t) in actions if a == "created"} == tables
    assert all(actions[("created", t)] == 1 and actions[("unchanged", t)] == 3 for t in tables), actions
    assert set(lake.run("catalog", "list").stdout.split()) == tables


# --------------------------------------------------------------------------- §3 interoperability

@pytest.fixture(scope="module")
def written(rxgate_bin, postgres, tmp_path_factory, dataset, second_dataset):
    """A PostgreSQL-catalog lakehouse with appends and a partition overwrite: pipeline D1,
    ingest D2, then D1 again from other files (an Overwrite snapshot with deleted entries)."""
    lake = SharedLake(rxgate_bin, postgres, tmp_path_factory.mktemp("interop"))
    p1 = lake.pipeline(dataset, D1)
    i2 = lake.ingest(dataset.prescribers, D2)
    i1 = lake.ingest(second_dataset.prescribers, D1)
    assert i1["replaced_rows"] == p1["loaded"]
    want = {D1: i1["loaded"], D2: i2["loaded"]}
    assert lake.counts(FACTS) == want
    server = lake.serve("gateway")
    yield lake, server, want, p1
    stop_server(server)


CA_D1 = ("SELECT npi, drug_name, trx_cnt, total_drug_cost, years_of_exp FROM health.prescriber_drug "
         f"WHERE presc_state = 'CA' AND delivery_date = DATE '{D1}'")


def test_pyiceberg_reads_rxgate_tables_on_postgres(written):
    lake, server, want, p1 = written
    cat = lake.pyiceberg()
    assert {("health",), ("health_quarantine",)} <= set(cat.list_namespaces())
    assert {t[-1] for t in cat.list_tables("health")} == {"prescriber_drug", "us_cities",
                                                          "city_report", "top_prescribers"}
    table = cat.load_table(FACTS)
    assert [(f.name, str(f.transform)) for f in table.spec().fields] == \
        [("delivery_date", "identity"), ("presc_state", "identity")]

    # The overwrite is an ordinary Iceberg overwrite to pyiceberg.
    snap = table.current_snapshot()
    assert snap.summary.operation.value == "overwrite"
    assert int(snap.summary["deleted-records"]) == p1["loaded"]
    assert int(snap.summary["added-records"]) == want[D1]

    facts = table.scan(selected_fields=("delivery_date",)).to_arrow()
    got = collections.Counter(str(d) for d in facts.column("delivery_date").to_pylist())
    assert dict(got) == want

    cols = ("npi", "drug_name", "trx_cnt", "total_drug_cost", "years_of_exp")
    ca = table.scan(row_filter=And(EqualTo("presc_state", "CA"),
                                   EqualTo("delivery_date", D1)), selected_fields=cols).to_arrow()
    mine = sorted((tuple(r[c] for c in cols) for r in ca.to_pylist()), key=sort_key)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        theirs = sorted(conn.execute(CA_D1).fetchall(), key=sort_key)
        assert len(mine) == len(theirs) > 0
        assert mine == theirs
        # Dimension and reports too.
        for t in ("health.us_cities", "health.city_report", "health.top_prescribers", REJECTS):
            n = cat.load_table(t).scan().to_arrow().num_rows
            assert n == sum(pg_counts(conn, t).values()) > 0, t


def test_duckdb_iceberg_extension_reads_rxgate_tables(written):
    lake, server, want, p1 = written
    facts, report = lake.metadata_location(FACTS), lake.metadata_location("health.city_report")
    assert facts.startswith("file://") and facts.endswith(".metadata.json")
    agg = ("SELECT count(*), sum(trx_cnt), count(DISTINCT npi), round(sum(total_drug_cost), 2) "
           "FROM {src} WHERE presc_state = 'CA' AND delivery_date = DATE '" + D1 + "'")
    out = duckdb_iceberg.run([
        COUNTS.format(t=f"iceberg_scan('{facts}')"),
        agg.format(src=f"iceberg_scan('{facts}')"),
        COUNTS.format(t=f"iceberg_scan('{report}')"),
        f"SELECT count(*) FROM iceberg_snapshots('{facts}')",
    ])
    assert out["version"] == duckdb_iceberg.DUCKDB_VERSION
    assert out["extensions"] == ["avro", "iceberg"]
    counts, ca, report_counts, snapshots = out["results"]
    assert {d: n for d, n in counts} == want
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        mine = conn.execute(agg.format(src=FACTS)).fetchone()
        (ca,) = ca
        assert ca[:3] == list(mine[:3]) and ca[0] > 0
        assert ca[3] == pytest.approx(float(mine[3]), abs=0.005)
        assert {d: n for d, n in report_counts} == pg_counts(conn, "health.city_report")
    assert snapshots == [[3]]       # pipeline D1, ingest D2, overwrite of D1


def test_pyiceberg_reads_rxgate_tables_on_sqlite(lakehouse):
    """The embedded catalog (sqlite:DATA_DIR/catalog.db) read by pyiceberg, same catalog name."""
    data = lakehouse.rx.data_dir
    cat = SqlCatalog(CATALOG, uri=f"sqlite:///{data / 'catalog.db'}",
                     warehouse=f"file://{data / 'warehouse'}")
    steps = step_rows(lakehouse.pipeline)
    assert cat.load_table(FACTS).scan().to_arrow().num_rows == lakehouse.pipeline["loaded"]
    assert cat.load_table("health.us_cities").scan().to_arrow().num_rows == steps["ingest-cities"]
    assert cat.load_table("health.city_report").scan().to_arrow().num_rows == steps["city-report"]
    assert lakehouse.rx.count(FACTS, "presc_state = 'NY'") == \
        cat.load_table(FACTS).scan(row_filter=EqualTo("presc_state", "NY")).to_arrow().num_rows


# A table pyiceberg writes: a new namespace, every common type, identity-partitioned by state,
# two appends (two snapshots).
EVENTS_SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "state", StringType()),
    NestedField(3, "name", StringType()),
    NestedField(4, "amount", DoubleType()),
    NestedField(5, "day", DateType()),
    NestedField(6, "ts", TimestampType()),
    NestedField(7, "flag", BooleanType()),
    NestedField(8, "qty", IntegerType()),
    NestedField(9, "price", DecimalType(10, 2)),
)
EVENTS = [
    (1, "CA", "alpha", 1.5, datetime.date(2024, 1, 31), datetime.datetime(2024, 1, 31, 8, 30, 0),
     True, 10, decimal.Decimal("12.34")),
    (2, "NY", "beta", -2.25, datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29, 23, 59, 59, 123456),
     False, 20, decimal.Decimal("0.05")),
    (3, "CA", "gamma é", 1e10, datetime.date(1999, 12, 31), datetime.datetime(1999, 12, 31, 0, 0),
     True, -3, decimal.Decimal("-99.99")),
    (4, "TX", None, None, None, None, None, None, None),
    (5, "CA", "epsilon", 0.0, datetime.date(2024, 3, 31), datetime.datetime(2024, 3, 31, 12, 0),
     False, 0, decimal.Decimal("1000.00")),
]
EVENT_COLS = [f.name for f in EVENTS_SCHEMA.fields]


def write_events(cat: SqlCatalog) -> None:
    cat.create_namespace("interop")
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(),
                                        name="state"))
    table = cat.create_table("interop.events", schema=EVENTS_SCHEMA, partition_spec=spec)
    arrow_schema = EVENTS_SCHEMA.as_arrow()
    for chunk in (EVENTS[:3], EVENTS[3:]):
        table.append(pa.Table.from_pylist([dict(zip(EVENT_COLS, r)) for r in chunk],
                                          schema=arrow_schema))
    assert len(table.snapshots()) == 2


def check_events(server) -> None:
    query = f"SELECT {', '.join(EVENT_COLS)} FROM interop.events ORDER BY id"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute(query).fetchall() == EVENTS
        assert conn.execute("SELECT count(*), sum(qty) FROM interop.events WHERE state = 'CA'"
                            ).fetchone() == (3, 7)
        assert ("interop", "events") in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables").fetchall()
    with flight_connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, price FROM interop.events WHERE state = 'CA' ORDER BY id")
        assert cur.fetch_arrow_table().to_pylist() == [
            {"id": r[0], "name": r[2], "price": r[8]} for r in EVENTS if r[1] == "CA"]


def test_rxgate_reads_a_pyiceberg_table_on_postgres(written):
    lake, server, want, _ = written
    write_events(lake.pyiceberg())
    assert "interop.events" in lake.run("catalog", "list").stdout.split()
    check_events(server)         # the running gateway, new sessions
    assert lake.counts(FACTS) == want   # rxgate's own tables untouched


def test_rxgate_reads_a_pyiceberg_table_on_sqlite(rx, serve):
    rx.apply_catalog()
    data = rx.data_dir
    write_events(SqlCatalog(CATALOG, uri=f"sqlite:///{data / 'catalog.db'}",
                            warehouse=f"file://{data / 'warehouse'}"))
    check_events(serve(data))
