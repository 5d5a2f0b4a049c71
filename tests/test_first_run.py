"""What a new user trips over first (issue 27 §3-§11): the CLI's messages and output, and the
PostgreSQL behaviour BI tools rely on, each checked the way a user meets it (the CLI, psql,
psycopg, ADBC, SQLAlchemy 1.4 and 2)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest
import sqlalchemy as sa

import sqlalchemy14
from conftest import D1, D2, TEST_PASSWORD, TEST_USER, add_user
from rxcli import REPO_ROOT, Rxgate, child_env, describe

HEALTH_TABLES = {"prescriber_drug", "us_cities", "city_report", "top_prescribers"}
BUILTIN = "definitions: built-in"


def pg(server, **kw) -> psycopg.Connection:
    return psycopg.connect(server.dsn(), autocommit=True, **kw)


def psql(server, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("psql")
    assert exe, "psql is not installed (postgresql-client)"
    p = subprocess.run([exe, "-h", server.host, "-p", str(server.port), "-U", TEST_USER, "-d", "rxgate",
                        "-X", "-v", "ON_ERROR_STOP=1", *args], env=server.pg_env(),
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"psql {args} failed: {p.stderr}"
    return p


def adbc(server):
    return flight_sql.connect(server.flight_uri(), autocommit=True,
                              db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD})


def no_log_lines(stderr: str) -> bool:
    return re.search(r"\b(INFO|DEBUG|TRACE)\b", stderr) is None


# --------------------------------------------------------------------------- §11 typed literals

def test_quoted_literals_take_the_type_of_booleans_and_numbers(server):
    with pg(server) as conn:
        row = conn.execute(
            "SELECT true = 't', 'f' = false, true = 'TRUE', true = ' yes ', false = 'off', true = 'on', "
            "true = '1', false = '0', false = 'no', true <> 'f', "
            # numbers compare as numbers (as text, 9 < '10' was false)
            "9 < '10', 10 = '010', 1.5 = '1.50', 2 >= ' 2 ', "
            # text and dates keep their meaning
            "'10' < '9', 'abc' = 'abc', DATE '2024-01-02' = '2024-01-02'").fetchone()
        assert all(v is True for v in row), row
        n = conn.execute("SELECT count(*) FROM health.prescriber_drug WHERE trx_cnt > '100'").fetchone()[0]
        assert n == conn.execute("SELECT count(*) FROM health.prescriber_drug WHERE trx_cnt > 100").fetchone()[0]
        # The exact predicate SQLAlchemy 1.4's get_indexes sends (no indexes: no rows).
        assert conn.execute("SELECT count(*) FROM pg_catalog.pg_index ix WHERE ix.indisprimary = 'f'"
                            ).fetchone()[0] == 0
        for bad, type_name in (("true = 'maybe'", "boolean"), ("1 = 'one'", "bigint")):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"SELECT {bad}")
            assert f'invalid input syntax for type {type_name}' in str(err.value), err.value
        # A typed literal is not coerced (PostgreSQL: no operator boolean = text).
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT true = 't'::text")


def test_sqlalchemy_1_4_and_2_inspectors(server):
    """Superset 6 creates a dataset with SQLAlchemy 1.4's inspector; both versions run every
    call it makes without an error."""
    url = f"postgresql+psycopg2://{TEST_USER}:{TEST_PASSWORD}@{server.host}:{server.port}/rxgate"
    old = sqlalchemy14.inspect_all(url, schema="health", table="us_cities")
    assert old["version"].startswith("1.4."), old["version"]
    r = old["results"]
    errors = {m: v for m, v in r.items() if isinstance(v, dict) and "error" in v}
    assert not errors, errors
    assert r["has_table"] is True
    assert {c["name"] for c in r["get_columns"]} >= {"city", "state_id", "population"}
    assert r["get_pk_constraint"]["constrained_columns"] == []
    assert r["get_foreign_keys"] == [] and r["get_indexes"] == [] and r["get_unique_constraints"] == []
    assert r["get_table_comment"] == {"text": None} or "text" in r["get_table_comment"]
    assert r["get_view_names"] == [] and set(r["get_table_names"]) == HEALTH_TABLES
    engine = sa.create_engine(url)
    try:
        insp = sa.inspect(engine)
        assert insp.has_table("us_cities", schema="health")
        assert [c["name"] for c in insp.get_columns("us_cities", schema="health")] == \
            [c["name"] for c in r["get_columns"]]
        assert insp.get_pk_constraint("us_cities", schema="health")["constrained_columns"] == []
        assert insp.get_foreign_keys("us_cities", schema="health") == []
        assert insp.get_indexes("us_cities", schema="health") == []
        assert insp.get_unique_constraints("us_cities", schema="health") == []
        assert "text" in insp.get_table_comment("us_cities", schema="health")
        assert insp.get_view_names(schema="health") == []
    finally:
        engine.dispose()


def test_discard_all_and_rollback_with_psycopg_prepared_statements(server):
    """psycopg answers DISCARD ALL and ROLLBACK, once it has prepared statements, with
    DEALLOCATE ALL (this failed with "Prepared statement 'all' does not exist")."""
    with pg(server, prepare_threshold=0) as conn:
        for _ in range(2):
            assert conn.execute("SELECT count(*) FROM health.us_cities WHERE state_id = %s", ("CA",)).fetchone()[0] > 0
        conn.execute("DISCARD ALL")
        assert conn.execute("SELECT 1 + %s", (1,)).fetchone()[0] == 2
        assert conn.execute("DEALLOCATE ALL").statusmessage == "DEALLOCATE ALL"
    with psycopg.connect(server.dsn(), prepare_threshold=0) as conn:
        conn.execute("SELECT %s::int", (1,)).fetchone()
        conn.rollback()
        assert conn.execute("SELECT %s::int", (2,)).fetchone()[0] == 2


# --------------------------------------------------------------------------- §3 SHOW

def test_show_dotted_datafusion_names_and_show_all(server):
    # `SHOW datafusion.…` answers DataFusion's (name, value), dotted name unquoted.
    shown = psql(server, "-At", "-c", "SHOW datafusion.execution.batch_size").stdout.strip().split("|")
    assert shown[0] == "datafusion.execution.batch_size" and shown[-1].isdigit(), shown
    rows = [line.split("|") for line in psql(server, "-At", "-c", "SHOW ALL").stdout.splitlines()]
    by_name = {r[0]: r for r in rows}
    assert "DateStyle" in by_name and "search_path" in by_name
    batch = by_name["datafusion.execution.batch_size"]
    assert batch[1].isdigit() and "read-only" in batch[2], batch
    assert "read-only" not in by_name["datafusion.explain.format"][2]
    assert "datafusion.runtime.memory_limit" in by_name
    with pg(server) as conn:
        assert conn.execute("SHOW datafusion.explain.format").fetchone()[-1] == "indent"
        names = {r[0] for r in conn.execute("SHOW ALL").fetchall()}
    assert {n for n in names if n.startswith("datafusion.")} == {n for n in by_name if n.startswith("datafusion.")}
    with adbc(server) as conn, conn.cursor() as cur:
        cur.execute("SHOW ALL")
        flight_names = set(cur.fetch_arrow_table().column("name").to_pylist())
        cur.execute("SHOW datafusion.execution.batch_size")
        assert cur.fetchone()[-1] == batch[1]
    assert flight_names == names


# --------------------------------------------------------------------------- §8 JSON nulls

def test_json_output_keeps_null_values(rx):
    out = rx.run("sql", "SELECT 1 a, NULL b, 'x' c", "--format", "json").stdout
    assert [json.loads(line) for line in out.splitlines()] == [{"a": 1, "b": None, "c": "x"}]


# --------------------------------------------------------------------------- §5 --as

def test_sql_as_an_unknown_or_grantless_user_names_the_cause(rxgate_bin, lakehouse, tmp_path):
    users = tmp_path / "users.toml"
    env = {"RXGATE_USERS_FILE": str(users)}
    rx = Rxgate(rxgate_bin, lakehouse.rx.data_dir)
    p = rx.fail("sql", "SELECT count(*) FROM health.city_report", "--as", "nosuch", env=env)
    assert 'unknown user "nosuch"' in p.stderr and "TableNotFound" not in p.stderr, describe(p)
    assert "rxgate user add nosuch" in p.stderr
    add_user(rxgate_bin, users, "ghost", "pw-ghost", "--role", "ghostrole", "--force")
    p = rx.fail("sql", "SELECT count(*) FROM health.city_report", "--as", "ghost", env=env)
    assert 'user "ghost" has no grants' in p.stderr and "ghostrole" in p.stderr, describe(p)
    p = rx.fail("policy", "check", "--user", "nosuch", "SELECT 1", env=env)
    assert 'unknown user "nosuch"' in p.stderr, describe(p)
    # A known user with grants runs as before; the policy's own users (auditor_ca) are known too.
    add_user(rxgate_bin, users, "pub", "pw-pub", "--role", "public")
    assert rx.run("sql", "SELECT count(*) > 0 AS ok FROM health.city_report", "--as", "pub", "--format", "csv",
                  env=env).stdout.split() == ["ok", "true"]
    assert "TableNotFound" in rx.fail("sql", "SELECT 1 FROM health.prescriber_drug", "--as", "pub", env=env).stderr
    rx.run("sql", "SELECT count(*) FROM health.prescriber_drug", "--as", "auditor_ca", env=env)


# --------------------------------------------------------------------------- §6 logging

def test_one_shot_commands_log_warnings_only_and_servers_info(rxgate_bin, dataset, tmp_path, server):
    rx = Rxgate(rxgate_bin, tmp_path / "data")
    p = rx.run("pipeline", "run", "--input", dataset.root, "--delivery-date", D1, "--json")
    assert no_log_lines(p.stderr), describe(p)
    assert json.loads(p.stdout.splitlines()[-1])["loaded"] > 0
    p = rx.run("ingest", "cities", dataset.cities, "--delivery-date", D2, "-q")
    assert no_log_lines(p.stderr), describe(p)
    p = rx.run("sql", "SELECT count(*) FROM health.us_cities", "--format", "csv")
    assert p.stderr == "", describe(p)
    # -v brings INFO back…
    p = rx.run("-v", "pipeline", "run", "--input", dataset.root, "--delivery-date", D1, "--json")
    assert " INFO " in p.stderr and "pipeline step" in p.stderr, describe(p)
    # …and a server logs INFO by default.
    assert " INFO " in server.log_text() and "pgwire listening" in server.log_text()


# --------------------------------------------------------------------------- §4 roles

def test_user_roles_are_checked_against_the_policy(rx, tmp_path):
    env = {"RXGATE_USERS_FILE": str(tmp_path / "users.toml")}
    p = rx.fail("user", "add", "dana", "--role", "auditor", "--password-stdin", input="pw-dana\n", env=env)
    assert 'role "auditor" is not defined in the policy' in p.stderr, describe(p)
    assert "admin, analyst, engineer, public, state_auditor" in p.stderr and "--force" in p.stderr
    assert "dana" not in rx.run("user", "list", env=env).stdout + rx.run("user", "list", env=env).stderr
    p = rx.run("user", "add", "dana", "--role", "auditor", "--force", "--password-stdin", input="pw-dana\n", env=env)
    assert "warning" in p.stderr and "auditor" in p.stderr
    rx.run("user", "add", "eve", "--role", "state_auditor", "--password-stdin", input="pw-eve\n", env=env)
    listing = {line.split()[0]: line.split()[-1] for line in rx.run("user", "list", env=env).stdout.splitlines()[1:]
               if not line.startswith("(")}
    assert listing == {"dana": "auditor?", "eve": "state_auditor"}, listing
    assert "does not define" in rx.run("user", "list", env=env).stdout


def test_demo_says_which_role_each_demo_user_has(rxgate_bin, tmp_path):
    data = tmp_path / "demo"
    p = subprocess.run([str(rxgate_bin), "--data-dir", str(data), "demo", "--scale", "0.005", "--no-serve"],
                       cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "demo: user auditor_ca has role state_auditor" in p.stderr, p.stderr
    assert "demo: user viewer has role public" in p.stderr
    assert "demo: user admin has role admin" in p.stderr
    assert f"demo: {BUILTIN}" in p.stderr


# --------------------------------------------------------------------------- §7 definitions

def test_definitions_are_explicit_and_the_same_from_any_directory(rxgate_bin, dataset, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rx = Rxgate(rxgate_bin, tmp_path / "data", cwd=elsewhere)
    p = rx.run("catalog", "list")
    assert p.stdout == "" and "the catalog is empty" in p.stderr, describe(p)
    # A relative path is the working directory's: missing here, with the absolute path named.
    p = rx.fail("catalog", "apply", "catalog")
    assert f"definitions {elsewhere / 'catalog'}: no such file or directory" in p.stderr, describe(p)
    # No path: the built-in definitions, wherever rxgate runs.
    p = rx.run("catalog", "apply")
    assert p.stdout.count("created") == 5 and f"{BUILTIN} (catalog/health.toml of this build) (5 tables)" in p.stderr
    p = rx.run("catalog", "apply", REPO_ROOT / "catalog")
    assert p.stdout.count("unchanged") == 5 and f"definitions: {REPO_ROOT / 'catalog'} (5 tables)" in p.stderr
    assert "health.prescriber_drug" in rx.run("catalog", "list").stdout.split()
    # pipeline run: the same rule, and it says which definitions it used, here and in the repo.
    summary = rx.pipeline(dataset.root, D1)
    assert summary["definitions"].startswith("built-in"), summary
    in_repo = Rxgate(rxgate_bin, tmp_path / "data")
    assert in_repo.pipeline(dataset.root, D1)["definitions"] == summary["definitions"]
    p = in_repo.run("pipeline", "run", "--input", dataset.root, "--delivery-date", D1,
                    "--definitions", REPO_ROOT / "catalog")
    assert f"definitions: {REPO_ROOT / 'catalog'} (5 tables)" in p.stderr, describe(p)


# --------------------------------------------------------------------------- §9 hints

def test_error_hints_name_the_flag_the_table_and_the_key(rxgate_bin, dataset, tmp_path):
    rx = Rxgate(rxgate_bin, tmp_path / "data")
    rx.pipeline(dataset.root, D1)
    rx.ingest("cities", dataset.cities, D2)
    first, second = [int(r[0]) for r in rx.sql(
        'SELECT snapshot_id FROM health."us_cities$snapshots" ORDER BY committed_at')[1]]
    rx.run("catalog", "rollback", "health.us_cities", first)
    p = rx.fail("catalog", "rollback", "health.us_cities", second)
    assert "not an ancestor" in p.stderr and \
        f"rxgate catalog rollback health.us_cities {second} --set-current" in p.stderr, describe(p)
    assert "system.set_current_snapshot" not in p.stderr
    rx.run("catalog", "rollback", "health.us_cities", second, "--set-current")

    # A partition transform is written like any partition (the writer computes transforms).
    rx.run("catalog", "alter", "health.us_cities", "ADD PARTITION FIELD bucket(4, state_id) AS sb")
    p = rx.run("pipeline", "run", "--input", dataset.root, "--delivery-date", D1, "--force")
    assert "ingest-cities" in p.stdout and "done" in p.stdout, describe(p)

    for text, key in (('[engine]\nmemory_limit = "lots"', "[engine] memory_limit"),
                      ('[audit]\nmax_file_size = "lots"', "[audit] max_file_size"),
                      ('[limits]\nmax_value_bytes = "lots"', "[limits] max_value_bytes")):
        config = tmp_path / "bad.toml"
        config.write_text(text + "\n")
        p = rx.fail("--config", config, "sql", "SELECT 1")
        assert f'{key}: bad size "lots"' in p.stderr, describe(p)


# --------------------------------------------------------------------------- §10 small ones

@pytest.mark.parametrize("args", [
    ("catalog", "files", "health.prescriber_drug"),
    ("sql", "SELECT * FROM generate_series(1, 200000)", "--format", "csv"),
    ("sql", "SELECT * FROM generate_series(1, 200000)", "--format", "json"),
])
def test_a_closed_pipe_ends_the_output_quietly(lakehouse, args):
    """`rxgate catalog files … | head`: the reader goes away before rxgate writes."""
    rx = lakehouse.rx
    proc = subprocess.Popen(rx.argv(*args), cwd=rx.cwd, env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `head` exiting: every write now meets EPIPE
    _, err = proc.communicate(timeout=300)
    err = err.decode(errors="replace")
    assert proc.returncode == 0 and "Broken pipe" not in err and "panicked" not in err, (proc.returncode, err)


def test_login_rows_in_the_audit_log_describe_the_event(server):
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn(password="wrong-password")).close()
    with adbc(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchall()
    deadline = time.monotonic() + 10
    while True:
        with pg(server) as conn:
            rows = conn.execute(
                "SELECT protocol, statement, outcome FROM system.audit_log WHERE kind = 'login' AND \"user\" = %s",
                (TEST_USER,)).fetchall()
        statements = {r[1] for r in rows}
        wanted = {"login (pgwire): success", "login (flightsql): success",
                  "login (pgwire): failed: password authentication failed"}
        if wanted <= statements or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert wanted <= statements, statements
    assert all(r[1] for r in rows), rows


# --------------------------------------------------------------------------- README

SUBCOMMANDS = [
    ("datagen",), ("catalog", "apply"), ("catalog", "list"), ("catalog", "files"), ("catalog", "rollback"),
    ("catalog", "alter"), ("ingest", "prescribers"), ("ingest", "cities"), ("pipeline", "run"), ("sql",),
    ("policy", "check"), ("serve",), ("demo",), ("user", "add"), ("user", "passwd"), ("user", "remove"),
    ("user", "list"), ("cert", "dev"),
]


def test_readme_commands_table_covers_every_flag(rxgate_bin):
    """Every flag a subcommand's --help shows is in the README's Commands section."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rx = Rxgate(rxgate_bin, None)
    missing = []
    for sub in SUBCOMMANDS:
        text = rx.run(*sub, "--help").stdout
        flags = set(re.findall(r"(?m)^\s+(?:-(\w), )?(--[a-z][a-z-]*)", text))
        for short, long in flags:
            if long in ("--help", "--version", "--config", "--data-dir", "--verbose"):
                continue
            spellings = [long] + ([f"-{short}"] if short else [])  # `-q` stands for `--quiet`
            if not any(f"{pre}{flag}" in section for flag in spellings for pre in ("`", " ", "[")):
                missing.append(f"{' '.join(sub)} {long}")
    assert not missing, f"README's Commands section lacks: {missing}"
