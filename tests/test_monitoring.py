"""The operations HTTP listener (issue 25): `/metrics` scraped by a real Prometheus (the Debian
`prometheus` package), the counters by protocol, the memory pool after a cancelled query,
`/readyz` against a real PostgreSQL catalog that is stopped and started again and a warehouse
store (fake-gcs-server) that goes away, `/livez` throughout, the bearer token, HTTPS with the
`rxgate cert dev` certificate, and `system.metrics` / `system.metrics_history` over SQL."""
from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest

from conftest import TEST_PASSWORD, TEST_USER, add_user, free_port, start_server, stop_server
from rxcli import Rxgate

PROMETHEUS = Path("/usr/bin/prometheus")
TOKEN = "scrape-secret-0123456789"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')


# --------------------------------------------------------------------------- helpers

def http_get(url: str, token: str | None = None, context: ssl.SSLContext | None = None,
             timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """The Prometheus text format as {(name, labels): value}; checks every line's shape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def total(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and want <= set(l))


def has(samples: dict, name: str) -> bool:
    return any(n == name for (n, _) in samples)


class Http:
    """The operations listener of one server."""

    def __init__(self, port: int, token: str | None = None, scheme: str = "http",
                 context: ssl.SSLContext | None = None):
        self.port, self.token, self.base, self.context = port, token, f"{scheme}://127.0.0.1:{port}", context

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        return http_get(self.base + path, token, self.context)

    def metrics(self) -> dict:
        status, body = self.get("/metrics", self.token)
        assert status == 200, (status, body)
        return parse(body)

    def wait_metric(self, name: str, pred, timeout: float = 20, **labels) -> float:
        deadline = time.monotonic() + timeout
        while True:
            v = total(self.metrics(), name, **labels)
            if pred(v) or time.monotonic() > deadline:
                return v
            time.sleep(0.2)


def serve_with_http(rxgate_bin: Path, data_dir: Path, log: Path, env: dict | None = None,
                    config: Path | None = None):
    port = free_port()
    server = start_server(rxgate_bin, data_dir, log, env={**(env or {}), "RXGATE_HTTP_LISTEN": f"127.0.0.1:{port}"},
                          config=config)
    return server, port


def wait_http(url: str, context=None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_get(url, context=context, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def mon(rxgate_bin, lakehouse, tmp_path_factory):
    """A server over the session's lakehouse with its HTTP listener on a known port and a
    metrics token."""
    d = tmp_path_factory.mktemp("mon")
    server, port = serve_with_http(rxgate_bin, lakehouse.rx.data_dir, d / "serve.log",
                                   env={"RXGATE_METRICS_TOKEN": TOKEN})
    http = Http(port, TOKEN)
    wait_http(http.base + "/livez")
    yield server, http
    stop_server(server)


@pytest.fixture
def prometheus(mon, tmp_path):
    """The real Prometheus scraping `mon` every second, with the bearer token."""
    assert PROMETHEUS.is_file(), "the Debian prometheus package is missing (scripts/test installs it)"
    _, http = mon
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rxgate
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {TOKEN}
    static_configs:
      - targets: ["127.0.0.1:{http.port}"]
""")
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(base):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"prometheus not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _ready(base: str) -> bool:
    try:
        return http_get(base + "/-/ready", timeout=2)[0] == 200
    except OSError:
        return False


def promql(base: str, query: str) -> list[dict]:
    status, body = http_get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert status == 200, (status, body)
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def prom_value(base: str, query: str) -> float | None:
    result = promql(base, query)
    return float(result[0]["value"][1]) if result else None


def wait_prom(base: str, query: str, pred, timeout: float = 60) -> float | None:
    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        v = prom_value(base, query)
        if v is not None and pred(v):
            return v
        time.sleep(0.5)
    return v


# --------------------------------------------------------------------------- tests

