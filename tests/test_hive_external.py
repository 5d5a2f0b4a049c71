"""Hive-style external tables (issue 6 §4), against a real `rxgate serve` over pgwire (psycopg)
and Flight SQL (ADBC): CREATE EXTERNAL TABLE over Parquet partition directories and CSV
files the test writes, MSCK REPAIR TABLE, SHOW PARTITIONS, ALTER TABLE ADD|DROP PARTITION,
partition pruning (files and bytes read, from EXPLAIN ANALYZE of DataFusion's Parquet scan),
the policy (admin-only DDL, 42501; an ungranted table is absent, 42P01; masks apply),
DESCRIBE FORMATTED / SHOW CREATE TABLE / SHOW TABLES / information_schema, definitions that
survive a restart, and two servers sharing a PostgreSQL catalog.

Each module server has its own data dir (the Iceberg tables of `catalog/` created empty by
`rxgate catalog apply`), so the external tables live beside Iceberg tables in `health`."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from datetime import date
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import TEST_PASSWORD, TEST_USER, add_user, start_server, stop_server
from rxcli import REPO_ROOT, Rxgate

ANALYST, ANALYST_PW = "ext_analyst", "ext-analyst-pw"
PUBLIC, PUBLIC_PW = "ext_public", "ext-public-pw"
AUDITOR, AUDITOR_PW = "auditor_ca", "ext-auditor-pw"  # state_auditor, state CA (built-in policy)
PASSWORDS = {TEST_USER: TEST_PASSWORD, ANALYST: ANALYST_PW, PUBLIC: PUBLIC_PW, AUDITOR: AUDITOR_PW}

DATES = ["2024-01-01", "2024-02-01"]
STATES = ["CA", "NY", "TX"]


def rows_of(d: str, s: str) -> int:
    """Rows written to partition (d, s): distinct per partition, so counts identify them."""
    return 10 * (DATES.index(d) + 1) + STATES.index(s) + 1


def npi(d: str, s: str, i: int) -> int:
    return 1_000_000_000 + DATES.index(d) * 100_000 + STATES.index(s) * 1_000 + i


def write_parquet_tree(root: Path) -> dict:
    """root/delivery_date=D/state=S/part-*.parquet (CA on the first date in two files), plus
    files Hive skips (_SUCCESS, .crc) and a directory that is not a partition."""
    files = {}
    for d in DATES:
        for s in STATES:
            n = rows_of(d, s)
            part = root / f"delivery_date={d}" / f"state={s}"
            part.mkdir(parents=True)
            table = pa.table({
                "npi": pa.array([npi(d, s, i) for i in range(n)], pa.int64()),
                "drug_name": pa.array([f"DRUG{i % 4}" for i in range(n)]),
                "trx_cnt": pa.array([i + 1 for i in range(n)], pa.int32()),
                "total_cost": pa.array([float(i) * 1.5 for i in range(n)]),
            })
            if (d, s) == (DATES[0], "CA"):
                pq.write_table(table.slice(0, n // 2), part / "part-0.parquet")
                pq.write_table(table.slice(n // 2), part / "part-1.parquet")
            else:
                pq.write_table(table, part / "part-0.parquet")
            (part / "_SUCCESS").write_text("")
            (part / ".part-0.parquet.crc").write_bytes(b"garbage")
            files[(d, s)] = sorted(str(p) for p in part.glob("part-*.parquet"))
    (root / "_temporary").mkdir()
    (root / "not_a_partition").mkdir()
    return files


def total_rows() -> int:
    return sum(rows_of(d, s) for d in DATES for s in STATES)


def sum_trx(d: str, s: str) -> int:
    n = rows_of(d, s)
    return n * (n + 1) // 2


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

class Env:
    def __init__(self, rxgate_bin: Path, root: Path, allowed: Path):
        self.bin = rxgate_bin
        self.root = root
        self.data_dir = root / "data"
        self.parquet = root / "files" / "rx"
        self.files = write_parquet_tree(self.parquet)
        self.csv = root / "files" / "cities"
        self.server = None
        # The shipped policy, in a file the tests may change (the server re-reads it).
        self.policy = root / "policies.toml"
        self.policy.write_text((REPO_ROOT / "catalog" / "policies.toml").read_text())
        self.config = root / "rxgate.toml"
        # External locations must be allowed (issue 20 §8): pytest's temporary directories,
        # where the tests write their files (the warehouse inside stays refused).
        self.config.write_text(f'[policy]\nfile = "{self.policy}"\n'
                               f'[external]\nallowed_locations = ["{allowed}", "ftp://example.invalid/"]\n')
        Rxgate(rxgate_bin, self.data_dir).run("catalog", "apply", "catalog/")

    def start(self):
        self.server = start_server(self.bin, self.data_dir, self.root / "serve.log", config=self.config,
                                   env={"RXGATE_USERS_FILE": str(self.users)} if hasattr(self, "users") else None)
        if not hasattr(self, "users"):
            self.users = self.server.users_file
            add_user(self.bin, self.users, ANALYST, ANALYST_PW, "--role", "analyst")
            add_user(self.bin, self.users, PUBLIC, PUBLIC_PW, "--role", "public")
            add_user(self.bin, self.users, AUDITOR, AUDITOR_PW, "--role", "state_auditor")
        return self.server

    def restart(self):
        stop_server(self.server)
        return self.start()


@pytest.fixture(scope="module")
def env(rxgate_bin, tmp_path_factory):
    e = Env(rxgate_bin, tmp_path_factory.mktemp("hive_ext"), tmp_path_factory.getbasetemp())
    e.start()
    yield e
    stop_server(e.server)


def connect(server, user=TEST_USER):
    return psycopg.connect(server.dsn(user=user, password=PASSWORDS[user]), autocommit=True)


def q(server, sql, user=TEST_USER):
    with connect(server, user) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def scalar(server, sql, user=TEST_USER):
    return q(server, sql, user)[0][0]


def error(server, sql, user=TEST_USER) -> psycopg.Error:
    with connect(server, user) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(sql).fetchall()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
        return err.value


CREATE_RX = """CREATE EXTERNAL TABLE IF NOT EXISTS health.rx_ext (
    npi BIGINT COMMENT 'prescriber id',
    drug_name STRING,
    trx_cnt INT,
    total_cost DOUBLE)
  COMMENT 'raw prescriber deliveries'
  PARTITIONED BY (delivery_date DATE, state STRING)
  STORED AS PARQUET
  LOCATION '{location}'"""


@pytest.fixture(scope="module")
def rx_table(env):
    s = env.server
    q(s, CREATE_RX.format(location=env.parquet))
    return "health.rx_ext"


# --------------------------------------------------------------------------------------------
# CREATE, MSCK, SHOW PARTITIONS, queries
# --------------------------------------------------------------------------------------------

def test_create_then_msck_registers_the_partitions_found(env, rx_table):
    s = env.server
    # Hive reads registered partitions only: none yet.
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == 0
    assert q(s, f"SHOW PARTITIONS {rx_table}") == []
    added = q(s, f"MSCK REPAIR TABLE {rx_table}")
    expected = [f"delivery_date={d}/state={st}" for d in DATES for st in STATES]
    assert sorted(added) == sorted(("added", p) for p in expected)
    assert [r[0] for r in q(s, f"SHOW PARTITIONS {rx_table}")] == expected
    assert [r[0] for r in q(s, f"SHOW PARTITIONS {rx_table} PARTITION (state='NY')")] == \
        [f"delivery_date={d}/state=NY" for d in DATES]
    # A second repair finds nothing new.
    assert q(s, f"MSCK REPAIR TABLE {rx_table}") == []
    # Values and types: partition columns are typed (DATE), data columns read from the files.
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == total_rows() == 102
    got = q(s, f"SELECT delivery_date, state, count(*), sum(trx_cnt), min(npi) FROM {rx_table} "
               "GROUP BY 1, 2 ORDER BY 1, 2")
    assert got == [(date.fromisoformat(d), st, rows_of(d, st), sum_trx(d, st), npi(d, st, 0))
                   for d in DATES for st in STATES]
    assert q(s, f"SELECT drug_name, total_cost FROM {rx_table} WHERE npi = {npi(DATES[1], 'TX', 3)}") == \
        [("DRUG3", 4.5)]
    assert scalar(s, f"SELECT count(*) FROM {rx_table} WHERE delivery_date > DATE '2024-01-15'") == \
        sum(rows_of(DATES[1], st) for st in STATES)


def test_add_and_drop_partition_change_the_rows_returned(env, rx_table, tmp_path):
    s = env.server
    q(s, f"ALTER TABLE {rx_table} RECOVER PARTITIONS")  # Spark's MSCK REPAIR TABLE
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == total_rows()
    ny = sum(rows_of(d, "NY") for d in DATES)
    q(s, f"ALTER TABLE {rx_table} DROP PARTITION (state='NY')")  # a partial spec: both dates
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == total_rows() - ny
    assert [r[0] for r in q(s, f"SHOW PARTITIONS {rx_table}") if "NY" in r[0]] == []
    assert (env.parquet / f"delivery_date={DATES[0]}" / "state=NY" / "part-0.parquet").is_file()  # files stay
    e = error(s, f"ALTER TABLE {rx_table} DROP PARTITION (state='NY')")
    assert e.sqlstate == "42P01"
    q(s, f"ALTER TABLE {rx_table} DROP IF EXISTS PARTITION (state='NY')")
    # Back one at a time, with Hive's default location.
    q(s, f"ALTER TABLE {rx_table} ADD PARTITION (delivery_date='{DATES[0]}', state='NY')")
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == total_rows() - rows_of(DATES[1], "NY")
    e = error(s, f"ALTER TABLE {rx_table} ADD PARTITION (delivery_date='{DATES[0]}', state='NY')")
    assert e.sqlstate == "42P07"
    q(s, f"ALTER TABLE {rx_table} ADD IF NOT EXISTS PARTITION (delivery_date='{DATES[0]}', state='NY') "
         f"PARTITION (delivery_date='{DATES[1]}', state='NY')")
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == total_rows()
    # A partition with its own LOCATION outside the table's directory: its values come from the spec.
    extra = tmp_path / "late_delivery"
    extra.mkdir()
    pq.write_table(pa.table({"npi": pa.array([7, 8], pa.int64()), "drug_name": ["X", "Y"],
                             "trx_cnt": pa.array([5, 6], pa.int32()), "total_cost": [1.0, 2.0]}),
                   extra / "data.parquet")
    q(s, f"ALTER TABLE {rx_table} ADD PARTITION (delivery_date='2024-03-01', state='WA') LOCATION '{extra}'")
    assert q(s, f"SELECT delivery_date, state, sum(trx_cnt) FROM {rx_table} WHERE state = 'WA' GROUP BY 1, 2") == \
        [(date(2024, 3, 1), "WA", 11)]
    assert "delivery_date=2024-03-01/state=WA" in [r[0] for r in q(s, f"SHOW PARTITIONS {rx_table}")]
    # A value that does not fit the column type, a key that is not a partition column.
    assert error(s, f"ALTER TABLE {rx_table} ADD PARTITION (delivery_date='soon', state='CA')").sqlstate == "22023"
    assert error(s, f"ALTER TABLE {rx_table} ADD PARTITION (city='X')").sqlstate == "22023"
    # MSCK ... DROP PARTITIONS unregisters partitions whose directory is gone (SYNC: both ways).
    (extra / "data.parquet").unlink()
    assert q(s, f"MSCK REPAIR TABLE {rx_table} SYNC PARTITIONS") == [("dropped", "delivery_date=2024-03-01/state=WA")]
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == total_rows()


def explain_scan(server, sql):
    """(files, bytes_scanned) of the Parquet scans in EXPLAIN ANALYZE."""
    plan = "\n".join(r[1] for r in q(server, f"EXPLAIN ANALYZE {sql}"))
    files, scanned = [], 0
    for line in plan.splitlines():
        if "DataSourceExec" not in line:
            continue
        groups = re.search(r"file_groups=\{[^:]*: \[(.*?)\]\}", line)
        assert groups, line
        files += re.findall(r"[^\[\], ]+\.parquet", groups.group(1))
        m = re.search(r"bytes_scanned=(\d+(?:\.\d+)?) ?([KMG]?)", line)
        assert m, line
        scanned += float(m.group(1)) * {"": 1, "K": 1024, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
    return sorted(files), scanned


def test_partition_filters_read_only_that_partitions_files(env, rx_table):
    s = env.server
    q(s, f"MSCK REPAIR TABLE {rx_table}")
    query = f"SELECT count(*), sum(trx_cnt), sum(total_cost) FROM {rx_table}"
    all_files, all_bytes = explain_scan(s, query)
    assert len(all_files) == 7  # six partitions, CA of the first date in two files
    where = f" WHERE state = 'CA' AND delivery_date = DATE '{DATES[0]}'"
    files, scanned = explain_scan(s, query + where)
    ca = env.files[(DATES[0], "CA")]
    assert len(files) == 2 and [Path("/" + f.lstrip("/")).name for f in files] == ["part-0.parquet", "part-1.parquet"]
    assert all(f"delivery_date={DATES[0]}/state=CA" in f for f in files)
    assert 0 < scanned < all_bytes / 2, (scanned, all_bytes)
    print(f"pruning: all partitions {len(all_files)} files {all_bytes:.0f} bytes; "
          f"state=CA/date={DATES[0]}: {len(files)} files {scanned:.0f} bytes")
    assert q(s, query + where)[0][:2] == (rows_of(DATES[0], "CA"), sum_trx(DATES[0], "CA"))
    assert len(ca) == 2
    # One partition column alone prunes too.
    files, _ = explain_scan(s, query + " WHERE state = 'TX'")
    assert len(files) == 2 and all("state=TX" in f for f in files)


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

def test_csv_external_tables_with_header_and_delimiter(env):
    s = env.server
    for st, rows in {"CA": [("LOS ANGELES", 3898747), ("SAN DIEGO", 1386932)], "NY": [("NEW YORK", 8804190)]}.items():
        d = env.csv / f"state={st}"
        d.mkdir(parents=True)
        pacsv.write_csv(pa.table({"city": [r[0] for r in rows], "population": [r[1] for r in rows]}), d / "cities.csv")
    q(s, f"""CREATE EXTERNAL TABLE health.cities_ext (city STRING, population BIGINT)
             PARTITIONED BY (state STRING)
             ROW FORMAT DELIMITED FIELDS TERMINATED BY ','
             STORED AS TEXTFILE LOCATION 'file://{env.csv}'
             TBLPROPERTIES ('skip.header.line.count'='1')""")
    assert len(q(s, "MSCK REPAIR TABLE health.cities_ext")) == 2
    assert q(s, "SELECT state, city, population FROM health.cities_ext ORDER BY population DESC") == [
        ("NY", "NEW YORK", 8804190), ("CA", "LOS ANGELES", 3898747), ("CA", "SAN DIEGO", 1386932)]
    # 'discover.partitions'='true' registers what is there when the table is created.
    q(s, f"CREATE EXTERNAL TABLE health.cities_found (city STRING, population BIGINT) PARTITIONED BY (state STRING) "
         f"STORED AS CSV LOCATION '{env.csv}' TBLPROPERTIES ('discover.partitions'='true', 'skip.header.line.count'='1')")
    assert q(s, "SELECT state, sum(population) FROM health.cities_found GROUP BY 1 ORDER BY 1") == [
        ("CA", 3898747 + 1386932), ("NY", 8804190)]
    q(s, "DROP TABLE health.cities_found")
    # Unpartitioned, `|`-delimited, no header, OPTIONS syntax, in a schema that did not exist.
    plain = env.root / "files" / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("1|one\n2|two\n")
    (plain / "b.txt").write_text("3|three\n")
    q(s, f"CREATE EXTERNAL TABLE staging.plain_ext (id INT, word STRING) STORED AS CSV "
         f"LOCATION '{plain}' OPTIONS ('delimiter' '|', 'header' 'false')")
    assert q(s, "SELECT id, word FROM staging.plain_ext ORDER BY id") == [(1, "one"), (2, "two"), (3, "three")]
    assert "staging" in [r[0] for r in q(s, "SHOW DATABASES")]
    # Backticks (Hive's quoting) work in the DDL too.
    q(s, f"CREATE EXTERNAL TABLE `staging`.`Ticked_Ext` (`id` INT, `word` STRING) STORED AS CSV "
         f"LOCATION '{plain}' TBLPROPERTIES ('field.delim'='|')")
    assert scalar(s, "SELECT sum(id) FROM staging.ticked_ext") == 6


def test_bad_ddl_is_refused_with_a_clear_error(env, rx_table):
    s = env.server
    loc = env.parquet
    cases = {
        f"CREATE EXTERNAL TABLE health.x (a INT) LOCATION '{loc}'": "42601",  # no STORED AS
        f"CREATE EXTERNAL TABLE health.x (a INT) STORED AS ORC LOCATION '{loc}'": "0A000",
        f"CREATE EXTERNAL TABLE health.x (a MAP<STRING, INT>) STORED AS PARQUET LOCATION '{loc}'": "42601",
        f"CREATE EXTERNAL TABLE health.x (a INT, a STRING) STORED AS PARQUET LOCATION '{loc}'": "22023",
        f"CREATE EXTERNAL TABLE health.x (state STRING) PARTITIONED BY (state STRING) STORED AS PARQUET LOCATION '{loc}'": "22023",
        f"CREATE EXTERNAL TABLE health.prescriber_drug (a INT) STORED AS PARQUET LOCATION '{loc}'": "42P07",
        CREATE_RX.replace("IF NOT EXISTS ", "").format(location=loc): "42P07",
        "CREATE EXTERNAL TABLE health.x (a INT) STORED AS CSV LOCATION 'ftp://example.invalid/x'": "58030",
        f"CREATE EXTERNAL TABLE pg_catalog.x (a INT) STORED AS CSV LOCATION '{loc}'": "42501",  # reserved
        f"CREATE EXTERNAL TABLE system.x (a INT) STORED AS CSV LOCATION '{loc}'": "42501",
        # Neither external nor Iceberg (an Iceberg table's partitions are listed:
        # tests/test_statement_layer.py).
        "SHOW PARTITIONS system.audit_log": "0A000",
        "MSCK REPAIR TABLE health.nothing_here": "42P01",
        "ALTER TABLE health.rx_ext ADD PARTITION (state='CA')": "22023",  # incomplete spec
    }
    for sql, state in cases.items():
        assert error(s, sql).sqlstate == state, sql
    assert "x" not in [r[0] for r in q(s, "SHOW TABLES IN health")]


# --------------------------------------------------------------------------------------------
# Catalog views: SHOW TABLES, information_schema, DESCRIBE FORMATTED, SHOW CREATE TABLE
# --------------------------------------------------------------------------------------------

def test_listed_and_described_like_other_tables(env, rx_table):
    s = env.server
    tables = [r[0] for r in q(s, "SHOW TABLES IN health")]
    assert "rx_ext" in tables and "prescriber_drug" in tables  # beside the Iceberg tables
    assert q(s, "SELECT table_type FROM information_schema.tables "
                "WHERE table_schema = 'health' AND table_name = 'rx_ext'") == [("BASE TABLE",)]
    cols = q(s, "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'health' AND table_name = 'rx_ext' ORDER BY ordinal_position")
    assert [c[0] for c in cols] == ["npi", "drug_name", "trx_cnt", "total_cost", "delivery_date", "state"]
    rows = q(s, f"DESCRIBE FORMATTED {rx_table}")
    names = [r[0] for r in rows]
    part = names.index("# Partition Information")
    assert rows[part + 2:part + 4] == [("delivery_date", "date", ""), ("state", "string", "")]
    detail = {r[0]: r[1] for r in rows[names.index("# Detailed Table Information"):]}
    assert detail["Table Type"] == "EXTERNAL_TABLE"
    assert detail["Location"] == f"file://{env.parquet}/"
    assert detail["Format"] == "parquet"
    assert rows[0] == ("npi", "bigint", None) or rows[0][:2] == ("npi", "bigint")
    ddl = scalar(s, f"SHOW CREATE TABLE {rx_table}")
    assert "CREATE EXTERNAL TABLE `health`.`rx_ext`" in ddl
    assert "PARTITIONED BY (\n  `delivery_date` date,\n  `state` string)" in ddl
    assert f"LOCATION 'file://{env.parquet}/'" in ddl and "STORED AS PARQUET" in ddl
    # SHOW CREATE TABLE's text creates the same table again.
    q(s, ddl.replace("`rx_ext`", "`rx_ext_copy`"))
    assert q(s, "DESCRIBE health.rx_ext_copy") == q(s, f"DESCRIBE {rx_table}")
    assert len(q(s, "MSCK REPAIR TABLE health.rx_ext_copy")) == 6
    assert scalar(s, "SELECT count(*) FROM health.rx_ext_copy") == total_rows()
    q(s, "DROP TABLE health.rx_ext_copy")


def test_psql_runs_the_ddl_and_describes_the_table(env, tmp_path):
    s = env.server
    exe = shutil.which("psql")
    assert exe, "psql is not installed (postgresql-client); scripts/test installs it"

    def psql(*args):
        p = subprocess.run([exe, "-h", s.host, "-p", str(s.port), "-U", TEST_USER, "-d", "rxgate", "-X", "-At",
                            *args], env=s.pg_env(), capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        return p.stdout

    script = tmp_path / "ddl.sql"
    script.write_text(f"""CREATE EXTERNAL TABLE health.psql_ext (npi BIGINT, drug_name STRING, trx_cnt INT,
  total_cost DOUBLE) PARTITIONED BY (delivery_date DATE, state STRING) STORED AS PARQUET LOCATION '{env.parquet}';
