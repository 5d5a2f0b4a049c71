"""Hive-compatible SQL for DBAs (issue 6 §5), over pgwire (psycopg) and Flight SQL (ADBC):
backtick identifiers, SHOW DATABASES|SCHEMAS / SHOW TABLES [IN db] [LIKE], USE, DESCRIBE
[FORMATTED|EXTENDED], SHOW CREATE TABLE, the Hive functions analysts use, and the policy:
listings and descriptions show only what the session may query.

The shared `server` serves the pipeline's lakehouse (delivery D1) under the built-in policy;
TEST_USER is an admin, and the tests add a `public` user (the two report tables only)."""
from __future__ import annotations

import hashlib
from datetime import date, datetime, timezone
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pytest

from conftest import D1, TEST_PASSWORD, TEST_USER, add_user

HEALTH_TABLES = ["city_report", "prescriber_drug", "top_prescribers", "us_cities"]
PUBLIC_USER, PUBLIC_PASSWORD = "hive_pat", "hive-public-pw"
#: The columns the built-in policy grants `public` on top_prescribers.
PUBLIC_TOP_COLUMNS = ["presc_state", "country_name", "years_of_exp", "trx_cnt", "total_day_supply",
                      "total_drug_cost", "rank", "delivery_date"]


@pytest.fixture(scope="module")
def public_user(rxgate_bin, server):
    add_user(rxgate_bin, server.users_file, PUBLIC_USER, PUBLIC_PASSWORD, "--role", "public")
    return PUBLIC_USER


def connect(server, user=TEST_USER):
    password = TEST_PASSWORD if user == TEST_USER else PUBLIC_PASSWORD
    return psycopg.connect(server.dsn(user=user, password=password), autocommit=True)


def q(server, sql, params=None, user=TEST_USER):
    with connect(server, user) as conn:
        return conn.execute(sql, params).fetchall()


def col(server, sql, params=None, user=TEST_USER):
    return [r[0] for r in q(server, sql, params, user)]


def pg_error(server, sql, user=TEST_USER) -> psycopg.Error:
    with connect(server, user) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(sql).fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
        return err.value


def adbc(server, user=TEST_USER):
    password = TEST_PASSWORD if user == TEST_USER else PUBLIC_PASSWORD
    return flight_sql.connect(server.flight_uri(), db_kwargs={"username": user, "password": password},
                              autocommit=True)


def describe(server, table, user=TEST_USER, detail=""):
    return q(server, f"DESCRIBE {detail} {table}", user=user)


def section(rows, header):
    """The rows of a DESCRIBE FORMATTED section, up to the next blank row."""
    names = [r[0] for r in rows]
    start = names.index(header) + 1
    out = []
    for r in rows[start:]:
        if r[0] == "":
            break
        out.append(r)
    return out


# --------------------------------------------------------------------------------------------
# Backticks
# --------------------------------------------------------------------------------------------

def test_backtick_identifiers_read_the_same_rows(server):
    plain = q(server, "SELECT presc_state, count(*) FROM health.prescriber_drug GROUP BY 1 ORDER BY 1")
    ticked = q(server, "SELECT `presc_state`, count(*) FROM `health`.`prescriber_drug` "
                       "GROUP BY `presc_state` ORDER BY 1")
    assert ticked == plain and sum(n for _, n in plain) > 1000
    # Hive identifiers are case-insensitive; an alias in backticks names the column.
    with connect(server) as conn:
        cur = conn.execute("SELECT count(*) AS `Row Count` FROM `Health`.`Prescriber_Drug` WHERE `presc_state` = %s",
                           ("CA",))  # extended protocol, with a parameter
        assert cur.description[0].name == "row count"
        assert cur.fetchone()[0] == q(server, "SELECT count(*) FROM health.prescriber_drug "
                                              "WHERE presc_state = 'CA'")[0][0] > 0


def test_backticks_inside_literals_are_left_alone(server):
    with connect(server) as conn:
        cur = conn.execute("SELECT 'a`b`c' AS \"x`y\", '`d`' AS z -- `comment`")
        assert [d.name for d in cur.description] == ["x`y", "z"]
        assert cur.fetchone() == ("a`b`c", "`d`")
    err = pg_error(server, "SELECT `unterminated FROM health.city_report")
    assert err.sqlstate == "42601"


