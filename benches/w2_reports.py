"""W2 "reports": the city report and the top-5 prescribers report from the curated tables.

The SQL is the product's own (crates/ingest/src/reports.rs, read at run time), with the
table names of each engine. Targets, each fetching the whole result to the client:
  rxgate pgwire   psycopg 3 over loopback (SCRAM login done before timing)
  rxgate Flight   ADBC Flight SQL, when `rxgate serve` has a Flight port (else n/a)
  DuckDB          in-process on the same Parquet files, result as Arrow
  PostgreSQL 15   loopback, same rows loaded, indexes on state/specialty/drug/npi; psycopg
  PySpark         local[2], same Parquet files, .collect()
One untimed warm-up per target and query, then `reps` timed runs, interleaved. PySpark's
JVM is started after the other targets are measured and ended after its own runs.
Row counts and a checksum of each result are compared across targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness import (LOCAL_TABLES, PG_TABLES, RXGATE_TABLES, Series, interleaved, log,
                     report_sql)

REPORTS = {"city_report": "city report", "top_prescribers": "top-5 prescribers report"}
TARGETS = ["rxgate pgwire", "rxgate Flight", "DuckDB", "PostgreSQL 15", "PySpark"]


@dataclass
class W2Result:
    series: dict[tuple[str, str], Series] = field(default_factory=dict)  # (report, target)
    checks: dict[str, dict[str, tuple]] = field(default_factory=dict)    # report -> target -> sig
    peak_rss: int | None = None
    spark_startup_s: float | None = None
    notes: list[str] = field(default_factory=list)


def _signature(rows: list[tuple], sum_col: int) -> tuple:
    """(row count, sum of one numeric column) — enough to see two engines disagree."""
    total = 0
    for r in rows:
        v = r[sum_col]
        if v is not None:
            total += int(v)
    return (len(rows), total)


def _arrow_sig(table, col: str) -> tuple:
    import pyarrow.compute as pc
    s = pc.sum(table.column(col)).as_py()
    return (table.num_rows, int(s or 0))


SUM_COL = {"city_report": ("trx_counts", 5), "top_prescribers": ("trx_cnt", 5)}


def run(ctx, reps: int) -> W2Result:
    res = W2Result()
    templates = report_sql()
    rx, duck = ctx.rxgate, ctx.duck
    rx_conn = ctx.rx_conn()
    fl_conn = ctx.flight_conn()
    pg_conn = ctx.pg_conn()
    if rx is not None:
        rx.reset_peak()

    def add_others(add, template: str, col: str, idx: int) -> None:
        """rxgate (pgwire, Flight), DuckDB and PostgreSQL."""
        if rx_conn is not None:
            def f_rx(q=RXGATE_TABLES.sql(template)):
                with rx_conn.cursor() as cur:
                    cur.execute(q)
                    return _signature(cur.fetchall(), idx)
            add("rxgate pgwire", f_rx)
        else:
            add("rxgate pgwire", None, False, "no rxgate server")
        if fl_conn is not None:
            def f_fl(q=RXGATE_TABLES.sql(template)):
                with fl_conn.cursor() as cur:
                    cur.execute(q)
                    return _arrow_sig(cur.fetch_arrow_table(), col)
            add("rxgate Flight", f_fl)
        else:
            add("rxgate Flight", None, False, ctx.flight_note)
        if duck is not None:
            from peers import duckdb_arrow

            def f_dk(q=LOCAL_TABLES.sql(template)):
                return _arrow_sig(duckdb_arrow(duck, q), col)
            add("DuckDB", f_dk)
        if pg_conn is not None:
            def f_pg(q=PG_TABLES.sql(template)):
                with pg_conn.cursor() as cur:
                    cur.execute(q)
                    return _signature(cur.fetchall(), idx)
            add("PostgreSQL 15", f_pg)
        else:
            add("PostgreSQL 15", None, False, "not selected")

    def measure(report: str, template: str, spark_phase: bool) -> None:
        col, idx = SUM_COL[report]
        checks = res.checks.setdefault(report, {})
        fns = []

        def add(target, fn, enabled=True, why="n/a"):
            s = res.series.setdefault((report, target), Series())
            if not enabled:
                s.error = why
                return

            def record(sig):
                s.rows = sig[0]
                checks[target] = sig
            fns.append((target, s.timer(fn, f"W2 {report} {target}", record)))

        if spark_phase:
            if spark is not None:
                def f_sp(q=LOCAL_TABLES.sql(template)):
                    return _signature([tuple(r) for r in spark.sql(q).collect()], idx)
                add("PySpark", f_sp)
            else:
                add("PySpark", None, False, ctx.spark_note)
        else:
            add_others(add, template, col, idx)

        log(f"W2 {report}: warm-up")
        for _, fn in fns:
            fn()
        for t, _ in fns:  # the warm-up run is not a measurement
            res.series[(report, t)].runs.clear()
        interleaved(reps, fns)
        for t, _ in fns:
            s = res.series[(report, t)]
            if s.runs:
                log(f"W2 {report} {t}: median {s.med * 1000:.1f} ms, rows {s.rows}")

    # PySpark is measured last, in a JVM started only then and ended right after: a live JVM
    # (GC and timer threads, a 6 GB heap) slows whatever else runs on these two cores, so the
    # other targets are measured before it exists. Its session start is reported separately.
    for report, template in templates.items():
        measure(report, template, False)
    spark = None
    if ctx.spark_factory is not None:
        try:
            spark, res.spark_startup_s = ctx.spark_factory()
            ctx.spark_note = "PySpark local[2]"
        except Exception as e:  # noqa: BLE001 — reported, not fatal
            ctx.spark_note = f"PySpark failed to start: {str(e).splitlines()[0][:150]}"
            log(ctx.spark_note)
    try:
        for report, template in templates.items():
            measure(report, template, True)
    finally:
        if spark is not None:
            from peers import stop_spark
            stop_spark(spark)

    if rx is not None:
        res.peak_rss = rx.peak_rss()
    for report, sigs in res.checks.items():
        distinct = set(sigs.values())
        if len(distinct) > 1:
            res.notes.append(f"{REPORTS[report]}: results DIFFER (rows, sum of "
                             f"{SUM_COL[report][0]}): " +
                             ", ".join(f"{t} {v}" for t, v in sigs.items()))
        elif sigs:
            n, total = next(iter(distinct))
            res.notes.append(f"{REPORTS[report]}: every target returned {n:,} rows with the same "
                             f"sum of {SUM_COL[report][0]} ({total:,}).")
    return res