def test_prometheus_sees_exactly_the_statements_run(mon, prometheus):
    """A real Prometheus scrapes /metrics (bearer token) every second: after N statements
    over pgwire, `rxgate_statements_total` has grown by exactly N and the latency histogram
    has samples and buckets."""
    server, http = mon
    query = 'sum(rxgate_statements_total{protocol="pgwire"})'
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()  # the pgwire series exist before the baseline
        direct = http.wait_metric("rxgate_statements_total", lambda v: v > 0, protocol="pgwire")
        assert direct >= 1
        assert wait_prom(prometheus, 'up{job="rxgate"}', lambda v: v == 1) == 1, "target not up"
        baseline = wait_prom(prometheus, query, lambda v: v == direct)
        assert baseline == direct, (baseline, direct)
        statements = ["SELECT count(*) FROM health.prescriber_drug",
                      "SELECT presc_state, count(*) FROM health.prescriber_drug GROUP BY 1",
                      "SHOW search_path",
                      "SELECT 1 + 1"]
        n = 0
        for i in range(5):
            for sql in statements:
                conn.execute(sql).fetchall()
                n += 1
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM health.no_such_table").fetchall()
        n += 1
    assert n == 21
    seen = wait_prom(prometheus, query, lambda v: v >= baseline + n)
    time.sleep(2.5)  # a few more scrapes: nothing else may be counted
    seen = prom_value(prometheus, query)
    assert seen - baseline == n, (baseline, seen, n)
    errors = prom_value(prometheus, 'sum(rxgate_statements_total{protocol="pgwire",outcome="error"})')
    assert errors is not None and errors >= 1
    count = prom_value(prometheus, 'sum(rxgate_statement_duration_seconds_count{protocol="pgwire"})')
    assert count is not None and count >= n
    buckets = promql(prometheus, 'rxgate_statement_duration_seconds_bucket{protocol="pgwire",kind="select"}')
    les = {r["metric"]["le"] for r in buckets}
    assert "+Inf" in les and "0.1" in les and len(les) >= 10, les
    # Quantiles are computable from the buckets.
    p99 = prom_value(prometheus, 'histogram_quantile(0.99, sum by (le) '
                                 '(rxgate_statement_duration_seconds_bucket{protocol="pgwire"}))')
    assert p99 is not None and p99 > 0
    assert prom_value(prometheus, "rxgate_build_info") == 1


def test_counters_by_protocol_pgwire_and_flight_sql(mon):
    """Known statements over each protocol move that protocol's counters by exactly their
    number; rows and bytes sent grow; cache, object-store and memory series exist."""
    server, http = mon
    flight = flight_sql.connect(server.flight_uri(), db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD},
                                autocommit=True)
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            before = http.metrics()
            for _ in range(3):
                assert conn.execute("SELECT count(*) FROM health.us_cities").fetchall()[0][0] > 0
            with flight.cursor() as cur:
                for _ in range(4):
                    cur.execute("SELECT drug_name FROM health.prescriber_drug LIMIT 7")
                    assert len(cur.fetchall()) == 7
            time.sleep(0.5)
            after = http.metrics()
    finally:
        flight.close()

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("rxgate_statements_total", protocol="pgwire") == 3
    assert delta("rxgate_statements_total", protocol="flightsql") == 4
    assert delta("rxgate_statements_total", protocol="flightsql", kind="select", outcome="ok") == 4
    assert delta("rxgate_rows_sent_total", protocol="pgwire") == 3
    assert delta("rxgate_rows_sent_total", protocol="flightsql") == 28
    assert delta("rxgate_sent_bytes_total", protocol="pgwire") > 0
    assert delta("rxgate_sent_bytes_total", protocol="flightsql") > 0
    assert delta("rxgate_statement_duration_seconds_count", protocol="flightsql") == 4
    for name in ["rxgate_data_cache_hits_total", "rxgate_data_cache_misses_total", "rxgate_data_cache_bytes",
                 "rxgate_object_store_requests_total", "rxgate_object_store_bytes_total",
                 "rxgate_scanned_bytes_total", "rxgate_query_memory_used_bytes", "rxgate_query_memory_limit_bytes",
                 "rxgate_query_spill_bytes", "rxgate_sessions_open", "rxgate_connections_open",
                 "rxgate_login_failures_total", "rxgate_commit_retries_total", "rxgate_commit_conflicts_total",
                 "rxgate_ingest_rows_total", "rxgate_policy_reloads_total", "rxgate_policy_reload_errors_total",
                 "rxgate_uptime_seconds", "rxgate_build_info"]:
        assert has(after, name), name
    assert total(after, "rxgate_object_store_requests_total", kind="parquet") > 0
    assert total(after, "rxgate_scanned_bytes_total") > 0
    assert total(after, "rxgate_query_memory_limit_bytes") > 0


