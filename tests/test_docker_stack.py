"""docker/ for real (issue 26): the runtime image built around the binary the test command
built, and the compose stack (PostgreSQL 15 catalog, fake-gcs-server warehouse, rxgate
`catalog apply`, the `sample` profile's `datagen` + `pipeline run`, `serve`) run end to end.

- dockerd is started when it is not answering (scripts/docker-ensure-daemon, as pgserver
  starts PostgreSQL); the base images come from scripts/docker-images (no registry pulls;
  fast when they exist, which scripts/test makes sure of before pytest).
- The image: docker/Dockerfile's `runtime-prebuilt` target around a stripped copy of
  RXGATE_BIN (a debug build), in a build context of just the files the Dockerfile copies.
- The stack: docker/compose.yaml as written, with docker-compose (1.29 here), under a project
  name of its own and free host ports (RXGATE_*_PORT) and the test image (RXGATE_IMAGE).
- A pseudonym key made in the state volume as docker/compose.yaml says.
- Over the published ports, as the policy's roles (an admin and an analyst added with
  `rxgate user add` in the state volume): counts equal the pipeline's loaded rows over pgwire
  (psycopg) and Flight SQL (ADBC); the analyst's NPIs are keyed pseudonyms, the admin's real.
- `restart rxgate`, then `down` and `up` again (volumes kept): the same answers.
- Teardown: `down -v` and the test image removed, also on failure.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest

from conftest import free_port
from rxcli import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
USERS = {"dana": ("dana-docker-secret", "admin"), "ann": ("ann-docker-secret", "analyst")}
KEY_CMD = "umask 077 && head -c 36 /dev/urandom | base64 > /var/lib/rxgate/pseudonym.key"
COUNT = "SELECT count(*) FROM health.prescriber_drug"
NPI = "SELECT npi FROM health.prescriber_drug WHERE npi IS NOT NULL ORDER BY npi LIMIT 1"


def run(argv: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


class Stack:
    def __init__(self, image: str, env: dict[str, str], project: str):
        self.env, self.project = env, project
        compose = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
        self.base = compose + ["-p", project, "-f", str(COMPOSE_FILE)]

    def compose(self, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return run(self.base + list(args), timeout=timeout, env=self.env, **kw)

    def container(self, service: str) -> str:
        out = self.compose("--profile", "sample", "ps", "-q", service).stdout.split()
        assert out, f"no container for {service}"
        return out[0]

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        deadline, status = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            status = run(["docker", "inspect", "-f", "{{.State.Health.Status}}",
                          self.container(service)]).stdout.strip()
            if status == "healthy":
                return
            time.sleep(1)
        raise AssertionError(f"{service} is {status!r} after {timeout}s:\n{self.logs()}")

    def logs(self, *services: str) -> str:
        return subprocess.run(self.base + ["--profile", "sample", "logs", "--no-color", "--tail", "40",
                                           *services], capture_output=True, text=True,
                              env=self.env, timeout=60).stdout


@pytest.fixture(scope="module")
def image(rxgate_bin, tmp_path_factory):
    """rxgate's runtime-prebuilt image around a stripped copy of RXGATE_BIN."""
    run([str(REPO_ROOT / "scripts" / "docker-images")], timeout=900)
    ctx = tmp_path_factory.mktemp("docker-context")
    (ctx / "docker").mkdir()
    shutil.copy(REPO_ROOT / "docker" / "rxgate.toml", ctx / "docker" / "rxgate.toml")
    shutil.copytree(REPO_ROOT / "catalog", ctx / "catalog")
    run(["strip", "-o", str(ctx / "rxgate"), str(rxgate_bin)])
    tag = f"rxgate:test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"  # no buildx plugin: the legacy builder
    run(["docker", "build", "-q", "-f", str(REPO_ROOT / "docker" / "Dockerfile"),
         "--target", "runtime-prebuilt", "--build-arg", "BINARY=rxgate", "-t", tag, str(ctx)],
        timeout=600, env=env)
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


@pytest.fixture
def stack(image):
    ports = {"RXGATE_PG_PORT": free_port(), "RXGATE_FLIGHT_PORT": free_port(),
             "RXGATE_GCS_PORT": free_port(), "RXGATE_HTTP_PORT": free_port()}
    env = dict(os.environ, RXGATE_IMAGE=image, **{k: str(v) for k, v in ports.items()})
    s = Stack(image, env, f"rxgate-test-{uuid.uuid4().hex[:8]}")
    s.ports = ports
    try:
        yield s
    finally:
        subprocess.run(s.base + ["--profile", "sample", "down", "-v", "--remove-orphans", "-t", "5"],
                       capture_output=True, env=env, timeout=300)


def answers(stack: Stack) -> dict:
    pg, fl = stack.ports["RXGATE_PG_PORT"], stack.ports["RXGATE_FLIGHT_PORT"]
    out = {}
    for user, (password, _) in USERS.items():
        dsn = f"host=127.0.0.1 port={pg} user={user} password={password} dbname=rxgate"
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            out[("pgwire", user)] = (conn.execute(COUNT).fetchone()[0], conn.execute(NPI).fetchone()[0])
        with flight_sql.connect(f"grpc://127.0.0.1:{fl}",
                                db_kwargs={"username": user, "password": password},
                                autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(COUNT)
            count = cur.fetchone()[0]
            cur.execute(NPI)
            out[("flight", user)] = (count, cur.fetchone()[0])
    return out


def test_compose_stack_end_to_end(stack):
    # The pseudonym key, as docker/compose.yaml says to make it (without one the analyst's
    # pseudonymised columns read NULL: fail closed).
    stack.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "rxgate", "-c", KEY_CMD)
    for user, (password, role) in USERS.items():
        stack.compose("run", "--rm", "--no-deps", "-T", "rxgate", "user", "add", user,
                      "--role", role, "--password-stdin", input=password + "\n")
    stack.compose("--profile", "sample", "up", "-d", "--no-build", timeout=600)
    # catalog apply and the sample load ran in the stack and succeeded.
    for service in ("rxgate-init", "rxgate-sample"):
        code = run(["docker", "wait", stack.container(service)], timeout=600).stdout.strip()
        assert code == "0", f"{service} exited {code}:\n{stack.logs(service)}"
    init = stack.logs("rxgate-init")
    assert "health.prescriber_drug" in init and "health_quarantine.prescriber_drug_rejects" in init, init
    loaded = re.search(r"loaded (\d+) \+ quarantined \d+", stack.logs("rxgate-sample"))
    assert loaded, stack.logs("rxgate-sample")
    loaded = int(loaded.group(1))
    assert loaded > 1000
    stack.wait_healthy("rxgate")

    first = answers(stack)
    for proto in ("pgwire", "flight"):
        admin, analyst = first[(proto, "dana")], first[(proto, "ann")]
        assert admin[0] == analyst[0] == loaded, first
        assert admin[1].isdigit() and len(admin[1]) == 10, admin        # the real NPI
        assert analyst[1] and analyst[1].startswith("k1:") and len(analyst[1]) == 35, analyst  # its pseudonym
    assert first[("pgwire", "ann")] == first[("flight", "ann")]

    # The gateway restarted: the same data from the catalog and warehouse volumes.
    stack.compose("restart", "-t", "10", "rxgate")
    stack.wait_healthy("rxgate")
    assert answers(stack) == first

    # The whole stack down and up again (volumes kept, no sample load this time).
    stack.compose("--profile", "sample", "down", "-t", "10")
    stack.compose("up", "-d", "--no-build", timeout=600)
    stack.wait_healthy("rxgate")
    assert answers(stack) == first
