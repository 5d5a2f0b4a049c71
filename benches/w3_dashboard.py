"""W3 "dashboard mix": what a BI dashboard sends, as a pgbench custom script run with
`pgbench -n -M extended -c {1,8,32} -j 2 -T secs` against rxgate's pgwire and PostgreSQL 15.

One pgbench transaction is one dashboard refresh, five statements:
  1. filter by state      specialties of one state by claims (GROUP BY, top 10)
  2. filter by specialty  states of one specialty, prescribers with at least :yrs years
                          (`:yrs` is a pgbench random parameter, bound by the extended protocol)
  3. filter by drug       states by claims and cost of one drug
  4. top-N                top 10 prescribers of one state and specialty by claims
  5. lookup by npi        every drug row of one prescriber
The string values (states, specialties, drugs, npis) are drawn at random (seeded) from the
data. pgbench binds only numbers, so the harness writes SCRIPTS script files, each with its
own draw, and pgbench picks one at random per transaction (equal weights): every
transaction has random parameters and both servers see the same statements.

tps is pgbench's (without connection time). p99 is computed from pgbench's per-transaction
log (--log), over all clients. Per-statement mean latencies come from -r.
"""
from __future__ import annotations

import random
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness import PG_BIN, BenchError, interleaved, log
from peers import BENCH_USER

SCRIPTS = 32
STATEMENT_NAMES = ["filter by state", "filter by specialty", "filter by drug", "top-N",
                   "lookup by npi"]

TEMPLATE = """\\set yrs random(5, 40)
SELECT presc_specialty, count(*) AS rows, sum(trx_cnt) AS trx FROM health.prescriber_drug WHERE presc_state = '{state}' GROUP BY presc_specialty ORDER BY trx DESC NULLS LAST LIMIT 10;
SELECT presc_state, count(DISTINCT npi) AS prescribers, sum(trx_cnt) AS trx FROM health.prescriber_drug WHERE presc_specialty = '{specialty}' AND years_of_exp >= :yrs GROUP BY presc_state ORDER BY trx DESC NULLS LAST LIMIT 10;
SELECT presc_state, sum(trx_cnt) AS trx, sum(total_drug_cost) AS cost FROM health.prescriber_drug WHERE drug_name = '{drug}' GROUP BY presc_state ORDER BY cost DESC NULLS LAST LIMIT 10;
SELECT npi, presc_full_name, sum(trx_cnt) AS trx FROM health.prescriber_drug WHERE presc_state = '{state2}' AND presc_specialty = '{specialty2}' GROUP BY npi, presc_full_name ORDER BY trx DESC NULLS LAST LIMIT 10;
SELECT drug_name, trx_cnt, total_drug_cost FROM health.prescriber_drug WHERE npi = '{npi}';
"""


def sample_values(duck, seed: int = 7, n: int = 200) -> dict:
    """Values dashboards would pick: states and specialties weighted by their rows (users
    look at big states), drugs among the 300 most prescribed, npis uniformly."""
    def col(sql):
        return [r[0] for r in duck.execute(sql).fetchall()]
    rnd = random.Random(seed)
    states = duck.execute("SELECT presc_state, count(*) FROM prescriber_drug "
                          "WHERE presc_state IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()
    specs = duck.execute("SELECT presc_specialty, count(*) FROM prescriber_drug WHERE "
                         "presc_specialty IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 40"
                         ).fetchall()
    drugs = col("SELECT drug_name FROM prescriber_drug WHERE drug_name IS NOT NULL "
                "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 300")
    npis = col("SELECT DISTINCT npi FROM prescriber_drug WHERE npi IS NOT NULL ORDER BY 1")
    return {
        "states": rnd.choices([s for s, _ in states], [c for _, c in states], k=n),
        "specialties": rnd.choices([s for s, _ in specs], [c for _, c in specs], k=n),
        "drugs": rnd.choices(drugs, k=n),
        "npis": rnd.sample(npis, min(n, len(npis))),
    }


def _q(s: str) -> str:
    return s.replace("'", "''")


def statements(sample: dict, i: int, table: str = "health.prescriber_drug") -> list[str]:
    """The five statements of script `i` (with `:yrs` left for pgbench), on `table`."""
    text = TEMPLATE.format(
        state=_q(sample["states"][i]), specialty=_q(sample["specialties"][i]),
        drug=_q(sample["drugs"][i]), state2=_q(sample["states"][-1 - i]),
        specialty2=_q(sample["specialties"][-1 - i]),
        npi=_q(sample["npis"][i % len(sample["npis"])]))
    return [ln.replace("health.prescriber_drug", table) for ln in text.splitlines() if ln.startswith("SELECT")]


def scripts(sample: dict, table: str = "health.prescriber_drug") -> list[list[str]]:
    """Every script's statements."""
    return [statements(sample, i, table) for i in range(SCRIPTS)]


def _write(out: Path, name: str, bodies: list[str]) -> list[Path]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    files = []
    for i, body in enumerate(bodies):
        p = out / f"{name}_{i:02d}.sql"
        p.write_text(body)
        files.append(p)
    return files


def write_scripts(sample: dict, out: Path, table: str = "health.prescriber_drug") -> list[Path]:
    """SCRIPTS pgbench script files of the dashboard mix on `table`."""
    return _write(out, "dashboard", ["\\set yrs random(5, 40)\n" + "\n".join(stmts) + "\n"
                                     for stmts in scripts(sample, table)])


def write_lookup_scripts(sample: dict, out: Path, table: str) -> list[Path]:
    """SCRIPTS pgbench script files of the mix's lookup by npi alone, on `table`."""
    return _write(out, "lookup", [stmts[4] + "\n" for stmts in scripts(sample, table)])


@dataclass
class Run:
    tps: float | None = None
    p99_ms: float | None = None
    p50_ms: float | None = None
    mean_ms: float | None = None
    txns: int = 0
    failed: int = 0
    stmt_ms: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class W3Result:
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)  # (target, clients)
    secs: int = 0
    clients: list[int] = field(default_factory=list)
    peak_rss: int | None = None
    example: str = ""
    notes: list[str] = field(default_factory=list)

    def med(self, target: str, clients: int, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.runs.get((target, clients), [])
                if getattr(r, attr) is not None and r.error is None]
        return statistics.median(vals) if vals else None


