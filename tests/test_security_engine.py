"""Issue 20, the engine's part of faults 3, 8 and 9, against a real `rxgate serve` over pgwire
(psycopg) and Flight SQL (ADBC):

- §3 session settings cannot raise server limits: only an allowlist of `datafusion.*` options
  may be set (SET, RESET, set_config, start-up options), everything else is 42501 and SHOW
  still shows the server's value; SET ROLE / SET SESSION AUTHORIZATION accept only the
  logged-in user.
- §8 external table locations are confined to `[external] allowed_locations` (none by
  default) and never overlap the warehouse or an Iceberg table, at CREATE, ADD PARTITION,
  MSCK and scan time.
- §9 pg_authid shows no verifiers; the recursive CTE of the issue gets a proper SQLSTATE, not
  XX000; the audit trail, the warehouse, the catalog database and spill files are private
  (0600 / 0700, `[files] umask`)."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pytest

from conftest import TEST_PASSWORD, TEST_USER, start_server_with_roles, stop_server
from rxcli import REPO_ROOT, Rxgate

PASSWORD = "security-engine-pw"
USERS = {"ann": "analyst", "auditor_ca": "state_auditor", "pat": "public"}
GOVERNED = list(USERS)
EVERYONE = [TEST_USER, *GOVERNED]

#: DataFusion options no session may change (resource limits, statistics, parsing).
REFUSED = {
    "datafusion.runtime.memory_limit": "4G",
    "datafusion.runtime.temp_directory": "/tmp/rxgate-evil-spill",
    "datafusion.runtime.max_temp_directory_size": "1T",
    "datafusion.execution.target_partitions": "64",
    "datafusion.execution.batch_size": "1",
    "datafusion.explain.show_statistics": "true",
    "datafusion.execution.collect_statistics": "false",
    "datafusion.sql_parser.recursion_limit": "100000",
}


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sec(rxgate_bin, lakehouse, tmp_path_factory):
    """A server over the shared lakehouse with the demo roles, an audit trail, a spill dir and
    `[external] allowed_locations` = this module's `ext` directory and the lakehouse's data
    dir (so that the warehouse inside it is refused for what it is, not for the prefix)."""
    d = tmp_path_factory.mktemp("security")
    ext = d / "ext"
    (ext / "cities").mkdir(parents=True)
    (ext / "cities" / "cities.csv").write_text("city,population\nFRESNO,542107\nSALINAS,163542\n")
    config = d / "rxgate.toml"
    config.write_text(
        f'[audit]\ndir = "{d / "audit"}"\n'
        f'[engine]\nspill_dir = "{d / "spill"}"\n'
        f'[external]\nallowed_locations = ["{ext}", "{lakehouse.rx.data_dir}"]\n')
    s = start_server_with_roles(rxgate_bin, lakehouse.rx.data_dir, d, config, USERS, PASSWORD)
    s.dir, s.ext, s.lake = d, ext, lakehouse.rx.data_dir
    yield s
    stop_server(s)


def password(user: str) -> str:
    return TEST_PASSWORD if user == TEST_USER else PASSWORD


def pg(server, user: str = TEST_USER, **params):
    return psycopg.connect(server.dsn(user=user, password=password(user), **params), autocommit=True)


def pg_error(conn, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as err:
        conn.execute(sql).fetchall()
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    return err.value


def one(conn, sql: str):
    """The last column of the first row (`SHOW datafusion.…` answers name, value)."""
    return conn.execute(sql).fetchone()[-1]


def adbc(server, user: str = TEST_USER):
    return flight_sql.connect(server.flight_uri(), db_kwargs={"username": user, "password": password(user)},
                              autocommit=True)


def flight_update(conn, sql: str):
    with conn.cursor() as cur:
        cur.adbc_statement.set_sql_query(sql)
        return cur.adbc_statement.execute_update()


def flight_one(conn, sql: str):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[-1]


def flight_denied(conn, sql: str, update: bool = True) -> adbc_driver_manager.Error:
    with pytest.raises(adbc_driver_manager.Error) as err:
        if update:
            flight_update(conn, sql)
        else:
            flight_one(conn, sql)
    assert err.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHORIZED, err.value
    assert flight_one(conn, "SELECT 1") == 1
    return err.value


# --------------------------------------------------------------------------------------------
# §3 Session settings cannot raise server limits
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("user", EVERYONE)
def test_pg_set_of_a_limit_is_refused_and_show_keeps_the_servers_value(sec, user):
    with pg(sec, user) as conn:
        for key, value in REFUSED.items():
            before = one(conn, f"SHOW {key}")
            for sql in (f"SET {key} = '{value}'",
                        f"SET {key} TO '{value}'",
                        f'SET "{key}" = \'{value}\'',
                        f"SET {key.upper()} = '{value}'",
                        f"SET SESSION {key} = '{value}'",
                        f"SET LOCAL {key} = '{value}'",
                        f"SET {key} = DEFAULT",
                        f"RESET {key}",
                        f"SELECT set_config('{key}', '{value}', false)"):
                err = pg_error(conn, sql)
                assert err.sqlstate == "42501", (sql, err.sqlstate, str(err))
                assert one(conn, f"SHOW {key}") == before, sql
            assert "permission denied" in str(pg_error(conn, f"SET {key} = '{value}'"))
            # Nothing was stored on the side either.
            assert one(conn, f"SELECT current_setting('{key}', true)") is None
        # The server's own values.
        assert one(conn, "SHOW datafusion.execution.batch_size") == "8192"
        assert one(conn, "SHOW datafusion.explain.show_statistics") == "false"
        # RESET ALL leaves them alone.
        conn.execute("RESET ALL")
        assert one(conn, "SHOW datafusion.execution.batch_size") == "8192"


def test_a_refused_memory_limit_leaves_the_pool_in_force(sec):
    """The pool in force is the server's: its limit, as DataFusion reports it, is unchanged."""
    with pg(sec, "ann") as conn:
        before = conn.execute("SELECT value FROM information_schema.df_settings "
                              "WHERE name = 'datafusion.runtime.memory_limit'").fetchall()
        assert pg_error(conn, "SET datafusion.runtime.memory_limit = '100G'").sqlstate == "42501"
        after = conn.execute("SELECT value FROM information_schema.df_settings "
                             "WHERE name = 'datafusion.runtime.memory_limit'").fetchall()
        assert before == after
        assert "100G" not in str(after)