def test_sessions_and_login_failures(mon):
    server, http = mon
    before = http.metrics()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn(password="wrong-password")).close()
    open_before = total(before, "rxgate_sessions_open", protocol="pgwire")
    with psycopg.connect(server.dsn(), autocommit=True), psycopg.connect(server.dsn(), autocommit=True):
        # The engine session is registered just after the login's ReadyForQuery: wait for it.
        during = http.wait_metric("rxgate_sessions_open", lambda v: v >= open_before + 2, protocol="pgwire")
    after = http.wait_metric("rxgate_login_failures_total", lambda v: True, protocol="pgwire")
    assert after - total(before, "rxgate_login_failures_total", protocol="pgwire") == 1
    assert during - open_before == 2
    assert http.wait_metric("rxgate_sessions_open", lambda v: v == total(before, "rxgate_sessions_open",
                                                                         protocol="pgwire"),
                            protocol="pgwire") == total(before, "rxgate_sessions_open", protocol="pgwire")


def test_memory_returns_to_the_pool_after_a_cancelled_query(mon):
    """A query that holds pool memory is cancelled (57014); /metrics shows the pool back to
    nothing used."""
    server, http = mon
    assert http.wait_metric("rxgate_query_memory_used_bytes", lambda v: v == 0) == 0
    heavy = ("SELECT count(DISTINCT concat(a.npi, b.drug_name, a.drug_name)) "
             "FROM health.prescriber_drug a CROSS JOIN (SELECT * FROM health.prescriber_drug LIMIT 400) b")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        failure: list[BaseException] = []

        def run():
            try:
                conn.execute(heavy).fetchall()
            except BaseException as e:  # noqa: BLE001
                failure.append(e)

        t = threading.Thread(target=run)
        t.start()
        # The listener has its own thread: it answers while the query keeps the workers busy.
        used = http.wait_metric("rxgate_query_memory_used_bytes", lambda v: v > 0, timeout=60)
        assert used > 0, "the query never reserved pool memory"
        t0 = time.monotonic()
        assert http.get("/livez") == (200, "ok\n")
        assert time.monotonic() - t0 < 2
        conn.cancel()
        t.join(60)
        assert not t.is_alive()
        assert failure and getattr(failure[0], "sqlstate", None) == "57014", failure
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
    assert http.wait_metric("rxgate_query_memory_used_bytes", lambda v: v == 0, timeout=10) == 0
    assert http.wait_metric("rxgate_statements_total", lambda v: v >= 1, protocol="pgwire",
                            outcome="cancelled") >= 1


def test_metrics_token_is_required_when_set(mon):
    _, http = mon
    assert http.get("/metrics")[0] == 401
    assert http.get("/metrics", token="wrong")[0] == 401
    status, body = http.get("/metrics", token=TOKEN)
    assert status == 200 and "# TYPE rxgate_statements_total counter" in body
    # The probes need no token.
    assert http.get("/livez") == (200, "ok\n")
    status, body = http.get("/readyz")
    assert status == 200, body
    assert json.loads(body) == {"status": "ready", "checks": {"catalog": "ok", "warehouse": "ok"}}


