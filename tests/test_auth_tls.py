"""Authentication and TLS of the PostgreSQL frontend, with the real clients: psql and
psycopg 3 (libpq 18 in the psycopg wheel, so `require_auth` and `channel_binding` can prove
which method the server used).

Covers: SCRAM-SHA-256 logins, 28P01 with one message for an unknown user and for a wrong
password, cleartext password only over TLS, connection limits (53300), TLS with
sslmode=require and verify-full against `rxgate cert dev`'s CA, `required = true` refusing
plaintext, TLS failing closed at startup, `rxgate user add|passwd|remove|list` against a
running server, and (with a raw socket, as no real client behaves) that nothing a client sends
after a failed login reaches the engine.
"""
from __future__ import annotations

import ctypes
import glob
import os
import select
import shutil
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from conftest import TEST_PASSWORD, TEST_USER, add_user, free_port
from rxcli import REPO_ROOT, Rxgate, child_env

# A verifier written by PostgreSQL 15 itself for the password "pencil"
# (SET password_encryption = 'scram-sha-256'; CREATE ROLE u PASSWORD 'pencil';
#  SELECT rolpassword FROM pg_authid WHERE rolname = 'u').
PG15_PENCIL = ("SCRAM-SHA-256$4096:8MzYWy5Rjb7eSzzPfGSnZQ==$D99RUR4kYn6AdiM+tDbj3MMemOuAIuJZLGcvHz9HN/o="
               ":+7NKSsGOg8XjeoW9jy9XQzR3ldONcBKbYW+d6H15q58=")


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------