@pytest.mark.parametrize("user", [TEST_USER, "ann"])
def test_flight_set_of_a_limit_is_refused_and_show_keeps_the_servers_value(sec, user):
    with adbc(sec, user) as conn:
        for key, value in REFUSED.items():
            before = flight_one(conn, f"SHOW {key}")
            for sql in (f"SET {key} = '{value}'", f'SET "{key}" TO \'{value}\'', f"RESET {key}"):
                flight_denied(conn, sql)
                assert flight_one(conn, f"SHOW {key}") == before, sql
            flight_denied(conn, f"SELECT set_config('{key}', '{value}', false)", update=False)
        assert flight_one(conn, "SHOW datafusion.execution.batch_size") == "8192"


def test_allowed_datafusion_options_can_be_set_shown_and_reset(sec):
    with pg(sec, "auditor_ca") as conn:
        assert one(conn, "SHOW datafusion.explain.format") == "indent"
        conn.execute("SET datafusion.explain.format = 'tree'")
        assert one(conn, "SHOW datafusion.explain.format") == "tree"
        conn.execute("RESET datafusion.explain.format")
        assert one(conn, "SHOW datafusion.explain.format") == "indent"
        conn.execute("SET datafusion.optimizer.prefer_hash_join = false")
        assert one(conn, "SHOW datafusion.optimizer.prefer_hash_join") == "false"
        # set_config is not the way to DataFusion's options (it would have no effect).
        assert pg_error(conn, "SELECT set_config('datafusion.explain.format', 'tree', false)").sqlstate == "0A000"
    with adbc(sec, "ann") as conn:
        flight_update(conn, "SET datafusion.explain.format = 'tree'")
        assert flight_one(conn, "SHOW datafusion.explain.format") == "tree"


def test_startup_options_cannot_set_limits(sec):
    """`options=-c …` (libpq) at start-up: the session opens with the server's values."""
    opts = "-c datafusion.runtime.memory_limit=4G -c datafusion.execution.batch_size=1 " \
           "-c datafusion.execution.target_partitions=64"
    with pg(sec, "ann", options=opts) as conn:
        assert one(conn, "SHOW datafusion.execution.batch_size") == "8192"
        assert one(conn, "SELECT current_setting('datafusion.runtime.memory_limit', true)") is None
        target = one(conn, "SHOW datafusion.execution.target_partitions")
    with pg(sec, "ann") as conn:
        assert one(conn, "SHOW datafusion.execution.target_partitions") == target