def test_system_metrics_tables_over_sql(mon, rxgate_bin):
    """`system.metrics` shows the registry's series, `system.metrics_history` its samples with
    the console's schema; both admin-only."""
    server, _ = mon
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()
        rows = conn.execute("SELECT name, labels, value FROM system.metrics "
                            "WHERE name = 'rxgate_statements_total' AND labels LIKE '%pgwire%'").fetchall()
        assert rows and all(v >= 0 for _, _, v in rows)
        assert any('kind="select"' in labels for _, labels, _ in rows), rows
        buckets = conn.execute("SELECT count(*) FROM system.metrics "
                               "WHERE name = 'rxgate_statement_duration_seconds_bucket'").fetchall()[0][0]
        assert buckets > 0
        cur = conn.execute("SELECT * FROM system.metrics_history")
        assert [(d.name) for d in cur.description] == [
            "ts", "uptime_secs", "sessions", "statements_per_sec", "memory_used_bytes", "memory_limit_bytes",
            "cache_hits", "cache_misses", "cache_bytes"]
        history = cur.fetchall()
        assert history, "the sampler takes its first sample at start-up"
        assert history[-1][5] > 0  # memory_limit_bytes
    add_user(rxgate_bin, server.users_file, "mon_analyst", "analyst-secret-123", "--role", "analyst")
    with psycopg.connect(server.dsn(user="mon_analyst", password="analyst-secret-123"), autocommit=True) as conn:
        for table in ("system.metrics", "system.metrics_history"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"SELECT * FROM {table}").fetchall()
            assert err.value.sqlstate == "42P01", (table, err.value.sqlstate)


def test_listener_off_and_printed_urls(mon, rxgate_bin, lakehouse, tmp_path):
    """serve prints the listener's probe, metrics and console URLs; "0" turns it off."""
    server, http = mon
    log = server.log_text()
    for path in ("/livez", "/readyz", "/metrics", "/console/"):
        assert f"http://127.0.0.1:{http.port}{path}" in log, log[-2000:]
    s = start_server(rxgate_bin, lakehouse.rx.data_dir, tmp_path / "off.log", env={"RXGATE_HTTP_LISTEN": "0"})
    try:
        assert "operations listener" not in s.log_text()
        assert "http listening" not in s.log_text()
    finally:
        stop_server(s)


# --------------------------------------------------------------------------- readiness

