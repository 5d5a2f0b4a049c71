"""The command line as a user meets it: help, output formats, idempotent catalog apply,
clear fatal errors with a non-zero exit, and `rxgate demo` from nothing."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import time

import psycopg
import pytest

from conftest import free_port
from rxcli import REPO_ROOT, child_env


def test_help_explains_every_command(run):
    out = run("--help").stdout
    for cmd in ("datagen", "catalog", "ingest", "pipeline", "sql", "serve", "demo", "user", "cert"):
        assert cmd in out
    assert "--delivery-date" in run("ingest", "prescribers", "--help").stdout
    assert "--pg-listen" in run("serve", "--help").stdout


def test_catalog_apply_is_idempotent_and_lists_tables(run):
    first = run("catalog", "apply", str(REPO_ROOT / "catalog")).stdout
    assert first.count("created") == 5, first
    second = run("catalog", "apply", str(REPO_ROOT / "catalog")).stdout
    assert second.count("unchanged") == 5 and "created" not in second, second
    tables = run("catalog", "list").stdout.split()
    assert "health.prescriber_drug" in tables
    assert "health_quarantine.prescriber_drug_rejects" in tables


def test_sql_formats(lakehouse):
    rx = lakehouse.rx
    q = "SELECT presc_state, count(*) AS n FROM health.prescriber_drug GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"
    csv_lines = rx.run("sql", "--format", "csv", q).stdout.strip().splitlines()
    assert csv_lines[0] == "presc_state,n"
    rows_csv = [line.split(",") for line in csv_lines[1:]]
    rows_json = [json.loads(line) for line in rx.run("sql", "--format", "json", q).stdout.strip().splitlines()]
    assert [[r["presc_state"], str(r["n"])] for r in rows_json] == rows_csv
    table = rx.run("sql", q).stdout
    assert "presc_state" in table and "(3 rows)" in table
    assert sum(int(r[1]) for r in rows_csv) <= lakehouse.pipeline["loaded"]


def test_sql_error_exits_non_zero_with_message(lakehouse):
    p = lakehouse.rx.run("sql", "SELECT * FROM health.nope", check=False)
    assert p.returncode != 0
    assert "nope" in p.stderr and "backtrace" not in p.stderr.lower()


def test_fatal_ingest_errors_are_clear(rx, tmp_path, dataset):
    rx.apply_catalog()
    missing = rx.run("ingest", "prescribers", str(tmp_path / "nothing.csv"), "--delivery-date", "2021-12-31", check=False)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    header = rx.run("ingest", "prescribers", str(bad), "--delivery-date", "2021-12-31", check=False)
    assert header.returncode != 0 and "header" in header.stderr
    date = rx.run("ingest", "prescribers", str(bad), "--delivery-date", "31/12/2021", check=False)
    assert date.returncode != 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unreachable = subprocess.run(
        [str(rx.binary), "--data-dir", str(blocker / "sub"), "ingest", "prescribers",
         str(dataset.prescribers), "--delivery-date", "2021-12-31"],
        capture_output=True, text=True, env=child_env(), cwd=tmp_path)
    assert unreachable.returncode != 0 and "catalog" in unreachable.stderr.lower()


def test_demo_from_nothing_serves_psql(rxgate_bin, tmp_path):
    data = tmp_path / "demo"
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(rxgate_bin), "--data-dir", str(data), "demo", "--scale", "0.005", "--pg-listen", f"127.0.0.1:{port}"],
            cwd=tmp_path, env=child_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        while "Press Ctrl-C" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert "quarantined" in text
        # The demo prints a psql connection string with credentials for each demo user.
        urls = dict(re.findall(rf'psql "(?P<url>postgresql://(\w+):\w+@127\.0\.0\.1:{port}/rxgate)"', text))
        logins = {user: url for url, user in urls.items()}
        assert set(logins) == {"admin", "analyst", "auditor_ca", "viewer"}, text
        counts = {}
        for user in ("admin", "analyst", "auditor_ca"):
            with psycopg.connect(logins[user], autocommit=True, connect_timeout=10) as conn:
                counts[user] = conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0]
                states = conn.execute("SELECT DISTINCT presc_state FROM health.prescriber_drug").fetchall()
                npi = conn.execute("SELECT npi FROM health.prescriber_drug LIMIT 1").fetchone()[0]
                reports = conn.execute("SELECT (SELECT count(*) FROM health.city_report) AS c, "
                                       "(SELECT count(*) FROM health.top_prescribers) AS t").fetchone()
            assert reports[0] > 0 and reports[1] > 0, user
            if user == "auditor_ca":  # the demo policy: only California's rows
                assert states == [("CA",)], states
            if user == "analyst":  # the demo policy: keyed pseudonyms instead of NPIs
                assert npi.startswith("k1:") and len(npi) == 35, npi
            else:
                assert npi.isdigit() and len(npi) == 10, npi
        assert counts["admin"] == counts["analyst"] > 6000 > counts["auditor_ca"] > 0, counts
        with psycopg.connect(logins["viewer"], autocommit=True, connect_timeout=10) as conn:
            assert conn.execute("SELECT count(*) FROM health.city_report").fetchone()[0] > 0
            with pytest.raises(psycopg.Error) as err:
                conn.execute("SELECT count(*) FROM health.prescriber_drug")
            assert err.value.sqlstate == "42P01"
        users_text = (data / "users.toml").read_text()
        for url in urls:
            password = url.split("@")[0].rsplit(":", 1)[1]
            assert password not in users_text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # A second demo reuses the data and skips the committed steps.
    again = subprocess.run([str(rxgate_bin), "--data-dir", str(data), "demo", "--no-serve"],
                           cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "using the sample data" in again.stderr and again.stderr.count("skipped") == 4
    # …and keeps the demo users and their passwords (generated once).
    assert (data / "users.toml").read_text() == users_text
    assert "demo: user admin" in again.stderr and "demo: user analyst" in again.stderr
