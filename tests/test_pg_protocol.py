"""PostgreSQL protocol features beyond plain queries, with real clients: server-side cursors
(DECLARE/FETCH/CLOSE, psycopg named cursors), COPY TO STDOUT (psql \\copy, psycopg copy),
portal row limits (asyncpg cursors), text and binary formats of every type the healthcare
tables use, CancelRequest during a long query, a malformed message, and a slow reader of a
large result (backpressure: server memory stays flat)."""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import shutil
import struct
import subprocess
import threading
import time
from decimal import Decimal

import asyncpg
import psycopg
import pytest

from conftest import TEST_PASSWORD, TEST_USER
from pgraw import PgRaw, error_fields

#: Runs for hours unless stopped.
SLOW = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3"


def total_rows(server) -> int:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0]


def psql(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("psql")
    assert exe, "psql is not installed (postgresql-client)"
    p = subprocess.run([exe, "-h", server.host, "-p", str(server.port), "-U", TEST_USER, "-d", "rxgate",
                        "-X", "-v", "ON_ERROR_STOP=1", *args], env=server.pg_env(),
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"psql {args} failed: {p.stderr}\n{server.log_text()[-3000:]}"
    return p


# --------------------------------------------------------------------------- cursors

def test_declare_fetch_close_in_a_transaction(server):
    total = total_rows(server)
    with psycopg.connect(server.dsn()) as conn:  # not autocommit: BEGIN is implicit
        cur = conn.cursor()
        cur.execute("DECLARE c NO SCROLL CURSOR FOR "
                    "SELECT npi, trx_cnt FROM health.prescriber_drug ORDER BY npi, drug_name")
        assert cur.statusmessage == "DECLARE CURSOR"
        cur.execute("FETCH 7 FROM c")
        first = cur.fetchall()
        assert len(first) == 7 and cur.statusmessage == "FETCH 7"
        cur.execute("FETCH NEXT FROM c")
        assert len(cur.fetchall()) == 1
        cur.execute("FETCH FORWARD ALL FROM c")
        rest = cur.fetchall()
        assert len(rest) == total - 8 and cur.statusmessage == f"FETCH {total - 8}"
        cur.execute("FETCH 5 FROM c")
        assert cur.fetchall() == [] and cur.statusmessage == "FETCH 0"
        cur.execute("CLOSE c")
        assert cur.statusmessage == "CLOSE CURSOR"
        with pytest.raises(psycopg.Error) as err:
            cur.execute("FETCH 1 FROM c")
        assert err.value.sqlstate == "34000"
        conn.rollback()
        # The rows come in the query's order, across FETCH boundaries.
        ordered = conn.execute("SELECT npi, trx_cnt FROM health.prescriber_drug "
                               "ORDER BY npi, drug_name LIMIT 8").fetchall()
        assert first == ordered[:7]


def test_cursor_rules(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("DECLARE c CURSOR FOR SELECT 1")
        assert err.value.sqlstate == "25P01"  # no HOLD outside a transaction block
        with pytest.raises(psycopg.Error) as err:
            conn.execute("DECLARE s SCROLL CURSOR WITH HOLD FOR SELECT 1")
        assert err.value.sqlstate == "0A000"
        # WITH HOLD survives the transaction (Tableau declares its cursors like this).
        conn.execute("BEGIN")
        conn.execute('DECLARE "SQL_CUR1" CURSOR WITH HOLD FOR '
                     "SELECT presc_state, count(*) AS n FROM health.prescriber_drug GROUP BY 1 ORDER BY 1")
        conn.execute("DECLARE plain CURSOR FOR SELECT 1")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("DECLARE plain CURSOR FOR SELECT 2")
        assert err.value.sqlstate == "42P03"
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        conn.execute("COMMIT")
        got = conn.execute('FETCH 1000 IN "SQL_CUR1"').fetchall()
        want = conn.execute("SELECT presc_state, count(*) FROM health.prescriber_drug "
                            "GROUP BY 1 ORDER BY 1").fetchall()
        assert got == want and len(got) > 10
        with pytest.raises(psycopg.Error) as err:  # closed at the end of its transaction
            conn.execute("FETCH 1 FROM plain")
        assert err.value.sqlstate == "34000"
        conn.execute('CLOSE "SQL_CUR1"')
        conn.execute("CLOSE ALL")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_named_cursors_stream(server):
    total = total_rows(server)
    with psycopg.connect(server.dsn()) as conn:
        with conn.cursor(name="rows", withhold=False) as cur:
            cur.itersize = 1000
            cur.execute("SELECT npi, drug_name, trx_cnt FROM health.prescriber_drug")
            n = sum(1 for _ in cur)
        assert n == total
        with conn.cursor(name="few") as cur:
            cur.execute("SELECT npi FROM health.prescriber_drug WHERE presc_state = %s", ("CA",))
            chunk = cur.fetchmany(10)
            assert len(chunk) == 10 and all(len(r[0]) == 10 for r in chunk)


def test_asyncpg_cursor_uses_portal_row_limits(server):
    """asyncpg's cursor sends Execute with a row limit and continues the suspended portal."""
    total = total_rows(server)

    async def main():
        conn = await asyncpg.connect(host=server.host, port=server.port, user=TEST_USER,
                                     password=TEST_PASSWORD, database="rxgate")
        try:
            async with conn.transaction():
                n = 0
                async for _ in conn.cursor("SELECT npi, trx_cnt FROM health.prescriber_drug", prefetch=250):
                    n += 1
                cur = await conn.cursor("SELECT npi FROM health.prescriber_drug ORDER BY npi")
                first = await cur.fetch(3)
                second = await cur.fetch(3)
            ordered = await conn.fetch("SELECT npi FROM health.prescriber_drug ORDER BY npi LIMIT 6")
            return n, [r[0] for r in first + second], [r[0] for r in ordered]
        finally:
            await conn.close()

    n, fetched, ordered = asyncio.run(main())
    assert n == total
    assert fetched == ordered


# --------------------------------------------------------------------------- COPY

def test_psql_copy_to_csv_and_text(server, tmp_path):
    out = tmp_path / "ca.csv"
    psql(server, "-c", f"\\copy (SELECT npi, presc_full_name, trx_cnt, total_drug_cost FROM health.prescriber_drug "
                       f"WHERE presc_state = 'CA' ORDER BY npi, drug_name) TO '{out}' WITH (FORMAT csv, HEADER)")
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["npi", "presc_full_name", "trx_cnt", "total_drug_cost"]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        want = conn.execute("SELECT npi, presc_full_name, trx_cnt, total_drug_cost FROM health.prescriber_drug "
                            "WHERE presc_state = 'CA' ORDER BY npi, drug_name").fetchall()
    assert len(rows) - 1 == len(want) > 0
    for got, w in zip(rows[1:], want):
        assert got[0] == w[0] and got[1] == (w[1] or "")
        assert got[2] == ("" if w[2] is None else str(w[2]))
        assert (got[3] == "" and w[3] is None) or float(got[3]) == pytest.approx(w[3])
    # Text format: tab-separated, \N for NULL.
    text = tmp_path / "n.txt"
    psql(server, "-c", f"\\copy (SELECT 1 AS a, NULL::text AS b, 'x\ty' AS c) TO '{text}'")
    assert text.read_text() == "1\t\\N\tx\\ty\n"
    # COPY to a server-side file is refused, and the connection goes on.
    p = psql(server, "-c", "COPY (SELECT 1) TO '/tmp/rxgate-nope'", check=False)
    assert p.returncode != 0 and "42501" in p.stderr + p.stdout or "not allowed" in p.stderr


def test_psycopg_copy_formats(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        cur = conn.cursor()
        want = cur.execute("SELECT presc_state, count(*) FROM health.prescriber_drug "
                           "GROUP BY 1 ORDER BY 1").fetchall()
        buf = io.BytesIO()
        with cur.copy("COPY (SELECT presc_state, count(*) FROM health.prescriber_drug GROUP BY 1 ORDER BY 1) "
                      "TO STDOUT") as copy:
            for block in copy:
                buf.write(block)
        lines = buf.getvalue().decode().splitlines()
        assert [tuple(l.split("\t")) for l in lines] == [(s, str(n)) for s, n in want]
        assert cur.rowcount == len(want)
        # Binary COPY, parsed by psycopg with the declared types.
        with cur.copy("COPY (SELECT presc_state, count(*) FROM health.prescriber_drug GROUP BY 1 ORDER BY 1) "
                      "TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["text", "int8"])
            got = list(copy.rows())
        assert got == want
        # COPY of a whole table by name.
        with cur.copy("COPY health.city_report TO STDOUT (FORMAT csv)") as copy:
            n = sum(bytes(block).count(b"\n") for block in copy)
        assert n == cur.execute("SELECT count(*) FROM health.city_report").fetchone()[0]


# --------------------------------------------------------------------------- formats

TYPES_SQL = ("SELECT 42::int AS i4, 9000000000::bigint AS i8, 2.5::float8 AS f8, "
             "CAST(12.34 AS numeric(10,2)) AS num, 'Zoë'::text AS t, true AS b, "
             "DATE '2024-01-31' AS d, TIMESTAMP '2024-01-31 12:34:56.789' AS ts, "
             "ARRAY[1, 2, 3] AS ia, ARRAY['a', 'b'] AS ta, CAST(NULL AS bigint) AS n")
TYPES_WANT = (42, 9000000000, 2.5, Decimal("12.34"), "Zoë", True, dt.date(2024, 1, 31),
              dt.datetime(2024, 1, 31, 12, 34, 56, 789000), [1, 2, 3], ["a", "b"], None)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_every_type_in_text_and_binary(server, binary):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(TYPES_SQL)
        assert cur.fetchone() == TYPES_WANT
        assert [d.type_code for d in cur.description][:8] == [23, 20, 701, 1700, 25, 16, 1082, 1114]
        # Table columns in binary too, compared with the text encoding.
        q = ("SELECT npi, bene_count, trx_cnt, total_30_day_fill_count, total_drug_cost, years_of_exp, "
             "delivery_date FROM health.prescriber_drug ORDER BY npi, drug_name LIMIT 200")
        assert conn.cursor(binary=binary).execute(q).fetchall() == conn.cursor().execute(q).fetchall()


def test_asyncpg_binary_types(server):
    async def main():
        conn = await asyncpg.connect(host=server.host, port=server.port, user=TEST_USER,
                                     password=TEST_PASSWORD, database="rxgate")
        try:
            row = await conn.fetchrow(TYPES_SQL)
            small = await conn.fetch("SELECT ARRAY[1,2]")
            # A bigint[] and an int[] column with a NULL element, and an empty array.
            more = await conn.fetchrow("SELECT ARRAY[CAST(9000000000 AS bigint), 1] AS la, "
                                       "ARRAY[1, NULL, 3] AS na, CAST(ARRAY[] AS int[]) AS ea")
            return row, small, more
        finally:
            await conn.close()

    row, small, more = asyncio.run(main())
    assert tuple(row) == TYPES_WANT
    assert [tuple(r) for r in small] == [([1, 2],)]
    assert tuple(more) == ([9000000000, 1], [1, None, 3], [])


# --------------------------------------------------------------------------- cancel

def test_cancel_request_stops_a_long_query(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        timer = threading.Timer(1.5, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as err:
            conn.execute(SLOW).fetchall()
        elapsed = time.monotonic() - started
        timer.join()
        assert err.value.sqlstate == "57014"
        assert 1.0 < elapsed < 20, elapsed
        # The connection goes on, and a later cancel with nothing running changes nothing.
        assert conn.execute("SELECT 7").fetchone() == (7,)
        conn.cancel()
        assert conn.execute("SELECT 8").fetchone() == (8,)
    assert "cancel request" in server.log_text()
    assert server.alive()


def test_cancel_while_rows_stream(server):
    """A cancel reaches a query that is already sending rows (psql-style simple query)."""
    raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
    try:
        assert raw.backend_key and len(raw.backend_key) >= 8
        raw.query("SELECT x FROM generate_series(1, 10000000000) AS t(x)")
        tag, _ = raw.recv()
        assert tag == b"T"
        for _ in range(100):
            assert raw.recv()[0] == b"D"
        raw.cancel()
        error = raw.error_until_ready()
        assert error and error["C"] == "57014", error
        raw.query("SELECT 1")
        assert [t for t, _ in raw.until(b"Z")] == [b"T", b"D", b"C", b"Z"]
    finally:
        raw.close()


# --------------------------------------------------------------------------- robustness

def test_malformed_message_closes_only_that_connection(server):
    other = psycopg.connect(server.dsn(), autocommit=True)
    try:
        raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
        # A Bind whose body lies about its parameter count.
        raw.send(b"B", b"\0\0" + struct.pack("!h", 1) + struct.pack("!h", 0) + struct.pack("!h", 5))
        raw.send(b"S", b"")
        got = []
        try:
            while True:
                got.append(raw.recv())
        except (ConnectionError, OSError):
            pass
        raw.sock.close()
        # As PostgreSQL: FATAL 08P01 (protocol violation), then the connection closes.
        assert [t for t, _ in got] == [b"E"], got
        fields = error_fields(got[0][1])
        assert (fields["S"], fields["C"]) == ("FATAL", "08P01"), fields
        assert "invalid frontend message" in fields["M"], fields
        # Garbage before any startup message: closed as well.
        s = __import__("socket").create_connection((server.host, server.port), timeout=10)
        s.sendall(b"\x00\x00\x00\x02garbage")
        s.settimeout(10)
        while s.recv(4096):
            pass
        s.close()
        assert other.execute("SELECT 5").fetchone() == (5,)
        with psycopg.connect(server.dsn(), autocommit=True) as fresh:
            assert fresh.execute("SELECT 6").fetchone() == (6,)
    finally:
        other.close()
    assert server.alive()


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("protocol", ["simple", "extended-binary"])
def test_slow_reader_keeps_server_memory_flat(server, protocol):
    """About 700 MB of rows for a client that stops reading: the server must wait for the
    socket (backpressure), not buffer the result. Also through the extended protocol with an
    unlimited Execute (what JDBC and psycopg's binary cursors send), which pgwire's default
    handling would gather whole before sending the first row."""
    pid = server.proc.pid
    raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
    sql = "SELECT p.*, t.x FROM health.prescriber_drug p CROSS JOIN generate_series(1, 200) AS t(x)"
    try:
        if protocol == "simple":
            raw.query(sql)
            preamble = (b"T",)
        else:
            raw.execute(sql, binary=True)
            preamble = (b"1", b"2", b"T")
        before = rss_mib(pid)
        received = 0
        while received < 2_000_000:
            tag, body = raw.recv()
            assert tag in preamble + (b"D",), (tag, body[:200])
            received += len(body) + 5
        samples = []
        for _ in range(8):  # the client stalls; the server may only fill socket buffers
            time.sleep(0.5)
            samples.append(rss_mib(pid))
        growth = max(samples) - before
        assert growth < 150, f"server RSS grew {growth:.0f} MiB while the client stalled: {samples}"
        # Then read on: the stream resumes where it stopped.
        for _ in range(20000):
            assert raw.recv()[0] == b"D"
    finally:
        raw.sock.close()
    time.sleep(0.5)
    assert server.alive()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unlimited_execute_streams_rows_as_computed(server):
    """An endless query through Parse/Bind/Execute(0): the first rows arrive at once (they
    are not gathered first), a cancel ends it with 57014, and the connection goes on with an
    extended statement and a row-limited one."""
    raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
    try:
        raw.execute("SELECT x FROM generate_series(1, 10000000000) AS t(x)")
        assert [raw.recv()[0] for _ in range(3)] == [b"1", b"2", b"T"]
        first = [raw.recv() for _ in range(1000)]
        assert all(t == b"D" for t, _ in first)
        assert first[0][1] == struct.pack("!hi", 1, 1) + b"1"
        raw.cancel()
        error = raw.error_until_ready()
        assert error and error["C"] == "57014", error
        raw.execute("SELECT npi FROM health.prescriber_drug ORDER BY npi LIMIT 3")
        msgs = raw.until(b"Z")
        assert [t for t, _ in msgs] == [b"1", b"2", b"T", b"D", b"D", b"D", b"C", b"Z"]
        assert msgs[-2][1] == b"SELECT 3\0"
        raw.execute("SELECT npi FROM health.prescriber_drug ORDER BY npi LIMIT 3", max_rows=2)
        msgs = raw.until(b"Z")
        assert [t for t, _ in msgs] == [b"1", b"2", b"T", b"D", b"D", b"s", b"Z"]
        # A suspended portal, then the rest of it without a limit (streamed), in one Sync.
        raw.parse_bind("SELECT DISTINCT npi FROM health.prescriber_drug ORDER BY npi LIMIT 5")
        raw.send(b"D", b"P\0")
        raw.execute_portal(2)
        raw.execute_portal(0)
        raw.sync()
        msgs = raw.until(b"Z")
        tags = [t for t, _ in msgs]
        assert tags == [b"1", b"2", b"T", b"D", b"D", b"s", b"D", b"D", b"D", b"C", b"Z"], tags
        assert msgs[-2][1] == b"SELECT 3\0"
        npis = [m[1] for m in msgs if m[0] == b"D"]
        assert len(set(npis)) == 5 and npis == sorted(npis)
        # The rest of an endless suspended portal streams too (it is not gathered first).
        raw.parse_bind("SELECT x FROM generate_series(1, 10000000000) AS t(x)")
        raw.execute_portal(10)
        raw.execute_portal(0)
        raw.sync()
        assert [raw.recv()[0] for _ in range(13)] == [b"1", b"2"] + [b"D"] * 10 + [b"s"]
        rest = [raw.recv() for _ in range(1000)]
        assert all(t == b"D" for t, _ in rest) and rest[0][1] == struct.pack("!hi", 1, 2) + b"11"
        raw.cancel()
        error = raw.error_until_ready()
        assert error and error["C"] == "57014", error
    finally:
        raw.close()
    assert server.alive()


def test_psql_literals_with_quotes(server):
    """The simple protocol splits statements and must keep escaped quotes (O'Brien)."""
    p = psql(server, "-Atc", "SELECT 'O''Brien' AS n; SELECT \"n\" FROM (SELECT 1 AS \"n\") AS \"t\"\"x\"")
    assert p.stdout.split() == ["O'Brien", "1"]
