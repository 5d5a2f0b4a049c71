"""Rendering of the W0/W2/W3/W4/W5/W7 sections and the goal summary of benches/README.md, and
the PNG charts (matplotlib, Agg backend) in benches/charts/."""
from __future__ import annotations

import statistics
from pathlib import Path

from harness import CHARTS, fmt_mb, fmt_ms, fmt_rate, fmt_ratio, fmt_s, log

import w0_overhead
import w2_reports
import w3_dashboard
import w4_export
import w7_gcs


def _chart_link(name: str) -> str:
    return f"![{name}](charts/{name}.png)"


def _cell_time(s) -> str:
    if s is None:
        return "n/a"
    if s.runs:
        return fmt_ms(s.med)
    return "n/a" if not s.error else f"n/a ({s.error})" if len(s.error) < 60 else "failed"


# ---------------------------------------------------------------------------
# W2
# ---------------------------------------------------------------------------

def render_w2(res: w2_reports.W2Result, scale: float, reps: int, header: str) -> str:
    lines = [f"### W2 reports — scale {scale:g}, median of {reps} interleaved runs after one "
             "warm-up", "", header, "",
             "| report | " + " | ".join(w2_reports.TARGETS) +
             " | DuckDB / rxgate | PostgreSQL / rxgate | PySpark / rxgate |",
             "|---|" + "---|" * (len(w2_reports.TARGETS) + 3)]
    for report, label in w2_reports.REPORTS.items():
        cells = [_cell_time(res.series.get((report, t))) for t in w2_reports.TARGETS]
        rx = res.series.get((report, "rxgate pgwire"))
        rxm = rx.med if rx else None

        def peer(t):
            s = res.series.get((report, t))
            return s.med if s else None
        lines.append(f"| {label} | " + " | ".join(cells) + " | " +
                     " | ".join(fmt_ratio(peer(t), rxm)
                                for t in ("DuckDB", "PostgreSQL 15", "PySpark")) + " |")
    lines += ["", "Ratios are peer time / rxgate pgwire time: above 1× rxgate is faster.", ""]
    if res.peak_rss:
        lines.append(f"rxgate server peak RSS during W2: {fmt_mb(res.peak_rss)}.")
    if res.spark_startup_s is not None:
        lines.append(f"PySpark session start-up (JVM, not in the timings): "
                     f"{res.spark_startup_s:.1f} s.")
    notes = [n for n in res.notes]
    errs = sorted({f"{t}: {s.error}" for (r, t), s in res.series.items() if s.error})
    lines += [""] + [f"- {n}" for n in notes + errs]
    lines += ["", "All runs (ms): " + "; ".join(
        f"{r} {t} " + ", ".join(f"{x * 1000:.0f}" for x in s.runs)
        for (r, t), s in res.series.items() if s.runs) + ".", "", _chart_link("w2_reports")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# W3
# ---------------------------------------------------------------------------

def render_w3(res: w3_dashboard.W3Result, scale: float, reps: int, header: str) -> str:
    targets = sorted({t for t, _ in res.runs}, key=lambda t: t != "rxgate")
    lines = [f"### W3 dashboard mix — scale {scale:g}, pgbench -M extended, "
             f"{res.secs} s per run, median of {reps} interleaved runs", "", header, "",
             "| clients | " + " | ".join(f"{t} tps | {t} p99" for t in targets) +
             " | rxgate / PostgreSQL tps |", "|---|" + "---|---|" * len(targets) + "---|"]
    for c in res.clients:
        cells = []
        for t in targets:
            err = [r.error for r in res.runs.get((t, c), []) if r.error]
            tps = res.med(t, c, "tps")
            p99 = res.med(t, c, "p99_ms")
            cells.append(("failed" if err and tps is None else f"{tps:,.1f}"
                          if tps is not None else "n/a"))
            cells.append(f"{p99:,.0f} ms" if p99 is not None else "n/a")
        lines.append(f"| {c} | " + " | ".join(cells) + " | " +
                     fmt_ratio(res.med("rxgate", c, "tps"), res.med("PostgreSQL 15", c, "tps"))
                     + " |")
    lines += ["", "One transaction = one dashboard refresh of 5 statements; statements/s = "
              "5 × tps. p99 is of the whole transaction, from pgbench's per-transaction log.",
              ""]
    # per-statement mean latencies at the largest client count
    c = max(res.clients)
    rows = []
    for t in targets:
        st = [r.stmt_ms for r in res.runs.get((t, c), []) if r.stmt_ms]
        if st:
            n = min(len(x) for x in st)
            rows.append((t, [statistics.median(x[i] for x in st) for i in range(n)]))
    if rows:
        lines += [f"Mean statement latency at {c} clients (pgbench -r, ms):", "",
                  "| target | " + " | ".join(w3_dashboard.STATEMENT_NAMES) + " |",
                  "|---|" + "---|" * len(w3_dashboard.STATEMENT_NAMES)]
        for t, v in rows:
            lines.append(f"| {t} | " + " | ".join(f"{x:,.1f}" for x in v) + " |")
        lines.append("")
    errs = sorted({f"{t} -c {c}: {r.error}" for (t, c), rs in res.runs.items() for r in rs
                   if r.error})
    failed = sum(r.failed for rs in res.runs.values() for r in rs)
    if errs:
        lines += [f"- {e}" for e in errs] + [""]
    if failed:
        lines += [f"- {failed} failed transactions in all runs.", ""]
    if res.peak_rss:
        lines += [f"rxgate server peak RSS during W3: {fmt_mb(res.peak_rss)}.", ""]
    lines += ["One of the scripts (the others differ in their drawn values):", "", "```sql",
              res.example.rstrip(), "```", "", _chart_link("w3_dashboard")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# W4
# ---------------------------------------------------------------------------

def render_w4(res: w4_export.W4Result, scale: float, reps: int, header: str) -> str:
    ab = res.arrow_bytes or 0
    lines = [f"### W4 export — scale {scale:g}, median of {reps} interleaved runs", "", header,
             "", f"Table: health.prescriber_drug, {res.rows:,} rows × 25 columns; its Arrow "
             f"size is {fmt_mb(ab)} (MB = 10^6 bytes).", "",
             "| path | median | rows/s | MB/s (Arrow size / time) | bytes moved | "
             "vs PostgreSQL COPY | vs PostgreSQL psycopg rows |",
             "|---|---|---|---|---|---|---|"]
    pg_copy = res.series.get("PostgreSQL 15 COPY TO STDOUT")
    pg_rows = res.series.get("PostgreSQL 15 psycopg (text)")
    for t in w4_export.TARGETS:
        s = res.series.get(t)
        if s is None:
            continue
        if not s.runs:
            lines.append(f"| {t} | n/a | | | | | {s.error or ''} |")
            continue
        med = s.med
        rps = res.rows / med
        mbs = ab / med / 1e6
        moved = res.wire_bytes.get(t)
        lines.append(f"| {t} | {fmt_s(med)} | {fmt_rate(rps)} | {mbs:,.0f} | "
                     f"{fmt_mb(moved) if moved else '—'} | "
                     f"{fmt_ratio(pg_copy.med if pg_copy else None, med)} | "
                     f"{fmt_ratio(pg_rows.med if pg_rows else None, med)} |")
    lines += ["", "\"vs\" columns: the PostgreSQL path's time / this path's time (above 1×: "
              "faster than PostgreSQL). Bytes moved: the COPY text stream, or the Arrow size of "
              "the table Flight delivered.", ""]
    if res.peak_rss:
        lines.append(f"rxgate server peak RSS during W4: {fmt_mb(res.peak_rss)}.")
    lines += [f"- {n}" for n in res.notes]
    lines += ["", _chart_link("w4_export")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# W0
# ---------------------------------------------------------------------------

def render_w0(res: w0_overhead.W0Result, scale: float, reps: int, header: str) -> str:
    lines = [f"### W0 overhead — scale {scale:g}, median of {reps} interleaved runs after one "
             "warm-up", "", header, "",
             "| query | rxgate pgwire | rxgate Flight | raw DataFusion | pgwire − raw | "
             "pgwire / raw |", "|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(q for q, _ in res.series))
    for q in names:
        p, f, d = (res.series.get((q, t)) for t in w0_overhead.TARGETS)
        diff = (p.med - d.med) if p and d and p.runs and d.runs else None
        lines.append(f"| {q} | {_cell_time(p)} | {_cell_time(f)} | {_cell_time(d)} | "
                     f"{fmt_ms(diff) if diff is not None else 'n/a'} | "
                     f"{fmt_ratio(p.med if p else None, d.med if d else None)} |")
    lines += ["", "Raw DataFusion: the `datafusion` Python package (same major version as "
              "rxgate's engine) over the same Parquet data files, result collected as Arrow "
              "in-process. rxgate: a logged-in psycopg connection over loopback, every row "
              "fetched and decoded.", ""]
    lines += [f"- {n}" for n in res.notes]
    lines += ["", _chart_link("w0_overhead")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# W5
# ---------------------------------------------------------------------------

def w5_rows(per_scale: dict) -> list[tuple]:
    """(label, unit fn) rows of the scale table: each picks a number from one scale's results."""
    def w1(key):
        return lambda r: (statistics.median(getattr(r["w1"], key))
                          if r.get("w1") and getattr(r["w1"], key) else None)

    def w2(report, target):
        return lambda r: (r["w2"].series[(report, target)].med
                          if r.get("w2") and (report, target) in r["w2"].series else None)

    def w4(target):
        return lambda r: (r["w4"].series[target].med
                          if r.get("w4") and target in r["w4"].series else None)
    return [
        ("W1 pipeline, rxgate", w1("rx_runs"), "s"),
        ("W1 pipeline, DuckDB", w1("dk_runs"), "s"),
        ("W2 city report, rxgate pgwire", w2("city_report", "rxgate pgwire"), "s"),
        ("W2 city report, DuckDB", w2("city_report", "DuckDB"), "s"),
        ("W2 top-5 report, rxgate pgwire", w2("top_prescribers", "rxgate pgwire"), "s"),
        ("W2 top-5 report, DuckDB", w2("top_prescribers", "DuckDB"), "s"),
        ("W4 export, rxgate psycopg text", w4("rxgate pgwire psycopg (text)"), "s"),
        ("W4 export, rxgate Flight", w4("rxgate Flight SQL ADBC"), "s"),
        ("W4 export, PostgreSQL COPY", w4("PostgreSQL 15 COPY TO STDOUT"), "s"),
        ("W4 export, DuckDB Arrow", w4("DuckDB in-process Arrow"), "s"),
        ("peak RSS, rxgate pipeline (W1)", w1("rx_rss"), "B"),
        ("peak RSS, rxgate server during W2",
         lambda r: r["w2"].peak_rss if r.get("w2") else None, "B"),
        ("peak RSS, rxgate server during W4",
         lambda r: r["w4"].peak_rss if r.get("w4") else None, "B"),
    ]


def render_w5(per_scale: dict, reps: int, header: str, rows_by_scale: dict) -> str:
    scales = sorted(per_scale)
    base = scales[0]
    lines = [f"### W5 scale — scales {', '.join(f'{s:g}' for s in scales)}, median of {reps} "
             "runs each", "", header, "",
             "Growth = value at this scale / value at scale "
             f"{base:g}, against the data's growth (rows). Cost grows no faster than the data "
             "when the growth is at most the data's.", "",
             "| measure | " + " | ".join(f"scale {s:g}" for s in scales) + " | " +
             " | ".join(f"growth {s:g}/{base:g}" for s in scales[1:]) + " |",
             "|---|" + "---|" * (2 * len(scales) - 1)]
    lines.append("| prescriber rows | " + " | ".join(
        f"{rows_by_scale.get(s, 0):,}" for s in scales) + " | " + " | ".join(
        fmt_ratio(rows_by_scale.get(s), rows_by_scale.get(base)) for s in scales[1:]) + " |")
    for label, fn, unit in w5_rows(per_scale):
        vals = [fn(per_scale[s]) for s in scales]
        if all(v is None for v in vals):
            continue
        cells = [("n/a" if v is None else fmt_s(v) if unit == "s" else fmt_mb(v)) for v in vals]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(
            fmt_ratio(v, vals[0]) for v in vals[1:]) + " |")
    goal = w5_goal(per_scale, rows_by_scale)
    if goal:
        lines += ["", "| goal (issue 7 §4) | measured | verdict |", "|---|---|---|"]
        lines += [f"| {g} | {m} | {v} |" for g, m, v in goal]
    lines += ["", _chart_link("w5_scale")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Goals (issue 7 §4 and issue 3 §7)
# ---------------------------------------------------------------------------

def goals(r: dict, per_scale: dict, rows_by_scale: dict) -> list[tuple[str, str, str]]:
    out = []

    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "**missed**")
    w1 = r.get("w1")
    if w1 and w1.sp_runs:
        rx, sp = statistics.median(w1.rx_runs), statistics.median(w1.sp_runs)
        sp_in = statistics.median(w1.sp_inner)
        out.append(("W1 pipeline ≥ 10× faster than PySpark",
                    f"{sp / rx:.1f}× whole process, {sp_in / rx:.1f}× without Spark's "
                    "session start", verdict(sp >= 10 * rx)))
    w2 = r.get("w2")
    if w2:
        for target in ("rxgate pgwire", "rxgate Flight"):
            for peer, goal, cmp in (("DuckDB", "within 1.5× of DuckDB", lambda rx, p: rx <= 1.5 * p),
                                    ("PySpark", "≥ 10× faster than PySpark",
                                     lambda rx, p: p >= 10 * rx),
                                    ("PostgreSQL 15", "≥ 3× faster than PostgreSQL 15",
                                     lambda rx, p: p >= 3 * rx)):
                figs, oks = [], []
                for report, label in w2_reports.REPORTS.items():
                    a = w2.series.get((report, target))
                    b = w2.series.get((report, peer))
                    if a and b and a.runs and b.runs:
                        oks.append(cmp(a.med, b.med))
                        figs.append(f"{label}: {fmt_ratio(b.med, a.med)} ({peer} / rxgate)")
                out.append((f"W2 {target}: {goal}", "; ".join(figs) or "n/a",
                            verdict(all(oks) if oks else None)))
    w4 = r.get("w4")
    if w4:
        fl = w4.series.get("rxgate Flight SQL ADBC")
        copy = w4.series.get("PostgreSQL 15 COPY TO STDOUT")
        if fl and fl.runs and w4.arrow_bytes:
            gbs = w4.arrow_bytes / fl.med / 1e9
            out.append(("W4 Flight ≥ 1 GB/s", f"{gbs:.2f} GB/s", verdict(gbs >= 1)))
            if copy and copy.runs:
                out.append(("W4 Flight ≥ 5× PostgreSQL COPY",
                            fmt_ratio(copy.med, fl.med), verdict(copy.med >= 5 * fl.med)))
            top = w4.series.get(w4_export.CEILING_TARGET)
            if top and top.runs:
                out.append(("W4 Flight, reference: the same client from an in-memory C++ "
                             "Flight server", f"{w4.arrow_bytes / top.med / 1e9:.2f} GB/s, "
                             f"{fmt_ratio(copy.med, top.med) if copy and copy.runs else 'n/a'}"
                             f" PostgreSQL COPY; rxgate takes {fl.med / top.med:.2f}× its time",
                             "(ceiling)"))
            raw = w4.series.get(w4_export.PYARROW_TARGET)
            if raw and raw.runs:
                out.append(("W4 Flight, reference: rxgate to pyarrow's C++ Flight client "
                            "(endpoints in parallel)", f"{w4.arrow_bytes / raw.med / 1e9:.2f} GB/s, "
                            f"{fmt_ratio(copy.med, raw.med) if copy and copy.runs else 'n/a'}"
                            " PostgreSQL COPY", "(reference)"))
        else:
            out.append(("W4 Flight ≥ 1 GB/s and ≥ 5× PostgreSQL COPY",
                        "no Flight SQL port", "n/a"))
        rx = w4.series.get("rxgate pgwire psycopg (text)")
        pg = w4.series.get("PostgreSQL 15 psycopg (text)")
        if rx and pg and rx.runs and pg.runs:
            out.append(("W4 pgwire rows/s ≥ PostgreSQL's (psycopg SELECT *, issue 3)",
                        f"{fmt_ratio(pg.med, rx.med)} (PostgreSQL time / rxgate time)",
                        verdict(rx.med <= pg.med)))
    w3 = r.get("w3")
    if w3 and 32 in w3.clients:
        a, b = w3.med("rxgate", 32, "tps"), w3.med("PostgreSQL 15", 32, "tps")
        out.append(("W3 more tps than PostgreSQL 15 at 32 clients",
                    f"rxgate {a if a is None else f'{a:,.1f}'} vs PostgreSQL "
                    f"{b if b is None else f'{b:,.1f}'} tps",
                    verdict(a > b if a is not None and b is not None else None)))
    return out


def w5_goal(per_scale: dict, rows_by_scale: dict) -> list[tuple[str, str, str]]:
    out = []
    scales = sorted(per_scale)
    if len(scales) >= 2:
        lo, hi = scales[0], scales[-1]
        data_growth = (rows_by_scale.get(hi) or 0) / max(1, rows_by_scale.get(lo) or 1)
        worst = []
        for label, fn, unit in w5_rows(per_scale):
            if unit != "s" or "rxgate" not in label:
                continue
            a, b = fn(per_scale[lo]), fn(per_scale[hi])
            if a and b:
                worst.append((b / a, label))
        if worst:
            g, label = max(worst)
            out.append((f"W5 cost grows no faster than the data (scale {lo:g} → {hi:g})",
                        f"data ×{data_growth:.1f}; worst rxgate growth ×{g:.1f} ({label})",
                        "met" if g <= data_growth * 1.1 else "**missed**"))
    return out


def render_summary(r: dict, per_scale: dict, rows_by_scale: dict, scale: float,
                   header: str) -> str:
    rows = goals(r, per_scale, rows_by_scale)
    lines = [f"### Goals (issue 7 §4, issue 3 §7) — scale {scale:g}", "", header, "",
             "W5's goal (cost grows no faster than the data) is in the W5 section.", "",
             "| goal | measured | verdict |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {v} |" for g, m, v in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# W7
# ---------------------------------------------------------------------------

W7_KINDS = {"metadata": "table metadata json", "manifest": "manifest list / manifest (avro)",
            "parquet": "Parquet", "other": "other objects"}
W7_OPS = {("get_tail", "parquet"): "Parquet footers (tail reads)",
          ("get_range", "parquet"): "Parquet column chunks (range reads)"}


def _w7_label(key: tuple[str, str]) -> str:
    op, kind = key
    return W7_OPS.get(key) or f"{W7_KINDS.get(kind, kind)} ({op})"


def _w7_order(key: tuple[str, str]):
    kinds = list(W7_KINDS)
    return (kinds.index(key[1]) if key[1] in kinds else 9, key[0] != "get_tail", key[0])


def _w7_n(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


def _w7_all(d: dict) -> str:
    return ", ".join(f"{op} {k} {n:,.0f}" for (op, k), n in sorted(d.items()) if n)


def render_w7(res: w7_gcs.W7Result, scale: float, reps: int, header: str) -> str:
    gs, lo = "gs:// warehouse", "local warehouse"
    lines = [f"### W7 gs:// warehouse — scale {scale:g}, city report, {reps} cold starts and "
             f"{reps} warm runs per warehouse (medians)", "", header, "",
             f"The city report (the SQL of `crates/ingest/src/reports.rs`) through pgwire (psycopg, "
             f"whole result fetched) on two `rxgate serve` processes: one over the usual local "
             f"warehouse, one over the same pipeline's output in `{w7_gcs.STORE}/warehouse` on "
             f"{res.emulator}. Cold = the first report after a fresh server start (a new server "
             f"per repetition); warm = the same query repeated on the last server. Requests and "
             f"bytes are the deltas of `system.storage_requests` around each query.", "",
             "| | local warehouse | gs:// warehouse | gs:// / local |", "|---|---|---|---|"]
    for phase, label in (("cold", "cold (first query after start)"), ("warm", "warm (repeated)")):
        a, b = res.med(phase, lo), res.med(phase, gs)
        lines.append(f"| {label} | {fmt_ms(a)} | {fmt_ms(b)} | {fmt_ratio(b, a)} |")
    if res.pipeline_s.get(gs) is not None:
        lines.append(f"| `rxgate pipeline run` (whole process, raw inputs local) | "
                     f"{fmt_s(res.pipeline_s.get(lo))} | {fmt_s(res.pipeline_s.get(gs))} | "
                     f"{fmt_ratio(res.pipeline_s.get(gs), res.pipeline_s.get(lo))} |")
    lines += ["", "Object-store requests per city report on the gs:// warehouse (median over the "
              "runs; footers are `get_tail`, column chunks `get_range`):", "",
              "| object kind (request) | cold requests | cold MB | warm requests | warm MB |",
              "|---|---|---|---|---|"]
    cr, wr = res.req_median("cold", gs), res.req_median("warm", gs)
    cb, wb = res.bytes_median("cold", gs), res.bytes_median("warm", gs)
    tot = lambda d: sum(d.values())
    for key in sorted(set(cr) | set(wr), key=_w7_order):
        lines.append(f"| {_w7_label(key)} | {_w7_n(cr.get(key, 0))} | {cb.get(key, 0) / 1e6:,.2f} | "
                     f"{_w7_n(wr.get(key, 0))} | {wb.get(key, 0) / 1e6:,.2f} |")
    lines.append(f"| **total** | {_w7_n(tot(cr))} | {tot(cb) / 1e6:,.2f} | {_w7_n(tot(wr))} | "
                 f"{tot(wb) / 1e6:,.2f} |")
    lines.append("")
    if cr and wr:
        gone = [_w7_label(k) for k in sorted(cr, key=_w7_order) if cr[k] and not wr.get(k)]
        refetched = [_w7_label(k) for k in sorted(wr, key=_w7_order) if wr[k] and k[1] != "parquet"]
        lines.append(f"- Warm, the repeated report made {_w7_n(tot(wr))} of the cold run's "
                     f"{_w7_n(tot(cr))} requests ({tot(wb) / max(tot(cb), 1):.0%} of its bytes)"
                     + (f"; not fetched again: {', '.join(gone)}" if gone else "")
                     + (f"; still fetched: {', '.join(refetched)}" if refetched else "")
                     + ".")
    tail_n, tail_b = cr.get(("get_tail", "parquet"), 0), cb.get(("get_tail", "parquet"), 0)
    pq_files, pq_bytes = res.lake_parquet
    if tail_n and pq_files:
        lines.append(f"- The cold footer reads average {tail_b / tail_n / 1e3:,.0f} KB per tail read, "
                     f"against {pq_bytes / pq_files / 1e3:,.0f} KB per Parquet file in the bucket "
                     f"({pq_files} files, {pq_bytes / 1e6:,.0f} MB).")
    for phase in ("cold", "warm"):
        local_req = res.req_median(phase, lo)
        lines.append(f"- The local warehouse's server counted, per {phase} query: "
                     + (_w7_all(local_req) if local_req else "no object-store requests") + ".")
    per_run = []
    for phase in ("cold", "warm"):
        for t in w7_gcs.TARGETS:
            ms = getattr(res, phase).get(t) or []
            if ms:
                per_run.append(f"{phase} {t} " + ", ".join(
                    f"{m.secs * 1000:.0f} ms/{sum(v for (op, k), v in m.requests.items()):,} req"
                    for m in ms))
    if res.lake_objects:
        lines.append(f"- The gs:// warehouse after the pipeline: {res.lake_objects:,} objects, "
                     f"{res.lake_bytes / 1e6:,.0f} MB.")
    lines += [f"- {n}" for n in res.notes + res.errors]
    lines += ["", "All runs (time / requests): " + "; ".join(per_run) + ".", "",
              _chart_link("w7_gcs")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def charts(r: dict, per_scale: dict, rows_by_scale: dict, scale: float, subtitle: str) -> list[Path]:
    CHARTS.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    made = []
    colors = {"rxgate pgwire": "#d62728", "rxgate Flight": "#ff7f0e", "DuckDB": "#1f77b4",
              "PostgreSQL 15": "#2ca02c", "PySpark": "#9467bd", "raw DataFusion": "#8c564b",
              "rxgate": "#d62728"}

    def save(fig, name):
        fig.text(0.99, 0.01, subtitle, ha="right", va="bottom", fontsize=7, color="#555")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        p = CHARTS / f"{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    w2 = r.get("w2")
    if w2:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        reports = list(w2_reports.REPORTS)
        targets = [t for t in w2_reports.TARGETS
                   if any(w2.series.get((rp, t)) and w2.series[(rp, t)].runs for rp in reports)]
        width = 0.8 / max(1, len(targets))
        for i, t in enumerate(targets):
            xs, ys = [], []
            for j, rp in enumerate(reports):
                s = w2.series.get((rp, t))
                if s and s.runs:
                    xs.append(j + i * width)
                    ys.append(s.med * 1000)
            bars = ax.bar(xs, ys, width, label=t, color=colors.get(t))
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(reports))])
        ax.set_xticklabels([w2_reports.REPORTS[rp] for rp in reports])
        ax.set_yscale("log")
        ax.set_ylabel("median time, ms (log scale; lower is better)")
        ax.set_title(f"W2 reports from the curated tables — scale {scale:g}")
        ax.legend(fontsize=8)
        save(fig, "w2_reports")

    w3 = r.get("w3")
    if w3:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
        for t in sorted({t for t, _ in w3.runs}):
            cs = [c for c in w3.clients if w3.med(t, c, "tps") is not None]
            a1.plot(cs, [w3.med(t, c, "tps") for c in cs], marker="o", label=t,
                    color=colors.get(t))
            cs2 = [c for c in w3.clients if w3.med(t, c, "p99_ms") is not None]
            a2.plot(cs2, [w3.med(t, c, "p99_ms") for c in cs2], marker="o", label=t,
                    color=colors.get(t))
        for a in (a1, a2):
            a.set_xscale("log", base=2)
            a.set_xticks(w3.clients)
            a.set_xticklabels([str(c) for c in w3.clients])
            a.set_xlabel("pgbench clients")
        a1.set_ylabel("transactions/s (higher is better)")
        a2.set_ylabel("p99 transaction latency, ms (lower is better)")
        a2.set_yscale("log")
        a1.legend(fontsize=8)
        fig.suptitle(f"W3 dashboard mix (5 statements per transaction) — scale {scale:g}")
        save(fig, "w3_dashboard")

    w4 = r.get("w4")
    if w4 and w4.arrow_bytes:
        fig, ax = plt.subplots(figsize=(8, 3.8))
        items = [(t, s) for t, s in w4.series.items() if s.runs]
        labels = [t for t, _ in items]
        vals = [w4.arrow_bytes / s.med / 1e6 for _, s in items]
        cols = ["#d62728" if t.startswith("rxgate") else "#2ca02c" if t.startswith("Postgre")
                else "#1f77b4" for t in labels]
        bars = ax.barh(labels, vals, color=cols)
        ax.bar_label(bars, labels=[f"{v:,.0f} MB/s, {w4.rows / s.med / 1e6:.2f} M rows/s"
                                   for v, (_, s) in zip(vals, items)], fontsize=7)
        ax.set_xlim(0, max(vals) * 1.45)
        ax.invert_yaxis()
        ax.set_xlabel("MB/s = Arrow size of the table / time (higher is better)")
        ax.set_title(f"W4 whole-table export, {w4.rows:,} rows — scale {scale:g}")
        save(fig, "w4_export")

    w0 = r.get("w0")
    if w0:
        fig, ax = plt.subplots(figsize=(9, 4))
        names = list(dict.fromkeys(q for q, _ in w0.series))
        targets = [t for t in w0_overhead.TARGETS
                   if any(w0.series.get((q, t)) and w0.series[(q, t)].runs for q in names)]
        width = 0.8 / max(1, len(targets))
        for i, t in enumerate(targets):
            xs, ys = [], []
            for j, q in enumerate(names):
                s = w0.series.get((q, t))
                if s and s.runs:
                    xs.append(j + i * width)
                    ys.append(s.med * 1000)
            ax.bar(xs, ys, width, label=t, color=colors.get(t))
        ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(names))])
        ax.set_xticklabels(names, rotation=15, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("median time, ms (log scale)")
        ax.set_title(f"W0 gateway overhead: rxgate vs raw DataFusion — scale {scale:g}")
        ax.legend(fontsize=8)
        save(fig, "w0_overhead")

    scales = sorted(per_scale)
    if len(scales) >= 2:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [rows_by_scale.get(s) for s in scales]
        for label, fn, unit in w5_rows(per_scale):
            if unit != "s":
                continue
            ys = [fn(per_scale[s]) for s in scales]
            if all(y is not None for y in ys):
                ax.plot(xs, ys, marker="o", label=label,
                        linestyle="-" if "rxgate" in label else "--")
        if xs[0]:
            ax.plot(xs, [xs[i] / xs[0] * 0.1 for i in range(len(xs))], color="#999",
                    linestyle=":", label="linear in rows (reference slope)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("prescriber rows")
        ax.set_ylabel("median time, s")
        ax.set_title("W5 how cost grows with the data")
        ax.legend(fontsize=6)
        save(fig, "w5_scale")
    w1 = r.get("w1")
    if w1 and w1.rx_runs:
        fig, ax = plt.subplots(figsize=(6, 2.8))
        vals = [statistics.median(w1.rx_runs), statistics.median(w1.dk_runs)]
        names = ["rxgate pipeline", "DuckDB (oracle SQL)"]
        cols = ["#d62728", "#1f77b4"]
        if w1.sp_runs:
            vals.append(statistics.median(w1.sp_runs))
            names.append("PySpark local[2] (seed logic)")
            cols.append("#9467bd")
        bars = ax.barh(names, vals, color=cols)
        ax.bar_label(bars, fmt="%.2f s", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("median wall time, s (lower is better)")
        ax.set_title(f"W1 raw CSV → curated tables + reports — scale {scale:g}")
        save(fig, "w1_pipeline")
    w7 = r.get("w7")
    if w7 and any(w7.cold.values()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        phases = ["cold", "warm"]
        tcol = {"local warehouse": "#1f77b4", "gs:// warehouse": "#d62728"}
        width = 0.38
        for i, t in enumerate(w7_gcs.TARGETS):
            xs = [j + i * width for j, ph in enumerate(phases) if w7.med(ph, t) is not None]
            ys = [w7.med(ph, t) * 1000 for ph in phases if w7.med(ph, t) is not None]
            bars = a1.bar(xs, ys, width, label=t, color=tcol[t])
            a1.bar_label(bars, fmt="%.0f", fontsize=7)
        a1.set_xticks([j + width / 2 for j in range(len(phases))])
        a1.set_xticklabels(["cold (first after start)", "warm (repeated)"])
        a1.set_ylabel("median time, ms (lower is better)")
        a1.set_title("city report time", fontsize=10)
        a1.legend(fontsize=8)
        kcol = ["#9467bd", "#ff7f0e", "#8c564b", "#2ca02c", "#999", "#17becf", "#bcbd22"]
        bottom = [0.0, 0.0]
        meds = [w7.req_median(ph, "gs:// warehouse") for ph in phases]
        for i, key in enumerate(sorted(set(meds[0]) | set(meds[1]), key=_w7_order)):
            vals = [m.get(key, 0) for m in meds]
            a2.bar(phases, vals, 0.5, bottom=bottom, label=_w7_label(key),
                   color=kcol[i % len(kcol)])
            bottom = [b + v for b, v in zip(bottom, vals)]
        for j, b in enumerate(bottom):
            a2.text(j, b, f"{b:,.0f}", ha="center", va="bottom", fontsize=8)
        a2.set_ylabel("object-store requests per query (median)")
        a2.set_title("gs:// requests by object kind", fontsize=10)
        a2.legend(fontsize=8)
        fig.suptitle(f"W7 city report: gs:// warehouse (fake-gcs-server) vs local — scale {scale:g}")
        save(fig, "w7_gcs")
    for p in made:
        log(f"chart {p}")
    return made
