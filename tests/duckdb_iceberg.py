"""DuckDB's iceberg extension, offline, as a reader of rxgate's tables.

DuckDB extensions are built for one DuckDB version and are normally downloaded at `INSTALL`
time from DuckDB's own server, which cannot be reached here. PyPI has them as packages
(`duckdb-extension-iceberg`, `duckdb-extension-avro`), but only up to DuckDB 1.5.5, while the
test venv's duckdb is 2.x (the oracle's and the benches' engine): a 1.5.5 extension refuses to
load into 2.x, and loading it anyway with `allow_extensions_metadata_mismatch` fails in its
initialisation. So this reader runs DuckDB 1.5.5 and the two extension packages from PyPI in
their own directory (`pip install --target`, cached beside the venv, once), in a subprocess,
and LOADs the extension files by path (no INSTALL, no download).

    rows = run(["SELECT count(*) FROM iceberg_scan('file:///…/00003-….metadata.json')"])

DuckDB's extension reads Iceberg metadata files (or a REST catalog); it has no SQL-catalog
client, so callers take the table's current `metadata_location` from the catalog database,
which is what a DuckDB user of a SQL catalog does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DUCKDB_VERSION = "1.5.5"
REQUIREMENTS = [f"duckdb=={DUCKDB_VERSION}", f"duckdb-extension-iceberg=={DUCKDB_VERSION}",
                f"duckdb-extension-avro=={DUCKDB_VERSION}"]


def target_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rxgate"
    return cache / f"duckdb-iceberg-{DUCKDB_VERSION}"


def ensure_installed() -> Path:
    """The package directory, installed from PyPI on first use (pip of the running venv)."""
    target = target_dir()
    stamp = target / ".installed"
    want = " ".join(REQUIREMENTS)
    if stamp.is_file() and stamp.read_text() == want:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                           "-q", "--no-deps", "--target", str(staging), *REQUIREMENTS],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise AssertionError(f"pip install {want} failed:\n{proc.stdout}\n{proc.stderr}")
    (staging / ".installed").write_text(want)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def run(queries: list[str], timeout: float = 300) -> dict:
    """Runs each query in DuckDB 1.5.5 with the iceberg extension loaded; returns
    {"version": …, "extensions": [...], "results": [rows of each query]} (values as JSON:
    numbers stay numbers, dates and decimals become strings)."""
    target = ensure_installed()
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONNOUSERSITE="1")
    proc = subprocess.run([sys.executable, __file__], input=json.dumps(queries), env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"duckdb iceberg reader failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def _worker() -> None:
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_iceberg

    queries = json.loads(sys.stdin.read())
    with tempfile.TemporaryDirectory() as ext_dir:
        con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False,
                                     "extension_directory": ext_dir})
        for module in (duckdb_extension_avro, duckdb_extension_iceberg):
            d = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}"
            (ext,) = d.glob("*.duckdb_extension")
            con.execute(f"LOAD '{ext}'")
        loaded = [r[0] for r in con.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded "
            "AND extension_name IN ('iceberg', 'avro') ORDER BY 1").fetchall()]
        results = [[list(r) for r in con.execute(q).fetchall()] for q in queries]
    print(json.dumps({"version": duckdb.__version__, "extensions": loaded, "results": results},
                     default=str))


if __name__ == "__main__":
    _worker()