@pytest.mark.parametrize("user", GOVERNED)
def test_set_role_and_session_authorization_to_another_identity_are_refused(sec, user):
    with pg(sec, user) as conn:
        for sql in ("SET ROLE admin", f"SET ROLE {TEST_USER}", "SET ROLE 'admin'",
                    f"SET SESSION AUTHORIZATION {TEST_USER}", f"SET SESSION AUTHORIZATION '{TEST_USER}'",
                    "SET LOCAL ROLE admin", "SET SESSION ROLE admin",
                    f"SET session_authorization = '{TEST_USER}'", "SET role = 'admin'",
                    f"SELECT set_config('session_authorization', '{TEST_USER}', false)",
                    "SELECT set_config('role', 'admin', false)"):
            err = pg_error(conn, sql)
            assert err.sqlstate == "42501", (sql, err.sqlstate, str(err))
            assert one(conn, "SELECT current_user") == user
            assert one(conn, "SHOW session_authorization") == user
        # The session's own identity, DEFAULT and NONE are accepted.
        for sql in (f"SET ROLE {user}", "SET ROLE NONE", f"SET SESSION AUTHORIZATION {user}",
                    "SET SESSION AUTHORIZATION DEFAULT", "RESET ROLE", "RESET session_authorization"):
            conn.execute(sql)
        assert one(conn, "SHOW session_authorization") == user
    with adbc(sec, user) as conn:
        flight_denied(conn, "SET ROLE admin")
        flight_denied(conn, f"SET SESSION AUTHORIZATION {TEST_USER}")
        flight_update(conn, f"SET ROLE {user}")
        assert flight_one(conn, "SELECT current_user") == user


# --------------------------------------------------------------------------------------------
# §8 External table locations are confined
# --------------------------------------------------------------------------------------------

CSV_TABLE = ("CREATE EXTERNAL TABLE health.{name} (city STRING, population BIGINT) STORED AS CSV "
             "LOCATION '{location}' TBLPROPERTIES ('skip.header.line.count'='1')")


def test_no_external_location_is_allowed_by_default(server, tmp_path):
    """The module server has no [external] section: nothing may be registered."""
    (tmp_path / "c.csv").write_text("city,population\nX,1\n")
    with pg(server) as conn:
        err = pg_error(conn, CSV_TABLE.format(name="default_ext", location=tmp_path))
        assert err.sqlstate == "42501" and "allowed_locations" in str(err), str(err)
        assert pg_error(conn, "SELECT * FROM health.default_ext").sqlstate == "42P01"
    with adbc(server) as conn:
        flight_denied(conn, CSV_TABLE.format(name="default_ext", location=tmp_path))


def test_locations_outside_the_allowed_prefixes_are_refused(sec):
    ext = sec.ext
    sibling = Path(str(ext) + "xyz")
    sibling.mkdir(exist_ok=True)
    (sibling / "c.csv").write_text("city,population\nX,1\n")
    bad = ["/etc/default", "file:///etc/default", "/etc", "/", f"{ext}/../../../../etc/default",
           f"file://{ext}/%2e%2e/%2e%2e/%2E%2E/etc", f"file://{ext}/..%2F..%2F..%2Fetc", str(sibling),
           f"file://{sibling}/", str(ext.parent)]
    with pg(sec) as conn:
        for location in bad:
            err = pg_error(conn, CSV_TABLE.format(name="bad_ext", location=location))
            assert err.sqlstate == "42501", (location, err.sqlstate, str(err))
        assert pg_error(conn, "SELECT * FROM health.bad_ext").sqlstate == "42P01"
    with adbc(sec) as conn:
        flight_denied(conn, CSV_TABLE.format(name="bad_ext", location="/etc/default"))


