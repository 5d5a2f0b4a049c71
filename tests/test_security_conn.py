"""Connection-level security (issue 20, faults 5, 6, 7 and the pgwire part of 9):

- a client that goes away mid-statement (pgwire socket closed, Flight DoGet dropped) has
  its statement cancelled: the server's CPU goes idle within about a second;
- authentication is bounded: silent sockets are closed after the authentication timeout,
  they have their own small limit (the oldest is closed first) and never count toward
  max_connections, admin roles have reserved slots, users have a default connection cap;
- failed logins are throttled per user and per address (growing delays, then a temporary
  lock-out), under both protocols, audited and shown to admins in system.login_throttle;
  a flood of made-up CancelRequests is cheap;
- malformed Bind messages and a cleartext password sent instead of SCRAM get 08P01, and
  never reach (and panic) pgwire's decoder.
"""
from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from pathlib import Path

import psycopg
import pyarrow.flight as flight
import pytest

import flightsql_proto as proto
from conftest import TEST_PASSWORD, TEST_USER, add_user
from pgraw import PgRaw, error_fields

#: A statement that keeps one core busy for minutes and sends nothing until it ends.
BUSY = "SELECT sum(x % 7) FROM generate_series(1, 50000000000) AS t(x)"

CLK_TCK = os.sysconf("SC_CLK_TCK")


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_over(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect(server, **kw) -> psycopg.Connection:
    return psycopg.connect(server.dsn(**kw), autocommit=True)


def login_failure(server, **kw) -> tuple[str, float]:
    """(the error text, seconds) of a login that must fail."""
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as err:
        connect(server, **kw).close()
    return str(err.value), time.monotonic() - started


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


def startup_packet(user: str) -> bytes:
    params = f"user\0{user}\0database\0rxgate\0\0".encode()
    return struct.pack("!ii", len(params) + 8, 196608) + params


def recv_message(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while len(data) < 5:
        chunk = sock.recv(5 - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    length = struct.unpack("!i", data[1:5])[0]
    body = b""
    while len(body) < length - 4:
        chunk = sock.recv(length - 4 - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return data[:1], body


# --------------------------------------------------------------------------- fault 6

def test_silent_sockets_time_out_and_cannot_lock_out_the_admin(serve, lakehouse, tmp_path):
    config = write_config(tmp_path / "silent.toml",
                          "[auth]\nauthentication_timeout_secs = 1\n"
                          "[pgwire]\nmax_connections = 5\nmax_authenticating = 8\n")
    server = serve(lakehouse.rx.data_dir, config=config)
    silent = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(25)]
    # One more that starts SCRAM and then says nothing.
    half = socket.create_connection((server.host, server.port), timeout=5)
    half.sendall(startup_packet(TEST_USER))
    assert recv_message(half)[0] == b"R"
    opened = time.monotonic()
    try:
        # With 26 silent connections open the admin logs in at once, several times.
        for _ in range(3):
            started = time.monotonic()
            with connect(server) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert time.monotonic() - started < 1.0
        # Every one of them is closed by the authentication timeout (1 s), or earlier when
        # a newer connection needed its authenticating slot.
        assert all(closed_within(s, 3.0) for s in silent + [half])
        assert time.monotonic() - opened < 3.5
    finally:
        for s in silent + [half]:
            s.close()
    # A connection that authenticates in time is not touched by the timeout.
    with connect(server) as conn:
        time.sleep(1.5)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert server.alive()


def test_reserved_admin_slots_and_the_default_per_user_cap(serve, lakehouse, tmp_path, rxgate_bin):
    config = write_config(tmp_path / "slots.toml",
                          "[auth]\nreserved_admin_connections = 2\n[pgwire]\nmax_connections = 56\n")
    server = serve(lakehouse.rx.data_dir, config=config)
    add_user(rxgate_bin, server.users_file, "hog", "hog-pass", "--role", "analyst")
    add_user(rxgate_bin, server.users_file, "other", "other-pass", "--role", "analyst")
    held = []
    try:
        # One user cannot take every slot: 50 sessions by default, then 53300.
        held += [connect(server, user="hog", password="hog-pass") for _ in range(50)]
        msg, _ = login_failure(server, user="hog", password="hog-pass")
        assert 'too many connections for user "hog"' in msg, msg
        # Other users fill the non-reserved slots (56 - 2) ...
        held += [connect(server, user="other", password="other-pass") for _ in range(4)]
        msg, _ = login_failure(server, user="other", password="other-pass")
        assert "reserved for admin roles" in msg, msg
        # ... and the admin still gets in, up to max_connections.
        admins = [connect(server), connect(server)]
        held += admins
        assert admins[0].execute("SELECT 3").fetchone() == (3,)
        msg, _ = login_failure(server)
        assert "too many connections" in msg, msg
    finally:
        for c in held:
            c.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(server, user="other", password="other-pass") as c:
                assert c.execute("SELECT 4").fetchone() == (4,)
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "slots were not released"
            time.sleep(0.2)


def test_53300_sqlstate_for_reserved_slots(serve, lakehouse, tmp_path, rxgate_bin):
    config = write_config(tmp_path / "one.toml",
                          "[auth]\nreserved_admin_connections = 1\n[pgwire]\nmax_connections = 2\n")
    server = serve(lakehouse.rx.data_dir, config=config)
    add_user(rxgate_bin, server.users_file, "u1", "u1-pass", "--role", "analyst")
    first = connect(server, user="u1", password="u1-pass")
    try:
        # SQLSTATE 53300 on the wire, as PostgreSQL.
        with pytest.raises(AssertionError) as err:
            PgRaw(server.host, server.port, "u1", "u1-pass")
        assert "C53300" in str(err.value) and "reserved for admin roles" in str(err.value), err.value
        raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
        raw.query("SELECT 1")
        assert [t for t, _ in raw.until(b"Z")][-1] == b"Z"
        raw.close()
    finally:
        first.close()


# --------------------------------------------------------------------------- fault 9

def raw_bind(raw: PgRaw, body: bytes) -> list[tuple[bytes, bytes]]:
    """Parse + Bind, then Execute + Sync only if the server has not already answered the Bind
    with an error (it closes after a FATAL; writing more then would reset the connection and
    could discard the answer)."""
    raw.send(b"P", b"\0SELECT $1::text AS v\0" + struct.pack("!h", 0))
    raw.send(b"B", body)
    got = []
    raw.sock.settimeout(1.0)
    try:
        while not got or got[-1][0] != b"E":
            got.append(raw.recv())
        return got
    except socket.timeout:
        pass  # a good Bind: the rest of its answers wait for Sync
    except (ConnectionError, OSError):
        return got
    raw.sock.settimeout(30)
    try:
        raw.send(b"E", b"\0" + struct.pack("!i", 0))
        raw.send(b"S", b"")
    except OSError:
        return got
    try:
        while True:
            m = raw.recv()
            got.append(m)
            if m[0] == b"Z":
                break
    except (ConnectionError, OSError):
        pass
    return got


def test_malformed_bind_is_a_protocol_error_not_a_panic(serve, lakehouse):
    server = serve(lakehouse.rx.data_dir, env={"RUST_BACKTRACE": "1"})
    cases = {
        # Three parameters announced, one sent.
        "short": b"\0\0" + struct.pack("!hh", 0, 3) + struct.pack("!i", 1) + b"x",
        # A negative length other than -1 (PostgreSQL: protocol violation, never NULL).
        "negative": b"\0\0" + struct.pack("!hhih", 0, 1, -2, 0),
        # Fewer format codes than announced.
        "formats": b"\0\0" + struct.pack("!h", 4) + struct.pack("!h", 0),
    }
    for name, body in cases.items():
        raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
        got = raw_bind(raw, body)
        raw.sock.close()
        errors = [error_fields(b) for t, b in got if t == b"E"]
        assert errors, f"{name}: no error: {got}"
        assert errors[0]["C"] == "08P01", (name, errors)
        assert not any(t == b"D" for t, _ in got), f"{name}: the statement ran: {got}"
    # A well-formed Bind with NULL (-1) still works.
    raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
    got = raw_bind(raw, b"\0\0" + struct.pack("!hhih", 0, 1, -1, 0))
    raw.close()
    assert [t for t, _ in got if t in (b"D", b"E")] == [b"D"], got
    time.sleep(0.3)
    log = server.log_text()
    assert "panicked" not in log, log[-3000:]
    assert server.alive()


def test_cleartext_password_instead_of_scram_gets_08P01(serve, lakehouse):
    server = serve(lakehouse.rx.data_dir)
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(startup_packet(TEST_USER))
        tag, body = recv_message(s)
        assert tag == b"R" and struct.unpack("!i", body[:4])[0] == 10  # AuthenticationSASL
        password = TEST_PASSWORD.encode() + b"\0"
        s.sendall(b"p" + struct.pack("!i", len(password) + 4) + password)
        tag, body = recv_message(s)
        assert tag == b"E", (tag, body)
        fields = error_fields(body)
        assert (fields["S"], fields["C"]) == ("FATAL", "08P01"), fields
        assert closed_within(s, 5)
    assert "panicked" not in server.log_text()
    with connect(server) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --------------------------------------------------------------------------- fault 5

def wait_busy(pid: int, timeout: float = 10) -> None:
    """Until the server burns CPU (the statement runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cpu_over(pid, 0.5) > 0.3:
            return
    raise AssertionError("the statement never started")


def assert_idle_within_a_second(pid: int) -> None:
    started = time.monotonic()
    time.sleep(1.0)
    used = cpu_over(pid, 1.0)
    assert used < 0.25, f"server still used {used:.2f} s CPU in the second after the disconnect"
    assert time.monotonic() - started < 3


def test_pg_disconnect_cancels_the_running_statement(serve, lakehouse):
    server = serve(lakehouse.rx.data_dir)
    pid = server.proc.pid
    for protocol in ("simple", "extended"):
        raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
        if protocol == "simple":
            raw.query(BUSY)
        else:
            raw.execute(BUSY)
        wait_busy(pid)
        raw.sock.close()
        assert_idle_within_a_second(pid)
        # The server answers at once afterwards.
        started = time.monotonic()
        with connect(server) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - started < 1.0
    # Sessions with big sorts that drop their sockets: their CPU is given back too.
    for _ in range(1):
        socks = []
        for _ in range(4):
            raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
            raw.query("SELECT x, md5(CAST(x AS text)) AS h FROM generate_series(1, 3000000) AS t(x) "
                      "ORDER BY h DESC OFFSET 2999999")
            socks.append(raw)
        time.sleep(3)
        for raw in socks:
            raw.sock.close()
        assert_idle_within_a_second(pid)
    assert "client disconnected" in server.log_text()
    assert server.alive()


def test_flight_dropped_doget_stops_the_query(serve, lakehouse):
    server = serve(lakehouse.rx.data_dir)
    pid = server.proc.pid
    client = flight.FlightClient(server.flight_uri())
    header = client.authenticate_basic_token(TEST_USER, TEST_PASSWORD)
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(proto.statement_query(BUSY), options)
    assert len(info.endpoints) == 1
    # tonic pulls the stream as soon as the DoGet starts: the statement runs unread.
    reader = client.do_get(info.endpoints[0].ticket, options)
    wait_busy(pid)
    # The client goes away: its HTTP/2 connection closes, tonic drops the DoGet stream.
    reader.cancel()
    client.close()
    assert_idle_within_a_second(pid)
    assert server.alive()


# --------------------------------------------------------------------------- fault 7

THROTTLE = ("[auth]\nlogin_free_failures = 2\nlogin_delay_ms = 300\nlogin_max_delay_ms = 3000\n"
            "login_lockout_after = 5\nlogin_lockout_secs = 3\n")


def test_pg_logins_are_throttled_then_locked_out_then_expire(serve, lakehouse, tmp_path, rxgate_bin):
    server = serve(lakehouse.rx.data_dir, config=write_config(tmp_path / "t.toml", THROTTLE))
    add_user(rxgate_bin, server.users_file, "victim", "right-pass", "--role", "analyst")
    admin = connect(server)  # logged in before the attack: the address is locked out later
    try:
        times = []
        for _ in range(5):
            msg, took = login_failure(server, user="victim", password="wrong")
            assert "password authentication failed" in msg, msg
            times.append(took)
        # Two free failures, then delays that grow (0.3 s, 0.6 s, 1.2 s).
        assert times[0] < 0.3 and times[1] < 0.3, times
        assert times[2] >= 0.28 and times[3] >= times[2] + 0.2 and times[4] >= times[3] + 0.4, times
        # Locked out: even the right password is refused, at once, with 28000.
        msg, took = login_failure(server, user="victim", password="right-pass")
        assert "locked out" in msg and took < 0.5, msg
        raw = socket.create_connection((server.host, server.port), timeout=10)
        raw.sendall(startup_packet("victim"))
        assert recv_message(raw)[0] == b"R"
        client_first = b"n,,n=,r=abcdefghijklmnop"
        sasl = b"SCRAM-SHA-256\0" + struct.pack("!i", len(client_first)) + client_first
        raw.sendall(b"p" + struct.pack("!i", len(sasl) + 4) + sasl)
        tag, body = recv_message(raw)
        assert tag == b"R"
        server_first = dict(kv.split("=", 1) for kv in body[4:].decode().split(","))
        final = f"c=biws,r={server_first['r']},p={base64.b64encode(b'x' * 32).decode()}".encode()
        raw.sendall(b"p" + struct.pack("!i", len(final) + 4) + final)
        tag, body = recv_message(raw)
        raw.close()
        assert tag == b"E" and error_fields(body)["C"] == "28000", error_fields(body)
        # Admins see it; the audit trail has the delays and the lock-out.
        rows = admin.execute("SELECT scope, key, failures, locked_secs FROM system.login_throttle "
                             "ORDER BY scope, key").fetchall()
        assert ("user", "victim") in [(r[0], r[1]) for r in rows], rows
        victim = [r for r in rows if r[:2] == ("user", "victim")][0]
        assert victim[2] >= 5 and victim[3] >= 1, rows
        events = [r[0] for r in admin.execute(
            "SELECT error FROM system.audit_log WHERE kind = 'login' AND \"user\" = 'victim' "
            "AND error LIKE 'login throttle:%'").fetchall()]
        assert any("delayed" in e for e in events), events
        assert any("locked out" in e for e in events), events
        # The lock-out expires.
        time.sleep(3.2)
        with connect(server, user="victim", password="right-pass") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        rows = admin.execute("SELECT key FROM system.login_throttle WHERE scope = 'user'").fetchall()
        assert ("victim",) not in rows, rows
    finally:
        admin.close()
    # Not for other users: system.login_throttle is governed like every system table.
    with connect(server, user="victim", password="right-pass") as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM system.login_throttle").fetchall()


def test_flight_handshakes_are_throttled_then_locked_out(serve, lakehouse, tmp_path, rxgate_bin):
    server = serve(lakehouse.rx.data_dir, config=write_config(tmp_path / "f.toml", THROTTLE))
    add_user(rxgate_bin, server.users_file, "fvictim", "right-pass", "--role", "analyst")
    client = flight.FlightClient(server.flight_uri())
    try:
        times = []
        for _ in range(5):
            started = time.monotonic()
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.authenticate_basic_token("fvictim", "wrong")
            times.append(time.monotonic() - started)
        assert times[0] < 0.3 and times[1] < 0.3, times
        assert times[2] >= 0.28 and times[3] >= times[2] + 0.2 and times[4] >= times[3] + 0.4, times
        started = time.monotonic()
        with pytest.raises(flight.FlightUnauthenticatedError, match="locked out"):
            client.authenticate_basic_token("fvictim", "right-pass")
        assert time.monotonic() - started < 0.5
        time.sleep(3.2)
        header = client.authenticate_basic_token("fvictim", "right-pass")
        assert header[0].lower() == b"authorization"
    finally:
        client.close()
    with connect(server) as admin:
        events = [r[0] for r in admin.execute(
            "SELECT error FROM system.audit_log WHERE kind = 'login' AND \"user\" = 'fvictim' "
            "AND protocol = 'flightsql' AND error LIKE 'login throttle:%'").fetchall()]
        assert any("locked out" in e for e in events), events


def test_cancel_request_flood_is_cheap(serve, lakehouse):
    server = serve(lakehouse.rx.data_dir)
    pid = server.proc.pid
    with connect(server) as conn:
        before = cpu_seconds(pid)
        started = time.monotonic()
        for _ in range(400):
            with socket.create_connection((server.host, server.port), timeout=5) as s:
                s.sendall(struct.pack("!iiii", 16, 80877102, *struct.unpack("!ii", os.urandom(8))))
        elapsed = time.monotonic() - started
        assert conn.execute("SELECT 1").fetchone() == (1,)
        used = cpu_seconds(pid) - before
    assert used < 2.0, f"400 bogus cancel requests cost {used:.2f} s CPU in {elapsed:.1f} s"
    time.sleep(0.5)
    # Counted, not logged one by one.
    assert server.log_text().count("cancel request") < 5
    # A real cancel still works.
    raw = PgRaw(server.host, server.port, TEST_USER, TEST_PASSWORD)
    raw.query(BUSY)
    time.sleep(0.5)
    raw.cancel()
    err = raw.error_until_ready()
    raw.close()
    assert err and err["C"] == "57014", err
    assert server.alive()
