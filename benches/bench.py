"""benches/run's driver: every workload against rxgate and its peers, side by side, in one run.

    benches/run [--scale 1[,10]] [--reps 3] [--only w1,w2,w3,w4,w0,w5,w6,w7,w8,w9,w10,w11] [--bin PATH] ...

Per scale: datagen, W1 (whose last rxgate run leaves the lakehouse; without W1 one pipeline
run makes it), then one `rxgate serve` over it (Flight SQL too when the binary has it),
PostgreSQL 15 loaded with the same rows, DuckDB / raw DataFusion / PySpark in-process on the
same Parquet files, and W2, W0, W4, W3 in that order. W7 runs the pipeline again with the
warehouse on gs:// (fake-gcs-server) and compares the city report on both warehouses. With more than one scale W5 compares
W1/W2/W4 across them. Each selected workload rewrites its section of benches/README.md and
its chart in benches/charts/; sections of the largest scale are the ones written.
See benches/README.md for what each workload times.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import sys
import traceback
from pathlib import Path

from harness import (CACHE, ROOT, BenchError, LoadWatch, Perf, git_rev, load_note, log,
                     machine, now, run_checked, write_section)

ALL = ["w1", "w2", "w3", "w4", "w0", "w5", "w6", "w7", "w8", "w9", "w10", "w11"]
SECTION = {"summary": "Goals", "w1": "W1 pipeline", "w2": "W2 reports", "w3": "W3 dashboard",
           "w4": "W4 export", "w0": "W0 overhead", "w5": "W5 scale", "w6": "W6 policy overhead",
           "w7": "W7 gs:// warehouse", "w8": "W8 load (SQL writes)",
           "w9": "W9 maintenance (compaction, sort order)", "w10": "W10 backup and recovery",
           "w11": "W11 metrics overhead"}
ORDER = ["summary", "w1", "w2", "w3", "w4", "w0", "w6", "w5", "w7", "w8", "w9", "w10", "w11"]


class Ctx:
    """What the workloads of one scale share: the data, the servers, the in-process engines."""

    def __init__(self, work: Path, scale: float):
        self.work, self.scale = work, scale
        self.files = None
        self.sample: dict = {}
        self.rxgate = None
        self.pg = None
        self.duck = None
        self.datafusion = None
        #: Starts PySpark and returns (session, startup seconds); W2 calls it when its turn comes.
        self.spark_factory = None
        self.spark_note = "not selected"
        self.flight_note = "no rxgate server"
        self._rx = self._fl = self._pg = None

    def rx_conn(self):
        if self._rx is None and self.rxgate is not None:
            from peers import connect_pg
            self._rx = connect_pg(self.rxgate.dsn())
        return self._rx

    def flight_conn(self):
        if self._fl is None and self.rxgate is not None and self.rxgate.flight_port:
            try:
                self._fl = self.rxgate.flight_connect()
                with self._fl.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetch_arrow_table()
            except Exception as e:  # noqa: BLE001
                self.flight_note = f"Flight SQL login/query failed: {str(e).splitlines()[0][:150]}"
                log(self.flight_note)
                self._fl = None
                self.rxgate.flight_port = None
        return self._fl

    def pg_conn(self):
        if self._pg is None and self.pg is not None:
            from peers import connect_pg
            self._pg = connect_pg(self.pg.dsn())
        return self._pg

    def close(self):
        for c in (self._rx, self._fl, self._pg):
            try:
                if c is not None:
                    c.close()
            except Exception:  # noqa: BLE001
                pass
        self._rx = self._fl = self._pg = None
        if self.rxgate is not None:
            self.rxgate.stop()
        if self.pg is not None:
            self.pg.stop()


def parse_args(argv):
    ap = argparse.ArgumentParser(description="rxgate benchmarks against peers (benches/README.md)")
    ap.add_argument("--scale", default=None,
                    help="scale factor(s), comma separated (default 1; with w5 alone: 1,10)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per target")
    ap.add_argument("--only", default=None,
                    help="comma-separated workloads: " + ",".join(ALL) +
                    " (default: all; w5 when more than one scale)")
    ap.add_argument("--bin", type=Path, help="rxgate binary (default: release build)")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--workdir", type=Path, help="scratch dir (default: under ~/.cache/rxgate)")
    ap.add_argument("--no-readme", action="store_true", help="print sections, do not write README")
    ap.add_argument("--no-charts", action="store_true")
    ap.add_argument("--no-spark", action="store_true", help="leave PySpark out of W1 and W2")
    ap.add_argument("--w3-secs", type=int, default=10, help="pgbench -T of one W3 run")
    ap.add_argument("--w3-clients", default="1,8,32")
    ap.add_argument("--w3-reps", type=int, default=None, help="W3 repetitions (default --reps)")
    ap.add_argument("--w9-clients", default="1,32", help="pgbench clients of W9's mix and lookups")
    ap.add_argument("--perf", default="",
                    help="workloads (w2,w3,w4,w0) during which `perf record` samples the rxgate "
                         "server; top symbols go to benches/profiles/")
    ap.add_argument("--note", default="", help="a line added under each section's header")
    a = ap.parse_args(argv)
    only = [w.strip().lower() for w in (a.only or "").split(",") if w.strip()]
    for w in only:
        if w not in ALL:
            ap.error(f"unknown workload {w!r} (known: {', '.join(ALL)})")
    if a.scale is None:
        a.scale = "1,10" if only == ["w5"] else "1"
    a.scales = sorted(float(s) for s in a.scale.split(","))
    if not only:
        only = ["w1", "w2", "w3", "w4", "w0", "w6", "w7", "w8", "w9", "w10", "w11"] + (["w5"] if len(a.scales) > 1 else [])
    a.only = only
    a.w3_clients = [int(c) for c in a.w3_clients.split(",")]
    a.w3_reps = a.w3_reps or a.reps
    a.w9_clients = [int(c) for c in a.w9_clients.split(",")]
    a.perf = {w.strip().lower() for w in a.perf.split(",") if w.strip()}
    return a


def binary_path(a) -> Path:
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or CACHE / "target")
    binary = a.bin or target_dir / "release" / "rxgate"
    if not a.bin and not a.no_build:
        log("cargo build --release -p rxgate-server")
        secs, _ = run_checked(["cargo", "build", "--release", "-p", "rxgate-server"], cwd=ROOT)
        log(f"built in {secs:.1f} s")
    if not binary.exists():
        raise BenchError(f"no rxgate binary at {binary}")
    return binary


def run_scale(a, binary: Path, scale: float, work: Path, measure: set[str]) -> dict:
    import w0_overhead
    import w1_pipeline
    import w2_reports
    import w3_dashboard
    import w4_export
    from peers import (LakeFiles, PostgresServer, RxgateServer, datafusion_context,
                       duckdb_connect, spark_session)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    raw, lake = work / "raw", work / "lake"
    datagen_s, raw_mb = w1_pipeline.datagen(binary, scale, raw)
    if "w1" in measure:
        out["w1"] = w1_pipeline.run(binary, raw, lake, work, a.reps, datagen_s, raw_mb,
                                    spark=not a.no_spark)
        local_pipeline_s = statistics.median(out["w1"].rx_runs) if out["w1"].rx_runs else None
    else:
        secs, _, summary = w1_pipeline.pipeline(binary, raw, lake)
        local_pipeline_s = secs
        log(f"pipeline (lakehouse for the queries) {secs:.2f} s, {summary.get('loaded')} rows")
    if "w7" in measure:
        import w7_gcs
        try:
            out["w7"] = w7_gcs.run(binary, raw, lake, work, a.reps, local_pipeline_s)
        except Exception as e:  # noqa: BLE001 — the other workloads still run; no W7 section
            out["w7_error"] = f"{type(e).__name__}: {e}"
            log(f"W7 failed, its section is left as it was: {out['w7_error'][:2000]}")
    if not measure & {"w2", "w3", "w4", "w0", "w6", "w8", "w9", "w10", "w11"}:
        return out
    ctx = Ctx(work, scale)
    try:
        ctx.files = LakeFiles.find(lake)
        ctx.duck = duckdb_connect(ctx.files)
        out["rows"] = ctx.duck.execute("SELECT count(*) FROM prescriber_drug").fetchall()[0][0]
        ctx.sample = w3_dashboard.sample_values(ctx.duck)
        ctx.rxgate = RxgateServer(binary, lake, work)
        ctx.flight_note = ctx.rxgate.flight_note
        n_rx = ctx.rx_conn().execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0]
        if n_rx != out["rows"]:
            raise BenchError(f"rxgate sees {n_rx} rows, the Parquet files hold {out['rows']}: "
                             "the lakehouse has data files of old snapshots?")
        ctx.flight_conn()
        if measure & {"w2", "w3", "w4", "w8", "w9", "w10"}:
            ctx.pg = PostgresServer(work)
            out["pg_load"] = ctx.pg.load(ctx.duck, work)
        if "w0" in measure:
            try:
                ctx.datafusion = datafusion_context(ctx.files)
            except Exception as e:  # noqa: BLE001
                log(f"raw DataFusion unavailable: {e}")
        if "w2" in measure and not a.no_spark:
            # Started by W2 when PySpark's turn comes (see w2_reports.run).
            ctx.spark_factory = lambda: spark_session(ctx.files, work)
            ctx.spark_note = "PySpark local[2]"
        elif a.no_spark:
            ctx.spark_note = "left out (--no-spark)"
        out["flight_note"] = ctx.flight_note
        def prof(w):
            return Perf(ctx.rxgate.pid, f"{w}-scale{scale:g}", w in a.perf)
        if "w2" in measure:
            with prof("w2"):
                out["w2"] = w2_reports.run(ctx, a.reps)
        if "w0" in measure:
            with prof("w0"):
                out["w0"] = w0_overhead.run(ctx, a.reps)
        if "w4" in measure:
            with prof("w4"):
                out["w4"] = w4_export.run(ctx, a.reps)
        if "w3" in measure:
            with prof("w3"):
                out["w3"] = w3_dashboard.run(ctx, a.w3_reps, a.w3_secs, a.w3_clients)
        if "w6" in measure:
            import w6_policy
            with prof("w6"):
                out["w6"] = w6_policy.run(ctx, a.w3_reps, a.w3_secs, a.w3_clients)
        if "w8" in measure:
            import w8_load
            with prof("w8"):
                out["w8"] = w8_load.run(ctx, a.reps)
        if "w9" in measure:
            import w9_maintenance
            with prof("w9"):
                out["w9"] = w9_maintenance.run(ctx, a.w3_reps, a.w3_secs, a.w9_clients)
        if "w10" in measure:
            import w10_backup
            out["w10"] = w10_backup.run(ctx, a.reps)
        if "w11" in measure:
            import w11_metrics
            out["w11"] = w11_metrics.run(ctx, a.w3_reps, a.w3_secs, a.w3_clients)
        out["server_log_tail"] = ctx.rxgate.log_path.read_text()[-2000:]
    finally:
        ctx.close()
    return out


def header(a, command: str, m: dict, notes: str) -> str:
    lines = [f"Command: `{command}` — {now()}, commit {git_rev()}", "",
             f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, {m['os']}; {notes}"]
    if a.note:
        lines += ["", a.note]
    if a.perf:
        lines += ["", f"`perf record` (499 Hz) sampled the server during {', '.join(sorted(a.perf))}: "
                  "see benches/profiles/."]
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    command = "benches/run " + shlex.join(sys.argv[1:] if argv is None else argv)
    import report
    import w1_pipeline

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    binary = binary_path(a)
    measure = set(a.only)
    if "w5" in measure:
        measure |= {"w1", "w2", "w4"}
    per_scale: dict[float, dict] = {}
    rows_by_scale: dict[float, int] = {}
    m = machine()
    notes_before = load_note()
    watch = LoadWatch()
    for scale in a.scales:
        work = a.workdir / f"scale{scale:g}" if a.workdir else CACHE / "bench" / f"scale{scale:g}"
        # Sections are written for the largest scale; the smaller ones only feed W5.
        here = measure if scale == a.scales[-1] else measure & {"w1", "w2", "w4"}
        log(f"=== scale {scale:g} ({', '.join(sorted(here))}) in {work}")
        per_scale[scale] = run_scale(a, binary, scale, work, here)
        r = per_scale[scale]
        if "rows" in r:
            rows_by_scale[scale] = r["rows"]
        elif r.get("w1"):
            rows_by_scale[scale] = r["w1"].counts.get("loaded")
    notes = f"before the run {notes_before}, after it {load_note()}; {watch.stop()}"
    top = a.scales[-1]
    r = per_scale[top]
    hdr = header(a, command, m, notes)
    sections: dict[str, str] = {}
    if "w1" in a.only and r.get("w1"):
        sections["w1"] = w1_pipeline.render(r["w1"], top, a.reps, hdr)
    if "w2" in a.only and r.get("w2"):
        sections["w2"] = report.render_w2(r["w2"], top, a.reps, hdr)
    if "w3" in a.only and r.get("w3"):
        sections["w3"] = report.render_w3(r["w3"], top, a.w3_reps, hdr)
    if "w4" in a.only and r.get("w4"):
        sections["w4"] = report.render_w4(r["w4"], top, a.reps, hdr)
    if "w0" in a.only and r.get("w0"):
        sections["w0"] = report.render_w0(r["w0"], top, a.reps, hdr)
    if "w6" in a.only and r.get("w6"):
        import w6_policy
        sections["w6"] = w6_policy.render(r["w6"], top, a.w3_reps, hdr)
    if "w7" in a.only and r.get("w7"):
        sections["w7"] = report.render_w7(r["w7"], top, a.reps, hdr)
    if "w8" in a.only and r.get("w8"):
        import w8_load
        sections["w8"] = w8_load.render(r["w8"], top, a.reps, hdr)
    if "w9" in a.only and r.get("w9"):
        import w9_maintenance
        sections["w9"] = w9_maintenance.render(r["w9"], top, a.w3_reps, hdr)
    if "w10" in a.only and r.get("w10"):
        import w10_backup
        sections["w10"] = w10_backup.render(r["w10"], top, a.reps, hdr)
    if "w11" in a.only and r.get("w11"):
        import w11_metrics
        sections["w11"] = w11_metrics.render(r["w11"], top, a.w3_reps, hdr)
    if "w5" in a.only and len(per_scale) > 1:
        sections["w5"] = report.render_w5(per_scale, a.reps, hdr, rows_by_scale)
    if set(sections) & {"w1", "w2", "w3", "w4"}:
        sections["summary"] = report.render_summary(
            {k: v for k, v in r.items() if k in a.only},
            per_scale if "w5" in a.only else {}, rows_by_scale, top, hdr)
    for k in ORDER:
        if k in sections:
            print(sections[k] + "\n")
    if not a.no_charts:
        report.charts({k: v for k, v in r.items() if k in a.only},
                      per_scale if "w5" in a.only else {}, rows_by_scale, top,
                      f"benches/run, scale {top:g}, {now()}, commit {git_rev()}")
    if not a.no_readme:
        prev = None
        for k in ORDER:
            if k in sections:
                write_section(SECTION[k], sections[k], after=prev)
            prev = SECTION[k]
        log("wrote benches/README.md")
    dump = (a.workdir or CACHE / "bench") / "last-run.json"
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.write_text(json.dumps({str(s): {k: repr(v) for k, v in d.items()}
                                for s, d in per_scale.items()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"benches/run: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