def test_locations_over_the_warehouse_or_an_iceberg_table_are_refused(sec):
    """Even under an allowed prefix: an external table over Iceberg files would read them
    without the table's masks and row filters."""
    wh = sec.lake / "warehouse"
    facts = wh / "health" / "prescriber_drug" / "data"
    assert facts.is_dir()
    with pg(sec) as conn:
        for location in (facts, f"file://{facts}/", wh, sec.lake, wh / "health" / "prescriber_drug",
                         f"{sec.lake}/./warehouse//health/"):
            sql = ("CREATE EXTERNAL TABLE health.pd_all (npi STRING, state STRING) "
                   f"STORED AS PARQUET LOCATION '{location}'")
            err = pg_error(conn, sql)
            assert err.sqlstate == "42501", (location, err.sqlstate, str(err))
            assert "warehouse" in str(err) or "Iceberg table" in str(err), str(err)
    with pg(sec, "auditor_ca") as conn:
        assert pg_error(conn, "SELECT * FROM health.pd_all").sqlstate == "42P01"


def test_an_allowed_location_works_and_its_partitions_are_confined_too(sec):
    ext = sec.ext
    part = ext / "parts"
    for state, rows in {"CA": "FRESNO,542107\n", "NY": "BUFFALO,278349\n"}.items():
        (part / f"state={state}").mkdir(parents=True, exist_ok=True)
        (part / f"state={state}" / "c.csv").write_text(rows)
    with pg(sec) as conn:
        conn.execute(CSV_TABLE.format(name="cities_ok", location=ext / "cities"))
        try:
            assert one(conn, "SELECT sum(population) FROM health.cities_ok") == 542107 + 163542
        finally:
            conn.execute("DROP TABLE health.cities_ok")
        conn.execute("CREATE EXTERNAL TABLE health.parts_ext (city STRING, population BIGINT) "
                     f"PARTITIONED BY (state STRING) STORED AS CSV LOCATION '{part}'")
        try:
            conn.execute("MSCK REPAIR TABLE health.parts_ext")
            assert one(conn, "SELECT count(*) FROM health.parts_ext") == 2
            for location in ("/etc/default", sec.lake / "warehouse" / "health" / "us_cities" / "data",
                             f"{part}/../../../.."):
                err = pg_error(conn, f"ALTER TABLE health.parts_ext ADD PARTITION (state='XX') LOCATION '{location}'")
                assert err.sqlstate == "42501", (location, err.sqlstate, str(err))
            assert [r[0] for r in conn.execute("SHOW PARTITIONS health.parts_ext").fetchall()] == \
                ["state=CA", "state=NY"]
            # A directory MSCK finds that leads elsewhere (a symbolic link) is refused too.
            (part / "state=TX").symlink_to(Path("/etc/default").resolve() if Path("/etc/default").is_dir()
                                           else Path("/etc"))
            err = pg_error(conn, "MSCK REPAIR TABLE health.parts_ext")
            assert err.sqlstate == "42501", (err.sqlstate, str(err))
            assert "state=TX" not in [r[0] for r in conn.execute("SHOW PARTITIONS health.parts_ext").fetchall()]
        finally:
            (part / "state=TX").unlink(missing_ok=True)
            conn.execute("DROP TABLE health.parts_ext")


def test_a_location_no_longer_allowed_is_not_read(rxgate_bin, serve, tmp_path):
    """A table registered while its location was allowed is refused at scan time once the
    configuration no longer allows it (or by a gateway configured differently)."""
    data = tmp_path / "data"
    Rxgate(rxgate_bin, data).run("catalog", "apply", "catalog/")
    files = tmp_path / "files"
    files.mkdir()
    (files / "c.csv").write_text("city,population\nX,1\n")
    config = tmp_path / "rxgate.toml"
    config.write_text(f'[external]\nallowed_locations = ["{files}"]\n')
    s = serve(data, config=config)
    with pg(s) as conn:
        conn.execute(CSV_TABLE.format(name="later_ext", location=files))
        assert one(conn, "SELECT count(*) FROM health.later_ext") == 1
    stop_server(s)
    config.write_text(f'[external]\nallowed_locations = ["{tmp_path / "elsewhere"}"]\n')
    s = serve(data, config=config, env={"RXGATE_USERS_FILE": str(s.users_file)})
    with pg(s) as conn:
        err = pg_error(conn, "SELECT count(*) FROM health.later_ext")
        assert err.sqlstate == "42501", (err.sqlstate, str(err))
    with adbc(s) as conn:
        flight_denied(conn, "SELECT count(*) FROM health.later_ext", update=False)


