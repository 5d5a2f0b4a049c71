"""W1 "pipeline": rxgate vs DuckDB, raw CMS files -> curated tables + reports.

Run through benches/run (`--only w1`). Per scale:
  1. rxgate datagen --scale S --seed 42                (timed; target < 30 s at S=1)
  2. `reps` times, interleaved so that neither side always runs on a warm cache:
       rxgate --data-dir <fresh> pipeline run --input RAW --delivery-date D --json
       python benches/duckdb_pipeline.py --input RAW --out <fresh>
     both timed as whole processes (wall clock), with their peak RSS (wait4)
  3. medians and the ratio rxgate/DuckDB -> the W1 section of benches/README.md
The last rxgate run's data dir is the lakehouse the other workloads query.
rxgate runs in the scratch dir, not the repository, so it uses the table definitions and
policy built into the binary (not ./catalog or ./conf of a work tree that may be ahead of it).
"""
from __future__ import annotations

import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness import (BENCHES, DELIVERY, ROOT, fmt_s, last_json, log, run_checked,
                     run_rusage)

DATAGEN_TARGET_S = 30.0  # at scale 1


@dataclass
class W1Result:
    datagen_s: float = 0.0
    raw_mb: float = 0.0
    rx_runs: list[float] = field(default_factory=list)
    dk_runs: list[float] = field(default_factory=list)
    rx_rss: list[int] = field(default_factory=list)
    dk_rss: list[int] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    sp_runs: list[float] = field(default_factory=list)     # whole process, JVM start included
    sp_inner: list[float] = field(default_factory=list)    # after the session is up
    sp_startup: list[float] = field(default_factory=list)
    sp_counts: dict | None = None


def datagen(binary: Path, scale: float, raw: Path) -> tuple[float, float]:
    shutil.rmtree(raw, ignore_errors=True)
    log(f"rxgate datagen --scale {scale:g} -> {raw}")
    secs, _ = run_checked([binary, "datagen", "--scale", f"{scale:g}", "--out", raw,
                           "--seed", "42"], cwd=raw.parent)
    raw_mb = sum(p.stat().st_size for p in (raw / "prescribers").glob("*")) / 1e6
    log(f"datagen {secs:.2f} s ({raw_mb:.0f} MB)")
    return secs, raw_mb


def pipeline(binary: Path, raw: Path, lake: Path) -> tuple[float, int, dict]:
    shutil.rmtree(lake, ignore_errors=True)
    secs, rss, p = run_rusage([binary, "--data-dir", lake, "pipeline", "run", "--input", raw,
                               "--delivery-date", DELIVERY, "--json"], cwd=lake.parent)
    return secs, rss, last_json(p.stdout)


def run(binary: Path, raw: Path, lake: Path, work: Path, reps: int, datagen_s: float,
        raw_mb: float, spark: bool = True) -> W1Result:
    res = W1Result(datagen_s=datagen_s, raw_mb=raw_mb)
    rx_counts = dk_counts = None

    def run_rxgate() -> None:
        nonlocal rx_counts
        secs, rss, summary = pipeline(binary, raw, lake)
        rx_counts = {k: summary.get(k) for k in ("read", "loaded", "quarantined")}
        for st in summary.get("steps", []):
            res.steps.setdefault(st["name"], []).append(float(st.get("seconds", 0)))
        res.rx_runs.append(secs)
        res.rx_rss.append(rss)
        log(f"W1 rxgate pipeline {secs:.2f} s, peak RSS {rss / 1e6:.0f} MB {rx_counts}")

    def run_duckdb() -> None:
        nonlocal dk_counts
        out = work / "duckdb-out"
        shutil.rmtree(out, ignore_errors=True)
        secs, rss, p = run_rusage([sys.executable, BENCHES / "duckdb_pipeline.py",
                                   "--input", raw, "--out", out, "--delivery-date", DELIVERY],
                                  cwd=ROOT)
        summary = last_json(p.stdout)
        dk_counts = {k: summary.get(k) for k in ("read", "loaded", "quarantined")}
        res.dk_runs.append(secs)
        res.dk_rss.append(rss)
        log(f"W1 duckdb pipeline {secs:.2f} s, peak RSS {rss / 1e6:.0f} MB {dk_counts}")
        shutil.rmtree(out, ignore_errors=True)

    def run_spark() -> None:
        out = work / "spark-out"
        shutil.rmtree(out, ignore_errors=True)
        secs, _, p = run_rusage([sys.executable, BENCHES / "spark_pipeline.py",
                                 "--input", raw, "--out", out, "--delivery-date", DELIVERY],
                                cwd=work)
        summary = last_json(p.stdout)
        res.sp_counts = {k: summary.get(k) for k in ("read", "loaded", "quarantined")}
        res.sp_runs.append(secs)
        res.sp_inner.append(float(summary["seconds"]))
        res.sp_startup.append(float(summary["startup_seconds"]))
        log(f"W1 PySpark pipeline {secs:.2f} s ({summary['seconds']:.2f} s after a "
            f"{summary['startup_seconds']:.1f} s session start) {res.sp_counts}")
        shutil.rmtree(out, ignore_errors=True)

    fns = [run_duckdb, run_rxgate] + ([run_spark] if spark else [])
    # Rotated each repetition; rxgate's last run comes last, so its data dir is the
    # lakehouse of the other workloads.
    for i in range(reps):
        order = [fns[(i + j) % len(fns)] for j in range(len(fns))]
        for fn in order:
            if fn is run_rxgate and i == reps - 1:
                continue
            fn()
    run_rxgate()
    res.counts = dict(dk_counts)
    res.counts["agree"] = rx_counts == dk_counts
    res.counts["detail"] = f"rxgate {rx_counts} vs DuckDB {dk_counts}"
    return res


