"""Issue 27 §1 and §2: first-run frictions of the catalog database.

§1 Credentials and failing fast:
- A wrong password in `[catalog] uri` or RXGATE_CATALOG_URI, against the real PostgreSQL of
  the `postgres` fixture: the CLI's error and `rxgate serve`'s log say the login was refused
  and never show the password (`postgres://user:***@…`); `--help` never shows it either; a
  server with the right password logs none; audit records and errors redact URIs in
  statements.
- A closed port fails within seconds (the connect timeout, `[catalog] connect_timeout_secs`,
  default 5) saying the connection was refused, not after 30 s with "pool timed out"; a
  server that accepts but never answers fails after the configured timeout, saying so.
- A database the role may connect to but not create tables in (PostgreSQL 15: not its owner)
  is reported as refused, with the permission error and the fix, not as "unreachable"; a
  missing database is named as missing.

§2 The README's shared-catalog block, run as written: its shell blocks are extracted from
README.md and run command by command in a scratch repository root (`catalog/` linked from the
repository, `rxgate` on PATH), interactive password prompts answered on a pseudo-terminal.
The only substitutions, both unavoidable: the ports (`127.0.0.1:5432` becomes the test
PostgreSQL's port, the gateways' 15432/15433/50051/50052 become free ports), and the
superuser commands (`psql -c …`, `createdb …`) get PGHOST/PGPORT/PGUSER for the test server.
Then both gateways see the pipeline's commit, and the README's pyiceberg snippet (same port
substitution) reads the same table.
"""
from __future__ import annotations

import ast
import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import psycopg
import pytest

from conftest import D1, free_port, stop_server
from pgserver import CATALOG_PASSWORD, CATALOG_USER
from rxcli import REPO_ROOT, Rxgate, child_env, describe

WRONG = "wr0ng-Pa55word-27"


def write_config(path: Path, uri: str, warehouse: Path, extra: str = "") -> Path:
    path.write_text(f'[catalog]\nuri = "{uri}"\nwarehouse = "{warehouse}"\n{extra}')
    return path


def wrong_uri(postgres, db: str) -> str:
    return f"postgres://{CATALOG_USER}:{WRONG}@127.0.0.1:{postgres.port}/{db}"


def assert_no_secret(text: str, secret: str = WRONG) -> None:
    assert secret not in text, f"the password {secret!r} leaked:\n{text[-3000:]}"


# --------------------------------------------------------------------------- §1 redaction

def test_wrong_password_in_config_is_refused_and_redacted(rx, postgres, tmp_path):
    db = postgres.create_database("first")
    cfg = write_config(tmp_path / "rxgate.toml", wrong_uri(postgres, db), tmp_path / "wh")
    proc = rx.fail("--config", cfg, "catalog", "list", timeout=60)
    err = proc.stderr + proc.stdout
    assert_no_secret(err)
    assert "[CatalogUnavailable]" in err, describe(proc)
    assert f"postgres://{CATALOG_USER}:***@127.0.0.1:{postgres.port}/{db}" in err, describe(proc)
    assert "refused the login" in err and "password authentication failed" in err, describe(proc)
    assert "unreachable" not in err, describe(proc)


def test_wrong_password_in_environment_is_redacted_in_errors_logs_and_help(rx, postgres, tmp_path):
    db = postgres.create_database("first")
    env = {"RXGATE_CATALOG_URI": wrong_uri(postgres, db), "RXGATE_WAREHOUSE": str(tmp_path / "wh")}
    # One-shot commands.
    for args in (["catalog", "apply", REPO_ROOT / "catalog"], ["sql", "SELECT 1"],
                 ["pipeline", "run", "--input", tmp_path, "--delivery-date", D1]):
        proc = rx.fail(*args, env=env, timeout=60)
        assert_no_secret(proc.stdout + proc.stderr)
        assert "refused the login" in proc.stderr, describe(proc)
    # The server: it stops at start-up, and its log (stdout and stderr) names no password.
    log = tmp_path / "serve.log"
    p = rx.popen("serve", "--pg-listen", f"127.0.0.1:{free_port()}",
                 "--flight-listen", f"127.0.0.1:{free_port()}", env=env, log=log)
    try:
        assert p.wait(timeout=60) != 0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    text = log.read_text(errors="replace")
    assert_no_secret(text)
    assert "refused the login" in text and ":***@" in text, text[-3000:]
    # --help, of the program and of every subcommand, with the URI in the environment.
    for args in (["--help"], ["serve", "--help"], ["catalog", "--help"], ["pipeline", "run", "--help"]):
        proc = rx.run(*args, env=env)
        assert_no_secret(proc.stdout + proc.stderr)
        assert "Usage" in proc.stdout, describe(proc)


