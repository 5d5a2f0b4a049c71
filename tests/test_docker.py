"""docker/ (issue 6 §9): what can be checked without a Docker engine, which these machines do
not have. The image and the compose stack themselves are untested here (README says so).

- docker/compose.yaml parses (PyYAML), has the services it promises, mounts its rxgate config
  where the image reads it, and that config's catalog URI names the compose postgres service
  with its credentials and database; the published ports are the configured listeners.
- Every key of the two container configs (docker/rxgate.toml in the image,
  docker/rxgate.compose.toml for compose) is a key documented in conf/rxgate.toml.
- rxgate accepts both configs as written: the compose one serves a real PostgreSQL catalog
  with only the container paths, the catalog host and the listen addresses overridden (by
  the documented RXGATE_* variables and flags), over pgwire.
- docker/Dockerfile: two stages, the release build of the `rxgate` package, COPY sources that
  exist, and paths that agree with the configs and the compose file.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import yaml

from conftest import start_server, stop_server
from rxcli import REPO_ROOT, Rxgate

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
IMAGE_CONFIG = DOCKER / "rxgate.toml"
COMPOSE_CONFIG = DOCKER / "rxgate.compose.toml"
TABLES = {"health.prescriber_drug", "health.us_cities", "health.city_report",
          "health.top_prescribers", "health_quarantine.prescriber_drug_rejects"}


def documented_keys(path: Path) -> set[str]:
    """Dotted keys of a commented example config: set keys and commented-out `# key = …`."""
    keys, section = set(), ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if m := re.fullmatch(r"\[([a-z_.]+)\]", s):
            section = m.group(1) + "."
            continue
        s = s[1:].strip() if s.startswith("#") else s
        if m := re.match(r"([a-z_]+) = \S", s):
            keys.add(section + m.group(1))
    return keys


def flatten(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile() -> list[str]:
    """Instructions of docker/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKER.joinpath("Dockerfile").read_text())
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_config_keys_are_the_documented_ones():
    documented = documented_keys(REPO_ROOT / "conf" / "rxgate.toml")
    # The parser sees the example's set and commented keys.
    assert {"data_dir", "catalog.uri", "catalog.warehouse", "catalog.name", "pgwire.listen",
            "pgwire.tls.cert", "auth.users_file", "flightsql.listen"} <= documented
    for path in (IMAGE_CONFIG, COMPOSE_CONFIG):
        keys = flatten(tomllib.loads(path.read_text()))
        assert keys and keys <= documented, (path.name, sorted(keys - documented))


