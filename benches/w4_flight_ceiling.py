"""The W4 Flight ceiling on this machine, by hand: the Go ADBC Flight SQL client reading the
prescriber_drug table from pyarrow's C++ Flight server, which holds it in memory (plain
strings, batches of at most 8,192 rows, one endpoint) and does no query work
(peers.FlightCeiling, which `benches/run` also measures in W4).

    ~/.cache/rxgate/bench-venv/bin/python benches/w4_flight_ceiling.py \\
        ~/.cache/rxgate/bench/scale1/lake/warehouse/health/prescriber_drug/data [REPS] [PAUSE_S]

Prints, per fetch, the wall time, the client's CPU seconds and page faults, and GB/s of the
table's Arrow size. PAUSE_S (default 0) waits between fetches, as W4's interleaving does: the
Go runtime then hands the freed heap back to the kernel, and the next fetch faults it in again.
"""
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from peers import FlightCeiling
    data_dir = Path(sys.argv[1])
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    server = FlightCeiling([str(p) for p in sorted(data_dir.rglob("*.parquet"))])
    try:
        with server.connect() as conn:
            for _ in range(reps):
                r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute("SELECT * FROM prescriber_drug")
                    table = cur.fetch_arrow_table()
                dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
                cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                print(f"{dt:.3f} s, client {cpu:.2f} core-s, {r1.ru_minflt - r0.ru_minflt:,} "
                      f"page faults, {table.num_rows:,} rows, {table.nbytes / dt / 1e9:.2f} GB/s",
                      flush=True)
                del table
                time.sleep(pause)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
