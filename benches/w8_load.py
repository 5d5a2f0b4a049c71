"""W8 "load": the whole fact table (health.prescriber_drug) written into a NEW table partitioned
like it (delivery_date, presc_state), by each write path (issue 22's benchmark):

  rxgate Flight SQL adbc_ingest   the table as Arrow batches (DuckDB's result), ADBC's
                                  `adbc_ingest(mode="append")` into the pre-created table
  rxgate pgwire COPY FROM STDIN   the table as CSV (DuckDB's export), psycopg `cursor.copy`
                                  in 1 MiB chunks
  rxgate INSERT … SELECT          from health.prescriber_drug, inside the server
  PostgreSQL 15 COPY FROM STDIN   the same CSV into a table with the 5 indexes of W2's table
  DuckDB COPY … TO Parquet        in-process, PARTITION_BY (delivery_date, presc_state): the
                                  ceiling of writing these Parquet files on this machine

Each repetition writes a fresh table, dropped afterwards (rxgate: DROP TABLE … PURGE) and
untimed, as are the CREATE TABLE statements. Rows/s and MB/s (the Arrow in-memory size of the
table, 10^6 bytes, so the ratios equal rows/s ratios) are of the median run; peak RSS is the
rxgate server's (VmHWM, reset before each rxgate path). Goals: ADBC ingest >= 3x PostgreSQL's
COPY; pgwire COPY >= PostgreSQL's COPY.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from harness import Series, fmt_ratio, interleaved, log, read_vm, reset_peak_rss

ADBC = "rxgate Flight SQL adbc_ingest"
COPY = "rxgate pgwire COPY FROM STDIN (CSV)"
INSERT = "rxgate INSERT … SELECT"
PG = "PostgreSQL 15 COPY FROM STDIN (CSV, indexed table)"
DUCK = "DuckDB COPY … TO Parquet (partitioned)"
TARGETS = [ADBC, COPY, INSERT, PG, DUCK]
PARTITIONS = "PARTITIONED BY (delivery_date, presc_state)"


@dataclass
class W8Result:
    series: dict[str, Series] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    arrow_bytes: int = 0
    csv_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def run(ctx, reps: int) -> W8Result:
    out = W8Result()
    out.series = {t: Series() for t in TARGETS}
    from peers import duckdb_arrow
    table = duckdb_arrow(ctx.duck, "SELECT * FROM prescriber_drug")
    out.rows, out.arrow_bytes = table.num_rows, table.nbytes
    csv = ctx.work / "w8-prescriber_drug.csv"
    ctx.duck.execute(f"COPY (SELECT * FROM prescriber_drug) TO '{csv}' (FORMAT csv, HEADER false)")
    out.csv_bytes = csv.stat().st_size
    rx, fl, pg = ctx.rx_conn(), ctx.flight_conn(), ctx.pg_conn()
    rx.execute("CREATE SCHEMA IF NOT EXISTS bench")
    pg.execute("CREATE SCHEMA IF NOT EXISTS bench")
    counter = {"n": 0}

    def fresh_rx() -> str:
        counter["n"] += 1
        name = f"bench.load_{counter['n']}"
        rx.execute(f"CREATE TABLE {name} {PARTITIONS} AS SELECT * FROM health.prescriber_drug LIMIT 0")
        return name

    def check_and_drop_rx(name: str) -> None:
        n = rx.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        if n != out.rows:
            raise RuntimeError(f"{name} holds {n} rows, expected {out.rows}")
        rx.execute(f"DROP TABLE {name} PURGE")

    def timed_rx(target: str, load) -> None:
        name = fresh_rx()
        reset_peak_rss(ctx.rxgate.pid)
        out.series[target].timer(lambda: load(name), target)()
        rss = read_vm(ctx.rxgate.pid)
        if rss:
            out.peak_rss[target] = max(out.peak_rss.get(target, 0), rss)
        check_and_drop_rx(name)

    def adbc_ingest(name: str) -> None:
        schema, table_name = name.split(".")
        with fl.cursor() as cur:
            cur.adbc_ingest(table_name, table, mode="append", db_schema_name=schema)

    def copy_rx(name: str) -> None:
        with rx.cursor() as cur:
            with cur.copy(f"COPY {name} FROM STDIN (FORMAT csv)") as cp:
                with open(csv, "rb") as f:
                    while chunk := f.read(1 << 20):
                        cp.write(chunk)

    def insert_rx(name: str) -> None:
        rx.execute(f"INSERT INTO {name} SELECT * FROM health.prescriber_drug")

    def pg_copy() -> None:
        counter["n"] += 1
        name = f"bench.load_{counter['n']}"
        pg.execute(f"CREATE TABLE {name} (LIKE health.prescriber_drug)")
        for col in ("presc_state", "presc_specialty", "drug_name", "npi", "delivery_date"):
            pg.execute(f"CREATE INDEX ON {name} ({col})")

        def load() -> None:
            with pg.cursor() as cur:
                with cur.copy(f"COPY {name} FROM STDIN (FORMAT csv)") as cp:
                    with open(csv, "rb") as f:
                        while chunk := f.read(1 << 20):
                            cp.write(chunk)
        out.series[PG].timer(load, PG)()
        n = pg.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        if n != out.rows:
            raise RuntimeError(f"PostgreSQL {name} holds {n} rows, expected {out.rows}")
        pg.execute(f"DROP TABLE {name}")

    def duck_parquet() -> None:
        target = ctx.work / "w8-duck-parquet"
        shutil.rmtree(target, ignore_errors=True)
        out.series[DUCK].timer(lambda: ctx.duck.execute(
            f"COPY (SELECT * FROM prescriber_drug) TO '{target}' "
            "(FORMAT parquet, PARTITION_BY (delivery_date, presc_state))"), DUCK)()
        shutil.rmtree(target, ignore_errors=True)

    targets = [(COPY, lambda: timed_rx(COPY, copy_rx)), (INSERT, lambda: timed_rx(INSERT, insert_rx)),
               (PG, pg_copy), (DUCK, duck_parquet)]
    if fl is not None:
        targets.insert(0, (ADBC, lambda: timed_rx(ADBC, adbc_ingest)))
    else:
        out.notes.append("Flight SQL unavailable: no ADBC row")
    interleaved(reps, targets)
    csv.unlink(missing_ok=True)
    log("W8 " + ", ".join(f"{t}: {s.med:.2f} s" for t, s in out.series.items() if s.med))
    out.notes += [f"{t}: {s.error}" for t, s in out.series.items() if s.error]
    return out


def render(r: W8Result, scale: float, reps: int, hdr: str) -> str:
    mb = r.arrow_bytes / 1e6
    pg = r.series[PG].med
    lines = [hdr, "",
             f"Scale {scale:g}: {r.rows:,} rows, {mb:,.0f} MB as Arrow in memory, "
             f"{r.csv_bytes / 1e6:,.0f} MB as CSV; median of {reps} interleaved repetitions, each into a "
             f"new table {PARTITIONS.lower()}.", "",
             "| path | median | rows/s | MB/s (Arrow size) | vs PostgreSQL COPY | rxgate peak RSS |",
             "|---|---:|---:|---:|---:|---:|"]
    for t in TARGETS:
        s = r.series[t].med
        if s is None:
            continue
        rss = r.peak_rss.get(t)
        lines.append(f"| {t} | {s:.2f} s | {r.rows / s:,.0f} | {mb / s:,.1f} | {fmt_ratio(pg, s)} | "
                     f"{f'{rss / 2**20:,.0f} MiB' if rss else '—'} |")
    adbc, copy = r.series[ADBC].med, r.series[COPY].med
    goals = []
    if adbc and pg:
        goals.append(f"ADBC ingest is {pg / adbc:.2f}x PostgreSQL's COPY (goal >= 3x: "
                     f"{'met' if pg / adbc >= 3 else 'missed'})")
    if copy and pg:
        goals.append(f"pgwire COPY is {pg / copy:.2f}x PostgreSQL's COPY (goal >= 1x: "
                     f"{'met' if pg / copy >= 1 else 'missed'})")
    if goals:
        lines += ["", "Goals: " + "; ".join(goals) + "."]
    lines += [f"- {n}" for n in r.notes]
    return "\n".join(lines)
