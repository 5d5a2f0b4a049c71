"""W9 "maintenance" (issue 23's benchmark): what compaction and a sort order buy the readers.

Three copies of health.prescriber_drug are made in the bench lakehouse, each created with the
fact table's partitioning (delivery_date, presc_state), sort order (presc_specialty,
drug_name) and properties (npi bloom filters, uncompressed):
  one        written by one INSERT … SELECT: one delivery, one file per partition
  frag       written by FRAGMENTS INSERTs, each a slice of the prescribers
             (npi mod FRAGMENTS), so every partition holds FRAGMENTS small files in as many
             manifests: what a feed of small deliveries leaves behind
  npi        written like `one`, then `ALTER TABLE … WRITE ORDERED BY (npi)` and
             `rewrite_data_files(options => map('rewrite-all', 'true'))`

Phase "before": the W2 reports and the W3 dashboard mix on `one` and on `frag`, through
rxgate pgwire and DuckDB in-process on the same tables' live Parquet files. Then `frag` is
compacted (`CALL system.rewrite_data_files`, timed) and its manifests merged
(`rewrite_manifests`, timed); phase "after" runs the same on `one` and the compacted `frag`.
DuckDB's W3 is the mix's statements run one after the other in-process for as long as one
pgbench run (a 1-client loop without a wire). Finally W3's lookup by npi alone (pgbench, one
statement per transaction, the mix's npis) on `one` (unsorted by npi), on `npi`, and on
PostgreSQL 15's health.prescriber_drug with its npi index.

Goals: the compacted table within 10% of `one`; the npi-sorted lookup at least as fast as
PostgreSQL's indexed lookup.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from harness import (LOCAL_TABLES, Series, Tables, fmt_ratio, interleaved, log, report_sql)

FRAGMENTS = 200
PROPS = ("TBLPROPERTIES ('write.parquet.bloom-filter-enabled.column.npi' = 'true', "
         "'write.parquet.compression-codec' = 'uncompressed')")
REPORTS = {"city_report": "city report", "top_prescribers": "top-5 prescribers report"}
TABLES = {"one": "bench.w9_one", "frag": "bench.w9_frag", "npi": "bench.w9_npi"}
PG = "PostgreSQL 15"


@dataclass
class Layout:
    files: int = 0
    bytes: int = 0
    rows: int = 0
    partitions: int = 0
    manifests: int = 0


@dataclass
class W9Result:
    layouts: dict[str, Layout] = field(default_factory=dict)   # one, frag, compacted, npi
    build_s: dict[str, float] = field(default_factory=dict)    # how long each copy took
    maint_s: dict[str, float] = field(default_factory=dict)    # compaction, manifests, sort
    maint_rows: dict[str, tuple] = field(default_factory=dict)  # the procedures' answers
    reports: dict[tuple[str, str, str, str], Series] = field(default_factory=dict)
    # (phase, report, engine, table) -> Series
    mix: dict[tuple[str, str, int], list] = field(default_factory=dict)
    # (phase, target, clients) -> [w3 Run]
    duck_mix: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # (phase, table) -> [tps]
    lookup: dict[tuple[str, int], list] = field(default_factory=dict)  # (target, clients) -> [Run]
    secs: int = 0
    clients: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _files(rx, table: str) -> list[tuple[str, int, int]]:
    schema, name = table.split(".")
    return rx.execute(f'SELECT file_path, file_size_in_bytes, record_count FROM {schema}."{name}$files"'
                      ).fetchall()


def _layout(rx, table: str) -> Layout:
    schema, name = table.split(".")
    files = _files(rx, table)
    parts = rx.execute(f'SELECT count(*) FROM {schema}."{name}$partitions"').fetchone()[0]
    manifests = rx.execute(f'SELECT count(*) FROM {schema}."{name}$manifests"').fetchone()[0]
    return Layout(files=len(files), bytes=sum(f[1] for f in files), rows=sum(f[2] for f in files),
                  partitions=parts, manifests=manifests)


def _create(rx, table: str) -> None:
    rx.execute(f"DROP TABLE IF EXISTS {table} PURGE")
    rx.execute(f"CREATE TABLE {table} PARTITIONED BY (delivery_date, presc_state) {PROPS} "
               "AS SELECT * FROM health.prescriber_drug LIMIT 0")
    rx.execute(f"ALTER TABLE {table} WRITE ORDERED BY (presc_specialty, drug_name)")


def _duck_view(duck, rx, view: str, table: str) -> None:
    paths = ", ".join(f"'{p.removeprefix('file://')}'" for p, _, _ in _files(rx, table))
    duck.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet([{paths}], "
                 "hive_partitioning = false)")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def build(ctx, res: W9Result, rows: int) -> None:
    rx = ctx.rx_conn()
    rx.execute("CREATE SCHEMA IF NOT EXISTS bench")
    for key in ("one", "npi"):
        t = TABLES[key]
        _create(rx, t)
        res.build_s[key] = _timed(lambda t=t: rx.execute(f"INSERT INTO {t} SELECT * FROM health.prescriber_drug"))
    t = TABLES["frag"]
    _create(rx, t)

    def fragments():
        for k in range(FRAGMENTS):
            rx.execute(f"INSERT INTO {t} SELECT * FROM health.prescriber_drug "
                       f"WHERE coalesce(CAST(npi AS BIGINT), 0) % {FRAGMENTS} = {k}")
    res.build_s["frag"] = _timed(fragments)
    rx.execute(f"ALTER TABLE {TABLES['npi']} WRITE ORDERED BY (npi)")
    res.maint_s["sort by npi"] = _timed(lambda: res.maint_rows.__setitem__("sort by npi", rx.execute(
        f"CALL system.rewrite_data_files(table => '{TABLES['npi']}', "
        "options => map('rewrite-all', 'true'))").fetchone()))
    for key in ("one", "frag", "npi"):
        res.layouts[key] = _layout(rx, TABLES[key])
        if res.layouts[key].rows != rows:
            raise RuntimeError(f"{TABLES[key]} holds {res.layouts[key].rows} rows, expected {rows}")
    log("W9 layouts: " + ", ".join(f"{k} {v.files} files / {v.manifests} manifests"
                                   for k, v in res.layouts.items()))


def measure(ctx, res: W9Result, phase: str, reps: int) -> None:
    """W2 and W3 on `one` and `frag` (compacted or not), rxgate and DuckDB."""
    import w3_dashboard
    from peers import duckdb_arrow
    rx, duck = ctx.rx_conn(), ctx.duck
    for key in ("one", "frag", "npi"):
        _duck_view(duck, rx, f"w9_{key}", TABLES[key])
    keys = ["one", "frag"] + (["npi"] if phase == "after" else [])
    fns = []
    for report, template in report_sql().items():
        sigs: dict[str, tuple] = {}
        for key in keys:
            for engine in ("rxgate", "DuckDB"):
                s = res.reports.setdefault((phase, report, engine, key), Series())
                if engine == "rxgate":
                    q = Tables(TABLES[key], "health.us_cities").sql(template)

                    def fn(q=q):
                        rows = rx.execute(q).fetchall()
                        return (len(rows), sum(int(r[5] or 0) for r in rows))
                else:
                    q = Tables(f"w9_{key}", LOCAL_TABLES.us_cities).sql(template)

                    def fn(q=q):
                        import pyarrow.compute as pc
                        t = duckdb_arrow(duck, q)
                        return (t.num_rows, int(pc.sum(t.column(5)).as_py() or 0))
                label = f"W9 {phase} {report} {engine} {key}"
                fns.append((label, s.timer(fn, label, lambda sig, label=label: sigs.__setitem__(label, sig))))
        for _, fn in fns:  # warm-up, not measured
            fn()
        for (phase_, r, e, k), s in res.reports.items():
            if phase_ == phase and r == report:
                s.runs.clear()
        interleaved(reps, fns)
        fns = []
        if len(set(sigs.values())) > 1:
            res.notes.append(f"{phase}, {REPORTS[report]}: results DIFFER: {sigs}")
    # W3: the dashboard mix, rxgate by pgbench, DuckDB by an in-process loop.
    targets = []
    for key in keys:
        files = w3_dashboard.write_scripts(ctx.sample, ctx.work / f"w9-scripts-{key}", TABLES[key])
        targets.append((key, ctx.rxgate, files))
    if phase == "after" and ctx.pg is not None:
        files = w3_dashboard.write_scripts(ctx.sample, ctx.work / "w9-scripts-pg")
        targets.append((PG, ctx.pg, files))
    # The fragmented table takes seconds per statement: 32 clients would queue for minutes.
    for c in (res.clients if phase == "after" else [1]):
        runs = []
        for key, server, files in targets:
            def one(key=key, server=server, files=files, c=c):
                r = w3_dashboard.pgbench(server, files, c, res.secs, ctx.work / "w9-log")
                res.mix.setdefault((phase, key, c), []).append(r)
                log(f"W9 {phase} W3 {key} -c {c}: tps {r.tps}" + (f", ERROR {r.error}" if r.error else ""))
            runs.append((key, one))
        if c == 1:
            for key in keys:
                def duck_loop(key=key):
                    tps = _duck_mix(duck, ctx.sample, f"w9_{key}", res.secs)
                    res.duck_mix.setdefault((phase, key), []).append(tps)
                    log(f"W9 {phase} DuckDB mix {key}: {tps:.1f} tps")
                runs.append((f"duck {key}", duck_loop))
        interleaved(reps, runs)


def _duck_mix(duck, sample: dict, table: str, secs: float) -> float:
    """The W3 scripts' statements on DuckDB, one transaction after the other, for `secs`."""
    import w3_dashboard
    scripts = w3_dashboard.scripts(sample, table)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < secs:
        stmts = scripts[n % len(scripts)]
        for q in stmts:
            duck.execute(q.replace(":yrs", "20")).fetchall()
        n += 1
    return n / (time.perf_counter() - t0)


