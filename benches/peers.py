"""The systems the benches compare: the rxgate server (pgwire, and Flight SQL when the
binary has it), PostgreSQL 15 on loopback, DuckDB in-process, raw DataFusion in-process
(the `datafusion` Python package, the same major version rxgate is built on) and PySpark
local[2]. All peers read the same data: the Parquet data files of the Iceberg tables
rxgate's pipeline wrote (PostgreSQL gets them loaded through a CSV export by DuckDB).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (DELIVERY, PG_BIN, BenchError, free_port, log, read_vm,
                     reset_peak_rss, run_checked, wait_port)

BENCH_USER = "bench"


# ---------------------------------------------------------------------------
# The lakehouse's data files
# ---------------------------------------------------------------------------

@dataclass
class LakeFiles:
    """Parquet data files of the curated tables, as rxgate's pipeline wrote them. The
    lakehouse is made fresh by one pipeline run, so every data file is live (no earlier
    snapshot's files to exclude); counts are checked against rxgate's."""
    lake: Path
    tables: dict[str, list[Path]] = field(default_factory=dict)

    @classmethod
    def find(cls, lake: Path) -> "LakeFiles":
        wh = lake / "warehouse"
        out = cls(lake)
        for t in ("prescriber_drug", "us_cities", "city_report", "top_prescribers"):
            files = sorted(p for p in wh.rglob("*.parquet")
                           if f"/{t}/" in p.as_posix() and "/metadata/" not in p.as_posix())
            if not files:
                raise BenchError(f"no Parquet data files of health.{t} under {wh}")
            out.tables[t] = files
        return out

    def glob(self, table: str) -> list[str]:
        return [str(p) for p in self.tables[table]]

    def bytes(self, table: str) -> int:
        return sum(p.stat().st_size for p in self.tables[table])


# ---------------------------------------------------------------------------
# rxgate serve
# ---------------------------------------------------------------------------

class RxgateServer:
    """`rxgate serve` over a lakehouse on free loopback ports, with a bench user (SCRAM).
    Flight SQL: tried with a `[flightsql] listen` config section; a binary that does not
    know it refuses the config, and the server is started without (flight_port = None)."""

    def __init__(self, binary: Path, lake: Path, work: Path, flight: bool = True):
        self.binary, self.lake, self.work = binary, lake, work
        self.password = secrets.token_urlsafe(18)
        self.pg_port = free_port()
        self.flight_port: int | None = None
        self.flight_note = "not tried"
        self.proc: subprocess.Popen | None = None
        self.log_path = work / "rxgate-serve.log"
        self.users_file = work / "bench-users.toml"
        self._start(flight)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RXGATE_") and not k.startswith("PG")}
        env["RXGATE_USERS_FILE"] = str(self.users_file)
        # As in production: with RUST_BACKTRACE=1 every error the server creates (and some
        # are made and caught on the query path) captures a backtrace.
        env.pop("RUST_BACKTRACE", None)
        env.pop("RUST_LIB_BACKTRACE", None)
        # A pseudonym key, so the analyst of W6 pays for real HMACs (without one the mask is NULL).
        env["RXGATE_PSEUDONYM_KEY"] = "bench-pseudonym-key-not-secret"
        env.setdefault("RUST_LOG", "warn")
        return env

    def _config(self, flight_port: int | None) -> Path:
        conf = self.work / "rxgate-bench.toml"
        text = (f'data_dir = "{self.lake}"\n\n[pgwire]\nlisten = "127.0.0.1:{self.pg_port}"\n'
                f"max_connections = 200\n\n[http]\nlisten = \"0\"\n")
        if flight_port:
            text += f'\n[flightsql]\nlisten = "127.0.0.1:{flight_port}"\n'
        conf.write_text(text)
        return conf

    def _add_user(self) -> None:
        if self.users_file.exists():
            self.users_file.unlink()
        # admin: the built-in policy lets only the admin role see the tables; the benches
        # measure the unmasked path.
        subprocess.run([str(self.binary), "--data-dir", str(self.lake), "user", "add", BENCH_USER,
                        "--role", "admin", "--password-stdin"], input=self.password + "\n",
                       text=True, check=True, capture_output=True, env=self.env(), cwd=self.work)

    def _spawn(self, conf: Path) -> subprocess.Popen:
        logf = open(self.log_path, "a")
        return subprocess.Popen([str(self.binary), "--config", str(conf), "--data-dir",
                                 str(self.lake), "serve"], stdout=logf, stderr=subprocess.STDOUT,
                                env=self.env(), cwd=self.work, start_new_session=True)

    def _start(self, flight: bool) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self._add_user()
        if flight:
            port = free_port()
            proc = self._spawn(self._config(port))
            if wait_port(self.pg_port, 120, proc):
                if wait_port(port, 10, proc):
                    self.proc, self.flight_port = proc, port
                    self.flight_note = f"Flight SQL on 127.0.0.1:{port}"
                    log(f"rxgate serve: pgwire :{self.pg_port}, Flight SQL :{port}")
                    return
                self.flight_note = "binary accepted [flightsql] but nothing listened"
                self.proc = proc
                log(f"rxgate serve: pgwire :{self.pg_port}; Flight: {self.flight_note}")
                return
            proc.wait(timeout=10) if proc.poll() is None else None
            tail = self.log_path.read_text()[-400:]
            self.flight_note = ("the binary has no Flight SQL frontend (refused [flightsql]: "
                                + (tail.strip().splitlines() or ['?'])[-1][:160] + ")")
            self._kill(proc)
        proc = self._spawn(self._config(None))
        if not wait_port(self.pg_port, 120, proc):
            raise BenchError(f"rxgate serve did not listen on {self.pg_port}:\n"
                             f"{self.log_path.read_text()[-2000:]}")
        self.proc = proc
        log(f"rxgate serve: pgwire :{self.pg_port} (Flight n/a)")

    def dsn(self) -> str:
        return (f"host=127.0.0.1 port={self.pg_port} dbname=rxgate user={BENCH_USER} "
                f"password={self.password} connect_timeout=10")

    def pg_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = self.password
        return env

    def flight_connect(self):
        import adbc_driver_flightsql.dbapi as fs
        return fs.connect(f"grpc://127.0.0.1:{self.flight_port}",
                          db_kwargs={"username": BENCH_USER, "password": self.password},
                          autocommit=True)

    def flight_raw(self) -> "FlightRaw":
        return FlightRaw(self.flight_port, BENCH_USER, self.password)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss(self) -> int | None:
        return read_vm(self.pid, "VmHWM")

    def rss(self) -> int | None:
        return read_vm(self.pid, "VmRSS")

    def reset_peak(self) -> bool:
        return reset_peak_rss(self.pid)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            self._kill(self.proc)
            self.proc = None


# ---------------------------------------------------------------------------
# PostgreSQL 15 on loopback
# ---------------------------------------------------------------------------

PG_SETTINGS = {
    # Sized for the 2-core / 24 GiB machine: the tables fit in shared buffers, as the data
    # fits in rxgate's page cache. Durability off: the load is the bench's, not a workload.
    "shared_buffers": "4GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "effective_cache_size": "12GB",
    "max_connections": "100",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "8GB",
    "jit": "off",
}

PG_INDEXES = [
    "CREATE INDEX ON health.prescriber_drug (presc_state)",
    "CREATE INDEX ON health.prescriber_drug (presc_specialty)",
    "CREATE INDEX ON health.prescriber_drug (drug_name)",
    "CREATE INDEX ON health.prescriber_drug (npi)",
    "CREATE INDEX ON health.prescriber_drug (delivery_date)",
    "CREATE INDEX ON health.us_cities (state_id, city)",
]

DUCK_TO_PG = {"VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "SMALLINT": "smallint",
              "DOUBLE": "double precision", "FLOAT": "real", "DATE": "date", "BOOLEAN": "boolean",
              "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz",
              "HUGEINT": "numeric", "UBIGINT": "numeric", "UINTEGER": "bigint"}


class PostgresServer:
    """A throwaway PostgreSQL 15 cluster (initdb as the postgres user when run as root) on a
    free loopback port, in a temp dir the postgres user can reach; stopped by stop()."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rxgate-bench-pg-"))
        self.data = self.dir / "data"
        self.root = os.geteuid() == 0
        self.user = "postgres"
        self.dbname = "bench"
        self.log_path = work / "postgres.log"
        self.started = False
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as_pg([PG_BIN / "initdb", "-D", self.data, "-U", self.user, "--auth=trust",
                     "-E", "UTF8", "--lc-collate=C", "--lc-ctype=C.UTF-8"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 " + " ".join(
            f"-c {k}={v}" for k, v in PG_SETTINGS.items())
        pg_log = self.dir / "postgres.log"
        self._as_pg([PG_BIN / "pg_ctl", "-D", self.data, "-o", opts, "-l", pg_log, "-w", "start"])
        self.started = True
        self._as_pg([PG_BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", self.user,
                     self.dbname])
        log(f"PostgreSQL 15 on 127.0.0.1:{self.port} ({self.dir})")

    def _as_pg(self, argv: list) -> None:
        argv = [str(a) for a in argv]
        if self.root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        run_checked(argv, cwd="/")

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={self.dbname} user={self.user}"

    def pg_env(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except OSError:
            return None

    def load(self, duck, work: Path) -> dict:
        """Creates health.prescriber_drug and health.us_cities with the types DuckDB sees in
        the Parquet files, loads them with COPY FROM STDIN (CSV exported by DuckDB), adds
        the indexes, VACUUM ANALYZE. Returns timings."""
        import psycopg
        t0 = time.perf_counter()
        out = {}
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA health")
            for table in ("prescriber_drug", "us_cities"):
                cols = duck.execute(f"DESCRIBE SELECT * FROM {table}").fetchall()
                defs = []
                for name, typ, *_ in cols:
                    pgt = DUCK_TO_PG.get(typ)
                    if pgt is None and typ.startswith("DECIMAL"):
                        pgt = "numeric" + typ[len("DECIMAL"):]
                    if pgt is None:
                        pgt = "text"
                    defs.append(f'"{name}" {pgt}')
                conn.execute(f"CREATE TABLE health.{table} ({', '.join(defs)})")
                csv = work / f"pg-{table}.csv"
                duck.execute(f"COPY (SELECT * FROM {table}) TO '{csv}' (FORMAT csv, HEADER false)")
                with conn.cursor() as cur:
                    with cur.copy(f"COPY health.{table} FROM STDIN (FORMAT csv)") as cp:
                        with open(csv, "rb") as f:
                            while chunk := f.read(1 << 20):
                                cp.write(chunk)
                csv.unlink()
            t1 = time.perf_counter()
            out["copy_s"] = t1 - t0
            for stmt in PG_INDEXES:
                conn.execute(stmt)
            conn.execute("VACUUM ANALYZE")
            out["index_s"] = time.perf_counter() - t1
            out["rows"] = conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0]
            out["size"] = conn.execute(
                "SELECT pg_total_relation_size('health.prescriber_drug')").fetchone()[0]
        log(f"PostgreSQL loaded {out['rows']:,} rows in {out['copy_s']:.1f} s, indexes + "
            f"VACUUM ANALYZE {out['index_s']:.1f} s")
        return out

    def stop(self) -> None:
        if self.started:
            try:
                self._as_pg([PG_BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])
            except BenchError as e:
                log(f"pg_ctl stop failed: {e}")
            self.started = False
        if (self.dir / "postgres.log").exists():
            shutil.copy(self.dir / "postgres.log", self.log_path)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# In-process engines
# ---------------------------------------------------------------------------

def _serve_in_memory(files: list[str], port: int, ready) -> None:
    """Child process of FlightCeiling: loads the Parquet files into memory with plain strings,
    cuts the table into batches of at most 8,192 rows and answers every statement with all of
    them."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.flight as fl
    table = ds.dataset(files, format="parquet").to_table()
    plain = pa.schema([pa.field(f.name, pa.string() if pa.types.is_string_view(f.type)
                                or pa.types.is_large_string(f.type) else f.type)
                       for f in table.schema])
    table = table.cast(plain)
    batches = table.to_batches(max_chunksize=8192)

    class Server(fl.FlightServerBase):
        def get_flight_info(self, context, descriptor):
            if b"CommandStatementQuery" not in descriptor.command:
                raise fl.FlightUnavailableError("only statements are answered")
            return fl.FlightInfo(table.schema, descriptor, [fl.FlightEndpoint(b"all", [])],
                                 table.num_rows, table.nbytes)

        def do_get(self, context, ticket):
            return fl.RecordBatchStream(pa.Table.from_batches(batches))

    server = Server(f"grpc://127.0.0.1:{port}")
    ready.set()
    server.serve()


class FlightRaw:
    """pyarrow's own Flight client (gRPC C++) speaking Flight SQL by hand: GetFlightInfo for a
    statement, then every endpoint's DoGet at once, one thread each, over one connection.
    W4 measures it beside the ADBC (Go) client: the same server and query, a cheaper client."""

    def __init__(self, port: int, user: str, password: str):
        import concurrent.futures
        import sys
        import pyarrow.flight as flight
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import flightsql_proto  # noqa: E402 — the tests' hand-written Flight SQL commands
        self._proto = flightsql_proto
        self.client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        header = self.client.authenticate_basic_token(user, password)
        self.options = flight.FlightCallOptions(headers=[header], timeout=600)
        self.pool = concurrent.futures.ThreadPoolExecutor(8)

    def query(self, sql: str):
        """The whole result as one Arrow table, its endpoints fetched in parallel."""
        import pyarrow as pa
        info = self.client.get_flight_info(self._proto.statement_query(sql), self.options)
        parts = self.pool.map(lambda e: self.client.do_get(e.ticket, self.options).read_all(),
                              info.endpoints)
        return pa.concat_tables(parts)

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


class FlightCeiling:
    """pyarrow's C++ Flight server (gRPC C++) holding one table in memory and doing no query
    work: any statement gets the whole table, plain strings in batches of at most 8,192 rows,
    one endpoint. What a Flight SQL client on this machine can take at most; W4 measures it
    beside rxgate with the same ADBC client. Runs in a child process so that its CPU is not
    the client's."""

    def __init__(self, files: list[str]):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.port = free_port()
        ready = ctx.Event()
        self.proc = ctx.Process(target=_serve_in_memory, args=(files, self.port, ready),
                                daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 600
        while not ready.wait(0.5):
            if not self.proc.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise BenchError("the in-memory Flight server did not start (exit code "
                                 f"{self.proc.exitcode})")
        if not wait_port(self.port, 60):
            self.stop()
            raise BenchError("the in-memory Flight server does not listen")

    def connect(self):
        import adbc_driver_flightsql.dbapi as fs
        return fs.connect(f"grpc://127.0.0.1:{self.port}", autocommit=True)

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(30)


def duckdb_connect(files: LakeFiles):
    """DuckDB in-process with views over the same Parquet files (default threads = cores)."""
    import duckdb
    con = duckdb.connect()
    for t in ("prescriber_drug", "us_cities", "city_report", "top_prescribers"):
        lst = ", ".join(f"'{p}'" for p in files.glob(t))
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet([{lst}], "
                    f"hive_partitioning = false)")
    return con


def duckdb_arrow(con, sql: str):
    """The full result as one Arrow table (duckdb 2.0's .arrow() returns a reader)."""
    res = con.sql(sql).arrow()
    return res.read_all() if hasattr(res, "read_all") else res


def datafusion_context(files: LakeFiles):
    """Raw DataFusion (Python bindings) over the same Parquet files: one listing table per
    curated table, its files in the partition subdirectories."""
    import datafusion
    cfg = datafusion.SessionConfig().set(
        "datafusion.execution.listing_table_ignore_subdirectory", "false")
    ctx = datafusion.SessionContext(cfg)
    for t in ("prescriber_drug", "us_cities"):
        root = _common_root(files.tables[t])
        ctx.register_parquet(t, str(root) + "/", file_extension=".parquet")
    return ctx


def _common_root(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def spark_session(files: LakeFiles, work: Path):
    """PySpark local[2] (Java 17), the Parquet files read with recursiveFileLookup (no
    partition inference: the columns are in the files). Returns (spark, startup seconds)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    from pyspark.sql import SparkSession
    t0 = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("rxgate-bench")
             .config("spark.driver.memory", "6g")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.local.dir", str(work / "spark-tmp"))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    for t in ("prescriber_drug", "us_cities"):
        root = _common_root(files.tables[t])
        (spark.read.option("recursiveFileLookup", "true").parquet(str(root))
         .createOrReplaceTempView(t))
    startup = time.perf_counter() - t0
    log(f"PySpark local[2] up in {startup:.1f} s")
    return spark, startup


def stop_spark(spark) -> None:
    """Stops the session and ends its JVM. `spark.stop()` alone leaves the py4j gateway's JVM
    (6 GB heap, GC and timer threads) running until the harness exits, which slowed every
    workload measured after W2 on this 2-core machine."""
    from pyspark import SparkContext
    gateway = SparkContext._gateway
    spark.stop()
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    except Exception as e:  # noqa: BLE001 — the JVM is killed below anyway
        log(f"py4j gateway shutdown: {e}")
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except Exception:  # noqa: BLE001
            proc.kill()
    SparkContext._gateway = None
    SparkContext._jvm = None
    log("PySpark JVM stopped")


def connect_pg(dsn: str):
    import psycopg
    return psycopg.connect(dsn, autocommit=True)


def rxgate_copy_supported(conn) -> tuple[bool, str]:
    """Whether rxgate answers COPY (query) TO STDOUT."""
    try:
        with conn.cursor() as cur:
            with cur.copy("COPY (SELECT 1 AS x) TO STDOUT") as cp:
                data = b"".join(bytes(b) for b in cp)
        ok = data.strip() == b"1"
        return ok, ("answered, so COPY (SELECT …) TO STDOUT is measured" if ok
                    else f"unexpected COPY output {data[:40]!r}")
    except Exception as e:  # noqa: BLE001 — any refusal means "not available"
        return False, f"refused: {str(e).splitlines()[0][:120]}"


def delivery() -> str:
    return DELIVERY