def test_compose_file_wires_postgres_and_gcs_to_rxgate():
    c = compose()
    services = c["services"]
    assert set(services) == {"postgres", "gcs", "rxgate-init", "rxgate"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["gcs"]["image"].startswith("fsouza/fake-gcs-server")
    cfg = tomllib.loads(COMPOSE_CONFIG.read_text())
    pg_env = services["postgres"]["environment"]

    for name in ("rxgate-init", "rxgate"):
        svc = services[name]
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        # The compose config is mounted where RXGATE_CONFIG points.
        target = svc["environment"]["RXGATE_CONFIG"]
        assert (COMPOSE.parent / mounts[target]).resolve() == COMPOSE_CONFIG
        # State and warehouse are volumes, the warehouse shared by every rxgate container.
        assert mounts[cfg["data_dir"]] in c["volumes"]
        assert mounts[cfg["catalog"]["warehouse"]] in c["volumes"]
    assert services["rxgate-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["rxgate"]["depends_on"]["rxgate-init"]["condition"] == \
        "service_completed_successfully"
    assert "gcs" in services["rxgate"]["depends_on"]

    # The catalog URI is the postgres service, its login and its database.
    uri = urlsplit(cfg["catalog"]["uri"])
    assert uri.scheme == "postgres" and uri.hostname == "postgres" and uri.port == 5432
    assert (uri.username, uri.password, uri.path.lstrip("/")) == \
        (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"])

    # The configured listeners are published.
    published = {p.split(":")[-1] for p in services["rxgate"]["ports"]}
    for listen in (cfg["pgwire"]["listen"], cfg["flightsql"]["listen"]):
        host, port = listen.rsplit(":", 1)
        assert host == "0.0.0.0" and port in published


def test_rxgate_accepts_the_compose_config(rxgate_bin, postgres, tmp_path):
    """The compose config as written, against a real PostgreSQL catalog; overridden only: the
    catalog URI (host `postgres` → the test server), the paths that exist only in the
    containers, and the listen addresses (start_server's flags)."""
    db = postgres.create_database("compose")
    env = {"RXGATE_CATALOG_URI": postgres.uri(db),
           "RXGATE_WAREHOUSE": str(tmp_path / "warehouse"),
           "RXGATE_AUDIT_DIR": str(tmp_path / "audit"),
           "RXGATE_POLICY_FILE": str(REPO_ROOT / "catalog" / "policies.toml")}
    rx = Rxgate(rxgate_bin, tmp_path / "cli")
    out = rx.run("--config", COMPOSE_CONFIG, "catalog", "apply", REPO_ROOT / "catalog", env=env).stdout
    assert {tuple(line.split()) for line in out.splitlines()} == {("created", t) for t in TABLES}
    server = start_server(rxgate_bin, tmp_path / "serve", tmp_path / "serve.log", env=env,
                          config=COMPOSE_CONFIG)
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone() == (0,)
            listed = {f"{s}.{t}" for s, t in conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema LIKE 'health%'").fetchall()}
            assert listed == TABLES
    finally:
        stop_server(server)
    # The image's own config (embedded SQLite catalog) is accepted too.
    sqlite_env = dict(env, RXGATE_CATALOG_URI=f"sqlite:{tmp_path / 'image' / 'catalog.db'}",
                      RXGATE_USERS_FILE=str(tmp_path / "users.toml"))
    rx.run("--config", IMAGE_CONFIG, "catalog", "apply", REPO_ROOT / "catalog", env=sqlite_env)
    listed = rx.run("--config", IMAGE_CONFIG, "catalog", "list", env=sqlite_env).stdout.split()
    assert set(listed) == TABLES


def test_dockerfile_builds_rxgate_in_two_stages():
    lines = dockerfile()
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    # The build image's Rust is at least the workspace's rust-version.
    rust = re.search(r"rust:(\d+)\.(\d+)", froms[0])
    want = re.search(r'rust-version = "(\d+)\.(\d+)"', (REPO_ROOT / "Cargo.toml").read_text())
    assert rust and want and tuple(map(int, rust.groups())) >= tuple(map(int, want.groups()))
    package = re.search(r'name = "([^"]+)"', (REPO_ROOT / "crates/server/Cargo.toml").read_text())
    assert any(f"cargo build --release --locked -p {package.group(1)}" in ln for ln in lines)

    copies = {}
    for ln in lines:
        if ln.startswith("COPY ") and "--from=" not in ln:
            src, dst = ln.split()[1:3]
            assert (REPO_ROOT / src).exists(), src
            copies[src] = dst
    assert copies["docker/rxgate.toml"] == "/etc/rxgate/rxgate.toml"
    assert any(ln.startswith("COPY --from=build ") and ln.endswith(" /usr/local/bin/rxgate")
               for ln in lines)
    env = " ".join(ln for ln in lines if ln.startswith("ENV "))
    assert "RXGATE_CONFIG=/etc/rxgate/rxgate.toml" in env
    assert 'ENTRYPOINT ["rxgate"]' in lines

    # The configs and the compose file name the paths the image has.
    catalog_dir = copies["catalog"]
    services = compose()["services"]
    assert services["rxgate-init"]["command"] == ["catalog", "apply", catalog_dir]
    assert services["rxgate"]["environment"]["RXGATE_CONFIG"] == copies["docker/rxgate.toml"]
    exposed = set(" ".join(ln for ln in lines if ln.startswith("EXPOSE ")).split()[1:])
    for path in (IMAGE_CONFIG, COMPOSE_CONFIG):
        cfg = tomllib.loads(path.read_text())
        assert cfg["policy"]["file"] == f"{catalog_dir}/policies.toml"
        assert (REPO_ROOT / "catalog" / "policies.toml").is_file()
        for listen in (cfg["pgwire"]["listen"], cfg["flightsql"]["listen"]):
            assert listen.rsplit(":", 1)[1] in exposed
