"""The W4 Flight ceiling on this machine: the Go ADBC Flight SQL client reading the
prescriber_drug table from pyarrow's C++ Flight server, which holds it in memory (plain
strings, 8,192-row batches, one endpoint) and does no query work.

    ~/.cache/rxgate/bench-venv/bin/python benches/w4_flight_ceiling.py \
        ~/.cache/rxgate/bench/scale1/lake/warehouse/health/prescriber_drug/data [REPS]

The server runs in a child process so that the client's CPU time is its own. Prints, per
fetch, the wall time, the client's CPU seconds and GB/s of the table's Arrow size.
"""
import multiprocessing as mp
import resource
import sys
import time


def serve(data_dir: str, port: int, ready) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.flight as fl
    table = ds.dataset(data_dir, format="parquet").to_table()
    plain = pa.schema([pa.field(f.name, pa.string() if pa.types.is_string_view(f.type)
                                or pa.types.is_large_string(f.type) else f.type)
                       for f in table.schema])
    table = table.cast(plain).combine_chunks()
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


def main() -> None:
    data_dir, reps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = mp.Event()
    child = mp.Process(target=serve, args=(data_dir, port, ready), daemon=True)
    child.start()
    ready.wait(120)
    time.sleep(1)
    import adbc_driver_flightsql.dbapi as fs
    with fs.connect(f"grpc://127.0.0.1:{port}", autocommit=True) as conn:
        for _ in range(reps):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM prescriber_drug")
                table = cur.fetch_arrow_table()
            dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
            print(f"{dt:.3f} s, client {cpu:.2f} core-s, {table.num_rows:,} rows, "
                  f"{table.nbytes / dt / 1e9:.2f} GB/s", flush=True)
            del table
    child.terminate()


if __name__ == "__main__":
    main()