# --------------------------------------------------------------------------------------------
# §9 Smaller ones
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("user", [TEST_USER, "pat"])
def test_pg_authid_shows_no_verifiers(sec, user):
    sql = "SELECT count(*) FROM pg_catalog.pg_authid WHERE rolpassword IS NOT NULL"
    with pg(sec, user) as conn:
        assert one(conn, "SELECT count(*) FROM pg_catalog.pg_authid") > 0
        assert one(conn, sql) == 0
        rows = conn.execute("SELECT rolname, rolpassword FROM pg_authid").fetchall()
        assert rows and all(r[1] is None for r in rows), rows
        assert not any("SCRAM" in str(r) for r in conn.execute("SELECT * FROM pg_authid").fetchall())
    with adbc(sec, user) as conn:
        assert flight_one(conn, sql) == 0


RECURSIVE = ("WITH RECURSIVE t(n, s) AS (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM t WHERE n < {n}) "
             "SELECT max(n), max(length(s)) FROM t")


def test_recursive_cte_with_a_column_list_is_never_an_internal_error(sec):
    """The issue's query failed with "Schema error: project index 1 out of bounds" when the
    outer query read fewer columns than the CTE has (DataFusion's projection pushdown)."""
    short = "WITH RECURSIVE t(n, s) AS (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM t WHERE n < 5) "
    with pg(sec, "ann") as conn:
        assert conn.execute(RECURSIVE.format(n=10)).fetchone() == (10, 512)
        assert [r[0] for r in conn.execute(short + "SELECT s FROM t").fetchall()] == ["x" * 2 ** i for i in range(5)]
        assert conn.execute(short + "SELECT count(*) FROM t").fetchone() == (5,)
        assert conn.execute(short + "SELECT length(s) FROM t WHERE n = 5").fetchone() == (16,)
        for tail in ("SELECT s FROM t", "SELECT count(*) FROM t", "SELECT max(n) FROM t"):
            try:
                conn.execute(RECURSIVE.format(n=40).split(" SELECT max(n)")[0] + " " + tail).fetchall()
            except psycopg.Error as e:
                assert e.sqlstate in ("54000", "53200", "57014"), (tail, e.sqlstate, str(e))
        try:
            conn.execute(RECURSIVE.format(n=40)).fetchall()
        except psycopg.Error as e:
            # 2^39 bytes: beyond the value or memory limits, with their SQLSTATE.
            assert e.sqlstate in ("54000", "53200", "57014"), (e.sqlstate, str(e))
            assert conn.execute("SELECT 1").fetchone() == (1,)
    with adbc(sec, "ann") as conn:
        with conn.cursor() as cur:
            cur.execute(RECURSIVE.format(n=10))
            assert tuple(cur.fetchone()) == (10, 512)
            cur.execute(short + "SELECT s FROM t")
            assert len(cur.fetchall()) == 5


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_audit_trail_and_spill_dir_are_private(sec):
    with pg(sec, "ann") as conn:
        one(conn, "SELECT 1")
    audit = sec.dir / "audit"
    assert stat.S_IMODE(audit.stat().st_mode) == 0o700
    assert stat.S_IMODE((audit / "audit.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((sec.dir / "spill").stat().st_mode) == 0o700


def test_warehouse_and_catalog_files_are_private(lakehouse):
    """The pipeline (and every other command) runs under umask 077."""
    data = lakehouse.rx.data_dir
    assert private(data / "catalog.db")
    paths = list((data / "warehouse").rglob("*"))
    assert any(p.suffix == ".parquet" for p in paths) and any(p.name.endswith(".metadata.json") for p in paths)
    loose = [p for p in [data / "warehouse", *paths] if not private(p)]
    assert not loose, loose[:5]


def test_umask_is_configurable(rxgate_bin, tmp_path):
    default = Rxgate(rxgate_bin, tmp_path / "a")
    default.run("catalog", "apply", "catalog/")
    assert stat.S_IMODE((tmp_path / "a" / "catalog.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a" / "warehouse").stat().st_mode) == 0o700
    config = tmp_path / "umask.toml"
    config.write_text('[files]\numask = "027"\n')
    shared = Rxgate(rxgate_bin, tmp_path / "b")
    shared.run("--config", str(config), "catalog", "apply", "catalog/")
    assert stat.S_IMODE((tmp_path / "b" / "catalog.db").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b" / "warehouse").stat().st_mode) == 0o750
    config.write_text('[files]\numask = "999"\n')
    bad = Rxgate(rxgate_bin, tmp_path / "c").run("--config", str(config), "catalog", "apply", "catalog/",
                                                   check=False)
    assert bad.returncode != 0 and "umask" in bad.stderr
