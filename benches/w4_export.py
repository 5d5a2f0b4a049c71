"""W4 "export": the whole health.prescriber_drug table to a client.

Paths (each reads every row; nothing is written to disk):
  rxgate pgwire, psycopg text      SELECT * ; rows converted to Python tuples (fetchmany)
  rxgate pgwire, psycopg binary    the same with binary result format
  rxgate pgwire, COPY TO STDOUT    raw bytes read by psycopg (only if rxgate answers COPY)
  rxgate Flight SQL, ADBC          the result as one Arrow table (only with a Flight port)
  rxgate Flight SQL, pyarrow       the same through pyarrow's C++ Flight client, endpoints in
                                   parallel threads (peers.FlightRaw): the server's speed to
                                   a client that costs less CPU than ADBC's Go driver
  Flight ceiling, ADBC             the same client and call against pyarrow's C++ Flight
                                   server holding the table in memory (peers.FlightCeiling):
                                   what this machine's Flight client takes at most
  PostgreSQL 15, psycopg text      SELECT * ; rows converted to Python tuples
  PostgreSQL 15, COPY TO STDOUT    COPY (SELECT * FROM …) TO STDOUT, raw bytes read by psycopg
  DuckDB in-process Arrow          the ceiling: no wire, no conversion

MB/s is defined on ONE size for every path: the Arrow in-memory size of the table
(pyarrow `Table.nbytes` of DuckDB's result, buffers of all 25 columns), in 10^6 bytes, so
MB/s ratios equal rows/s ratios. The bytes a path actually moved (COPY text, Arrow IPC for
Flight) are shown beside it where known.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness import Series, interleaved, log

SQL_RX = "SELECT * FROM health.prescriber_drug"
SQL_PG = "SELECT * FROM health.prescriber_drug"
COPY_RX = "COPY (SELECT * FROM health.prescriber_drug) TO STDOUT"
COPY_PG = "COPY (SELECT * FROM health.prescriber_drug) TO STDOUT"

# The in-memory Flight server's row (peers.FlightCeiling).
CEILING_TARGET = "Flight ceiling: C++ server, table in memory, ADBC"

# Largest table the in-memory Flight server is started for (it and the client each hold it).
CEILING_MAX_BYTES = 4e9

# rxgate to pyarrow's C++ Flight client (peers.FlightRaw).
PYARROW_TARGET = "rxgate Flight SQL pyarrow.flight (C++ client)"

TARGETS = ["rxgate pgwire psycopg (text)", "rxgate pgwire psycopg (binary)",
           "rxgate pgwire COPY TO STDOUT", "rxgate Flight SQL ADBC", PYARROW_TARGET,
           CEILING_TARGET,
           "PostgreSQL 15 psycopg (text)", "PostgreSQL 15 COPY TO STDOUT",
           "DuckDB in-process Arrow"]


@dataclass
class W4Result:
    series: dict[str, Series] = field(default_factory=dict)
    wire_bytes: dict[str, int] = field(default_factory=dict)
    arrow_bytes: int | None = None
    rows: int | None = None
    peak_rss: int | None = None
    notes: list[str] = field(default_factory=list)


def _fetch_rows(conn, sql: str, binary: bool = False) -> int:
    n = 0
    with conn.cursor(binary=binary) as cur:
        cur.execute(sql)
        while batch := cur.fetchmany(50_000):
            n += len(batch)
    return n


def adbc_table(conn, sql: str):
    """The whole result of `sql` through an ADBC DB-API connection, as one Arrow table."""
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def _copy(conn, sql: str) -> tuple[int, int]:
    nbytes = nrows = 0
    with conn.cursor() as cur:
        with cur.copy(sql) as cp:
            for data in cp:
                nbytes += len(data)
                nrows += bytes(data).count(b"\n")
    return nrows, nbytes


def run(ctx, reps: int) -> W4Result:
    from peers import FlightCeiling, duckdb_arrow, rxgate_copy_supported
    res = W4Result()
    rx, duck = ctx.rxgate, ctx.duck
    rx_conn, fl_conn, pg_conn = ctx.rx_conn(), ctx.flight_conn(), ctx.pg_conn()
    table = duckdb_arrow(duck, "SELECT * FROM prescriber_drug")
    res.arrow_bytes, res.rows = table.nbytes, table.num_rows
    del table
    fns = []

    def add(target, fn, why=None):
        s = res.series.setdefault(target, Series())
        if fn is None:
            s.error = why or "n/a"
            return

        def record(out):
            if isinstance(out, tuple):
                s.rows, res.wire_bytes[target] = out
            else:
                s.rows = out
            log(f"W4 {target}: {s.runs[-1]:.2f} s, {s.rows:,} rows")
        fns.append((target, s.timer(fn, f"W4 {target}", record)))

    copy_ok, copy_note = (rxgate_copy_supported(rx_conn) if rx_conn is not None
                          else (False, "no rxgate server"))
    res.notes.append(f"rxgate COPY TO STDOUT: {copy_note}")
    if rx_conn is not None:
        add(TARGETS[0], lambda: _fetch_rows(rx_conn, SQL_RX))
        add(TARGETS[1], lambda: _fetch_rows(rx_conn, SQL_RX, binary=True))
    else:
        add(TARGETS[0], None, "no rxgate server")
        add(TARGETS[1], None, "no rxgate server")
    add(TARGETS[2], (lambda: _copy(rx_conn, COPY_RX)) if copy_ok else None,
        "rxgate does not answer COPY TO STDOUT yet" if rx_conn is not None else "no server")

    def adbc_fetch(conn):
        def fetch():
            t = adbc_table(conn, SQL_RX)
            return t.num_rows, t.nbytes
        return fetch
    add(TARGETS[3], adbc_fetch(fl_conn) if fl_conn is not None else None, ctx.flight_note)
    raw, raw_note = None, ctx.flight_note
    if fl_conn is not None:
        try:
            raw = rx.flight_raw()
        except Exception as e:  # noqa: BLE001 — the other paths are still measured
            raw_note = f"pyarrow.flight login failed: {str(e).splitlines()[0][:150]}"
            log(raw_note)

    def raw_fetch():
        t = raw.query(SQL_RX)
        return t.num_rows, t.nbytes
    add(PYARROW_TARGET, raw_fetch if raw is not None else None, raw_note)
    ceiling = ceiling_conn = None
    ceiling_note = "no ADBC Flight SQL client"
    if fl_conn is not None and res.arrow_bytes > CEILING_MAX_BYTES:
        ceiling_note = (f"not measured: the table's {res.arrow_bytes / 1e9:.1f} GB would be held "
                        "in memory by the server and by the client at once")
    elif fl_conn is not None:
        try:
            ceiling = FlightCeiling(ctx.files.glob("prescriber_drug"))
            ceiling_conn = ceiling.connect()
        except Exception as e:  # noqa: BLE001 — the other paths are still measured
            ceiling_note = f"in-memory Flight server failed: {str(e).splitlines()[0][:150]}"
            log(ceiling_note)
            if ceiling is not None:
                ceiling.stop()
            ceiling = None
    add(CEILING_TARGET, adbc_fetch(ceiling_conn) if ceiling_conn is not None else None,
        ceiling_note)
    if pg_conn is not None:
        add(TARGETS[6], lambda: _fetch_rows(pg_conn, SQL_PG))
        add(TARGETS[7], lambda: _copy(pg_conn, COPY_PG))
    else:
        add(TARGETS[6], None, "not selected")
        add(TARGETS[7], None, "not selected")
    add(TARGETS[8], lambda: duckdb_arrow(duck, "SELECT * FROM prescriber_drug").num_rows)

    if rx is not None:
        rx.reset_peak()
    # No separate warm-up: each export reads the whole table, and the interleaving spreads
    # the cold first run over all targets (the rxgate server and PostgreSQL are warm from W2).
    try:
        interleaved(reps, fns)
    finally:
        if raw is not None:
            raw.close()
        if ceiling is not None:
            ceiling_conn.close()
            ceiling.stop()
    if rx is not None:
        res.peak_rss = rx.peak_rss()
    rows = {t: s.rows for t, s in res.series.items() if s.runs}
    if any(v != res.rows for v in rows.values()):
        res.notes.append(f"row counts DIFFER from {res.rows:,}: {rows}")
    return res