# --------------------------------------------------------------------------------------------
# SHOW DATABASES / SHOW TABLES / USE
# --------------------------------------------------------------------------------------------

def test_show_databases_and_schemas(server):
    dbs = col(server, "SHOW DATABASES")
    assert {"health", "health_quarantine", "system", "pg_catalog", "information_schema"} <= set(dbs)
    assert dbs == sorted(dbs)
    assert col(server, "SHOW SCHEMAS") == dbs
    assert col(server, "SHOW DATABASES LIKE 'health*'") == ["health", "health_quarantine"]
    assert col(server, "show schemas like 'HEALTH_Q*|sys*'") == ["health_quarantine", "system"]
    assert col(server, "SHOW DATABASES LIKE 'nothing*'") == []


def test_show_tables(server):
    assert col(server, "SHOW TABLES") == HEALTH_TABLES
    assert col(server, "SHOW TABLES IN health") == HEALTH_TABLES
    # The same list information_schema gives.
    assert col(server, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'health' "
                       "ORDER BY 1") == HEALTH_TABLES
    assert col(server, "SHOW TABLES FROM health LIKE 'p*|t*'") == ["prescriber_drug", "top_prescribers"]
    assert col(server, "SHOW TABLES IN `health` '*report'") == ["city_report"]
    assert col(server, "SHOW TABLES IN health_quarantine") == ["prescriber_drug_rejects"]
    assert "pg_class" in col(server, "SHOW TABLES IN pg_catalog LIKE 'pg_c*'")
    err = pg_error(server, "SHOW TABLES IN no_such_db")
    assert err.sqlstate == "42P01" and "no_such_db" in str(err)


def test_use_changes_the_default_schema(server):
    with connect(server) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("health",)
        conn.execute("USE health_quarantine")
        assert conn.execute("SHOW search_path").fetchone() == ("health_quarantine",)
        assert conn.execute("SELECT current_schema()").fetchone() == ("health_quarantine",)
        assert [r[0] for r in conn.execute("SHOW TABLES")] == ["prescriber_drug_rejects"]
        rejects = conn.execute("SELECT count(*) FROM prescriber_drug_rejects").fetchone()[0]
        assert rejects == conn.execute(
            "SELECT count(*) FROM health_quarantine.prescriber_drug_rejects").fetchone()[0] > 0
        assert [r[0] for r in conn.execute("DESCRIBE prescriber_drug_rejects")][:2] == ["source_file", "line_number"]
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("USE no_such_db")
        assert conn.execute("SHOW search_path").fetchone() == ("health_quarantine",)
        conn.execute("USE `health`")
        assert conn.execute("SELECT count(*) FROM city_report").fetchone()[0] > 0


# --------------------------------------------------------------------------------------------
# DESCRIBE / SHOW CREATE TABLE
# --------------------------------------------------------------------------------------------

def test_describe_lists_columns_and_types(server):
    rows = describe(server, "health.prescriber_drug")
    info = q(server, "SELECT column_name FROM information_schema.columns WHERE table_schema = 'health' "
                     "AND table_name = 'prescriber_drug' ORDER BY ordinal_position")
    assert [r[0] for r in rows] == [r[0] for r in info] and len(rows) == 25
    types = {r[0]: r[1] for r in rows}
    assert (types["npi"], types["trx_cnt"], types["total_drug_cost"], types["years_of_exp"],
            types["delivery_date"]) == ("string", "bigint", "double", "int", "date")
    comments = {r[0]: r[2] for r in rows}
    assert comments["npi"].startswith("National Provider Identifier")
    # DESC, the current schema, backticks and a three-part name all name the same table.
    assert q(server, "DESC prescriber_drug") == rows
    assert q(server, "DESCRIBE TABLE `rxgate`.`health`.`prescriber_drug`") == rows
    err = pg_error(server, "DESCRIBE health.no_such_table")
    assert err.sqlstate == "42P01"


