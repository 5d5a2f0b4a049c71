"""Shared fixtures of the rxgate integration tests.

Fixtures:
  rxgate_bin  path of the binary under test (RXGATE_BIN, else the debug build
              in $CARGO_TARGET_DIR or ${XDG_CACHE_HOME:-~/.cache}/rxgate/target)
  data_dir    a fresh, empty data dir for one test
  rx          an `Rxgate` CLI driver bound to `data_dir`
  run         `run(*args, env=None, check=True)` -> CompletedProcess (rx.run)
  dataset     session-wide `rxgate datagen --scale 0.01 --seed 42` output
  oracle_d1   the oracle's expectation for `dataset` as delivery D1
  lakehouse   session-wide data dir after `rxgate pipeline run` of D1
              (read-only for tests: mutate your own `rx`)
  serve       factory: serve(data_dir, env=None, config=None) starts `rxgate
              serve` on a free loopback port, waits for the port, and kills it
              afterwards
  server      `rxgate serve` over `lakehouse`, shared by a module
  postgres    a real PostgreSQL server for the whole run (tests/pgserver.py):
              create_database(), uri(db) for `[catalog] uri`, sqlalchemy_uri(db)

Every server also serves Flight SQL on its own free port (`Server.flight_port`,
`Server.flight_uri()`).

Authentication: every server gets its own users file (RXGATE_USERS_FILE, next
to its log) holding TEST_USER with TEST_PASSWORD as a SCRAM verifier, made with
`rxgate user add`; `Server.dsn()` and `Server.pg_env()` carry the password.

A test that is skipped fails the run (see pytest_sessionfinish): a missing
tool is a broken environment, not a reason to test less.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from oracle import Oracle
from rxcli import REPO_ROOT, Rxgate, child_env, default_binary

#: Delivery dates used throughout the tests.
D1 = "2024-01-31"
D2 = "2024-02-29"
D3 = "2024-03-31"

SCALE = "0.01"
SEED = "42"

#: The login every test server has (a SCRAM verifier in its users file).
TEST_USER = "rxgate"
TEST_PASSWORD = "rxgate-test-secret"


# --------------------------------------------------------------------------
# Never skip
# --------------------------------------------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _skipped and not os.environ.get("RXGATE_ALLOW_SKIP"):
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"ERROR: {len(_skipped)} test(s) skipped; skipping counts as "
                          f"failure here: {_skipped[:5]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --------------------------------------------------------------------------
# Binary, data dirs, CLI
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def rxgate_bin() -> Path:
    path = default_binary()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"rxgate binary not found at {path}: build it "
                    f"(cargo build --bins) or set RXGATE_BIN", pytrace=False)
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def rx(rxgate_bin, data_dir) -> Rxgate:
    return Rxgate(rxgate_bin, data_dir)


@pytest.fixture
def run(rx):
    """run(*args, env=None, check=True) -> CompletedProcess, in `data_dir`."""
    return rx.run


# --------------------------------------------------------------------------
# Generated raw data and the expected results
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dataset:
    root: Path            # the --out dir of datagen (the pipeline's --input)
    prescribers: Path     # root/prescribers/USA_Presc_Medicare_Data_2021.csv
    cities: Path          # root/cities/us_cities.parquet
    scale: str
    seed: str


def generate(rxgate_bin: Path, out: Path, scale: str = SCALE, seed: str = SEED,
             layout: str | None = None) -> Dataset:
    """`rxgate datagen` into `out`; returns where the files are."""
    args = ["datagen", "--scale", scale, "--out", out, "--seed", seed]
    if layout:
        args += ["--layout", layout]
    Rxgate(rxgate_bin, None).run(*args)
    presc_dir = out / "prescribers"
    csvs = sorted(presc_dir.glob("*.csv"))
    assert csvs, f"datagen wrote no CSV under {presc_dir}"
    return Dataset(out, csvs[0] if len(csvs) == 1 else presc_dir,
                   out / "cities" / "us_cities.parquet", scale, seed)


@pytest.fixture(scope="session")
def dataset(rxgate_bin, tmp_path_factory) -> Dataset:
    ds = generate(rxgate_bin, tmp_path_factory.mktemp("raw"))
    assert ds.prescribers == ds.root / "prescribers" / "USA_Presc_Medicare_Data_2021.csv"
    assert ds.cities.is_file(), f"datagen wrote no {ds.cities}"
    return ds


@pytest.fixture(scope="session")
def oracle_d1(dataset) -> Oracle:
    return Oracle.from_inputs(dataset.root / "prescribers", dataset.root / "cities", D1)


@dataclasses.dataclass
class Lakehouse:
    rx: Rxgate
    pipeline: dict        # the --json summary of the pipeline run
    delivery_date: str


@pytest.fixture(scope="session")
def lakehouse(rxgate_bin, dataset, tmp_path_factory) -> Lakehouse:
    rx = Rxgate(rxgate_bin, tmp_path_factory.mktemp("lake"))
    summary = rx.pipeline(dataset.root, D1)
    return Lakehouse(rx, summary, D1)


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    host: str
    port: int
    proc: subprocess.Popen
    log: Path
    users_file: Path | None = None
    config: Path | None = None
    flight_port: int | None = None

    def flight_uri(self, tls: bool = False, host: str | None = None) -> str:
        """The Flight SQL (ADBC / pyarrow.flight) URI of this server."""
        return f"{'grpc+tls' if tls else 'grpc'}://{host or self.host}:{self.flight_port}"

    def dsn(self, user: str = TEST_USER, dbname: str = "rxgate", password: str | None = None,
            **params) -> str:
        """libpq DSN; TEST_USER gets TEST_PASSWORD unless `password` says otherwise.
        Extra keyword arguments become parameters (sslmode="require", …)."""
        if password is None and user == TEST_USER:
            password = TEST_PASSWORD
        dsn = f"host={self.host} port={self.port} user={user} dbname={dbname} connect_timeout=10"
        if password is not None:
            dsn += f" password='{password}'"
        for k, v in params.items():
            dsn += f" {k}='{v}'"
        return dsn

    def pg_env(self, password: str = TEST_PASSWORD) -> dict:
        """Environment for the psql binary: no PG* from outside, the password in PGPASSWORD."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGCONNECT_TIMEOUT="10", PGAPPNAME="rxgate-tests", PGPASSWORD=password)
        return env

    def rx(self, binary: Path, data_dir: Path | None = None) -> tuple[Rxgate, dict]:
        """The CLI on this server's users file: (Rxgate, env for its runs)."""
        return Rxgate(binary, data_dir), {"RXGATE_USERS_FILE": str(self.users_file)}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def add_user(binary: Path, users_file: Path, name: str, password: str, *args: str,
             check: bool = True) -> subprocess.CompletedProcess:
    """`rxgate user add NAME --password-stdin ARGS…` on a users file."""
    return Rxgate(binary, None).run("user", "add", name, "--password-stdin", *args,
                                    env={"RXGATE_USERS_FILE": str(users_file)},
                                    input=password + "\n", check=check)


