"""W0 "overhead": the same SQL through rxgate (pgwire with psycopg; Flight SQL with ADBC when
available) against raw DataFusion in-process (the `datafusion` Python package of the same
major version, over the same Parquet files). The difference is what the gateway costs: the
protocol, its encoding, the login-free per-query path (catalog/metadata loading, the
session's rewrites and planning), and the client's decoding.

Queries go from trivial (`SELECT 1`: pure round-trip) to the two reports. Each target gets
an untimed warm-up, then `reps` timed runs, interleaved; the whole result is fetched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness import LOCAL_TABLES, RXGATE_TABLES, Series, interleaved, log, report_sql

TARGETS = ["rxgate pgwire", "rxgate Flight", "raw DataFusion"]


def queries(sample: dict) -> dict[str, str]:
    """Templates over {prescriber_drug}/{us_cities}; sample values come from the data."""
    rep = report_sql()
    npi = sample["npis"][0]
    state = sample["states"][0]
    return {
        "SELECT 1": "SELECT 1",
        "count(*)": "SELECT count(*) FROM {prescriber_drug}",
        "lookup by npi": ("SELECT drug_name, trx_cnt, total_drug_cost FROM {prescriber_drug} "
                          f"WHERE npi = '{npi}'"),
        "state filter, group by specialty": (
            "SELECT presc_specialty, count(*) AS n, sum(trx_cnt) AS trx FROM {prescriber_drug} "
            f"WHERE presc_state = '{state}' GROUP BY presc_specialty ORDER BY trx DESC LIMIT 10"),
        "city report": rep["city_report"],
        "top-5 prescribers report": rep["top_prescribers"],
    }


@dataclass
class W0Result:
    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run(ctx, reps: int) -> W0Result:
    res = W0Result()
    rx_conn, fl_conn, df = ctx.rx_conn(), ctx.flight_conn(), ctx.datafusion
    for name, template in queries(ctx.sample).items():
        fns = []

        def add(target, fn, why=None):
            s = res.series.setdefault((name, target), Series())
            if fn is None:
                s.error = why or "n/a"
                return

            fns.append((target, s.timer(fn, f"W0 {name} {target}", lambda rows: setattr(s, "rows", rows))))

        q_rx = RXGATE_TABLES.sql(template)
        q_df = LOCAL_TABLES.sql(template)

        def f_rx(q=q_rx):
            with rx_conn.cursor() as cur:
                cur.execute(q)
                return len(cur.fetchall())

        def f_fl(q=q_rx):
            with fl_conn.cursor() as cur:
                cur.execute(q)
                return cur.fetch_arrow_table().num_rows

        def f_df(q=q_df):
            return df.sql(q).to_arrow_table().num_rows

        add("rxgate pgwire", f_rx if rx_conn is not None else None, "no rxgate server")
        add("rxgate Flight", f_fl if fl_conn is not None else None, ctx.flight_note)
        add("raw DataFusion", f_df if df is not None else None, "datafusion not importable")
        for _, fn in fns:  # warm-up
            fn()
        for (q, _), s in res.series.items():
            if q == name:
                s.runs.clear()
        interleaved(reps, fns)
        meds = ", ".join(f"{t} {res.series[(name, t)].med * 1000:.1f} ms" for t in TARGETS
                         if res.series[(name, t)].runs)
        log(f"W0 {name}: {meds}")
        rows = {t: res.series[(name, t)].rows for t in TARGETS if res.series[(name, t)].runs}
        if len(set(rows.values())) > 1:
            res.notes.append(f"{name}: row counts DIFFER: {rows}")
    return res