def compact(ctx, res: W9Result) -> None:
    rx = ctx.rx_conn()
    t = TABLES["frag"]
    res.maint_s["compaction"] = _timed(lambda: res.maint_rows.__setitem__("compaction", rx.execute(
        f"CALL system.rewrite_data_files(table => '{t}')").fetchone()))
    res.maint_s["manifests"] = _timed(lambda: res.maint_rows.__setitem__("manifests", rx.execute(
        f"CALL system.rewrite_manifests('{t}')").fetchone()))
    res.layouts["compacted"] = _layout(rx, t)
    log(f"W9 compaction {res.maint_s['compaction']:.1f} s: {res.maint_rows['compaction']}; "
        f"manifests {res.maint_s['manifests']:.1f} s: {res.maint_rows['manifests']}")


def lookups(ctx, res: W9Result, reps: int) -> None:
    """W3's lookup by npi alone: unsorted (`one`), sorted (`npi`), PostgreSQL's index."""
    import w3_dashboard
    unsorted = w3_dashboard.write_lookup_scripts(ctx.sample, ctx.work / "w9-lookup-one", TABLES["one"])
    by_npi = w3_dashboard.write_lookup_scripts(ctx.sample, ctx.work / "w9-lookup-npi", TABLES["npi"])
    pg_files = w3_dashboard.write_lookup_scripts(ctx.sample, ctx.work / "w9-lookup-pg", "health.prescriber_drug")
    targets = [("rxgate, unsorted", lambda c: w3_dashboard.pgbench(ctx.rxgate, unsorted, c, res.secs, ctx.work / "w9-log")),
               ("rxgate, sorted by npi", lambda c: w3_dashboard.pgbench(ctx.rxgate, by_npi, c, res.secs, ctx.work / "w9-log")),
               ("PostgreSQL 15, indexed", lambda c: w3_dashboard.pgbench(ctx.pg, pg_files, c, res.secs, ctx.work / "w9-log"))]
    for c in res.clients:
        runs = []
        for name, fn in targets:
            def one(name=name, fn=fn, c=c):
                r = fn(c)
                res.lookup.setdefault((name, c), []).append(r)
                log(f"W9 lookup {name} -c {c}: tps {r.tps}, mean {r.mean_ms} ms" + (f", ERROR {r.error}" if r.error else ""))
            runs.append((name, one))
        interleaved(reps, runs)


