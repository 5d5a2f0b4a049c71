"""A real PostgreSQL server for tests that need one (the shared Iceberg SQL catalog).

`PostgresServer.start()` runs the preinstalled PostgreSQL (15 preferred) in a fresh temporary
directory on a free loopback port, and `stop()` removes it again. initdb refuses to run as
root, so as root the server runs as the `postgres` user (`runuser`), in a directory that user
owns (under /tmp: pytest's own temporary directories are private to root).

Connections over TCP authenticate with SCRAM-SHA-256 as `CATALOG_USER` (a role that may
create databases), as a deployment would; the unix socket in the directory is trusted and
used only to set the server up.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

#: The login the catalog URIs use.
CATALOG_USER = "rxcatalog"
CATALOG_PASSWORD = "catalog-secret"


def pg_bindir() -> Path:
    """Where initdb/pg_ctl live: PostgreSQL 15 if installed, else the newest one."""
    preferred = Path("/usr/lib/postgresql/15/bin")
    if (preferred / "initdb").is_file():
        return preferred
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    try:
        return Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        raise AssertionError("no PostgreSQL server found (scripts/test installs postgresql-15)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class PostgresServer:
    root: Path            # data directory's parent, also the unix socket directory
    port: int
    bindir: Path

    # -- lifecycle ----------------------------------------------------------

    @staticmethod
    def _as_owner(argv: list[str]) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] + argv) if os.geteuid() == 0 else argv

    @classmethod
    def start(cls, attempts: int = 3) -> "PostgresServer":
        bindir = pg_bindir()
        root = Path(tempfile.mkdtemp(prefix="rxgate-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        data = root / "data"
        run = lambda argv, **kw: subprocess.run(cls._as_owner(argv), capture_output=True,  # noqa: E731
                                                text=True, timeout=120, **kw)
        init = run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
        assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
        last = ""
        for _ in range(attempts):
            port = _free_port()
            opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                    f"-c synchronous_commit=off -c full_page_writes=off")
            started = run([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts,
                           "-l", str(root / "server.log"), "-w", "-t", "60", "start"])
            if started.returncode == 0:
                server = cls(root, port, bindir)
                server.psql_socket(f"CREATE ROLE {CATALOG_USER} LOGIN CREATEDB "
                                   f"PASSWORD '{CATALOG_PASSWORD}'")
                return server
            last = started.stdout + started.stderr + server_log(root)
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"PostgreSQL did not start:\n{last[-3000:]}")

    def stop(self) -> None:
        subprocess.run(self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"),
                                       "-m", "fast", "-w", "-t", "30", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        return server_log(self.root)

    # -- administration -------------------------------------------------------

    def psql_socket(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over the trusted unix socket."""
        psql = self.bindir / "psql"
        exe = str(psql) if psql.is_file() else "psql"
        p = subprocess.run([exe, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.root),
                            "-p", str(self.port), "-U", "postgres", "-d", db, "-At", "-c", sql],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"psql {sql!r} failed:\n{p.stderr}"
        return p.stdout

    def create_database(self, prefix: str = "catalog") -> str:
        """A fresh, empty database owned by CATALOG_USER; returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.psql_socket(f"CREATE DATABASE {name} OWNER {CATALOG_USER}")
        return name

    # -- URIs -------------------------------------------------------------------

    def uri(self, db: str, scheme: str = "postgres") -> str:
        """sqlx URI (what `[catalog] uri` takes): postgres://user:password@127.0.0.1:port/db."""
        return f"{scheme}://{CATALOG_USER}:{CATALOG_PASSWORD}@127.0.0.1:{self.port}/{db}"

    def sqlalchemy_uri(self, db: str) -> str:
        """What pyiceberg's SqlCatalog takes for the same database."""
        return f"postgresql+psycopg2://{CATALOG_USER}:{CATALOG_PASSWORD}@127.0.0.1:{self.port}/{db}"

    def dsn(self, db: str) -> str:
        """libpq DSN (psycopg, psycopg2) for the same database."""
        return (f"host=127.0.0.1 port={self.port} dbname={db} user={CATALOG_USER} "
                f"password={CATALOG_PASSWORD} connect_timeout=10")


def server_log(root: Path) -> str:
    try:
        return (root / "server.log").read_text(errors="replace")
    except OSError:
        return ""
