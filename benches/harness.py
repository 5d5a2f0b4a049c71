"""Shared pieces of the bench harness: logging, timing, medians, machine facts,
README sections, the report SQL (read from the product), free ports.

Nothing here asserts on time: the harness measures and reports ratios
(DESIGN §7); tests never contain timing assertions.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
README = BENCHES / "README.md"
CHARTS = BENCHES / "charts"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rxgate"
DELIVERY = "2024-01-31"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A step of the harness failed; the message says which and why."""


def run_checked(argv: list, **kw) -> tuple[float, subprocess.CompletedProcess]:
    """Runs a command to completion, returns (wall seconds, result); raises on failure."""
    t0 = time.perf_counter()
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"failed ({p.returncode}): {shlex.join(map(str, argv))}\n"
                         f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return secs, p


def run_rusage(argv: list, **kw) -> tuple[float, int, subprocess.CompletedProcess]:
    """Like run_checked, plus the child's own peak RSS in bytes (wait4's ru_maxrss)."""
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err, text=True, **kw)
        _, status, ru = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        p = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    if p.returncode != 0:
        raise BenchError(f"failed ({p.returncode}): {shlex.join(map(str, argv))}\n"
                         f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return secs, ru.ru_maxrss * 1024, p


def last_json(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return json.loads(lines[-1])


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram": ram,
            "os": f"{platform.system()} {platform.release()}"}


def load_note() -> str:
    """Load average and whether a compiler was running: numbers taken under a concurrent
    build are labelled as such in the README."""
    la = os.getloadavg()
    busy = compilers_running()
    note = f"load average {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}"
    if busy:
        note += f"; CONCURRENT COMPILE running ({', '.join(sorted(set(busy)))})"
    return note


def compilers_running() -> list[str]:
    names = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        if comm in ("cargo", "rustc", "cc1", "cc1plus", "ld", "javac") or comm.startswith("rustc"):
            names.append(comm)
    return names


def git_rev() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                       capture_output=True, text=True)
    rev = p.stdout.strip() if p.returncode == 0 else "uncommitted"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "crates", "Cargo.toml",
                            "Cargo.lock", "benches"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return rev + ("+dirty" if dirty else "")


def now() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def read_vm(pid: int, key: str = "VmHWM") -> int | None:
    """A /proc/PID/status memory figure in bytes (VmHWM = peak RSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_and_faults(pid: int) -> tuple[float, int]:
    """User + system CPU seconds and minor page faults of a process so far (threads included),
    from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def reset_peak_rss(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0, `echo 5 > /proc/PID/clear_refs`), so the
    peak of one workload can be read on a long-running server."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------

def fmt_ms(s: float | None) -> str:
    if s is None:
        return "n/a"
    ms = s * 1000
    if ms >= 10000:
        return f"{ms / 1000:,.1f} s"
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} s"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    return f"{r:.2f}×" if r < 100 else f"{r:,.0f}×"


def fmt_mb(b: int | float | None) -> str:
    return "n/a" if b is None else f"{b / 1e6:,.0f} MB"


def fmt_rate(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:,.2f} M{unit}"
    if x >= 1e3:
        return f"{x / 1e3:,.1f} k{unit}"
    return f"{x:,.1f}{unit}"


# ---------------------------------------------------------------------------
# README sections
# ---------------------------------------------------------------------------

def markers(name: str) -> tuple[str, str]:
    return (f"<!-- BEGIN {name} (generated by benches/run; edits are overwritten) -->",
            f"<!-- END {name} -->")


def write_section(name: str, body: str, after: str | None = None) -> None:
    """Replaces the section `name` of benches/README.md (between its markers) with `body`,
    or appends it (after section `after` when that exists)."""
    begin, end = markers(name)
    section = f"{begin}\n{body.rstrip()}\n{end}"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        anchor = markers(after)[1] if after else None
        first = text.find("<!-- BEGIN ")
        if anchor and anchor in text:
            head, tail = text.split(anchor, 1)
            text = head + anchor + "\n\n" + section + tail
        elif after is None and first >= 0:  # the first section goes before all others
            text = text[:first] + section + "\n\n" + text[first:]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    README.write_text(text)


# ---------------------------------------------------------------------------
# The product's report SQL
# ---------------------------------------------------------------------------

REPORTS_RS = ROOT / "crates" / "ingest" / "src" / "reports.rs"


