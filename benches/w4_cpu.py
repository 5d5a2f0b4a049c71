"""W4's Flight export by hand: wall time and the CPU each side spends, per export.

    ~/.cache/rxgate/bench-venv/bin/python benches/w4_cpu.py --bin BIN --lake DIR \\
        [--reps 8] [--pause 0.3] [--targets rxgate-adbc,rxgate-pyarrow,ceiling-adbc]

DIR is a lakehouse made by `rxgate pipeline run` (W1 leaves one in
~/.cache/rxgate/bench/scale1/lake). Targets, fetched in rotation, one export each turn:
  rxgate-adbc      `rxgate serve` (started here, bench user) read by the Go ADBC Flight SQL
                   driver, as W4 does: cursor.execute + fetch_arrow_table
  rxgate-pyarrow   the same server read by pyarrow's C++ Flight client, endpoints in parallel
                   threads (peers.FlightRaw)
  ceiling-adbc     the ADBC client reading the table from pyarrow's C++ Flight server, which
                   holds it in memory and does no query work (peers.FlightCeiling)

Per export it prints the wall time, the client's CPU (getrusage of this process) and page
faults, and the server's CPU (from /proc). The summary gives medians and the floor those CPU
times put on the wall time of one export on this machine: (client + server) / cores, reached
only if the two sides never wait for each other. A pause (seconds between exports) of several
seconds reproduces W4's interleaving: the Go runtime hands its freed heap back to the kernel
meanwhile, and the next export faults it in again.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SQL = "SELECT * FROM health.prescriber_drug"
TARGETS = ("rxgate-adbc", "rxgate-pyarrow", "ceiling-adbc")


def main() -> None:
    from harness import cpu_and_faults
    from peers import FlightCeiling, LakeFiles, RxgateServer
    from w4_export import adbc_table
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", type=Path, required=True, help="rxgate binary (a release build)")
    ap.add_argument("--lake", type=Path, required=True, help="lakehouse of a pipeline run")
    ap.add_argument("--reps", type=int, default=8, help="exports per target (default 8)")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between exports")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma separated: "
                    + ", ".join(TARGETS))
    ap.add_argument("--skip", type=int, default=1, help="first exports per target left out "
                    "of the summary (default 1)")
    a = ap.parse_args()
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    if unknown := set(targets) - set(TARGETS):
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")

    work = Path(tempfile.mkdtemp(prefix="rxgate-w4cpu-"))
    rx = ceiling = None
    fetchers = {}
    try:
        if any(t.startswith("rxgate") for t in targets):
            rx = RxgateServer(a.bin.resolve(), a.lake.resolve(), work)
            if not rx.flight_port:
                sys.exit(f"rxgate has no Flight SQL port: {rx.flight_note}")
            if "rxgate-adbc" in targets:
                conn = rx.flight_connect()
                fetchers["rxgate-adbc"] = (rx.pid, lambda c=conn: adbc_table(c, SQL))
            if "rxgate-pyarrow" in targets:
                raw = rx.flight_raw()
                fetchers["rxgate-pyarrow"] = (rx.pid, lambda: raw.query(SQL))
        if "ceiling-adbc" in targets:
            ceiling = FlightCeiling(LakeFiles.find(a.lake.resolve()).glob("prescriber_drug"))
            conn = ceiling.connect()
            fetchers["ceiling-adbc"] = (ceiling.proc.pid,
                                        lambda c=conn: adbc_table(c, "SELECT * FROM prescriber_drug"))
        runs: dict[str, list[tuple[float, float, float, int]]] = {t: [] for t in targets}
        for i in range(a.reps):
            for t in targets:
                pid, fetch = fetchers[t]
                (s0, f0), r0 = cpu_and_faults(pid), resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                table = fetch()
                wall = time.perf_counter() - t0
                r1, (s1, f1) = resource.getrusage(resource.RUSAGE_SELF), cpu_and_faults(pid)
                client = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                server = s1 - s0
                print(f"{t:15} #{i + 1}: {wall:.3f} s, client {client:.3f} core-s "
                      f"({r1.ru_minflt - r0.ru_minflt:,} page faults), server {server:.3f} "
                      f"core-s ({f1 - f0:,} page faults), {table.num_rows:,} rows, "
                      f"{table.nbytes / wall / 1e9:.2f} GB/s", flush=True)
                if i >= a.skip:
                    runs[t].append((wall, client, server, table.nbytes))
                del table
                time.sleep(a.pause)
        cores = os.cpu_count() or 1
        print(f"\nmedians over {a.reps - a.skip} exports per target, {cores} cores, "
              f"{a.pause:g} s between exports:")
        for t, rs in runs.items():
            if not rs:
                continue
            wall, client, server = (statistics.median(r[k] for r in rs) for k in range(3))
            nbytes = rs[0][3]
            floor = (client + server) / cores
            print(f"  {t:15} wall {wall:.3f} s ({nbytes / wall / 1e9:.2f} GB/s), client "
                  f"{client:.3f} + server {server:.3f} core-s: floor {floor:.3f} s "
                  f"({nbytes / floor / 1e9:.2f} GB/s at most)")
    finally:
        if ceiling is not None:
            ceiling.stop()
        if rx is not None:
            rx.stop()


if __name__ == "__main__":
    main()
