"""Backup and recovery (issue 24): `rxgate backup create|list|verify|restore|prune`, the
`[backup]` schedule of `rxgate serve`, `system.backups` / `system.backup_status`, and the
restore drill (scripts/restore_drill.py) with the SQLite and the real PostgreSQL catalog,
backing up to the real fake-gcs-server.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, stop_server

_spec = importlib.util.spec_from_file_location("restore_drill", REPO_ROOT / "scripts" / "restore_drill.py")
restore_drill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(restore_drill)
Drill = restore_drill.Drill

D1, D2 = restore_drill.DELIVERIES[:2]
FACT = "health.prescriber_drug"


@pytest.fixture(scope="module")
def gcs_endpoint(tmp_path_factory):
    """The real fake-gcs-server (in-memory backend) on a free port."""
    from test_object_storage import Gcs, fake_gcs_binary, stop, wait_port
    d = tmp_path_factory.mktemp("gcs")
    port = free_port()
    log = d / "fake-gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend",
             "memory", "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc, log)
        endpoint = f"http://127.0.0.1:{port}"
        gcs = Gcs(endpoint)
        for bucket in ("rx-drill-sqlite", "rx-drill-pg", "rx-lake"):
            gcs.create_bucket(bucket)
        yield endpoint
    finally:
        stop(proc)


def test_restore_drill_sqlite_catalog_to_fake_gcs(rxgate_bin, dataset, gcs_endpoint, tmp_path):
    lines = []
    drill = Drill(rxgate_bin, tmp_path / "drill", "gs://rx-drill-sqlite/backups", gcs_endpoint=gcs_endpoint,
                  raw=dataset.root, log=lines.append)
    figures = drill.run()
    print("\n".join(lines))
    assert figures["unchanged"]["seconds"] < 2, figures["unchanged"]
    assert set(figures["during_ingest"].values()) <= {"before", "after"}


def test_restore_drill_postgresql_catalog_to_fake_gcs(rxgate_bin, dataset, gcs_endpoint, postgres, tmp_path):
    db = postgres.create_database("rxdrill")
    lines = []
    drill = Drill(rxgate_bin, tmp_path / "drill", "gs://rx-drill-pg/backups", catalog_uri=postgres.uri(db),
                  gcs_endpoint=gcs_endpoint, raw=dataset.root, log=lines.append)
    figures = drill.run()
    print("\n".join(lines))
    assert figures["unchanged"]["seconds"] < 2, figures["unchanged"]
    # On PostgreSQL too, every action is recorded in the catalog database (since step 4
    # destroyed it): the restores of steps 5, 6 (one refused, one done) and 8 (refused), the
    # verifies of step 8, the backups of step 9.
    rows = drill.sql("SELECT kind, outcome, count(*) FROM system.backups GROUP BY kind, outcome ORDER BY 1, 2")
    counts = {tuple(r.split(",")[:2]): int(r.split(",")[2]) for r in rows[1:]}
    assert counts.pop(("create", "ok")) >= len(figures["during_ingest"]), rows
    assert counts == {("restore", "ok"): 2, ("restore", "failed"): 2, ("verify", "failed"): 1,
                      ("verify", "ok"): 1}, rows


def _lakehouse(rxgate_bin, dataset, tmp_path) -> Drill:
    d = Drill(rxgate_bin, tmp_path / "lake", str(tmp_path / "backups"), raw=dataset.root, log=lambda _: None)
    d.pipeline(D1)
    d.pipeline(D2)
    return d


def test_backup_commands_on_a_local_directory(rxgate_bin, dataset, tmp_path):
    d = _lakehouse(rxgate_bin, dataset, tmp_path)
    target = d.target

    def state_of(home):
        return {t: d.table_state(t, home) for t in d.tables(home)}

    state = state_of(d.main)

    # Bad input: a clear error and a non-zero exit.
    bad = d.rx("backup", "create", "--to", target, "--label", "a/b", check_rc=False)
    assert bad.returncode != 0 and "bad backup label" in bad.stderr and "[InvalidArgument]" in bad.stderr, bad.stderr
    bad = d.rx("backup", "create", "--to", "ftp://example.invalid/x", check_rc=False)
    assert bad.returncode != 0 and "not supported" in bad.stderr, bad.stderr
    bad = d.rx("backup", "create", "--to", d.main / "warehouse" / "backups", check_rc=False)
    assert bad.returncode != 0 and "overlaps the warehouse" in bad.stderr, bad.stderr
    bad = d.rx("backup", "restore", "--from", target, check_rc=False)
    assert bad.returncode != 0 and "no complete backup" in bad.stderr, bad.stderr

    # A backup that dies before its manifest is not a backup.
    died = d.rx("backup", "create", "--to", target, "--label", "died", env={"RXGATE_FAILPOINT": "backup.before_manifest"},
                check_rc=False)
    assert died.returncode != 0 and "failpoint backup.before_manifest" in died.stderr
    assert (Path(target) / "files").is_dir(), "files were copied before the failure"
    assert not (Path(target) / "backups" / "died" / "manifest.json").exists()
    assert d.rx("backup", "list", target).stdout == ""
    assert d.rx("backup", "restore", "--from", target, "--label", "died", check_rc=False).returncode != 0

    # A full backup (the files the dead one copied are checksummed again: no manifest knew them).
    full = d.json("backup", "create", "--to", target, "--label", "full", "--json")
    assert full["tables"] == len(state) and full["files_copied"] == full["files"], full
    listed = [json.loads(x) for x in d.rx("backup", "list", target, "--json").stdout.splitlines()]
    assert [b["label"] for b in listed] == ["full"]
    assert listed[0]["row_counts"][FACT] == state[FACT][0]
    again = d.rx("backup", "create", "--to", target, "--label", "full", check_rc=False)
    assert again.returncode != 0 and "already exists" in again.stderr

    # Only the current snapshots; restored alone into an empty catalog and warehouse.
    cur = d.json("backup", "create", "--to", target, "--label", "cur", "--current-only", "--json")
    assert cur["files"] < full["files"] and cur["files_copied"] == cur["config_files"], cur
    verified = d.rx("backup", "verify", target)
    assert verified.stdout.count("\tok\t") == 2, verified.stdout
    other = d.lakehouse("other", None)
    r = d.json("backup", "restore", "--from", target, "--label", "cur", "--tables", FACT, "--json", home=other)
    assert r["tables"] == [FACT] and r["rewritten"] and r["external_tables"] == [], r
    assert d.tables(other) == [FACT]
    assert d.table_state(FACT, other) == state[FACT]
    assert d.sql(f'SELECT count(*) FROM health."prescriber_drug$snapshots"', other)[1] == "1"

    # One table of the full backup into a third place, keeping its history.
    third = d.lakehouse("third", None)
    d.json("backup", "restore", "--from", target, "--label", "full", "--tables", "health.city_report,health.top_prescribers",
           "--json", home=third)
    assert d.tables(third) == ["health.city_report", "health.top_prescribers"]
    assert state_of(third) == {t: state[t] for t in ("health.city_report", "health.top_prescribers")}
    snaps = d.sql('SELECT count(*) FROM health."city_report$snapshots"', third)[1]
    assert snaps == d.sql('SELECT count(*) FROM health."city_report$snapshots"')[1] and int(snaps) >= 2

    # Refusals: existing tables without --replace, unknown names.
    refused = d.rx("backup", "restore", "--from", target, "--label", "full", check_rc=False)
    assert refused.returncode != 0 and "[AlreadyExists]" in refused.stderr and FACT in refused.stderr, refused.stderr
    unknown = d.rx("backup", "restore", "--from", target, "--tables", "health.nope", check_rc=False)
    assert unknown.returncode != 0 and "holds no table named health.nope" in unknown.stderr, unknown.stderr
    # Into the same catalog and warehouse with --replace: the same answers.
    d.json("backup", "restore", "--from", target, "--label", "full", "--replace", "--json")
    assert state_of(d.main) == state

    # --as-of picks the newest backup not after the time.
    early = d.rx("backup", "restore", "--from", target, "--as-of", "2000-01-01", check_rc=False)
    assert early.returncode != 0 and "at or before" in early.stderr

    # system.backups and system.backup_status.
    rows = d.sql("SELECT label, kind, outcome FROM system.backups ORDER BY started_at")
    assert "full,create,ok" in rows and "cur,create,ok" in rows and any(r.endswith(",verify,ok") for r in rows), rows
    assert "full,restore,failed" in rows and "full,restore,ok" in rows, rows
    status = d.sql("SELECT target, last_label, age_seconds FROM system.backup_status")
    assert len(status) == 2 and status[1].split(",")[1] == "cur" and 0 <= int(status[1].split(",")[2]) < 600, status

    # Pruning keeps the newest backup whole.
    before = sum(1 for p in (Path(target) / "files").rglob("*") if p.is_file())
    pruned = d.json("backup", "prune", target, "--keep-last", "1", "--json")
    assert pruned["removed"] == ["full"] and pruned["files_deleted"] > 0, pruned
    after = sum(1 for p in (Path(target) / "files").rglob("*") if p.is_file())
    assert after == before - pruned["files_deleted"] == cur["files"] - cur["config_files"]
    d.rx("backup", "verify", target)
    assert [json.loads(x)["label"] for x in d.rx("backup", "list", target, "--json").stdout.splitlines()] == ["cur"]


def test_verify_names_missing_and_corrupted_files(rxgate_bin, dataset, tmp_path):
    d = _lakehouse(rxgate_bin, dataset, tmp_path)
    d.json("backup", "create", "--to", d.target, "--label", "b", "--json")
    manifest = json.loads((Path(d.target) / "backups" / "b" / "manifest.json").read_text())
    files = [f for t in manifest["tables"] for f in t["files"]]
    data = next(f for f in files if f["kind"] == "data")
    mf = next(f for f in files if f["kind"] == "manifest")
    (Path(d.target) / data["key"]).write_bytes(b"x" * data["size"])
    (Path(d.target) / mf["key"]).unlink()
    v = d.rx("backup", "verify", d.target, "--label", "b", check_rc=False)
    assert v.returncode != 0 and "DAMAGED" in v.stdout, v.stdout
    assert f"corrupted: {data['key']}" in v.stderr and "CRC32C" in v.stderr, v.stderr
    assert f"missing: {mf['key']}" in v.stderr, v.stderr
    fresh = d.lakehouse("fresh", None)
    r = d.rx("backup", "restore", "--from", d.target, "--label", "b", home=fresh, check_rc=False)
    assert r.returncode != 0 and "nothing restored" in r.stderr, r.stderr
    assert d.tables(fresh) == []
    assert not any(p.is_file() for p in (fresh / "warehouse").rglob("*")), "a refused restore leaves no files"

    # A data file lost from the warehouse: a new backup into a fresh target fails naming it and
    # leaves no manifest; into the target that already holds it, the backup completes (the
    # file is not read again) and a restore brings it back.
    (Path(d.target) / data["key"]).unlink()
    d.rx("backup", "create", "--to", d.target, "--label", "repair")  # copies the damaged files again
    state = {t: d.table_state(t) for t in d.tables()}
    victim = next((d.main / "warehouse" / "health" / "city_report" / "data").rglob("*.parquet"))
    victim.unlink()
    fresh_target = tmp_path / "fresh-target"
    broken = d.rx("backup", "create", "--to", fresh_target, "--label", "broken", check_rc=False)
    assert broken.returncode != 0 and "a file of the lakehouse is missing (in 3 cuts" in broken.stderr, broken.stderr
    assert victim.name in broken.stderr
    assert not (fresh_target / "backups" / "broken").exists() or not any((fresh_target / "backups" / "broken").iterdir())
    assert d.rx("backup", "list", fresh_target).stdout == ""
    d.json("backup", "create", "--to", d.target, "--label", "after-loss", "--json")
    again = d.lakehouse("again", None)
    d.json("backup", "restore", "--from", d.target, "--label", "after-loss", "--json", home=again)
    assert {t: d.table_state(t, again) for t in d.tables(again)} == state


def test_serve_takes_scheduled_backups_and_keeps_the_last(rxgate_bin, dataset, serve, tmp_path):
    d = _lakehouse(rxgate_bin, dataset, tmp_path)
    config = d.main / "rxgate.toml"
    config.write_text(config.read_text() + f'[backup]\ntarget = "{d.target}"\ninterval_secs = 1\nkeep_last = 2\n')
    server = serve(d.main / "data", config=config)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = d.sql("SELECT count(*) FROM system.backups WHERE kind = 'create' AND outcome = 'ok'")
        if int(rows[1]) >= 4:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no 4 scheduled backups within 60 s: {d.sql('SELECT * FROM system.backups')}")
    assert int(d.sql("SELECT age_seconds FROM system.backup_status")[1]) < 60
    stop_server(server)
    listed = d.rx("backup", "list", d.target).stdout.splitlines()
    assert 2 <= len(listed) <= 3, listed  # keep_last 2 (+1 when stopped between a backup and its pruning)
    assert int(d.sql("SELECT count(*) FROM system.backups WHERE kind = 'prune' AND outcome = 'ok'")[1]) >= 3
    d.rx("backup", "verify", d.target)


def test_a_gcs_lakehouse_restored_onto_local_disk(rxgate_bin, dataset, gcs_endpoint, tmp_path):
    """The issue's example: a gs:// warehouse backed up, then restored onto a local disk. The
    metadata, manifest lists and manifests are rewritten; rxgate and pyiceberg read the result,
    history included."""
    from pyiceberg.catalog.sql import SqlCatalog
    d = Drill(rxgate_bin, tmp_path / "lake", str(tmp_path / "backups"), gcs_endpoint=gcs_endpoint, raw=dataset.root,
              log=lambda _: None)
    config = d.main / "rxgate.toml"
    config.write_text(config.read_text().replace(f'warehouse = "{d.main / "warehouse"}"',
                                                 'warehouse = "gs://rx-lake/warehouse"'))
    d.pipeline(D1)
    d.pipeline(D2)
    tables = d.tables()
    state = {t: d.table_state(t) for t in tables}
    first = d.sql('SELECT snapshot_id FROM health."prescriber_drug$snapshots" ORDER BY committed_at LIMIT 1')[1]
    d1_rows = d.sql(f"SELECT count(*) FROM {FACT} FOR VERSION AS OF {first}")[1]
    b = d.json("backup", "create", "--to", d.target, "--json")
    assert b["tables"] == len(tables) and b["files_copied"] == b["files"], b
    manifest = json.loads(next((Path(d.target) / "backups").glob("*/manifest.json")).read_text())
    assert all(f["location"].startswith("gs://rx-lake/warehouse/") for t in manifest["tables"] for f in t["files"])

    local = d.lakehouse("local", None)
    r = d.json("backup", "restore", "--from", d.target, "--config-dir", local / "conf", "--json", home=local)
    assert r["rewritten"] and sorted(r["tables"]) == tables, r
    assert {t: d.table_state(t, local) for t in d.tables(local)} == state
    assert d.sql(f"SELECT count(*) FROM {FACT} FOR VERSION AS OF {first}", local)[1] == d1_rows
    assert (local / "conf" / "policy.toml").read_bytes() == (REPO_ROOT / "catalog" / "policies.toml").read_bytes()
    # Nothing under the restored warehouse names the bucket any more.
    for f in (local / "warehouse").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".avro"):
            assert b"gs://rx-lake" not in f.read_bytes(), f

    # pyiceberg reads the rewritten metadata, manifest lists and manifests.
    cat = SqlCatalog("rxgate", uri=f"sqlite:///{local / 'catalog.db'}", warehouse=f"file://{local / 'warehouse'}")
    t = cat.load_table(FACT)
    assert len(t.snapshots()) == len(manifest["tables"][[x["namespace"] + "." + x["name"] for x in manifest["tables"]].index(FACT)]["snapshots"])
    assert t.scan().to_arrow().num_rows == state[FACT][0]
    assert t.scan(snapshot_id=int(first)).to_arrow().num_rows == int(d1_rows)
    # And the restored lakehouse takes new commits.
    d.pipeline(restore_drill.DELIVERIES[2], home=local)
    assert d.table_state(FACT, local)[0] > state[FACT][0]


def test_backup_to_s3_and_restore(rxgate_bin, dataset, tmp_path):
    """An s3:// target (moto's S3 server): full, incremental, verify, restore elsewhere."""
    import boto3
    from test_object_storage import VENV_BIN, stop, wait_port
    port = free_port()
    log = tmp_path / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, proc, log, timeout=60)
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket="rx-backups")
        d = Drill(rxgate_bin, tmp_path / "lake", "s3://rx-backups/nightly", raw=dataset.root, log=lambda _: None)
        storage = (f'[storage.s3]\nendpoint = "{endpoint}"\nregion = "us-east-1"\naccess_key_id = "testing"\n'
                   f'secret_access_key = "testing"\n')
        config = d.main / "rxgate.toml"
        config.write_text(config.read_text() + storage)
        d.pipeline(D1)
        first = d.json("backup", "create", "--to", d.target, "--label", "one", "--json")
        d.pipeline(D2)
        state = {t: d.table_state(t) for t in d.tables()}
        second = d.json("backup", "create", "--to", d.target, "--label", "two", "--json")
        assert 0 < second["files_copied"] < second["files"] and second["files_skipped"] >= first["files"] - 6, second
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="rx-backups")
                for o in page.get("Contents", [])]
        assert "nightly/backups/two/manifest.json" in keys and any(k.startswith("nightly/files/file/") for k in keys)
        d.rx("backup", "verify", d.target)
        other = d.lakehouse("other", None)
        (other / "rxgate.toml").write_text((other / "rxgate.toml").read_text() + storage)
        d.json("backup", "restore", "--from", d.target, "--json", home=other)
        assert {t: d.table_state(t, other) for t in d.tables(other)} == state
    finally:
        stop(proc)