def test_describe_formatted_shows_iceberg_metadata(server, lakehouse):
    rows = describe(server, "health.prescriber_drug", detail="FORMATTED")
    assert rows[:25] == describe(server, "health.prescriber_drug")
    parts = section(rows, "# Partition Information")
    assert parts == [("# col_name", "data_type", "comment"),
                     ("delivery_date", "date", "transform: identity"),
                     ("presc_state", "string", "transform: identity")]
    detail = {r[0]: r[1] for r in section(rows, "# Detailed Table Information")}
    assert (detail["Database"], detail["Table"], detail["Table Type"], detail["Provider"], detail["Format"],
            detail["Format Version"]) == ("health", "prescriber_drug", "ICEBERG", "iceberg", "parquet", "2")
    location = Path(detail["Location"].removeprefix("file://"))
    assert detail["Location"].startswith("file://") and location.is_dir()
    assert location.resolve().is_relative_to(Path(lakehouse.rx.data_dir).resolve())
    assert Path(detail["Metadata Location"].removeprefix("file://")).is_file()
    assert int(detail["Current Snapshot"]) > 0 and int(detail["Snapshots"]) >= 1
    # The data files of delivery D1 are under the table's location, one directory per partition.
    assert (location / "data" / f"delivery_date={D1}").is_dir() or any(location.rglob(f"*{D1}*"))
    updated = datetime.fromisoformat(detail["Last Updated"].replace("Z", "+00:00"))
    assert updated <= datetime.now(timezone.utc)
    props = dict((r[0], r[1]) for r in section(rows, "# Table Properties"))
    assert props["rxgate.managed"] == "true" and "prescriber" in props["comment"]
    # EXTENDED is the same; city_report is partitioned by delivery_date only.
    assert describe(server, "health.prescriber_drug", detail="EXTENDED")[:30] == rows[:30]
    city = describe(server, "health.city_report", detail="FORMATTED")
    assert [r[0] for r in section(city, "# Partition Information")] == ["# col_name", "delivery_date"]
    # A catalog table has no Iceberg metadata.
    pg = describe(server, "pg_catalog.pg_class", detail="FORMATTED")
    assert {r[0]: r[1] for r in section(pg, "# Detailed Table Information")}["Table Type"] == "SYSTEM TABLE"


def test_show_create_table_is_hive_ddl(server):
    (ddl,), = q(server, "SHOW CREATE TABLE health.prescriber_drug")
    lines = ddl.splitlines()
    assert lines[0] == "CREATE EXTERNAL TABLE `health`.`prescriber_drug` ("
    columns = [line for line in lines if line.startswith("  `")]
    assert len(columns) == 25
    assert "  `trx_cnt` bigint COMMENT 'Total claims; a missing value is imputed as the prescriber\\'s rounded average'," in lines
    assert "PARTITIONED BY SPEC (`delivery_date`, `presc_state`)" in lines
    assert lines.index("STORED BY ICEBERG") + 1 == lines.index("STORED AS PARQUET")
    location = next(r[1] for r in describe(server, "health.prescriber_drug", detail="FORMATTED") if r[0] == "Location")
    assert f"LOCATION '{location}'" in lines
    assert any(line.startswith("COMMENT 'CMS Medicare Part D") for line in lines)
    assert "  'format-version'='2'," in lines and ddl.endswith(")")
    (city,), = q(server, "SHOW CREATE TABLE `health`.`city_report`")
    assert "PARTITIONED BY SPEC (`delivery_date`)" in city
    assert pg_error(server, "SHOW CREATE TABLE health.nope").sqlstate == "42P01"


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------

