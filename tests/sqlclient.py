"""psycopg and psql helpers for the test servers: the admin is TEST_USER (TEST_PASSWORD); the
other users a module creates share one password."""
from __future__ import annotations

import subprocess

import psycopg
import pytest

from conftest import TEST_PASSWORD, TEST_USER


class Client:
    """`pg`, `q`, `sqlstate` and `psql` for users whose password is `password`."""

    def __init__(self, password: str):
        self.password = password

    def password_of(self, user: str) -> str:
        return TEST_PASSWORD if user == TEST_USER else self.password

    def pg(self, server, user: str = TEST_USER, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(server.dsn(user=user, password=self.password_of(user)), autocommit=autocommit)

    def q(self, server, sql: str, params=None, user: str = TEST_USER):
        """The rows, or the command tag of a statement without rows."""
        with self.pg(server, user) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else cur.statusmessage

    def sqlstate(self, server, sql: str, user: str = TEST_USER) -> str:
        """The SQLSTATE `sql` fails with; the session must go on afterwards."""
        with self.pg(server, user) as conn:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(sql)
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
            return err.value.sqlstate

    def psql(self, server, sql: str, user: str = TEST_USER) -> subprocess.CompletedProcess:
        password = self.password_of(user)
        return subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", server.dsn(user=user, password=password)],
                              input=sql, capture_output=True, text=True, env=server.pg_env(password), timeout=120)