def test_a_server_on_the_right_password_logs_none(rx, serve, postgres, tmp_path):
    db = postgres.create_database("first")
    cfg = write_config(tmp_path / "rxgate.toml", postgres.uri(db), tmp_path / "wh")
    rx.run("--config", cfg, "catalog", "apply", REPO_ROOT / "catalog")
    s = serve(rx.data_dir, config=cfg)
    with psycopg.connect(s.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone() == (0,)
    stop_server(s)
    text = s.log_text()
    assert "pgwire listening" in text, text[-2000:]
    assert_no_secret(text, CATALOG_PASSWORD)


def test_uris_in_statements_are_redacted_in_errors_and_audit(rx):
    secret = "audit-Pa55-27"
    ok = rx.run("sql", f"SELECT 'postgres://u:{secret}@h/db' AS uri, 1 AS n", "--format", "csv")
    # The result is data the user asked for; the audit record of the statement is redacted.
    assert secret in ok.stdout
    bad = rx.fail("sql", f"SELECT CAST('hdfs://u:{secret}@nn:8020/x' AS INT)")
    assert_no_secret(bad.stderr + bad.stdout, secret)
    assert "hdfs://u:***@nn:8020/x" in bad.stderr, describe(bad)
    records = [json.loads(line) for line in
               (rx.data_dir / "audit" / "audit.jsonl").read_text().splitlines() if line.strip()]
    mine = [r for r in records if r["kind"] == "statement" and "://u:" in r["statement"]]
    assert len(mine) == 2, records
    for r in mine:
        assert_no_secret(json.dumps(r), secret)
        assert "://u:***@" in r["statement"], r
    assert mine[1]["outcome"] == "error" and "://u:***@" in mine[1]["error"], mine[1]


# --------------------------------------------------------------------------- §1 failing fast

def test_a_closed_port_fails_fast_and_clearly(rx, tmp_path):
    port = free_port()  # nothing listens there
    uri = f"postgres://rxgate:{WRONG}@127.0.0.1:{port}/rxgate_catalog"
    cfg = write_config(tmp_path / "rxgate.toml", uri, tmp_path / "wh")
    started = time.monotonic()
    proc = rx.fail("--config", cfg, "catalog", "list", timeout=60)
    took = time.monotonic() - started
    assert took < 12, f"took {took:.1f} s (default connect timeout 5 s)\n{describe(proc)}"
    assert_no_secret(proc.stderr)
    assert f"connection refused at 127.0.0.1:{port}" in proc.stderr, describe(proc)
    assert "retried for 5 s ([catalog] connect_timeout_secs)" in proc.stderr, describe(proc)
    assert "pool timed out" not in proc.stderr, describe(proc)
    # A shorter configured timeout, from the file and from the environment.
    short = write_config(tmp_path / "short.toml", uri, tmp_path / "wh", "connect_timeout_secs = 1\n")
    (tmp_path / "empty.toml").write_text("")
    from_env = {"RXGATE_CATALOG_URI": uri, "RXGATE_CATALOG_CONNECT_TIMEOUT_SECS": "1"}
    for config, env in ((short, None), (tmp_path / "empty.toml", from_env)):
        started = time.monotonic()
        proc = rx.fail("--config", config, "catalog", "list", env=env, timeout=60)
        took = time.monotonic() - started
        assert took < 6, f"took {took:.1f} s with a 1 s timeout\n{describe(proc)}"
        assert "retried for 1 s" in proc.stderr, describe(proc)
    # Out of range is a configuration error.
    write_config(cfg, uri, tmp_path / "wh", "connect_timeout_secs = 0\n")
    proc = rx.fail("--config", cfg, "catalog", "list", timeout=60)
    assert "connect_timeout_secs must be between 1 and 3600" in proc.stderr, describe(proc)


def test_a_server_that_never_answers_times_out_as_configured(rx, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody ever answers the start-up message
        port = silent.getsockname()[1]
        uri = f"postgres://rxgate:{WRONG}@127.0.0.1:{port}/rxgate_catalog"
        cfg = write_config(tmp_path / "rxgate.toml", uri, tmp_path / "wh", "connect_timeout_secs = 2\n")
        started = time.monotonic()
        proc = rx.fail("--config", cfg, "catalog", "list", timeout=60)
        took = time.monotonic() - started
    assert 1.5 < took < 8, f"took {took:.1f} s with a 2 s timeout\n{describe(proc)}"
    assert_no_secret(proc.stderr)
    assert "unreachable: no answer within 2 s ([catalog] connect_timeout_secs)" in proc.stderr, describe(proc)


# --------------------------------------------------------------------------- §2 what failed

def test_permission_denied_is_reported_as_refused_with_the_fix(rx, postgres, tmp_path):
    # A database the catalog role does not own: on PostgreSQL 15 it may connect but not create
    # tables in schema public.
    db = f"notowned_{os.getpid()}"
    postgres.psql_socket(f"CREATE DATABASE {db}")
    cfg = write_config(tmp_path / "rxgate.toml", postgres.uri(db), tmp_path / "wh")
    proc = rx.fail("--config", cfg, "catalog", "apply", REPO_ROOT / "catalog", timeout=60)
    assert_no_secret(proc.stderr, CATALOG_PASSWORD)
    assert "unreachable" not in proc.stderr, describe(proc)
    assert (f"catalog database postgres://{CATALOG_USER}:***@127.0.0.1:{postgres.port}/{db} refused: "
            f"permission denied for schema public (grant the role ownership of the database: "
            f"ALTER DATABASE {db} OWNER TO {CATALOG_USER})") in proc.stderr, describe(proc)
    # The fix it names works.
    postgres.psql_socket(f"ALTER DATABASE {db} OWNER TO {CATALOG_USER}")
    rx.run("--config", cfg, "catalog", "apply", REPO_ROOT / "catalog")
    assert "health.prescriber_drug" in rx.run("--config", cfg, "catalog", "list").stdout


def test_a_missing_database_is_named(rx, postgres, tmp_path):
    cfg = write_config(tmp_path / "rxgate.toml", postgres.uri("no_such_catalog_27"), tmp_path / "wh")
    proc = rx.fail("--config", cfg, "catalog", "list", timeout=60)
    assert_no_secret(proc.stderr, CATALOG_PASSWORD)
    assert "no_such_catalog_27 does not exist" in proc.stderr, describe(proc)
    assert f"createdb -O {CATALOG_USER} no_such_catalog_27" in proc.stderr, describe(proc)


# --------------------------------------------------------------------------- §2 the README block

SECTION = "## A shared catalog on PostgreSQL; pyiceberg and DuckDB"
JANE_PASSWORD = "jane-Pa55-27"


def readme_blocks(lang: str) -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end > 0 else None]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    """Shell commands of a block: one per line, a here-document with its body; comments and
    blank lines dropped."""
    out, lines = [], block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := re.search(r"<<'?(\w+)'?", line):
            body = [line]
            while i < len(lines) and lines[i] != m.group(1):
                body.append(lines[i])
                i += 1
            body.append(lines[i])
            i += 1
            out.append("\n".join(body))
        else:
            out.append(line)
    return out


def run_in_pty(command: str, cwd: Path, env: dict, answer: str, timeout: float = 180) -> tuple[int, str]:
    """`bash -c COMMAND` on a pseudo-terminal (its controlling terminal, so password prompts
    read from it), answering every password prompt with `answer`."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: only exec
        try:
            # A terminal of ordinary size: 0x0 would make psql page even one row.
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
            os.chdir(cwd)
            os.execvpe("bash", ["bash", "-c", command], env)
        finally:
            os._exit(127)
    out, pending = b"", b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"timed out: {command}\n{out.decode(errors='replace')[-3000:]}")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
            pending += data
            if re.search(rb"(password[^\n]*|again): ?$", pending, re.I):
                os.write(fd, answer.encode() + b"\n")
                pending = b""
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace").replace("\r\n", "\n")


def wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gateway exited:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}:\n{log.read_text(errors='replace')[-3000:]}")


def test_readme_shared_catalog_block_runs_as_written(rxgate_bin, postgres, tmp_path):
    setup, *after = readme_blocks("sh")
    assert len(after) == 1, "expected the setup block and the psql check"
    (pyblock,) = readme_blocks("python")
    # What the issue asked the block to contain: the role, its database, var/raw, no /srv.
    assert "CREATE ROLE rxgate LOGIN" in setup and "createdb -O rxgate rxgate_catalog" in setup
    assert "--out var/raw" in setup and "/srv" not in setup + pyblock

    ports = {"5432": postgres.port, "15432": free_port(), "15433": free_port(),
             "50051": free_port(), "50052": free_port()}
    subst = lambda text: re.sub(r"127\.0\.0\.1:(\d+)",  # noqa: E731
                                lambda m: f"127.0.0.1:{ports.get(m.group(1), m.group(1))}", text)

    root = tmp_path / "repo"        # a scratch repository root
    root.mkdir()
    (root / "catalog").symlink_to(REPO_ROOT / "catalog")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "rxgate").symlink_to(rxgate_bin)
    env = child_env({"PATH": f"{bindir}:{postgres.bindir}:{os.environ['PATH']}",
                     "PGHOST": str(postgres.root), "PGPORT": str(postgres.port), "PGUSER": "postgres"})
    env = {k: v for k, v in env.items() if k not in ("PGPASSWORD", "PGDATABASE", "RXGATE_FLIGHT_LISTEN")}

    gateways: list[tuple[subprocess.Popen, Path]] = []
    transcript = []
    try:
        for cmd in commands(setup):
            cmd = subst(cmd)
            if cmd.rstrip().endswith("&"):
                log = tmp_path / f"gateway-{len(gateways)}.log"
                with open(log, "wb") as out:
                    p = subprocess.Popen(["bash", "-c", cmd.rstrip().rstrip("&")], cwd=root, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
                gateways.append((p, log))
                transcript.append(f"$ {cmd}")
                continue
            rc, out = run_in_pty(cmd, root, env, JANE_PASSWORD)
            transcript.append(f"$ {cmd}\n{out}")
            assert rc == 0, "README command failed:\n" + "\n".join(transcript)[-5000:]
        log = "\n".join(transcript)
        assert re.search(r"delivery 2024-01-31: read \d+ = loaded \d+ \+ quarantined \d+", log), log

        # Both gateways listen, on the substituted ports.
        assert len(gateways) == 2
        for (p, glog), port in zip(gateways, (ports["15432"], ports["15433"])):
            wait_listening(port, p, glog)

        # The second block, once both listen: psql as jane, password asked on the terminal.
        (check,) = commands(after[0])
        rc, out = run_in_pty(subst(check), root, env, JANE_PASSWORD)
        assert rc == 0, f"$ {check}\n{out}"
        counts = [int(x) for x in re.findall(r"^\s*(\d+)\s*$", out, re.M)]
        assert len(counts) == 1 and counts[0] > 100_000, out  # scale 0.1: ~133k rows

        # Gateway a sees the same commit, as does the CLI.
        with psycopg.connect(host="127.0.0.1", port=ports["15432"], user="jane", dbname="rxgate",
                             password=JANE_PASSWORD, connect_timeout=10, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0] == counts[0]
        cli = Rxgate(rxgate_bin, None, cwd=root).run(
            "--config", "shared.toml", "sql", "SELECT count(*) FROM health.prescriber_drug", "--format", "csv")
        assert int(cli.stdout.split()[-1]) == counts[0], describe(cli)

        # The catalog lives in the database the block made, owned by its role; the warehouse
        # where the block put it.
        owner = postgres.psql_socket("SELECT tableowner FROM pg_tables WHERE tablename = 'iceberg_tables'",
                                     db="rxgate_catalog").strip()
        assert owner == "rxgate"
        assert any((root / "var/shared/warehouse").rglob("*.parquet"))
        assert (root / "var/shared/users.toml").is_file()

        # The pyiceberg snippet, as written but for the port, in the same directory.
        tree = ast.parse(subst(pyblock))
        *body, last = tree.body
        scope: dict = {}
        cwd = os.getcwd()
        os.chdir(root)
        try:
            exec(compile(ast.Module(body=body, type_ignores=[]), "README.md", "exec"), scope)
            ca = eval(compile(ast.Expression(last.value), "README.md", "eval"), scope)
        finally:
            os.chdir(cwd)
        states = set(ca.column("presc_state").to_pylist())
        assert ca.num_rows > 0 and states == {"CA"}, (ca.num_rows, states)
        with psycopg.connect(host="127.0.0.1", port=ports["15433"], user="jane", dbname="rxgate",
                             password=JANE_PASSWORD, connect_timeout=10, autocommit=True) as conn:
            (n_ca,) = conn.execute("SELECT count(*) FROM health.prescriber_drug "
                                   "WHERE presc_state = 'CA'").fetchone()
        assert ca.num_rows == n_ca

        # The gateways' logs never show the catalog password.
        for _, glog in gateways:
            text = glog.read_text(errors="replace")
            assert "pgwire listening" in text, text[-2000:]
            assert ":secret@" not in text, text[-3000:]
    finally:
        for p, _ in gateways:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