def test_help_says_external_files_are_not_copied(run):
    assert "backup" in run("--help").stdout
    for args in (("backup", "--help"), ("backup", "create", "--help")):
        out = " ".join(run(*args).stdout.split())
        assert "External tables' own files belong to other tools and are NOT copied" in out or \
            "External tables' data files are not copied" in out, out
    assert "--replace" in run("backup", "restore", "--help").stdout


def test_a_sqlite_lakehouse_restored_into_an_empty_postgresql_catalog(rxgate_bin, dataset, postgres, tmp_path):
    """Restore moves a lakehouse between catalog databases: SQLite → a fresh PostgreSQL one."""
    d = _lakehouse(rxgate_bin, dataset, tmp_path)
    d.rx("sql", "CREATE VIEW health.ca_rows AS SELECT npi, drug_name FROM health.prescriber_drug "
                "WHERE presc_state = 'CA'")
    state = {t: d.table_state(t) for t in d.tables()}
    view = d.table_state("health.ca_rows")
    d.json("backup", "create", "--to", d.target, "--json")
    pg = d.lakehouse("pg", postgres.uri(postgres.create_database("rxrestore")))
    r = d.json("backup", "restore", "--from", d.target, "--json", home=pg)
    assert r["views"] == ["health.ca_rows"] and r["rewritten"], r
    assert {t: d.table_state(t, pg) for t in d.tables(pg)} == state
    assert d.table_state("health.ca_rows", pg) == view