def pg_ctl(pg, action: str) -> None:
    opts = (f"-p {pg.port} -k {pg.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off")
    argv = [str(pg.bindir / "pg_ctl"), "-D", str(pg.root / "data"), "-w", "-t", "60"]
    argv += ["-m", "fast", "stop"] if action == "stop" else ["-o", opts, "-l", str(pg.root / "server.log"), "start"]
    p = subprocess.run(pg._as_owner(argv), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (action, p.stdout, p.stderr)


def wait_ready(http: Http, status: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, body = http.get("/readyz")
        if code == status or time.monotonic() > deadline:
            assert code == status, (code, body)
            return json.loads(body)
        assert http.get("/livez") == (200, "ok\n")
        time.sleep(0.3)


def test_readyz_follows_the_postgresql_catalog(rxgate_bin, tmp_path):
    """A PostgreSQL catalog stopped: /readyz 503 naming the catalog (the warehouse still ok),
    /livez 200 throughout; started again: ready again."""
    from pgserver import PostgresServer
    pg = PostgresServer.start()
    try:
        db = pg.create_database("rxmon")
        config = tmp_path / "pg.toml"
        config.write_text(f'[catalog]\nuri = "{pg.uri(db)}"\nwarehouse = "{tmp_path / "warehouse"}"\n'
                          '[http]\nreadiness_timeout_ms = 1500\n')
        (tmp_path / "data").mkdir()
        server, port = serve_with_http(rxgate_bin, tmp_path / "data", tmp_path / "serve.log", config=config)
        http = Http(port)
        try:
            wait_http(http.base + "/livez")
            assert wait_ready(http, 200)["checks"] == {"catalog": "ok", "warehouse": "ok"}
            pg_ctl(pg, "stop")
            started = time.monotonic()
            body = wait_ready(http, 503)
            assert body["status"] == "unready"
            assert body["checks"]["catalog"].startswith("failed"), body
            assert body["checks"]["warehouse"] == "ok", body
            assert pg.uri(db).split("@")[0].split(":")[-1] not in json.dumps(body), "password in /readyz"
            # One probe answers within the timeout, whatever the catalog does.
            t = time.monotonic()
            assert http.get("/readyz")[0] == 503
            assert time.monotonic() - t < 5
            assert http.get("/livez") == (200, "ok\n")
            assert time.monotonic() - started < 30
            pg_ctl(pg, "start")
            assert wait_ready(http, 200, timeout=60)["checks"]["catalog"] == "ok"
            assert server.alive()
        finally:
            stop_server(server)
    finally:
        pg.stop()


def test_readyz_names_the_warehouse_when_its_store_is_gone(rxgate_bin, tmp_path):
    """The warehouse on gs:// (the real fake-gcs-server): the emulator stopped → 503 naming the
    warehouse; started again with its bucket → ready."""
    import test_object_storage as tos
    port = free_port()
    log = tmp_path / "gcs.log"

    def start_gcs():
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(tos.fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                 "-backend", "memory", "-public-host", f"127.0.0.1:{port}",
                 "-external-url", f"http://127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        tos.wait_port(port, proc, log)
        gcs = tos.Gcs(f"http://127.0.0.1:{port}")
        gcs.create_bucket("rx-mon")
        gcs.upload("rx-mon", "warehouse/.keep", b"")
        return proc

    proc = start_gcs()
    server = None
    try:
        config = tmp_path / "gs.toml"
        config.write_text('[catalog]\nwarehouse = "gs://rx-mon/warehouse"\n'
                          f'[storage.gcs]\nendpoint = "http://127.0.0.1:{port}"\n'
                          '[http]\nreadiness_timeout_ms = 1500\n')
        (tmp_path / "data").mkdir()
        server, hport = serve_with_http(rxgate_bin, tmp_path / "data", tmp_path / "serve.log", config=config)
        http = Http(hport)
        wait_http(http.base + "/livez")
        assert wait_ready(http, 200)["checks"] == {"catalog": "ok", "warehouse": "ok"}
        tos.stop(proc)
        body = wait_ready(http, 503)
        assert body["checks"]["warehouse"].startswith("failed"), body
        assert body["checks"]["catalog"] == "ok", body
        assert "gs://rx-mon/warehouse" in body["checks"]["warehouse"] or "ms" in body["checks"]["warehouse"]
        proc = start_gcs()
        assert wait_ready(http, 200, timeout=60)["status"] == "ready"
    finally:
        if server is not None:
            stop_server(server)
        tos.stop(proc)


# --------------------------------------------------------------------------- TLS

def test_https_with_the_dev_certificate(rxgate_bin, lakehouse, tmp_path):
    """With `[pgwire.tls]` configured the listener speaks HTTPS with the same certificate
    (verified against `rxgate cert dev`'s CA); plaintext HTTP gets no answer. `tls = false`
    keeps it plain."""
    out = tmp_path / "certs"
    Rxgate(rxgate_bin, None).run("cert", "dev", "--out", out)
    config = tmp_path / "tls.toml"
    config.write_text(f'[pgwire.tls]\ncert = "{out / "server.crt"}"\nkey = "{out / "server.key"}"\n')
    server, port = serve_with_http(rxgate_bin, lakehouse.rx.data_dir, tmp_path / "tls.log", config=config)
    try:
        ctx = ssl.create_default_context(cafile=str(out / "ca.crt"))
        wait_http(f"https://localhost:{port}/livez", context=ctx)
        assert http_get(f"https://localhost:{port}/livez", context=ctx) == (200, "ok\n")
        status, body = http_get(f"https://localhost:{port}/metrics", context=ctx)
        assert status == 200 and "rxgate_statements_total" in body
        assert f"https://127.0.0.1:{port}/metrics" in server.log_text()
        with pytest.raises(Exception):
            http_get(f"http://127.0.0.1:{port}/livez", timeout=3)
        if shutil.which("curl"):
            p = subprocess.run(["curl", "-sS", "--cacert", str(out / "ca.crt"), f"https://localhost:{port}/readyz"],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 0 and '"ready"' in p.stdout, (p.stdout, p.stderr)
    finally:
        stop_server(server)
    config.write_text(config.read_text() + '[http]\ntls = false\n')
    server, port = serve_with_http(rxgate_bin, lakehouse.rx.data_dir, tmp_path / "plain.log", config=config)
    try:
        wait_http(f"http://127.0.0.1:{port}/livez")
        assert http_get(f"http://127.0.0.1:{port}/livez") == (200, "ok\n")
    finally:
        stop_server(server)
