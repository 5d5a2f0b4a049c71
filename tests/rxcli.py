"""A thin driver for the `rxgate` CLI (the contract in tests/ORACLE.md §CLI).

Every call is a subprocess with a timeout; failures raise AssertionError with
the command line, exit status and the tail of both output streams, so a
failing test says what rxgate printed.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Generous per-command limit (debug builds on 2 cores); override with env.
DEFAULT_TIMEOUT = float(os.environ.get("RXGATE_TEST_TIMEOUT", "600"))

#: Variables of the outer environment that must not leak into a test run.
_SCRUBBED_ENV = ("RXGATE_FAILPOINT", "RXGATE_DATA_DIR", "RXGATE_CONFIG", "RXGATE_USERS_FILE")


def default_binary() -> Path:
    """RXGATE_BIN, else the debug binary in the target dir scripts/test uses."""
    if os.environ.get("RXGATE_BIN"):
        return Path(os.environ["RXGATE_BIN"])
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rxgate", "target")
    return Path(target) / "debug" / "rxgate"


def child_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.setdefault("RUST_BACKTRACE", "1")
    # A server started without --flight-listen must not collide on the default Flight SQL
    # port (50051) with another test or a developer's server: let the OS pick one.
    env.setdefault("RXGATE_FLIGHT_LISTEN", "127.0.0.1:0")
    # The same for the operations HTTP listener (default 8080).
    env.setdefault("RXGATE_HTTP_LISTEN", "127.0.0.1:0")
    env["NO_COLOR"] = "1"
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def no_core_dumps() -> None:
    """preexec_fn: an abort() in a crash test must not write a core file."""
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def tail(text: str, n: int = 40) -> str:
    lines = text.splitlines()
    return "\n".join(lines[-n:])


def describe(proc: subprocess.CompletedProcess) -> str:
    cmd = " ".join(shlex.quote(str(a)) for a in proc.args)
    return (f"$ {cmd}\nexit status: {proc.returncode}\n"
            f"--- stdout (tail) ---\n{tail(proc.stdout)}\n"
            f"--- stderr (tail) ---\n{tail(proc.stderr)}")


class Rxgate:
    """The CLI bound to one binary and one data dir (None: no --data-dir)."""

    def __init__(self, binary: Path, data_dir: Path | None, cwd: Path = REPO_ROOT):
        self.binary = Path(binary)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.cwd = cwd

    def argv(self, *args) -> list[str]:
        base = [str(self.binary)]
        if self.data_dir is not None:
            base += ["--data-dir", str(self.data_dir)]
        return base + [str(a) for a in args]

    def run(self, *args, env: dict | None = None, check: bool = True,
            timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        """Run `rxgate [--data-dir D] ARGS...`; with check, assert exit 0.
        `input` is written to its stdin (else stdin is /dev/null)."""
        try:
            proc = subprocess.run(
                self.argv(*args), cwd=self.cwd, env=child_env(env),
                **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
                capture_output=True, text=True, errors="replace",
                timeout=timeout or DEFAULT_TIMEOUT, preexec_fn=no_core_dumps)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"timed out after {e.timeout}s: {self.argv(*args)}\n"
                                 f"stderr tail:\n{tail(_text(e.stderr))}") from None
        if check:
            assert proc.returncode == 0, "rxgate failed\n" + describe(proc)
        return proc

    def fail(self, *args, env: dict | None = None, timeout: float | None = None,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command that must fail cleanly: non-zero exit, no panic."""
        proc = self.run(*args, env=env, check=False, timeout=timeout, input=input)
        assert proc.returncode != 0, "expected a failure\n" + describe(proc)
        assert "panicked at" not in proc.stderr, "rxgate panicked\n" + describe(proc)
        return proc

    # -- structured commands ----------------------------------------------

    def json(self, *args, env: dict | None = None, timeout: float | None = None) -> dict:
        """Run a command with --json; return its last stdout line parsed."""
        proc = self.run(*args, "--json", env=env, timeout=timeout)
        return last_json_line(proc)

    def ingest(self, kind: str, path: Path, delivery_date: str, **kw) -> dict:
        return self.json("ingest", kind, path, "--delivery-date", delivery_date, **kw)

    def pipeline(self, input_dir: Path, delivery_date: str, **kw) -> dict:
        return self.json("pipeline", "run", "--input", input_dir,
                         "--delivery-date", delivery_date, **kw)

    def popen(self, *args, env: dict | None = None, log: Path | None = None
              ) -> subprocess.Popen:
        """Start a command in its own process group (for kill tests)."""
        out = open(log, "wb") if log else subprocess.DEVNULL
        try:
            return subprocess.Popen(self.argv(*args), cwd=self.cwd, env=child_env(env),
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=no_core_dumps)
        finally:
            if log:
                out.close()

    def apply_catalog(self) -> None:
        self.run("catalog", "apply", REPO_ROOT / "catalog")

    def sql(self, query: str) -> tuple[list[str], list[list[str]]]:
        """Run SQL through the CLI; return (header, rows of strings)."""
        proc = self.run("sql", query, "--format", "csv")
        return parse_csv(proc.stdout, proc)

    def sql_dicts(self, query: str) -> list[dict]:
        header, rows = self.sql(query)
        return [dict(zip(header, r)) for r in rows]

    def scalar(self, query: str):
        """The single value of a one-row, one-column query, as int if it is one."""
        header, rows = self.sql(query)
        assert len(rows) == 1 and len(rows[0]) == 1, f"not a scalar: {header} {rows[:3]}"
        v = rows[0][0]
        try:
            return int(v)
        except ValueError:
            return v

    def count(self, table: str, where: str = "") -> int:
        return self.scalar(f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else ""))


def _text(v) -> str:
    if v is None:
        return ""
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def last_json_line(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, "no output where a JSON line was expected\n" + describe(proc)
    try:
        obj = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise AssertionError("last stdout line is not JSON\n" + describe(proc)) from None
    assert isinstance(obj, dict), "JSON line is not an object\n" + describe(proc)
    return obj


def parse_csv(text: str, proc: subprocess.CompletedProcess | None = None
              ) -> tuple[list[str], list[list[str]]]:
    records = list(csv.reader(io.StringIO(text)))
    records = [r for r in records if r]  # tolerate a trailing blank line
    assert records, "no CSV header in output" + ("\n" + describe(proc) if proc else "")
    return records[0], records[1:]


def sql_quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def count_lines(paths: Sequence[Path]) -> int:
    return sum(p.read_bytes().count(b"\n") for p in paths)
