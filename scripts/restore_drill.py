#!/usr/bin/env python3
"""The restore drill of issue 24: proves that backups restore what they promise.

    scripts/restore_drill.py --rxgate PATH/TO/rxgate --workdir DIR --target URL
                             [--catalog-uri postgres://…] [--gcs-endpoint http://127.0.0.1:4443]
                             [--raw DIR]

Steps (each prints one line; any failure stops the drill with a non-zero exit):
  1. ingest two deliveries with the pipeline (both reports), create an external table;
  2. back up to URL (label drill-1);
  3. ingest a third delivery and back up again (drill-2): only new files are copied; a
     third backup of the unchanged lakehouse copies nothing (drill-2b);
  4. destroy the catalog database and the warehouse;
  5. restore drill-1: every table's rows (a sorted checksum of all columns), the report
     tables and the external table definition equal the state at that backup; time travel to
     the first snapshot works;
  6. restore drill-2 (--replace): it equals the later state;
  7. ingest a fourth delivery on the restored lakehouse;
  8. corrupt one data file in the backup: `verify` names it and exits non-zero, `restore`
     refuses and changes nothing (the file is then repaired);
  9. take backups one after another while an ingest runs and commits (and one after it),
     restore up to six of them, each into a fresh SQLite catalog and warehouse (paths
     rewritten): the fact table is exactly before or exactly after that commit, never
     between, and time travel to the first snapshot still works.

The lakehouse lives in DIR (SQLite catalog unless --catalog-uri names a PostgreSQL database;
step 4 then drops every table of its public schema with psql). URL is a directory, gs://
(with --gcs-endpoint for fake-gcs-server) or s3://. Raw data: --raw, else `rxgate datagen
--scale 0.01` into DIR/raw. Only the Python standard library (and psql for PostgreSQL).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

DELIVERIES = ["2021-01-31", "2021-02-28", "2021-03-31", "2021-04-30", "2021-05-31"]
EXTERNAL = "health.ext_words"


class DrillFailed(AssertionError):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise DrillFailed(what)


class Drill:
    def __init__(self, rxgate: Path, workdir: Path, target: str, catalog_uri: str | None = None,
                 gcs_endpoint: str | None = None, raw: Path | None = None, log=print):
        self.rxgate = Path(rxgate)
        self.workdir = Path(workdir)
        self.target = target.rstrip("/")
        self.catalog_uri = catalog_uri
        self.gcs_endpoint = gcs_endpoint
        self.raw = raw
        self.log = log
        self.figures: dict = {}
        self.main = self.lakehouse("main", catalog_uri)

    # -- plumbing ---------------------------------------------------------------------------
    def lakehouse(self, name: str, catalog_uri: str | None) -> Path:
        """A config (catalog, warehouse, storage, external locations) under workdir/name."""
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        uri = catalog_uri or f"sqlite:{d / 'catalog.db'}"
        text = (f'[catalog]\nuri = "{uri}"\nwarehouse = "{d / "warehouse"}"\n'
                f'[external]\nallowed_locations = ["{self.workdir / "ext"}"]\n'
                f'[audit]\nenabled = false\n')
        if self.gcs_endpoint:
            text += f'[storage.gcs]\nendpoint = "{self.gcs_endpoint}"\n'
        (d / "rxgate.toml").write_text(text)
        return d

    def rx(self, *args, home: Path | None = None, check_rc: bool = True,
           background: bool = False, env: dict | None = None):
        home = home or self.main
        argv = [str(self.rxgate), "--config", str(home / "rxgate.toml"), "--data-dir", str(home / "data"),
                *[str(a) for a in args]]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RXGATE_")}, **(env or {})}
        if background:
            return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=600)
        if check_rc and proc.returncode != 0:
            raise DrillFailed(f"rxgate {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                              f"{proc.stderr[-3000:]}")
        return proc

    def json(self, *args, home: Path | None = None) -> dict:
        out = self.rx(*args, home=home).stdout.strip().splitlines()
        return json.loads(out[-1])

    def sql(self, query: str, home: Path | None = None) -> list[str]:
        return self.rx("sql", query, "--format", "csv", home=home).stdout.splitlines()

    def tables(self, home: Path | None = None) -> list[str]:
        return sorted(line.strip() for line in self.rx("catalog", "list", home=home).stdout.splitlines()
                      if line.strip())

    def table_state(self, table: str, home: Path | None = None) -> tuple[int, str]:
        """(rows, sha256 of the sorted CSV lines of every column)."""
        lines = self.sql(f"SELECT * FROM {table}", home)
        rows = sorted(lines[1:])
        return len(rows), hashlib.sha256("\n".join([lines[0] if lines else ""] + rows).encode()).hexdigest()

    def state(self, home: Path | None = None) -> dict:
        out = {t: self.table_state(t, home) for t in self.tables(home)}
        out[EXTERNAL] = self.table_state(EXTERNAL, home)
        out["definition of " + EXTERNAL] = "\n".join(self.sql(f"SHOW CREATE TABLE {EXTERNAL}", home))
        return out

    def backup(self, label: str) -> dict:
        s = self.json("backup", "create", "--to", self.target, "--label", label, "--json")
        self.log(f"  backup {label}: {s['files']} files, copied {s['files_copied']} "
                 f"({s['bytes_copied']} bytes), skipped {s['files_skipped']} in {s['seconds']:.2f} s")
        return s

    def pipeline(self, delivery: str, home: Path | None = None) -> dict:
        return self.json("pipeline", "run", "--input", self.raw, "--delivery-date", delivery, "--json", "-q",
                         home=home)

    # -- the target's objects (a directory or gs://) ------------------------------------------
    def _gcs(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.gcs_endpoint + path, data=body, method=method,
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def read_object(self, key: str) -> bytes:
        if self.target.startswith("gs://"):
            bucket, _, prefix = self.target[5:].partition("/")
            name = f"{prefix}/{key}" if prefix else key
            return self._gcs("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media")
        return (self.local_target() / key).read_bytes()

    def write_object(self, key: str, data: bytes) -> None:
        if self.target.startswith("gs://"):
            bucket, _, prefix = self.target[5:].partition("/")
            name = f"{prefix}/{key}" if prefix else key
            q = urllib.parse.urlencode({"uploadType": "media", "name": name})
            self._gcs("POST", f"/upload/storage/v1/b/{bucket}/o?{q}", data)
        else:
            (self.local_target() / key).write_bytes(data)

    def local_target(self) -> Path:
        t = self.target
        if t.startswith("file://"):
            return Path(t[len("file://"):])
        if "://" in t:
            raise DrillFailed(f"step 8 can corrupt files in a directory or gs:// target only, not {t}")
        return Path(t)

    def destroy(self) -> None:
        """Step 4: the catalog database and the warehouse are gone."""
        shutil.rmtree(self.main / "warehouse", ignore_errors=True)
        if self.catalog_uri:
            sql = ("DO $$ DECLARE r record; BEGIN FOR r IN SELECT tablename FROM pg_tables "
                   "WHERE schemaname = 'public' LOOP EXECUTE 'DROP TABLE ' || quote_ident(r.tablename) "
                   "|| ' CASCADE'; END LOOP; END $$;")
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.catalog_uri, "-c", sql],
                           check=True, capture_output=True, timeout=60)
        else:
            (self.main / "catalog.db").unlink(missing_ok=True)

    # -- the drill ---------------------------------------------------------------------------
    def run(self) -> dict:
        if self.raw is None:
            self.raw = self.workdir / "raw"
            if not (self.raw / "prescribers").is_dir():
                self.rx("datagen", "--scale", "0.01", "--seed", "42", "--out", self.raw)
        d1, d2, d3, d4, d5 = DELIVERIES
        fact = "health.prescriber_drug"

        # 1. two deliveries, both reports, an external table.
        self.pipeline(d1)
        self.pipeline(d2)
        words = self.workdir / "ext" / "words"
        words.mkdir(parents=True, exist_ok=True)
        (words / "part-0.csv").write_text("1,one\n2,two\n3,three\n")
        self.rx("sql", f"CREATE EXTERNAL TABLE {EXTERNAL} (n INT, word STRING) STORED AS CSV LOCATION '{words}'")
        first_snapshot = int(self.sql(f'SELECT snapshot_id FROM health."prescriber_drug$snapshots" '
                                      f'ORDER BY committed_at LIMIT 1')[1])
        d1_rows = int(self.sql(f"SELECT count(*) FROM {fact} FOR VERSION AS OF {first_snapshot}")[1])
        s1 = self.state()
        check(s1[fact][0] > 0 and s1["health.city_report"][0] > 0 and s1["health.top_prescribers"][0] > 0,
              f"step 1: empty tables {s1}")
        self.log(f"1. two deliveries: {s1[fact][0]} fact rows, {len(s1) - 2} Iceberg tables and an external table")

        # 2. back up.
        b1 = self.backup("drill-1")
        check(b1["files_copied"] == b1["files"] and b1["external_tables"] == 1, f"step 2: {b1}")
        self.log("2. backed up to " + self.target)

        # 3. a third delivery, an incremental backup, then one of the unchanged lakehouse.
        self.pipeline(d3)
        s2 = self.state()
        b2 = self.backup("drill-2")
        check(b2["config_files"] < b2["files_copied"] < b2["files"] and b2["files_skipped"] > 0,
              f"step 3: the second backup should copy only new files: {b2}")
        b2b = self.backup("drill-2b")
        check(b2b["files_copied"] == b2b["config_files"] and b2b["files_skipped"] == b2b["files"] - b2b["config_files"],
              f"step 3: a backup of an unchanged lakehouse should copy nothing: {b2b}")
        self.figures.update(first=b1, second=b2, unchanged=b2b)
        self.log(f"3. third delivery: the second backup copied {b2['files_copied']} of {b2['files']} files; "
                 f"an unchanged one {b2b['files_copied']} in {b2b['seconds']:.2f} s")

        # 4. destroy.
        self.destroy()
        gone = self.rx("catalog", "list", check_rc=False)
        check(fact not in gone.stdout, "step 4: the catalog still lists the fact table")
        self.log("4. catalog database and warehouse destroyed")

        # 5. restore the first backup.
        r1 = self.json("backup", "restore", "--from", self.target, "--label", "drill-1", "--json")
        got = self.state()
        check(got == s1, f"step 5: restored state differs from drill-1:\n{got}\n!=\n{s1}")
        tt = int(self.sql(f"SELECT count(*) FROM {fact} FOR VERSION AS OF {first_snapshot}")[1])
        check(tt == d1_rows, f"step 5: time travel to {first_snapshot} gives {tt} rows, expected {d1_rows}")
        self.log(f"5. drill-1 restored ({r1['files']} files verified): every table equals the first state; "
                 f"time travel to the first snapshot gives {tt} rows")

        # 6. restore the second backup over it.
        refused = self.rx("backup", "restore", "--from", self.target, "--label", "drill-2", check_rc=False)
        check(refused.returncode != 0 and "--replace" in refused.stderr,
              f"step 6: restoring over existing tables without --replace should be refused: {refused.stderr}")
        self.json("backup", "restore", "--from", self.target, "--label", "drill-2", "--replace", "--json")
        got = self.state()
        check(got == s2, f"step 6: restored state differs from drill-2:\n{got}\n!=\n{s2}")
        self.log("6. drill-2 restored over it (--replace): every table equals the later state")

        # 7. a fourth delivery on the restored lakehouse.
        self.pipeline(d4)
        s4 = self.state()
        check(s4[fact][0] > s2[fact][0], f"step 7: the fourth delivery added no rows: {s4[fact]} vs {s2[fact]}")
        self.log(f"7. fourth delivery ingested on the restored lakehouse: {s4[fact][0]} fact rows")

        # 8. corrupt one data file of drill-2.
        manifest = json.loads(self.read_object("backups/drill-2/manifest.json"))
        victim = next(f for t in manifest["tables"] for f in t["files"] if f["kind"] == "data")
        original = self.read_object(victim["key"])
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0xFF
        self.write_object(victim["key"], bytes(damaged))
        verify = self.rx("backup", "verify", self.target, "--label", "drill-2", check_rc=False)
        check(verify.returncode != 0 and victim["key"] in verify.stderr,
              f"step 8: verify should name {victim['key']}: rc {verify.returncode}\n{verify.stderr}")
        restore = self.rx("backup", "restore", "--from", self.target, "--label", "drill-2", "--replace",
                          check_rc=False)
        check(restore.returncode != 0 and victim["key"] in restore.stderr,
              f"step 8: restore should refuse and name {victim['key']}: {restore.stderr}")
        check(self.state() == s4, "step 8: a refused restore changed the lakehouse")
        self.write_object(victim["key"], original)
        self.rx("backup", "verify", self.target, "--label", "drill-2")
        self.log(f"8. corrupted {victim['key']}: verify named it, restore refused and changed nothing")

        # 9. backups while an ingest commits.
        before = s4[fact]
        ingest = self.rx("ingest", "prescribers", self.raw / "prescribers", "--delivery-date", d5, "--json", "-q",
                         background=True)
        labels = []
        while ingest.poll() is None and len(labels) < 40:
            labels.append(f"drill-9-{len(labels)}")
            self.backup(labels[-1])
        out, err = ingest.communicate(timeout=600)
        check(ingest.returncode == 0, f"step 9: the ingest failed: {err[-2000:]}")
        labels.append(f"drill-9-{len(labels)}")  # one after the commit: must be "after"
        self.backup(labels[-1])
        after = self.table_state(fact)
        check(after[0] > before[0], "step 9: the ingest added no rows")
        # Restore the first, the last and a few between (each into its own fresh lakehouse).
        if len(labels) > 6:
            step = (len(labels) - 1) / 5
            labels = sorted({labels[round(i * step)] for i in range(6)}, key=lambda l: int(l.rsplit("-", 1)[1]))
        seen = []
        for i, label in enumerate(labels):
            fresh = self.lakehouse(f"fresh-{i}", None)
            r = self.json("backup", "restore", "--from", self.target, "--label", label, "--json", home=fresh)
            check(r["rewritten"], f"step 9: restoring into another warehouse should rewrite paths: {r}")
            got = self.table_state(fact, fresh)
            check(got in (before, after), f"step 9: {label} restored {got}, neither before {before} nor after {after}")
            tt = int(self.sql(f"SELECT count(*) FROM {fact} FOR VERSION AS OF {first_snapshot}", fresh)[1])
            check(tt == d1_rows, f"step 9: time travel after a rewritten restore gives {tt}, expected {d1_rows}")
            seen.append("before" if got == before else "after")
        check(seen[-1] == "after", f"step 9: the backup taken after the ingest restored {seen[-1]}")
        self.figures["during_ingest"] = dict(zip(labels, seen))
        self.log(f"9. {len(labels)} backups during an ingest, each restored into a fresh warehouse: "
                 f"{', '.join(f'{l}={s}' for l, s in zip(labels, seen))}")
        return self.figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rxgate", required=True, type=Path, help="the rxgate binary")
    p.add_argument("--workdir", required=True, type=Path, help="an empty directory for the drill")
    p.add_argument("--target", required=True, help="backup target: directory, gs:// or s3:// URL")
    p.add_argument("--catalog-uri", help="a PostgreSQL catalog database (default: SQLite in --workdir)")
    p.add_argument("--gcs-endpoint", help="GCS emulator endpoint, e.g. http://127.0.0.1:4443")
    p.add_argument("--raw", type=Path, help="raw data (datagen output); default: generated at scale 0.01")
    a = p.parse_args()
    try:
        figures = Drill(a.rxgate, a.workdir, a.target, a.catalog_uri, a.gcs_endpoint, a.raw).run()
    except DrillFailed as e:
        print(f"DRILL FAILED: {e}", file=sys.stderr)
        return 1
    print(json.dumps(figures, default=str))
    print("drill passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
