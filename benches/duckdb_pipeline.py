"""The DuckDB peer of workload W1: the seed pipeline on the raw files.

Same inputs and the same work as `rxgate pipeline run`: split and validate
the prescriber CSV (DuckDB's CSV reader rejects bad encodings and wrong field
counts; npi/drug_name rules in SQL), clean, impute, load the cities, compute
the city report and the top-prescribers report, and write everything as
Parquet (prescribers partitioned by state). The SQL is the test oracle's
(tests/oracle.py, mode "duckdb"); tests check it equals the oracle proper.

    python benches/duckdb_pipeline.py --input RAW --out DIR --delivery-date D

Prints one JSON line: {"read", "loaded", "quarantined", "seconds"}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from oracle import Oracle  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, required=True, help="datagen --out dir")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--delivery-date", default="2024-01-31")
    a = ap.parse_args()
    t0 = time.perf_counter()
    o = Oracle.from_inputs(a.input / "prescribers", a.input / "cities", a.delivery_date,
                           mode="duckdb")
    o.write_parquet(a.out)
    secs = time.perf_counter() - t0
    print(json.dumps({"read": o.read, "loaded": o.loaded, "quarantined": o.quarantined,
                      "seconds": round(secs, 3)}))


if __name__ == "__main__":
    main()