def render(res: W1Result, scale: float, reps: int, header: str) -> str:
    rx_med, dk_med = statistics.median(res.rx_runs), statistics.median(res.dk_runs)
    target = DATAGEN_TARGET_S * scale
    verdict = "meets" if res.datagen_s < target else "MISSES"
    c = res.counts
    lines = [
        f"### W1 pipeline — scale {scale:g}, {reps} repetitions",
        "",
        header,
        "",
        f"Data: {c['read']:,} prescriber rows read ({res.raw_mb:.0f} MB CSV), "
        f"{c['loaded']:,} loaded, {c['quarantined']:,} quarantined; "
        f"counts of rxgate and DuckDB {'agree' if c['agree'] else 'DIFFER: ' + c['detail']}.",
        "",
        "| workload | rxgate (median) | peer (median) | rxgate / peer |",
        "|---|---|---|---|",
        f"| pipeline raw CSV + cities → curated tables + both reports, DuckDB "
        f"(`benches/duckdb_pipeline.py`) | {fmt_s(rx_med)} "
        f"| {fmt_s(dk_med)} | {rx_med / dk_med:.2f}× |",
    ]
    if res.sp_runs:
        sp_med = statistics.median(res.sp_runs)
        sp_in = statistics.median(res.sp_inner)
        lines += [
            f"| the same, PySpark local[2] (`benches/spark_pipeline.py`), whole process "
            f"| {fmt_s(rx_med)} | {fmt_s(sp_med)} | {rx_med / sp_med:.2f}× (PySpark / rxgate "
            f"{sp_med / rx_med:.1f}×) |",
            f"| the same, PySpark after its session start "
            f"({statistics.median(res.sp_startup):.1f} s) | {fmt_s(rx_med)} | {fmt_s(sp_in)} "
            f"| {rx_med / sp_in:.2f}× (PySpark / rxgate {sp_in / rx_med:.1f}×) |",
        ]
    lines += [
        f"| peak RSS of the process (median), vs DuckDB | {statistics.median(res.rx_rss) / 1e6:,.0f} MB "
        f"| {statistics.median(res.dk_rss) / 1e6:,.0f} MB | "
        f"{statistics.median(res.rx_rss) / statistics.median(res.dk_rss):.2f}× |",
    ]
    lines += [
        f"| `rxgate datagen --scale {scale:g}` (one run; target < {target:.3g} s: "
        f"{verdict}) | {fmt_s(res.datagen_s)} | — | — |",
        "",
        "rxgate pipeline steps (median of the runs' own timings): " + ", ".join(
            f"{name} {statistics.median(v):.2f} s" for name, v in res.steps.items()) + ".",
        "",
        "All runs (s): rxgate " + ", ".join(f"{x:.2f}" for x in res.rx_runs)
        + "; DuckDB " + ", ".join(f"{x:.2f}" for x in res.dk_runs)
        + ("; PySpark " + ", ".join(f"{x:.2f}" for x in res.sp_runs) if res.sp_runs else "")
        + ".",
        "",
        "All are timed as whole processes from the same raw files to Parquet "
        "outputs (rxgate: Iceberg tables in a fresh data dir; DuckDB "
        "`benches/duckdb_pipeline.py`, the test oracle's SQL, to Parquet files; PySpark "
        "`benches/spark_pipeline.py`, the seed's logic in Spark SQL, to Parquet files). "
        + (f"PySpark's counts {'agree' if res.sp_counts == {k: c[k] for k in ('read', 'loaded', 'quarantined')} else 'DIFFER: ' + str(res.sp_counts)}."
           if res.sp_counts else "PySpark left out (--no-spark)."),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("run W1 through benches/run --only w1")