def start_server(binary: Path, data_dir: Path, log: Path, timeout: float = 120,
                 env: dict | None = None, config: Path | None = None) -> Server:
    """`rxgate serve` on a free port. Unless `env` names RXGATE_USERS_FILE, the server gets
    a fresh users file beside `log` with TEST_USER/TEST_PASSWORD."""
    env = dict(env or {})
    if "RXGATE_USERS_FILE" not in env:
        users_file = log.with_name(log.stem + ".users.toml")
        users_file.unlink(missing_ok=True)
        add_user(binary, users_file, TEST_USER, TEST_PASSWORD, "--role", "admin")
        env["RXGATE_USERS_FILE"] = str(users_file)
    port = free_port()
    flight_port = free_port()
    argv = [str(binary), "--data-dir", str(data_dir)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += ["serve", "--pg-listen", f"127.0.0.1:{port}", "--flight-listen", f"127.0.0.1:{flight_port}"]
    out = open(log, "wb")
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=child_env(env), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    server = Server("127.0.0.1", port, proc, log, Path(env["RXGATE_USERS_FILE"]), config, flight_port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rxgate serve exited with {proc.returncode}:\n"
                                 f"{server.log_text()[-4000:]}")
        try:
            # Both listeners: PostgreSQL, then Flight SQL (bound right after it).
            for p in (port, flight_port):
                with socket.create_connection(("127.0.0.1", p), timeout=1):
                    pass
            return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    raise AssertionError(f"rxgate serve did not listen on {port} within {timeout}s:\n"
                         f"{server.log_text()[-4000:]}")


def start_server_with_roles(binary: Path, data_dir: Path, workdir: Path, config: Path,
                            users: dict[str, str], password: str, env: dict | None = None) -> Server:
    """`rxgate serve` with its own users file in `workdir`: TEST_USER as admin, and each
    `users` name with its role and `password`; `env` adds to the server's environment."""
    users_file = workdir / "users.toml"
    add_user(binary, users_file, TEST_USER, TEST_PASSWORD, "--role", "admin")
    for name, role in users.items():
        add_user(binary, users_file, name, password, "--role", role)
    return start_server(binary, data_dir, workdir / "serve.log", config=config,
                        env={**(env or {}), "RXGATE_USERS_FILE": str(users_file)})


def stop_server(server: Server) -> None:
    """SIGTERM (graceful), then SIGKILL after 10 s; only our own process group."""
    if server.proc.poll() is None:
        try:
            os.killpg(server.proc.pid, signal.SIGTERM)
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture
def serve(rxgate_bin, tmp_path):
    """Factory: serve(data_dir, env=None, config=None) -> Server; every server is stopped
    afterwards."""
    started: list[Server] = []

    def start(data_dir: Path, env: dict | None = None, config: Path | None = None) -> Server:
        s = start_server(rxgate_bin, data_dir, tmp_path / f"serve-{len(started)}.log", env=env,
                         config=config)
        started.append(s)
        return s

    yield start
    for s in started:
        stop_server(s)


@pytest.fixture(scope="module")
def server(rxgate_bin, lakehouse, tmp_path_factory):
    s = start_server(rxgate_bin, lakehouse.rx.data_dir,
                     tmp_path_factory.mktemp("serve") / "serve.log")
    yield s
    stop_server(s)


# --------------------------------------------------------------------------
# PostgreSQL (the shared Iceberg SQL catalog)
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (15 preferred) on a free loopback port, for the whole run;
    `postgres.create_database()` gives each test its own catalog database, `uri(db)` the
    `[catalog] uri` for it (SCRAM login), `sqlalchemy_uri(db)` pyiceberg's. See pgserver.py."""
    from pgserver import PostgresServer
    server = PostgresServer.start()
    yield server
    server.stop()
