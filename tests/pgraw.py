"""A minimal PostgreSQL wire-protocol client over a raw socket, for what real drivers
will not do on purpose: read a result slowly (backpressure), or send a malformed message.
It logs in with SCRAM-SHA-256 (RFC 5802/7677) like libpq, without channel binding."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct


class PgRaw:
    def __init__(self, host: str, port: int, user: str, password: str, dbname: str = "rxgate"):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.buf = b""
        self._startup(user, password, dbname)

    # ------------------------------------------------------------------ framing
    def send(self, tag: bytes, body: bytes) -> None:
        self.sock.sendall(tag + struct.pack("!i", len(body) + 4) + body)

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk

    def recv(self) -> tuple[bytes, bytes]:
        """One backend message: (type byte, body)."""
        self._fill(5)
        tag, length = self.buf[:1], struct.unpack("!i", self.buf[1:5])[0]
        self._fill(1 + length)
        body, self.buf = self.buf[5:1 + length], self.buf[1 + length:]
        return tag, body

    def until(self, *tags: bytes) -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first whose type is in `tags`."""
        out = []
        while True:
            m = self.recv()
            out.append(m)
            if m[0] in tags:
                return out

    # ------------------------------------------------------------------ login
    def _startup(self, user: str, password: str, dbname: str) -> None:
        params = b"user\0" + user.encode() + b"\0database\0" + dbname.encode() + b"\0\0"
        body = struct.pack("!i", 196608) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        tag, body = self.recv()
        assert tag == b"R" and struct.unpack("!i", body[:4])[0] == 10, (tag, body)
        assert b"SCRAM-SHA-256\0" in body[4:], body
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        self.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
        tag, body = self.recv()
        assert tag == b"R" and struct.unpack("!i", body[:4])[0] == 11, (tag, body)
        server_first = body[4:].decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.send(b"p", f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
        msgs = self.until(b"Z", b"E")
        errors = [m for m in msgs if m[0] == b"E"]
        assert not errors, f"login failed: {errors}"
        self.backend_key = next((b for t, b in msgs if t == b"K"), None)

    # ------------------------------------------------------------------ helpers
    def query(self, sql: str) -> None:
        self.send(b"Q", sql.encode() + b"\0")

    def parse_bind(self, sql: str, binary: bool = False) -> None:
        """Parse and Bind into the unnamed portal (results in text or binary)."""
        self.send(b"P", b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))
        self.send(b"B", b"\0\0" + struct.pack("!hhhh", 0, 0, 1, int(binary)))

    def execute_portal(self, max_rows: int = 0) -> None:
        """Execute the unnamed portal with a row limit (0 = all rows)."""
        self.send(b"E", b"\0" + struct.pack("!i", max_rows))

    def sync(self) -> None:
        self.send(b"S", b"")

    def execute(self, sql: str, binary: bool = False, max_rows: int = 0) -> None:
        """The extended protocol, as drivers send it: Parse, Bind, Describe portal, Execute
        with a row limit (0 = all rows), Sync."""
        self.parse_bind(sql, binary)
        self.send(b"D", b"P\0")
        self.execute_portal(max_rows)
        self.sync()

    def cancel(self) -> None:
        """A CancelRequest with this connection's key, on a new connection (as libpq)."""
        with socket.create_connection(self.sock.getpeername()[:2]) as s:
            s.sendall(struct.pack("!ii", 16, 80877102) + self.backend_key)

    def error_until_ready(self) -> dict[str, str] | None:
        """The fields of the first ErrorResponse up to ReadyForQuery, if any."""
        errors = [error_fields(b) for t, b in self.until(b"Z") if t == b"E"]
        return errors[0] if errors else None

    def close(self) -> None:
        try:
            self.send(b"X", b"")
        except OSError:
            pass
        self.sock.close()


def error_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields by their one-letter code (C = SQLSTATE)."""
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out