MSCK REPAIR TABLE health.psql_ext;
ALTER TABLE health.psql_ext DROP PARTITION (delivery_date='{DATES[1]}');
SELECT count(*) FROM health.psql_ext;
""")
    out = psql("-v", "ON_ERROR_STOP=1", "-f", str(script)).splitlines()
    assert out[-1] == str(sum(rows_of(DATES[0], st) for st in STATES))
    assert sum(1 for line in out if line.startswith("added|")) == 6
    # psql's own catalog queries see it like any table.
    described = psql("-c", r"\d health.psql_ext")
    assert "delivery_date" in described and "trx_cnt" in described
    q(s, "DROP TABLE health.psql_ext")


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

def test_only_admins_change_external_tables(env, rx_table):
    s = env.server
    for sql in [CREATE_RX.replace("health.rx_ext", "health.mine").format(location=env.parquet),
                f"MSCK REPAIR TABLE {rx_table}",
                f"ALTER TABLE {rx_table} ADD PARTITION (delivery_date='2025-01-01', state='CA')",
                f"ALTER TABLE {rx_table} DROP PARTITION (state='CA')",
                f"DROP TABLE {rx_table}"]:
        assert error(s, sql, user=ANALYST).sqlstate == "42501", sql
    assert "mine" not in [r[0] for r in q(s, "SHOW TABLES IN health")]
    # Every statement is audited, refused or not.
    time.sleep(0.3)
    audit = [json.loads(l) for l in (env.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    ddl = [(r["user"], r["outcome"], r["error_code"]) for r in audit
           if r["kind"] == "statement" and r["statement"].startswith("CREATE EXTERNAL TABLE")]
    assert (TEST_USER, "ok", None) in ddl and (ANALYST, "error", "PermissionDenied") in ddl
    assert any(r["user"] == ANALYST and r["statement"].startswith("MSCK") and r["outcome"] == "error" for r in audit)
    # The analyst reads it like the Iceberg tables of health: granted, with the health masks
    # (npi is pseudonymised, never the real value).
    q(s, f"MSCK REPAIR TABLE {rx_table}")
    assert scalar(s, f"SELECT count(*) FROM {rx_table}", user=ANALYST) == total_rows()
    real = {r[0] for r in q(s, f"SELECT npi FROM {rx_table}")}
    seen = {r[0] for r in q(s, f"SELECT npi FROM {rx_table}", user=ANALYST)}
    assert not (real & seen)
    assert [r[0] for r in q(s, f"SHOW PARTITIONS {rx_table}", user=ANALYST)][0].startswith("delivery_date=")


def test_row_filters_apply_to_external_tables_and_prune(env, rx_table):
    s = env.server
    q(s, f"MSCK REPAIR TABLE {rx_table}")
    with open(env.policy, "a") as f:
        f.write('\n[[row_filter]]\nroles = ["state_auditor"]\nschema = "health"\ntable = "rx_ext"\n'
                'filter = "state = attribute(\'state\')"\n')
    time.sleep(1.5)  # the server checks the file at most once a second
    assert q(s, f"SELECT state, count(*) FROM {rx_table} GROUP BY 1", user=AUDITOR) == \
        [("CA", sum(rows_of(d, "CA") for d in DATES))]
    assert scalar(s, f"SELECT count(*) FROM {rx_table} WHERE state = 'NY'", user=AUDITOR) == 0
    # The row filter is on a partition column: it reaches the auditor's scan as a filter the
    # table evaluates over its partitions (her EXPLAIN shows the logical plan only; EXPLAIN
    # ANALYZE would count other states' rows, so she may not run it: issue 20).
    plan = "\n".join(r[1] for r in q(s, f"EXPLAIN SELECT sum(trx_cnt) FROM {rx_table}", user=AUDITOR))
    assert re.search(r"TableScan: .*rx_ext.*filters=\[.*state = Utf8(View)?\(\"CA\"\)", plan), plan
    assert "physical_plan" not in plan and "state=" not in plan, plan
    assert error(s, f"EXPLAIN ANALYZE SELECT sum(trx_cnt) FROM {rx_table}", user=AUDITOR).sqlstate == "42501"
    # The same predicate, written out by the admin, scans CA's files only.
    plan = "\n".join(r[1] for r in q(s, f"EXPLAIN ANALYZE SELECT sum(trx_cnt) FROM {rx_table} WHERE state = 'CA'"))
    listed = re.findall(r"state=[A-Z]+", plan)
    assert listed and set(listed) == {"state=CA"}, plan


def test_an_ungranted_user_does_not_see_external_tables(env, rx_table):
    s = env.server
    for sql in [f"SELECT count(*) FROM {rx_table}", f"SHOW PARTITIONS {rx_table}", f"DESCRIBE FORMATTED {rx_table}",
                "SELECT * FROM staging.plain_ext"]:
        assert error(s, sql, user=PUBLIC).sqlstate == "42P01", sql
    assert "rx_ext" not in [r[0] for r in q(s, "SHOW TABLES IN health", user=PUBLIC)]
    assert q(s, "SELECT table_name FROM information_schema.tables WHERE table_name IN "
                "('rx_ext', 'cities_ext', 'plain_ext')", user=PUBLIC) == []
    # Asking to DROP a table one cannot see gives nothing away either.
    assert error(s, f"DROP TABLE {rx_table}", user=PUBLIC).sqlstate != "42501"


# --------------------------------------------------------------------------------------------
# Flight SQL, restart, DROP
# --------------------------------------------------------------------------------------------

def test_flight_sql_reads_external_tables(env, rx_table):
    s = env.server
    q(s, f"MSCK REPAIR TABLE {rx_table}")
    with flight_sql.connect(s.flight_uri(), db_kwargs={"username": TEST_USER, "password": TEST_PASSWORD},
                            autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT state, count(*) AS n FROM {rx_table} GROUP BY state ORDER BY state")
        table = cur.fetch_arrow_table()
        assert table.column("state").to_pylist() == STATES
        assert table.column("n").to_pylist() == [sum(rows_of(d, st) for d in DATES) for st in STATES]
        cur.execute(f"SHOW PARTITIONS {rx_table}")
        assert len(cur.fetchall()) >= 6
        # DDL over Flight SQL too (an update without rows).
        cur.execute(f"ALTER TABLE {rx_table} DROP PARTITION (state='TX')")
        cur.execute(f"SELECT count(*) AS n FROM {rx_table}")
        assert cur.fetchall() == [(total_rows() - sum(rows_of(d, 'TX') for d in DATES),)]
        cur.execute(f"MSCK REPAIR TABLE {rx_table}")
        assert sorted(r[1] for r in cur.fetchall()) == [f"delivery_date={d}/state=TX" for d in DATES]


def test_definitions_survive_a_restart_and_drop_keeps_files(env, rx_table):
    s = env.server
    q(s, f"MSCK REPAIR TABLE {rx_table}")
    before = q(s, f"SHOW PARTITIONS {rx_table}")
    count = scalar(s, f"SELECT count(*) FROM {rx_table}")
    s = env.restart()
    assert q(s, f"SHOW PARTITIONS {rx_table}") == before
    assert scalar(s, f"SELECT count(*) FROM {rx_table}") == count == total_rows()
    assert scalar(s, "SELECT count(*) FROM staging.plain_ext") == 3
    q(s, "DROP TABLE staging.ticked_ext")
    assert error(s, "SELECT * FROM staging.ticked_ext").sqlstate == "42P01"
    assert (env.root / "files" / "plain" / "a.txt").is_file()
    q(s, "DROP TABLE IF EXISTS staging.ticked_ext")
    # A DROP of a name that is neither an external nor an Iceberg table is 42P01.
    assert error(s, "DROP TABLE staging.no_such_table").sqlstate == "42P01"
    s = env.restart()
    assert error(s, "SELECT * FROM staging.ticked_ext").sqlstate == "42P01"
    assert scalar(s, "SELECT count(*) FROM staging.plain_ext") == 3


# --------------------------------------------------------------------------------------------
# A PostgreSQL catalog shared by two servers
# --------------------------------------------------------------------------------------------

def test_two_servers_share_external_tables_on_postgres(rxgate_bin, postgres, tmp_path):
    db = postgres.create_database("rxext")
    files = tmp_path / "files" / "rx"
    write_parquet_tree(files)
    env = {"RXGATE_CATALOG_URI": postgres.uri(db), "RXGATE_WAREHOUSE": str(tmp_path / "warehouse")}
    Rxgate(rxgate_bin, tmp_path / "a").run("catalog", "apply", "catalog/", env=env)
    config = tmp_path / "rxgate.toml"
    config.write_text(f'[external]\nallowed_locations = ["{tmp_path / "files"}"]\n')
    a = start_server(rxgate_bin, tmp_path / "a", tmp_path / "a.log", env=env, config=config)
    env_b = dict(env, RXGATE_USERS_FILE=str(a.users_file))
    b = start_server(rxgate_bin, tmp_path / "b", tmp_path / "b.log", env=env_b, config=config)
    try:
        q(a, CREATE_RX.format(location=files))
        q(a, "ALTER TABLE health.rx_ext ADD PARTITION (delivery_date='2024-01-01', state='CA')")
        # B's next session sees the table and its partition; a partition B adds is seen by A's
        # next query.
        assert [r[0] for r in q(b, "SHOW PARTITIONS health.rx_ext")] == ["delivery_date=2024-01-01/state=CA"]
        assert scalar(b, "SELECT count(*) FROM health.rx_ext") == rows_of("2024-01-01", "CA")
        with connect(a) as conn:
            assert conn.execute("SELECT count(*) FROM health.rx_ext").fetchone()[0] == rows_of("2024-01-01", "CA")
            assert len(q(b, "MSCK REPAIR TABLE health.rx_ext")) == 5
            assert conn.execute("SELECT count(*) FROM health.rx_ext").fetchone()[0] == total_rows()
        with psycopg.connect(postgres.dsn(db)) as pg:
            assert pg.execute("SELECT count(*) FROM rxgate_external_partitions").fetchone()[0] == 6
        b = stop_server(b) or start_server(rxgate_bin, tmp_path / "b", tmp_path / "b2.log", env=env_b, config=config)
        assert scalar(b, "SELECT count(*) FROM health.rx_ext") == total_rows()
    finally:
        stop_server(a)
        stop_server(b)