def test_null_and_string_functions(server):
    assert q(server, "SELECT nvl(NULL::text, 'x'), nvl('a', 'x'), nvl2(NULL, 'a', 'b'), nvl2(1, 'a', 'b'), "
                     "concat_ws('-', 'a', NULL, 'b')") == [("x", "a", "b", "a", "a-b")]
    rows = q(server, "SELECT presc_full_name, size(split(presc_full_name, ' ')), "
                     "concat_ws('+', split(presc_full_name, ' ')) FROM health.prescriber_drug "
                     "ORDER BY npi, drug_name LIMIT 200")
    assert len(rows) == 200
    for name, n, joined in rows:
        if name is None:
            assert (n, joined) == (-1, "")
        else:
            assert n == len(name.split(" ")) and joined == name.replace(" ", "+")
    # regexp_extract agrees with substr on the digits of the NPI; no match gives ''.
    assert q(server, r"SELECT count(*) FROM health.prescriber_drug "
                     r"WHERE regexp_extract(npi, '^(\d{3})(\d+)$', 1) <> substr(npi, 1, 3)") == [(0,)]
    assert q(server, r"SELECT regexp_extract('no digits', '(\d+)', 1), "
                     r"regexp_extract('ab-12', '([a-z]+)-(\d+)', 2)") == [("", "12")]


def test_date_functions(server):
    epoch = int(datetime(2024, 1, 31, tzinfo=timezone.utc).timestamp())
    assert D1 == "2024-01-31"
    rows = q(server, "SELECT DISTINCT date_format(delivery_date, 'yyyy/MM/dd EEE'), unix_timestamp(delivery_date), "
                     "from_unixtime(unix_timestamp(delivery_date), 'dd.MM.yyyy HH:mm') FROM health.prescriber_drug")
    assert rows == [("2024/01/31 Wed", epoch, "31.01.2024 00:00")]
    assert q(server, "SELECT unix_timestamp('2024-01-31 10:00:00'), unix_timestamp('31/01/2024', 'dd/MM/yyyy'), "
                     "unix_timestamp('garbage'), from_unixtime(0)") == [(epoch + 36000, epoch, None,
                                                                         "1970-01-01 00:00:00")]
    now = q(server, "SELECT unix_timestamp()")[0][0]
    assert abs(now - datetime.now(timezone.utc).timestamp()) < 120
    err = pg_error(server, "SELECT date_format(DATE '2024-01-31', 'yyyy-qq')")
    assert "illegal pattern character 'q'" in str(err)


def test_collect_list_and_collect_set(server):
    rows = q(server, "SELECT presc_state, size(collect_set(drug_name)), count(DISTINCT drug_name), "
                     "size(collect_list(bene_count)), count(bene_count) "
                     "FROM health.prescriber_drug GROUP BY presc_state ORDER BY 1")
    assert len(rows) > 10
    for state, set_size, distinct, list_size, non_null in rows:
        assert (set_size, list_size) == (distinct, non_null), state
    states = col(server, "SELECT DISTINCT presc_state FROM health.prescriber_drug WHERE presc_state IS NOT NULL "
                         "ORDER BY 1")
    assert q(server, "SELECT concat_ws('|', array_sort(collect_set(presc_state))) "
                     "FROM health.prescriber_drug") == [("|".join(states),)]


def redact(s: str) -> str:
    return "".join("x" if c.islower() else "X" if c.isupper() else "n" if c.isdigit() else c for c in s)


def test_mask_functions(server):
    rows = q(server, "SELECT npi, presc_full_name, mask(npi), mask_first_n(npi), mask_last_n(npi, 3), "
                     "mask_show_first_n(npi, 2), mask_show_last_n(npi, 4), mask(presc_full_name), "
                     "mask(presc_full_name, 'U', 'l', '#', '*'), mask_hash(npi) "
                     "FROM health.prescriber_drug WHERE presc_full_name IS NOT NULL ORDER BY npi LIMIT 100")
    assert len(rows) == 100
    for npi, name, m, f4, l3, sf2, sl4, mname, custom, h in rows:
        n = len(npi)
        assert m == "n" * n
        assert f4 == "n" * min(4, n) + npi[4:]
        assert l3 == npi[:max(n - 3, 0)] + "n" * min(3, n)
        assert sf2 == npi[:2] + "n" * (n - 2)
        assert sl4 == "n" * (n - 4) + npi[-4:]
        assert mname == redact(name)
        assert custom == "".join("l" if c.islower() else "U" if c.isupper() else "#" if c.isdigit() else "*"
                                 for c in name)
        assert h == hashlib.sha256(npi.encode()).hexdigest()
    assert q(server, "SELECT mask(12345), mask(DATE '2024-01-31'), "
                     "mask(DATE '2024-01-31', 'x', 'x', 'x', -1, '1', 1, 0, -1)") == [
        (11111, date(1, 1, 1), date(2024, 1, 1))]