def psql(server, sql: str, *, user: str = TEST_USER, password: str = TEST_PASSWORD,
         host: str | None = None, check: bool = True, **conninfo) -> subprocess.CompletedProcess:
    """The psql binary with a conninfo string (sslmode=…, sslrootcert=…)."""
    exe = shutil.which("psql")
    assert exe, "psql is not installed (postgresql-client); scripts/test installs it"
    parts = [f"host={host or server.host}", f"port={server.port}", f"user={user}", "dbname=rxgate"]
    parts += [f"{k}={v}" for k, v in conninfo.items()]
    p = subprocess.run([exe, " ".join(parts), "-X", "-Atc", sql], env=server.pg_env(password),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"psql failed ({p.returncode}): {p.stderr}\n" \
                                  f"server log:\n{server.log_text()[-3000:]}"
    return p


def connect(server, **kw) -> psycopg.Connection:
    return psycopg.connect(server.dsn(**kw), autocommit=True)


def _libpq():
    """The libpq that psycopg's binary wheel loaded (same file, so the same handle)."""
    import psycopg_binary
    libs = glob.glob(os.path.join(os.path.dirname(psycopg_binary.__file__), "..",
                                  "psycopg_binary.libs", "libpq-*.so*"))
    assert libs, "libpq of the psycopg binary wheel not found"
    lib = ctypes.CDLL(libs[0])
    lib.PQsetErrorVerbosity.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def login_error(dsn: str, timeout: float = 20) -> str:
    """Connects with libpq at VERBOSE error verbosity and returns the failure message, which
    then carries the server's SQLSTATE ("FATAL:  28P01: …"); fails if the login succeeds.
    (At connection time libpq hands the SQLSTATE to nobody but its message text.)"""
    assert pq.__impl__ == "binary", pq.__impl__
    conn = pq.PGconn.connect_start(dsn.encode())
    try:
        _libpq().PQsetErrorVerbosity(conn.pgconn_ptr, 2)  # PQERRORS_VERBOSE
        deadline = time.monotonic() + timeout
        status = pq.PollingStatus.WRITING
        while time.monotonic() < deadline:
            if status == pq.PollingStatus.OK:
                raise AssertionError(f"login unexpectedly succeeded: {dsn}")
            if status == pq.PollingStatus.FAILED:
                return conn.error_message.decode(errors="replace")
            r, w = ([conn.socket], []) if status == pq.PollingStatus.READING else ([], [conn.socket])
            select.select(r, w, [], 1)
            status = conn.connect_poll()
        raise AssertionError("login did not finish in time")
    finally:
        conn.finish()


def wait_for_log(server, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log_text()
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in the server log:\n{server.log_text()[-3000:]}")


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dev_certs(rxgate_bin, tmp_path_factory) -> dict[str, Path]:
    """`rxgate cert dev` once: a development CA and a server certificate for localhost."""
    out = tmp_path_factory.mktemp("certs")
    p = Rxgate(rxgate_bin, None).run("cert", "dev", "--out", out)
    files = {"ca": out / "ca.crt", "ca_key": out / "ca.key",
             "server": out / "server.crt", "server_key": out / "server.key"}
    for f in files.values():
        assert f.is_file() and str(f) in p.stdout, p.stdout
    for key in (files["ca_key"], files["server_key"]):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    return files


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def tls_config(tmp_path, dev_certs):
    """factory: tls_config(extra="", required=False) -> config file with TLS on."""
    def make(extra: str = "", required: bool = False) -> Path:
        return write_config(tmp_path / f"tls-{required}-{abs(hash(extra))}.toml", f"""
[pgwire.tls]
cert = "{dev_certs['server']}"
key = "{dev_certs['server_key']}"
required = {str(required).lower()}
{extra}
""")
    return make


# --------------------------------------------------------------------------
# SCRAM and failed logins
# --------------------------------------------------------------------------

def test_scram_login_with_psql_and_psycopg(server):
    assert psql(server, "SELECT 1").stdout.strip() == "1"
    # libpq 18 checks which method the server asked for: SCRAM, never cleartext.
    with connect(server, require_auth="scram-sha-256") as conn:
        assert conn.execute("SELECT 40 + 2").fetchone()[0] == 42
        assert not conn.pgconn.ssl_in_use
    msg = login_error(server.dsn(require_auth="password"))
    assert "SASL" in msg, msg
    # No password at all: libpq cannot answer the SCRAM challenge.
    p = psql(server, "SELECT 1", password="", check=False)
    assert p.returncode != 0 and "password" in p.stderr.lower(), p.stderr


def test_failed_logins_are_28P01_with_one_message(server):
    wrong = login_error(server.dsn(password="not-the-password"))
    unknown = login_error(server.dsn(user="nosuchuser", password=TEST_PASSWORD))
    assert f'FATAL:  28P01: password authentication failed for user "{TEST_USER}"' in wrong, wrong
    assert 'FATAL:  28P01: password authentication failed for user "nosuchuser"' in unknown, unknown
    # Same text apart from the name: nothing says which part was wrong.
    assert wrong.replace(TEST_USER, "X") == unknown.replace("nosuchuser", "X")
    # psycopg raises OperationalError; psql exits 2 with the same words.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(server, password="wrong")
    p = psql(server, "SELECT 1", user="nosuchuser", check=False)
    assert p.returncode == 2 and 'password authentication failed for user "nosuchuser"' in p.stderr
    # The server log tells the operator which it was; the server goes on serving.
    text = wait_for_log(server, "no such user")
    assert "wrong password" in text
    assert psql(server, "SELECT 2").stdout.strip() == "2"


def _server_first(port: int, user: str) -> dict[str, str]:
    """Raw protocol up to SCRAM's server-first-message: what the server reveals about `user`
    before any proof ({"r": nonce, "s": salt, "i": iterations})."""
    params = f"user\0{user}\0database\0rxgate\0\0".encode()
    client_first = b"n,,n=,r=clientnonce123"
    body = b"SCRAM-SHA-256\0" + struct.pack("!i", len(client_first)) + client_first
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
        data = b""
        while len(data) < 5 or len(data) < 1 + struct.unpack("!I", data[1:5])[0]:
            data += s.recv(4096)
        assert data[:1] == b"R" and struct.unpack("!I", data[5:9])[0] == 10, data  # AuthenticationSASL
        s.sendall(b"p" + struct.pack("!I", 4 + len(body)) + body)
        data = s.recv(4096)
    assert data[:1] == b"R" and struct.unpack("!I", data[5:9])[0] == 11, data  # SASLContinue
    fields = data[9:1 + struct.unpack("!I", data[1:5])[0]].decode()
    return dict(kv.split("=", 1) for kv in fields.split(","))


def test_unknown_user_gets_the_same_exchange_as_a_known_one(server):
    """No shortcut for unknown users: they get a server-first-message like a real user's (a
    dummy verifier's salt, stable per name, the same iteration count), and fail only at the
    proof, with the same 28P01 as a wrong password (test above)."""
    known = _server_first(server.port, TEST_USER)
    ghost1 = _server_first(server.port, "ghost")
    ghost2 = _server_first(server.port, "ghost")
    other = _server_first(server.port, "phantom")
    assert known["i"] == ghost1["i"] == "4096"
    assert len(known["s"]) == len(ghost1["s"])
    assert ghost1["s"] == ghost2["s"] != other["s"]
    # The real user's salt is stable too; the nonces are fresh every time.
    assert _server_first(server.port, TEST_USER)["s"] == known["s"]
    assert ghost1["r"] != ghost2["r"] and ghost1["r"].startswith("clientnonce123")


def test_a_verifier_from_postgresql_works(serve, lakehouse, tmp_path):
    """The users file keeps PostgreSQL's pg_authid format: a verifier made by PostgreSQL 15
    logs in with its password."""
    users = tmp_path / "pg-users.toml"
    users.write_text(f'[users.u]\nroles = ["analyst"]\nscram_sha_256 = "{PG15_PENCIL}"\n')
    users.chmod(0o600)
    server = serve(lakehouse.rx.data_dir, env={"RXGATE_USERS_FILE": str(users)})
    assert psql(server, "SELECT current_user", user="u", password="pencil").stdout.strip() == "u"
    assert "28P01" in login_error(server.dsn(user="u", password="Pencil"))
    # The login is recorded with the roles from the users file, which the session's
    # identity carries.
    wait_for_log(server, "authenticated peer=")
    lines = [ln for ln in server.log_text().splitlines() if "authenticated peer=" in ln]
    assert any("user=u " in ln and "roles=analyst " in ln for ln in lines), lines


# --------------------------------------------------------------------------
# Users managed by the CLI, seen by a running server
# --------------------------------------------------------------------------

def test_user_add_passwd_remove_against_a_running_server(server, rxgate_bin):
    rx, env = server.rx(rxgate_bin)
    users_file = server.users_file
    # "reader" is no role of the policy: accepted with --force only (tests/test_first_run.py).
    rx.run("user", "add", "bob", "--role", "analyst", "--role", "reader", "--force", "--password-stdin",
           input="first-Secret-1\n", env=env)
    assert psql(server, "SELECT 1", user="bob", password="first-Secret-1").stdout.strip() == "1"

    listing = rx.run("user", "list", env=env).stdout
    assert "bob" in listing and "analyst,reader?" in listing and TEST_USER in listing
    assert "SCRAM" not in listing and "first-Secret-1" not in listing

    rx.run("user", "passwd", "bob", "--password-stdin", input="second-Secret-2\n", env=env)
    assert "28P01" in login_error(server.dsn(user="bob", password="first-Secret-1"))
    assert psql(server, "SELECT 1", user="bob", password="second-Secret-2").stdout.strip() == "1"

    # The file holds verifiers only, privately.
    text = users_file.read_text()
    assert "SCRAM-SHA-256$4096:" in text
    for secret in ("first-Secret-1", "second-Secret-2", TEST_PASSWORD):
        assert secret not in text
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600

    rx.run("user", "remove", "bob", env=env)
    assert "bob" not in rx.run("user", "list", env=env).stdout
    assert 'password authentication failed for user "bob"' in \
        login_error(server.dsn(user="bob", password="second-Secret-2"))


def test_user_cli_errors(rx, tmp_path):
    env = {"RXGATE_USERS_FILE": str(tmp_path / "users.toml")}
    # No terminal and no --password-stdin: a clear error, nothing written.
    p = rx.fail("user", "add", "carol", env=env)
    assert "--password-stdin" in p.stderr
    assert not (tmp_path / "users.toml").exists()
    rx.run("user", "add", "carol", "--password-stdin", input="pw-carol\n", env=env)
    assert "already exists" in rx.fail("user", "add", "carol", "--password-stdin",
                                       input="x\n", env=env).stderr
    assert "no user" in rx.fail("user", "passwd", "dave", "--password-stdin",
                                input="x\n", env=env).stderr
    assert "no user" in rx.fail("user", "remove", "dave", env=env).stderr
    assert "invalid user name" in rx.fail("user", "add", "bad name", "--password-stdin",
                                          input="x\n", env=env).stderr
    assert "empty password" in rx.fail("user", "add", "erin", "--password-stdin",
                                       input="\n", env=env).stderr


# --------------------------------------------------------------------------
# Connection limits
# --------------------------------------------------------------------------

def test_connection_limits_give_53300(serve, lakehouse, tmp_path, rxgate_bin):
    config = write_config(tmp_path / "limits.toml", "[pgwire]\nmax_connections = 3\n")
    server = serve(lakehouse.rx.data_dir, config=config)
    add_user(rxgate_bin, server.users_file, "solo", "solo-pass", "--max-connections", "1")

    # Per user: the second session of "solo" is refused, others still get in.
    first = connect(server, user="solo", password="solo-pass")
    msg = login_error(server.dsn(user="solo", password="solo-pass"))
    assert 'FATAL:  53300: too many connections for user "solo"' in msg, msg
    # A wrong password still gets 28P01, not 53300: the limit applies to authenticated users.
    assert "28P01" in login_error(server.dsn(user="solo", password="nope"))

    # Globally: max_connections = 3 with "solo" holding one.
    held = [first, connect(server), connect(server)]
    msg = login_error(server.dsn())
    assert "FATAL:  53300:" in msg and "too many connections" in msg, msg
    with pytest.raises(psycopg.OperationalError, match="too many connections"):
        connect(server)
    # Closing frees the slots.
    for c in held:
        c.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(server, user="solo", password="solo-pass") as c1, connect(server) as c2:
                assert c1.execute("SELECT 1").fetchone()[0] == c2.execute("SELECT 1").fetchone()[0]
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "slots were not released"
            time.sleep(0.2)
    assert server.alive()


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

def test_cert_dev_refuses_to_replace_a_ca(rx, tmp_path):
    rx.run("cert", "dev", "--out", tmp_path / "c")
    ca = (tmp_path / "c" / "ca.crt").read_text()
    assert "exists" in rx.fail("cert", "dev", "--out", tmp_path / "c").stderr
    assert (tmp_path / "c" / "ca.crt").read_text() == ca


def test_tls_require_and_verify_full(serve, lakehouse, tls_config, dev_certs, tmp_path, rxgate_bin):
    server = serve(lakehouse.rx.data_dir, config=tls_config())
    ca = dev_certs["ca"]
    # psql: require, then verify-full by name and by IP address (both in the certificate).
    assert psql(server, "SELECT 1", sslmode="require").stdout.strip() == "1"
    assert psql(server, "SELECT 1", host="localhost", sslmode="verify-full",
                sslrootcert=ca).stdout.strip() == "1"
    assert psql(server, "SELECT 1", sslmode="verify-full", sslrootcert=ca).stdout.strip() == "1"
    # psycopg: verify-full, and SCRAM-SHA-256-PLUS bound to the TLS channel.
    with connect(server, sslmode="verify-full", sslrootcert=ca, channel_binding="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone()[0] \
            == lakehouse.pipeline["loaded"]
    with connect(server, sslmode="require", require_auth="scram-sha-256") as conn:
        assert conn.pgconn.ssl_in_use
    # TLS is optional here: a plaintext client still gets in (with SCRAM).
    with connect(server, sslmode="disable") as conn:
        assert not conn.pgconn.ssl_in_use
    # verify-full against another CA fails on the client: the certificate really is checked.
    other = tmp_path / "other"
    Rxgate(rxgate_bin, None).run("cert", "dev", "--out", other)
    p = psql(server, "SELECT 1", host="localhost", sslmode="verify-full",
             sslrootcert=other / "ca.crt", check=False)
    assert p.returncode != 0 and "certificate verify failed" in p.stderr, p.stderr
    # A host name the certificate does not name fails verify-full too.
    msg = login_error(f"host=rxgate.invalid hostaddr=127.0.0.1 port={server.port} user={TEST_USER} "
                      f"password={TEST_PASSWORD} dbname=rxgate sslmode=verify-full sslrootcert={ca}")
    assert "does not match host name" in msg, msg
    assert server.alive()


def test_tls_required_refuses_plaintext(serve, lakehouse, tls_config, dev_certs):
    server = serve(lakehouse.rx.data_dir, config=tls_config(required=True))
    msg = login_error(server.dsn(sslmode="disable"))
    assert "FATAL:  28000:" in msg and "TLS is required" in msg, msg
    p = psql(server, "SELECT 1", sslmode="disable", check=False)
    assert p.returncode == 2 and "TLS is required" in p.stderr, p.stderr
    with pytest.raises(psycopg.OperationalError, match="TLS is required"):
        connect(server, sslmode="disable")
    # The default sslmode (prefer) and require/verify-full all negotiate TLS and get in.
    assert psql(server, "SELECT 1").stdout.strip() == "1"
    with connect(server, sslmode="verify-full", sslrootcert=dev_certs["ca"]) as conn:
        assert conn.pgconn.ssl_in_use
    # PostgreSQL 17's direct TLS (no SSLRequest round trip, ALPN "postgresql") works too.
    with connect(server, sslmode="verify-full", sslrootcert=dev_certs["ca"],
                 sslnegotiation="direct") as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone()[0] == 1


def test_cleartext_password_only_over_tls(serve, lakehouse, tls_config, dev_certs):
    server = serve(lakehouse.rx.data_dir, config=tls_config('[auth]\nmethod = "password"\n'))
    # Over TLS the server asks for the cleartext password…
    with connect(server, sslmode="verify-full", sslrootcert=dev_certs["ca"],
                 require_auth="password") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    assert psql(server, "SELECT 1", sslmode="require").stdout.strip() == "1"
    assert "28P01" in login_error(server.dsn(sslmode="require", password="wrong"))
    # …but never on a plaintext connection: that one gets SCRAM, so a client that insists on
    # sending its password in clear is refused, and a SCRAM client gets in.
    msg = login_error(server.dsn(sslmode="disable", require_auth="password"))
    assert "server requested SASL" in msg, msg
    with connect(server, sslmode="disable", require_auth="scram-sha-256") as conn:
        assert not conn.pgconn.ssl_in_use


def test_tls_setup_failure_fails_closed(rxgate_bin, lakehouse, tmp_path, dev_certs):
    """A TLS configuration that cannot be used stops `rxgate serve` at startup with a clear
    error; it never serves plaintext instead."""
    other = tmp_path / "other"
    Rxgate(rxgate_bin, None).run("cert", "dev", "--out", other)
    cases = {
        "missing cert": (f'cert = "{tmp_path}/nope.crt"\nkey = "{dev_certs["server_key"]}"',
                         "cannot read certificate"),
        "key of another cert": (f'cert = "{dev_certs["server"]}"\nkey = "{other}/server.key"',
                                "do not work together"),
        "not a certificate": (f'cert = "{dev_certs["server_key"]}"\nkey = "{dev_certs["server_key"]}"',
                              "TLS setup failed"),
        "required without cert": ("required = true", "required = true needs cert and key"),
    }
    for name, (tls, expected) in cases.items():
        config = write_config(tmp_path / "bad.toml", f"[pgwire.tls]\n{tls}\n")
        port = free_port()
        p = subprocess.run([str(rxgate_bin), "--data-dir", str(lakehouse.rx.data_dir), "--config",
                            str(config), "serve", "--pg-listen", f"127.0.0.1:{port}"],
                           cwd=REPO_ROOT, env=child_env({"RXGATE_USERS_FILE": str(tmp_path / "u.toml")}),
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode != 0, f"{name}: served anyway\n{p.stdout}\n{p.stderr}"
        assert expected in p.stderr, f"{name}: {p.stderr}"
        assert "panicked" not in p.stderr
        assert "serving" not in p.stdout


# --------------------------------------------------------------------------
# A client that ignores FATAL
# --------------------------------------------------------------------------

def _raw_startup_then_query(port: int, first: bytes, marker: str) -> bytes:
    """Raw protocol, as no real client behaves: a startup packet, then `first` and a Query in
    one write, ignoring whatever the server answers. Returns everything the server sent."""
    def msg(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("!I", len(body) + 4) + body

    params = f"user\0{TEST_USER}\0database\0rxgate\0\0".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
        s.recv(4096)  # AuthenticationSASL
        s.sendall(first + msg(b"Q", f"SELECT '{marker}'\0".encode()))
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_no_query_runs_after_a_failed_login(serve, lakehouse, tls_config):
    """pgwire marks a connection ready for queries after a startup error and keeps reading;
    rxgate closes it, and refuses an engine session without a login anyway. The statement log
    (rxgate_engine::sql at debug) shows the query never reaches the engine."""
    env = {"RUST_LOG": "info,rxgate_engine::sql=debug"}
    server = serve(lakehouse.rx.data_dir, env=env)
    bogus = b"p" + struct.pack("!I", 4 + 14 + 4 + 5) + b"SCRAM-SHA-256\0" + struct.pack("!i", 5) + b"xxxxx"
    answer = _raw_startup_then_query(server.port, bogus, "after-fatal-1")
    assert b"SFATAL\0C08P01\0" in answer and b"after-fatal" not in answer, answer
    assert b"D\0" not in answer and b"Z\0\0\0\x05" not in answer, answer
    # The same with a password message on a server that requires TLS (refused at startup).
    tls_server = serve(lakehouse.rx.data_dir, env=env, config=tls_config(required=True))
    params = f"user\0{TEST_USER}\0database\0rxgate\0\0".encode()
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as s:
        s.sendall(struct.pack("!II", len(params) + 8, 196608) + params
                  + b"Q" + struct.pack("!I", 4 + 23) + b"SELECT 'after-fatal-2'\0")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert b"SFATAL\0C28000\0" in answer and b"after-fatal" not in answer, answer
    # Queries from real logins are logged, so the log would show the marker if it ran.
    assert psql(server, "SELECT 'logged-marker'").stdout.strip() == "logged-marker"
    wait_for_log(server, "logged-marker")
    for s in (server, tls_server):
        assert "after-fatal" not in s.log_text(), s.log_text()[-3000:]
        assert s.alive()