def run(ctx, reps: int, secs: int, clients: list[int]) -> W9Result:
    res = W9Result(secs=secs, clients=clients)
    rows = ctx.rx_conn().execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0]
    build(ctx, res, rows)
    measure(ctx, res, "before", reps)
    compact(ctx, res)
    if res.layouts["compacted"].rows != rows:
        raise RuntimeError(f"the compacted table holds {res.layouts['compacted'].rows} rows, expected {rows}")
    measure(ctx, res, "after", reps)
    lookups(ctx, res, reps)
    rx = ctx.rx_conn()
    for t in TABLES.values():
        rx.execute(f"DROP TABLE {t} PURGE")
    return res


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def _med(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _mix_tps(res: W9Result, phase: str, key: str, c: int) -> float | None:
    return _med([r.tps for r in res.mix.get((phase, key, c), []) if r.error is None])


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1000:,.1f} ms"


def render(res: W9Result, scale: float, reps: int, hdr: str) -> str:
    L = res.layouts
    lines = [hdr, "",
             f"Scale {scale:g}. `frag` = {FRAGMENTS} INSERTs (npi mod {FRAGMENTS}); `one` = one INSERT; "
             f"`npi` = one INSERT, then sorted by npi. Medians of {reps} interleaved repetitions; "
             f"W3 runs of {res.secs} s.", "",
             "| table | data files | partitions | manifests | bytes | rows | made in |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    made = {"one": res.build_s.get("one"), "frag": res.build_s.get("frag"),
            "compacted": res.maint_s.get("compaction"), "npi": res.build_s.get("npi")}
    label = {"one": "`one` (one delivery)", "frag": f"`frag` ({FRAGMENTS} deliveries)",
             "compacted": "`frag` compacted", "npi": "`npi` (sorted by npi)"}
    for k in ("one", "frag", "compacted", "npi"):
        if k in L:
            v = L[k]
            lines.append(f"| {label[k]} | {v.files:,} | {v.partitions:,} | {v.manifests:,} | "
                         f"{v.bytes / 1e6:,.1f} MB | {v.rows:,} | "
                         f"{'—' if made[k] is None else f'{made[k]:.1f} s'} |")
    lines += ["", "Maintenance, timed as the admin's CALL over pgwire:", ""]
    what = {"compaction": "`rewrite_data_files` of `frag` (bin-pack, sort order)",
            "manifests": "`rewrite_manifests` of the compacted `frag`",
            "sort by npi": "`rewrite_data_files(options => map('rewrite-all', 'true'))` of `npi` after `WRITE ORDERED BY (npi)`"}
    for k, s in res.maint_s.items():
        lines.append(f"- {what[k]}: {s:.2f} s, answer {tuple(res.maint_rows.get(k) or ())}")
    lines += ["", "W2 reports (whole result fetched):", "",
              "| report | engine | one | frag | frag / one | one (after) | compacted | compacted / one |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for report in REPORTS:
        for engine in ("rxgate", "DuckDB"):
            b1 = res.reports.get(("before", report, engine, "one"), Series()).med
            bf = res.reports.get(("before", report, engine, "frag"), Series()).med
            a1 = res.reports.get(("after", report, engine, "one"), Series()).med
            af = res.reports.get(("after", report, engine, "frag"), Series()).med
            lines.append(f"| {REPORTS[report]} | {engine} | {_ms(b1)} | {_ms(bf)} | {fmt_ratio(bf, b1)} | "
                         f"{_ms(a1)} | {_ms(af)} | {fmt_ratio(af, a1)} |")
    lines += ["", "W3 dashboard mix, transactions/s (rxgate: pgbench -M extended; DuckDB: the same statements "
              "in a 1-client in-process loop):", "",
              "| target | clients | one | frag | frag / one | one (after) | compacted | compacted / one | sorted by npi |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in res.clients:
        b1, bf = _mix_tps(res, "before", "one", c), _mix_tps(res, "before", "frag", c)
        a1, af = _mix_tps(res, "after", "one", c), _mix_tps(res, "after", "frag", c)
        an = _mix_tps(res, "after", "npi", c)
        lines.append(f"| rxgate | {c} | {_f(b1)} | {_f(bf)} | {fmt_ratio(bf, b1)} | {_f(a1)} | {_f(af)} | "
                     f"{fmt_ratio(af, a1)} | {_f(an)} |")
    if res.duck_mix:
        d = {k: _med(v) for k, v in res.duck_mix.items()}
        b1, bf, a1, af, an = (d.get(("before", "one")), d.get(("before", "frag")), d.get(("after", "one")),
                              d.get(("after", "frag")), d.get(("after", "npi")))
        lines.append(f"| DuckDB | 1 | {_f(b1)} | {_f(bf)} | {fmt_ratio(bf, b1)} | {_f(a1)} | {_f(af)} | "
                     f"{fmt_ratio(af, a1)} | {_f(an)} |")
    from w3_dashboard import STATEMENT_NAMES
    lines += ["", "Mean statement latency in the mix after compaction (ms, pgbench -r): `one` is sorted by "
              "(presc_specialty, drug_name) like health.prescriber_drug, `npi` by npi; PostgreSQL 15 has "
              "an index on each filtered column:", "",
              "| table | clients | " + " | ".join(STATEMENT_NAMES) + " |",
              "|---|---:|" + "---:|" * len(STATEMENT_NAMES)]
    for c in res.clients:
        for key, name in (("one", "rxgate `one`"), ("frag", "rxgate `frag` compacted"),
                          ("npi", "rxgate `npi`"), (PG, PG)):
            per = _stmt_ms(res, "after", key, c)
            if per:
                lines.append(f"| {name} | {c} | " + " | ".join(f"{x:,.1f}" for x in per) + " |")
    lines += ["", "W3's lookup by npi alone (one statement per transaction; mean latency from pgbench's log):", "",
              "| target | clients | tps | mean | p99 |", "|---|---:|---:|---:|---:|"]
    for c in res.clients:
        for name in ("rxgate, unsorted", "rxgate, sorted by npi", "PostgreSQL 15, indexed"):
            runs = [r for r in res.lookup.get((name, c), []) if r.error is None]
            if runs:
                lines.append(f"| {name} | {c} | {_f(_med([r.tps for r in runs]))} | "
                             f"{_med([r.mean_ms for r in runs]):,.2f} ms | {_med([r.p99_ms for r in runs]):,.2f} ms |")
    lines += ["", "Goals: " + "; ".join(goals(res)) + "."]
    lines += [f"- {n}" for n in res.notes]
    return "\n".join(lines)


def _stmt_ms(res: W9Result, phase: str, key: str, c: int) -> list[float]:
    """Median over runs of each statement's mean latency."""
    runs = [r for r in res.mix.get((phase, key, c), []) if r.error is None and r.stmt_ms]
    if not runs:
        return []
    return [statistics.median(r.stmt_ms[i] for r in runs) for i in range(min(len(r.stmt_ms) for r in runs))]


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f}" if x >= 1 else f"{x:.3f}"


def goals(res: W9Result) -> list[str]:
    out = []
    worst = []
    for report in REPORTS:
        a1 = res.reports.get(("after", report, "rxgate", "one"), Series()).med
        af = res.reports.get(("after", report, "rxgate", "frag"), Series()).med
        if a1 and af:
            worst.append((af / a1, REPORTS[report]))
    for c in res.clients:
        a1, af = _mix_tps(res, "after", "one", c), _mix_tps(res, "after", "frag", c)
        if a1 and af:
            worst.append((a1 / af, f"W3 at {c} client{'s' if c > 1 else ''}"))
    if worst:
        r, what = max(worst)
        out.append(f"compacted within 10% of one delivery: worst {r:.2f}x ({what}): "
                   f"{'met' if r <= 1.10 else 'missed'}")
    for c in res.clients:
        s, p = _stmt_ms(res, "after", "npi", c), _stmt_ms(res, "after", PG, c)
        if len(s) == 5 and len(p) == 5:
            out.append(f"sorted npi lookup in the mix at {c} client{'s' if c > 1 else ''}: {s[4]:.2f} ms vs "
                       f"PostgreSQL's indexed {p[4]:.2f} ms: {'met' if s[4] <= p[4] else 'missed'}")
        s = _med([r.mean_ms for r in res.lookup.get(("rxgate, sorted by npi", c), []) if r.error is None])
        p = _med([r.mean_ms for r in res.lookup.get(("PostgreSQL 15, indexed", c), []) if r.error is None])
        if s and p:
            out.append(f"sorted npi lookup alone at {c} client{'s' if c > 1 else ''}: {s:.2f} ms vs PostgreSQL's "
                       f"{p:.2f} ms: {'met' if s <= p else 'missed'}")
    return out
