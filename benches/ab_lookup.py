"""Interleaved A/B of one statement between rxgate binaries on one lakehouse.

    benches/bench-venv/bin/python benches/ab_lookup.py LAKE_DATA_DIR BIN_A BIN_B [REPS]

Starts `rxgate serve` of each binary on the same data dir (a users file of its own, the
`bench` admin), runs W0's lookup by npi 20 times on each to warm up, then REPS times (300)
alternating between them, and prints each binary's median, p10 and p90 in ms. Separate runs
of benches/run differ as much as the machine does; alternating one statement on one lakehouse
tells a per-statement cost from that noise (issue 21's before/after, benches/README.md).
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

PASSWORD = "ab-lookup-pw-123456"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(binary: str, lake: str, users: Path, config: Path) -> tuple[subprocess.Popen, int]:
    # Run from the users file's directory: a binary reads `catalog/policies.toml` of its working
    # directory, and an older one cannot read this checkout's.
    port, flight = free_port(), free_port()
    proc = subprocess.Popen([binary, "--data-dir", lake, "--config", str(config), "serve", "--pg-listen",
                             f"127.0.0.1:{port}", "--flight-listen", f"127.0.0.1:{flight}"],
                            env=dict(os.environ, RXGATE_USERS_FILE=str(users)), cwd=users.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{binary} did not listen")


def main(lake: str, binaries: list[str], reps: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="ab-lookup-"))
    users, config = work / "users.toml", work / "rxgate.toml"
    config.write_text("")
    subprocess.run([binaries[0], "--data-dir", lake, "--config", str(config), "user", "add", "bench", "--role", "admin", "--password-stdin"],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True, cwd=work,
                   env=dict(os.environ, RXGATE_USERS_FILE=str(users)))
    servers = {b: serve(b, lake, users, config) for b in binaries}
    try:
        conns = {b: psycopg.connect(f"host=127.0.0.1 port={port} user=bench password={PASSWORD} dbname=rxgate",
                                    autocommit=True) for b, (_, port) in servers.items()}
        npi = conns[binaries[0]].execute("SELECT npi FROM health.prescriber_drug LIMIT 1").fetchone()[0]
        sql = f"SELECT drug_name, trx_cnt, total_drug_cost FROM health.prescriber_drug WHERE npi = '{npi}'"
        times: dict[str, list[float]] = {b: [] for b in binaries}
        for b in binaries:
            for _ in range(20):
                conns[b].execute(sql).fetchall()
        for _ in range(reps):
            for b in binaries:
                t = time.perf_counter()
                conns[b].execute(sql).fetchall()
                times[b].append((time.perf_counter() - t) * 1000)
        for b in binaries:
            q = statistics.quantiles(times[b], n=10)
            print(f"{b}: median {statistics.median(times[b]):.2f} ms, p10 {q[0]:.2f}, p90 {q[-1]:.2f}")
    finally:
        for proc, _ in servers.values():
            proc.terminate()


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:4], int(sys.argv[4]) if len(sys.argv) > 4 else 300)