# --------------------------------------------------------------------------------------------
# Flight SQL
# --------------------------------------------------------------------------------------------

def test_hive_sql_over_flight_sql(server):
    with adbc(server) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES IN health LIKE '*report|top*'")
        assert [r[0] for r in cur.fetchall()] == ["city_report", "top_prescribers"]
        cur.execute("DESCRIBE FORMATTED `health`.`city_report`")
        rows = cur.fetchall()
        assert rows[0][:2] == ("city", "string")
        assert ("Table Type", "ICEBERG", "") in rows
        cur.execute("SELECT `state_name`, size(collect_set(city)), count(DISTINCT city) FROM `health`.`city_report` "
                    "GROUP BY 1")
        groups = cur.fetchall()
        assert groups and all(a == b for _, a, b in groups)
        cur.execute("SELECT mask_show_last_n('1234567890', 4), date_format(DATE '2024-01-31', 'MMM d, yyyy')")
        assert cur.fetchall() == [("nnnnnn7890", "Jan 31, 2024")]
        # USE lasts as long as the Flight SQL session (the bearer token's engine session).
        cur.execute("USE health_quarantine")
        cur.fetchall()
        cur.execute("SHOW TABLES")
        assert cur.fetchall() == [("prescriber_drug_rejects",)]


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

def test_public_role_sees_only_its_tables(server, public_user):
    assert col(server, "SHOW TABLES", user=public_user) == ["city_report", "top_prescribers"]
    assert col(server, "SHOW TABLES IN health LIKE 'p*'", user=public_user) == []
    dbs = col(server, "SHOW DATABASES", user=public_user)
    assert "health" in dbs and "health_quarantine" not in dbs
    # Of system, only the self-filtered monitoring tables (issue 25).
    assert col(server, "SHOW TABLES IN system", user=public_user) == ["queries", "query_history", "sessions"]
    # Only the granted columns are described.
    assert [r[0] for r in describe(server, "health.top_prescribers", user=public_user)] == PUBLIC_TOP_COLUMNS
    formatted = describe(server, "health.top_prescribers", user=public_user, detail="FORMATTED")
    assert [r[0] for r in formatted[:len(PUBLIC_TOP_COLUMNS)]] == PUBLIC_TOP_COLUMNS
    assert "npi" not in [r[0] for r in formatted]
    ddl = q(server, "SHOW CREATE TABLE health.top_prescribers", user=public_user)[0][0]
    assert "`npi`" not in ddl and "`presc_full_name`" not in ddl and "`trx_cnt` bigint" in ddl


def test_public_role_cannot_describe_what_it_cannot_query(server, public_user):
    hidden = pg_error(server, "DESCRIBE health.prescriber_drug", user=public_user)
    missing = pg_error(server, "DESCRIBE health.no_such_table", user=public_user)
    assert hidden.sqlstate == missing.sqlstate == "42P01"
    assert str(hidden) == str(missing).replace("no_such_table", "prescriber_drug")
    assert pg_error(server, "DESCRIBE FORMATTED health.prescriber_drug", user=public_user).sqlstate == "42P01"
    assert pg_error(server, "SHOW CREATE TABLE health.us_cities", user=public_user).sqlstate == "42P01"
    quarantine = pg_error(server, "SHOW TABLES IN health_quarantine", user=public_user)
    nothing = pg_error(server, "SHOW TABLES IN no_such_db", user=public_user)
    assert str(quarantine) == str(nothing).replace("no_such_db", "health_quarantine")
    assert pg_error(server, "USE health_quarantine", user=public_user).sqlstate == "42P01"
    # The admin describes it.
    assert len(describe(server, "health.prescriber_drug")) == 25
    # Flight SQL: the same refusal.
    with adbc(server, public_user) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("DESCRIBE `health`.`prescriber_drug`")
            cur.fetchall()
        assert "does not exist" in str(err.value)
        cur.execute("SHOW TABLES")
        assert [r[0] for r in cur.fetchall()] == ["city_report", "top_prescribers"]
