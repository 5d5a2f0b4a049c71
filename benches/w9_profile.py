"""Profile of W9's lookup by npi (issue 23): `perf record` of `rxgate serve` while pgbench sends
only W3's npi lookups at 1 client, on a copy of the fact table sorted by npi (and, for
comparison, on one sorted like health.prescriber_drug). Self time by symbol, and the share of
samples under a few call-graph frames, go to benches/profiles/w9-lookup-<label>.txt.

    benches/ensure-venv && ~/.cache/rxgate/bench-venv/bin/python benches/w9_profile.py \\
        --bin PATH [--lake ~/.cache/rxgate/bench/scale1/lake] [--secs 15] [--label NAME]

The lakehouse is the one `benches/run` leaves (scale 1); the copies are dropped at the end.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import time
from pathlib import Path

from harness import BENCHES, CACHE, git_rev, log, now
from peers import RxgateServer, connect_pg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", type=Path, required=True)
    ap.add_argument("--lake", type=Path, default=CACHE / "bench" / "scale1" / "lake")
    ap.add_argument("--secs", type=int, default=15)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    import w3_dashboard
    import w9_maintenance as w9
    from peers import LakeFiles, duckdb_connect
    work = a.lake.parent / "w9-profile"
    work.mkdir(parents=True, exist_ok=True)
    sample = w3_dashboard.sample_values(duckdb_connect(LakeFiles.find(a.lake)))
    server = RxgateServer(a.bin, a.lake, work)
    try:
        rx = connect_pg(server.dsn())
        rx.execute("CREATE SCHEMA IF NOT EXISTS bench")
        for key, order in (("one", None), ("npi", "npi")):
            t = w9.TABLES[key]
            w9._create(rx, t)
            rx.execute(f"INSERT INTO {t} SELECT * FROM health.prescriber_drug")
            if order:
                rx.execute(f"ALTER TABLE {t} WRITE ORDERED BY ({order})")
                rx.execute(f"CALL system.rewrite_data_files(table => '{t}', options => map('rewrite-all', 'true'))")
        for key in ("npi", "one"):
            files = w3_dashboard.write_lookup_scripts(sample, work / f"lookup-{key}", w9.TABLES[key])
            w3_dashboard.pgbench(server, files, 1, 3, work / "log")  # warm-up
            data = Path("/tmp") / f"rxgate-w9-{key}.perf.data"
            perf = subprocess.Popen(["perf", "record", "-F", "299", "--call-graph", "dwarf,32768", "-p", str(server.pid), "-o", str(data)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            run = w3_dashboard.pgbench(server, files, 1, a.secs, work / "log")
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=120)
            log(f"{key}: {run.tps:.1f} tps, mean {run.mean_ms:.2f} ms, p99 {run.p99_ms:.2f} ms")
            write_profile(data, key, a.label, run)
            data.unlink(missing_ok=True)
        for t in w9.TABLES.values():
            rx.execute(f"DROP TABLE IF EXISTS {t} PURGE")
    finally:
        server.stop()
    return 0


def write_profile(data: Path, key: str, label: str, run) -> None:
    flat = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "symbol",
                           "--percent-limit", "0.8", "-g", "none"], capture_output=True, text=True).stdout
    flat_lines = [re.sub(r"(\s+-)+\s*$", "", ln.rstrip()) for ln in flat.splitlines()
                  if ln.strip() and not ln.startswith("#")]
    children = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--children", "--sort", "symbol",
                               "-g", "none", "--percent-limit", "0.5"], capture_output=True, text=True).stdout
    total = next((m.group(1) for m in re.finditer(r"Samples: (\S+)", children)), "?")
    incl_lines = []
    for ln in children.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+([\d.]+)%\s+\[.\]\s+(.*)", ln)
        if m:
            incl_lines.append(f"{float(m.group(1)):5.1f}%  {m.group(3).strip()[:160]}")
    out = BENCHES / "profiles" / f"w9-lookup-{key}{('-' + label) if label else ''}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# perf record -F 299 --call-graph dwarf -p <rxgate serve>: W3's npi lookup alone on bench.w9_{key}, pgbench -c 1 "
        f"({now()}, commit {git_rev()})\n"
        f"# {run.tps:.1f} tps, mean {run.mean_ms:.2f} ms, p99 {run.p99_ms:.2f} ms; {total} samples\n"
        "# inclusive (children) share by symbol:\n"
        + "\n".join(incl_lines[:90])
        + "\n# self time by symbol:\n" + "\n".join(flat_lines[:60]) + "\n")
    log(f"profile {out}")


if __name__ == "__main__":
    raise SystemExit(main())
