"""W11 metrics overhead (issue 25): the W3 dashboard mix (pgbench, extended protocol) against
two rxgate servers over the same lakehouse, in one run, interleaved:

- `off`: the bench's usual server, `[http] listen = "0"` (no operations listener);
- `on`: a second server with the listener on and a scraper fetching `/metrics` every second
  while its pgbench runs (what a Prometheus with `scrape_interval: 1s` does; the scraper is
  a Python loop, so the measurement needs no Prometheus install).

Both servers record the same statement counters and histograms (recording is not optional:
it is an atomic add at the audit write); what differs is the listener and the scrapes, each
of which renders the whole registry. Both servers are warmed up with the mix first. Reported: tps and p99 per server and client count, and
the ratio on/off. The goal is an overhead of at most 2% (tps ratio >= 0.98). The server that
is not measured at a moment sits idle.
"""
from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness import free_port, interleaved, log
from peers import BENCH_USER, RxgateServer
from w3_dashboard import Run, _pgbench, write_scripts

TARGETS = ["off", "on"]


class RxgateWithHttp(RxgateServer):
    """`rxgate serve` with the operations listener on a free loopback port."""

    def __init__(self, binary: Path, lake: Path, work: Path):
        self.http_port = free_port()
        super().__init__(binary, lake, work, flight=False)

    def _config(self, flight_port: int | None) -> Path:
        conf = super()._config(flight_port)
        conf.write_text(conf.read_text().replace('[http]\nlisten = "0"\n',
                                                 f'[http]\nlisten = "127.0.0.1:{self.http_port}"\n'))
        return conf


class Scraper:
    """Fetches /metrics every `every` seconds on a thread while in a `with` block."""

    def __init__(self, url: str, every: float = 1.0):
        self.url, self.every = url, every
        self.scrapes, self.bytes, self.errors, self.max_ms = 0, 0, 0, 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self):
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    self.bytes += len(r.read())
                self.scrapes += 1
                self.max_ms = max(self.max_ms, (time.monotonic() - t) * 1000)
            except OSError:
                self.errors += 1
            self._stop.wait(max(0.0, self.every - (time.monotonic() - t)))

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)


@dataclass
class W11Result:
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)  # (target, clients)
    secs: int = 0
    clients: list[int] = field(default_factory=list)
    scrapes: int = 0
    scrape_errors: int = 0
    scrape_bytes: int = 0
    scrape_max_ms: float = 0.0
    series: int = 0

    def med(self, target: str, clients: int, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.runs.get((target, clients), [])
                if getattr(r, attr) is not None and r.error is None]
        return statistics.median(vals) if vals else None

    def ratio(self, clients: int) -> float | None:
        a, b = self.med("on", clients, "tps"), self.med("off", clients, "tps")
        return a / b if a and b else None


def run(ctx, reps: int, secs: int, clients: list[int]) -> W11Result:
    res = W11Result(secs=secs, clients=clients)
    off = ctx.rxgate
    on = RxgateWithHttp(off.binary, off.lake, ctx.work / "w11-on")
    url = f"http://127.0.0.1:{on.http_port}/metrics"
    scraper = Scraper(url)
    try:
        files = write_scripts(ctx.sample, ctx.work / "w11-scripts")
        servers = {"off": off, "on": on}
        # Both servers warm (data file cache, table metadata) before anything is measured: the
        # second one has just started.
        for name, s in servers.items():
            r = _pgbench(files, ("127.0.0.1", s.pg_port), BENCH_USER, "rxgate", s.pg_env(), max(clients),
                         min(secs, 5), ctx.work / f"w11-warm-{name}")
            log(f"W11 warm-up {name}: tps {r.tps}" + (f", ERROR {r.error}" if r.error else ""))
        for c in clients:
            fns = []
            for name in TARGETS:
                def one(name=name, c=c):
                    s = servers[name]
                    def bench():
                        return _pgbench(files, ("127.0.0.1", s.pg_port), BENCH_USER, "rxgate", s.pg_env(), c,
                                        secs, ctx.work / f"w11-log-{name}")
                    if name == "on":
                        with scraper:
                            r = bench()
                    else:
                        r = bench()
                    res.runs.setdefault((name, c), []).append(r)
                    log(f"W11 listener {name} -c {c}: tps {r.tps}, p99 {r.p99_ms} ms"
                        + (f", ERROR {r.error}" if r.error else ""))
                fns.append((name, one))
            interleaved(reps, fns)
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        res.series = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
    finally:
        on.stop()
    res.scrapes, res.scrape_errors = scraper.scrapes, scraper.errors
    res.scrape_bytes = scraper.bytes // max(1, scraper.scrapes)
    res.scrape_max_ms = scraper.max_ms
    return res


def render(res: W11Result, scale: float, reps: int, header: str) -> str:
    lines = [f"### W11 metrics overhead — scale {scale}, {reps} repetitions of {res.secs} s", "", header, "",
             "The W3 dashboard mix, interleaved, against a server without the operations listener "
             "(`off`) and one with it and `/metrics` scraped every second during its runs (`on`); "
             "ratio = on tps / off tps (goal: ≥ 0.98, i.e. ≤ 2% overhead).", "",
             f"Scrapes: {res.scrapes} ({res.scrape_errors} failed), {res.scrape_bytes} bytes and "
             f"{res.series} series each, slowest {res.scrape_max_ms:.1f} ms.", "",
             "| clients | listener | tps (median) | p99 ms (median) | tps ratio on/off |", "|---|---|---|---|---|"]
    for c in res.clients:
        for name in TARGETS:
            tps, p99 = res.med(name, c, "tps"), res.med(name, c, "p99_ms")
            ratio = res.ratio(c) if name == "on" else None
            errors = [r.error for r in res.runs.get((name, c), []) if r.error]
            cell = lambda v, f: f.format(v) if v is not None else ("error: " + errors[0][:80] if errors else "—")
            lines.append(f"| {c} | {name} | {cell(tps, '{:.1f}')} | {cell(p99, '{:.1f}')} | "
                         f"{cell(ratio, '{:.3f}') if name == 'on' else '1'} |")
    return "\n".join(lines) + "\n"