def report_sql() -> dict[str, str]:
    """The city and top-prescriber report SQL, read from crates/ingest/src/reports.rs so the
    bench runs exactly what the pipeline materialises. Templates: `{prescriber_drug}`,
    `{us_cities}` stand for the table names of each engine, `{date}` for the delivery."""
    src = REPORTS_RS.read_text()
    out = {}
    for name in ("city_report", "top_prescribers"):
        m = re.search(rf"fn {name}_sql\([^)]*\)\s*->\s*String\s*\{{\s*format!\(\s*\"(.*?)\"\s*\)",
                      src, re.S)
        if not m:
            raise BenchError(f"cannot find {name}_sql in {REPORTS_RS}: update benches/harness.py")
        sql = m.group(1).replace('\\"', '"')
        sql = sql.replace("{{", "\x00").replace("}}", "\x01")
        sql = sql.replace("rxgate.health.prescriber_drug", "{prescriber_drug}")
        sql = sql.replace("rxgate.health.us_cities", "{us_cities}")
        sql = sql.replace("\x00", "{{").replace("\x01", "}}")
        out[name] = " ".join(sql.split())
    return out


@dataclass
class Tables:
    """How one engine names the curated tables."""
    prescriber_drug: str
    us_cities: str

    def sql(self, template: str, date: str = DELIVERY) -> str:
        return template.format(prescriber_drug=self.prescriber_drug,
                               us_cities=self.us_cities, date=date)


RXGATE_TABLES = Tables("health.prescriber_drug", "health.us_cities")
PG_TABLES = Tables("health.prescriber_drug", "health.us_cities")
LOCAL_TABLES = Tables("prescriber_drug", "us_cities")  # DuckDB views, DataFusion, Spark


@dataclass
class Series:
    """Repeated timings of one (workload item, target)."""
    runs: list[float] = field(default_factory=list)
    rows: int | None = None
    error: str | None = None

    @property
    def med(self) -> float | None:
        return median(self.runs)

    def timer(self, fn: Callable[[], object], label: str,
              record: Callable[[object], None] | None = None) -> Callable[[], None]:
        """A runner for `interleaved`: times one call of `fn` into this series and hands its
        result to `record`. Once a call fails, the series keeps the error (logged under
        `label`) and later calls do nothing."""
        def run() -> None:
            if self.error:
                return
            try:
                t0 = time.perf_counter()
                out = fn()
                self.runs.append(time.perf_counter() - t0)
                if record is not None:
                    record(out)
            except Exception as e:  # noqa: BLE001 — reported, not fatal
                self.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                log(f"{label}: {self.error}")
        return run


def interleaved(reps: int, targets: list[tuple[str, Callable[[], None]]]) -> None:
    """Runs each target once per repetition, rotating the order each time so that no target
    always runs first (cold) or right after the same neighbour."""
    n = len(targets)
    for i in range(reps):
        for j in range(n):
            targets[(i + j) % n][1]()


class Perf:
    """`perf record` of one process (the rxgate server) while a workload runs; on exit the
    hottest symbols (self time) go to benches/profiles/NAME.txt. Sampling at 499 Hz without
    call graphs costs the server little; ratios of a profiled run are still labelled."""

    def __init__(self, pid: int | None, name: str, enabled: bool):
        self.pid, self.name, self.enabled = pid, name, enabled and pid is not None
        self.proc = None
        self.data = Path("/tmp") / f"rxgate-bench-{name}.perf.data"
        self.out = BENCHES / "profiles" / f"{name}.txt"

    def __enter__(self):
        if self.enabled:
            import shutil as _sh
            if not _sh.which("perf"):
                log("perf not found: no profile (apt-get install linux-perf)")
                self.enabled = False
                return self
            self.proc = subprocess.Popen(["perf", "record", "-F", "499", "-p", str(self.pid),
                                          "-o", str(self.data)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if not self.enabled or self.proc is None:
            return False
        import signal as _sig
        self.proc.send_signal(_sig.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        p = subprocess.run(["perf", "report", "-i", str(self.data), "--stdio", "--no-children",
                            "--sort", "symbol", "--percent-limit", "0.7"],
                           capture_output=True, text=True)
        lines = [re.sub(r"(\s+-)+\s*$", "", ln.rstrip()) for ln in p.stdout.splitlines()
                 if ln.strip() and not ln.startswith("#")]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(f"# perf record -F 499 -p <rxgate serve> during {self.name}; "
                            f"self time by symbol ({now()}, commit {git_rev()})\n"
                            + "\n".join(lines[:60]) + "\n")
        self.data.unlink(missing_ok=True)
        log(f"profile {self.out}")
        return False


class LoadWatch:
    """Samples the machine every few seconds during a run: the highest 1-minute load average
    and whether a compiler ran, so a run under concurrent load is labelled as such even when
    the compile happened between the start and end checks."""

    def __init__(self, every: float = 5.0):
        import threading
        self.max_load = os.getloadavg()[0]
        self.compilers: set[str] = set(compilers_running())
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._t.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.max_load = max(self.max_load, os.getloadavg()[0])
            self.compilers.update(compilers_running())

    def stop(self) -> str:
        self._stop.set()
        note = (f"highest 1-minute load average during the run {self.max_load:.1f} (the run's "
                f"own W3 clients count too)")
        if self.compilers:
            note += (f"; **CONCURRENT COMPILE during the run** "
                     f"({', '.join(sorted(self.compilers))}): absolute times are inflated")
        return note
