"""SQLAlchemy 1.4's PostgreSQL inspector, as Superset 6 runs it, beside the venv's SQLAlchemy 2.

Superset pins SQLAlchemy 1.4, whose inspector sends other catalog SQL than 2.x (its
`get_indexes` compares `ix.indisprimary = 'f'`, a boolean with a quoted literal). The test
venv has SQLAlchemy 2, so 1.4 is installed from PyPI into its own cached directory (`pip
install --target`, once, like tests/duckdb_iceberg.py) and run in a subprocess with that
directory first on its path (psycopg2 comes from the venv).

    results = inspect_all(dsn_url, schema="health", table="us_cities")
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = "1.4.54"
REQUIREMENT = f"sqlalchemy=={VERSION}"

#: The inspector calls Superset makes when it creates a dataset (and a few listings).
METHODS = ("has_table", "get_columns", "get_pk_constraint", "get_foreign_keys", "get_indexes",
           "get_unique_constraints", "get_table_comment", "get_view_names", "get_table_names",
           "get_check_constraints")


def target_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rxgate"
    return cache / f"sqlalchemy-{VERSION}"


def ensure_installed() -> Path:
    """The package directory, installed from PyPI on first use (pip of the running venv)."""
    target = target_dir()
    stamp = target / ".installed"
    if stamp.is_file() and stamp.read_text() == REQUIREMENT:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                           "-q", "--no-deps", "--target", str(staging), REQUIREMENT],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise AssertionError(f"pip install {REQUIREMENT} failed:\n{proc.stdout}\n{proc.stderr}")
    (staging / ".installed").write_text(REQUIREMENT)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def inspect_all(url: str, schema: str, table: str, timeout: float = 300) -> dict:
    """Runs every method of METHODS with SQLAlchemy 1.4 against `url`; returns
    {"version": "1.4.x", "results": {method: value or {"error": text}}}."""
    target = ensure_installed()
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONNOUSERSITE="1")
    request = json.dumps({"url": url, "schema": schema, "table": table})
    proc = subprocess.run([sys.executable, __file__], input=request, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"SQLAlchemy 1.4 inspector failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def _worker() -> None:
    import sqlalchemy as sa

    req = json.loads(sys.stdin.read())
    engine = sa.create_engine(req["url"])
    insp = sa.inspect(engine)
    schema, table = req["schema"], req["table"]
    results = {}
    for method in METHODS:
        fn = getattr(insp, method)
        try:
            if method in ("get_view_names", "get_table_names"):
                value = fn(schema=schema)
            else:
                value = fn(table, schema=schema)
            if method == "get_columns":
                value = [{"name": c["name"], "type": str(c["type"]), "nullable": c["nullable"]} for c in value]
            results[method] = value
        except Exception as e:  # reported to the test, which names the failing call
            results[method] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    engine.dispose()
    json.dump({"version": sa.__version__, "results": results}, sys.stdout, default=str)


if __name__ == "__main__":
    _worker()