def _pgbench(files: list[Path], host_port: tuple[str, int], user: str, db: str, env: dict,
             clients: int, secs: int, logdir: Path) -> Run:
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True)
    argv = [str(PG_BIN / "pgbench"), "-n", "-M", "extended", "-c", str(clients),
            "-j", str(min(clients, 2)), "-T", str(secs), "-r", "--log",
            f"--log-prefix={logdir}/tx", "-h", host_port[0], "-p", str(host_port[1]),
            "-U", user]
    for f in files:
        argv += ["-f", str(f)]
    argv.append(db)
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=secs * 4 + 120)
    run = Run()
    out = p.stdout + p.stderr
    if p.returncode != 0 or "aborted" in out:
        run.error = (f"pgbench exit {p.returncode}: " +
                     " | ".join(ln for ln in out.splitlines()
                                if "error" in ln.lower() or "abort" in ln.lower())[:400])
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    run.tps = float(m.group(1)) if m else None
    m = re.search(r"number of failed transactions: (\d+)", out)
    run.failed = int(m.group(1)) if m else 0
    # -r with several scripts prints per-script statement latencies; average them by position.
    per_pos: dict[int, list[float]] = {}
    pos = 0
    for ln in out.splitlines():
        if ln.strip().startswith("SQL script") or ln.strip().startswith("statement latencies"):
            pos = 0
        m = re.match(r"\s+([\d.]+)\s+\d+\s+(SELECT|\\set)", ln) or \
            re.match(r"\s+([\d.]+)\s+(SELECT|\\set)", ln)
        if m and m.group(2) == "SELECT":
            per_pos.setdefault(pos, []).append(float(m.group(1)))
            pos += 1
    run.stmt_ms = [statistics.mean(per_pos[i]) for i in sorted(per_pos)]
    lat = []
    for f in logdir.glob("tx*"):
        for ln in f.read_text().splitlines():
            parts = ln.split()
            if len(parts) >= 3 and parts[2].isdigit():
                lat.append(int(parts[2]) / 1000.0)
    if lat:
        lat.sort()
        run.txns = len(lat)
        run.p99_ms = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        run.p50_ms = lat[len(lat) // 2]
        run.mean_ms = statistics.mean(lat)
    elif run.error is None:
        run.error = "pgbench wrote no transaction log"
    shutil.rmtree(logdir, ignore_errors=True)
    return run


def pgbench(server, files: list[Path], clients: int, secs: int, logdir: Path) -> Run:
    """`_pgbench` against an rxgate (`RxgateServer`, as the bench user) or PostgreSQL server."""
    if hasattr(server, "pg_port"):
        return _pgbench(files, ("127.0.0.1", server.pg_port), BENCH_USER, "rxgate", server.pg_env(),
                        clients, secs, logdir)
    return _pgbench(files, ("127.0.0.1", server.port), server.user, server.dbname, server.pg_env(),
                    clients, secs, logdir)


def run(ctx, reps: int, secs: int, clients: list[int]) -> W3Result:
    res = W3Result(secs=secs, clients=clients)
    files = write_scripts(ctx.sample, ctx.work / "w3-scripts")
    res.example = files[0].read_text()
    targets = []
    if ctx.rxgate is not None:
        targets.append(("rxgate", lambda c: pgbench(ctx.rxgate, files, c, secs, ctx.work / "w3-log-rx")))
    if ctx.pg is not None:
        targets.append(("PostgreSQL 15", lambda c: pgbench(ctx.pg, files, c, secs, ctx.work / "w3-log-pg")))
    if not targets:
        raise BenchError("W3 needs rxgate or PostgreSQL")
    if ctx.rxgate is not None:
        ctx.rxgate.reset_peak()
    for c in clients:
        fns = []
        for name, fn in targets:
            def one(name=name, fn=fn, c=c):
                r = fn(c)
                res.runs.setdefault((name, c), []).append(r)
                log(f"W3 {name} -c {c}: tps {r.tps}, p99 {r.p99_ms} ms, txns {r.txns}"
                    + (f", ERROR {r.error}" if r.error else ""))
            fns.append((name, one))
        interleaved(reps, fns)
    if ctx.rxgate is not None:
        res.peak_rss = ctx.rxgate.peak_rss()
    return res