def test_include_users_keeps_the_users_file_and_restore_writes_it_back(rxgate_bin, dataset, tmp_path):
    d = Drill(rxgate_bin, tmp_path / "lake", str(tmp_path / "backups"), raw=dataset.root, log=lambda _: None)
    d.pipeline(D1)
    without = d.json("backup", "create", "--to", d.target, "--label", "plain", "--json")
    argv = [str(rxgate_bin), "--config", str(d.main / "rxgate.toml"), "--data-dir", str(d.main / "data"),
            "user", "add", "alice", "--role", "admin", "--password-stdin"]
    subprocess.run(argv, input="s3cret-Passw0rd\n", text=True, check=True, capture_output=True)
    users = (d.main / "data" / "users.toml").read_bytes()
    assert b"SCRAM-SHA-256$" in users and b"s3cret" not in users
    with_users = d.json("backup", "create", "--to", d.target, "--label", "users", "--include-users", "--json")
    assert with_users["config_files"] == without["config_files"] + 1
    assert not (Path(d.target) / "backups" / "plain" / "users.toml").exists()
    assert (Path(d.target) / "backups" / "users" / "users.toml").read_bytes() == users
    out = tmp_path / "restored-conf"
    d.json("backup", "restore", "--from", d.target, "--label", "users", "--config-dir", out, "--json",
           home=d.lakehouse("other", None))
    assert (out / "users.toml").read_bytes() == users
    assert (out / "policy.toml").read_bytes() == (REPO_ROOT / "catalog" / "policies.toml").read_bytes()
