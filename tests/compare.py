"""Row-for-row comparison of rxgate's output (CSV strings) with the oracle's
(typed DuckDB values), with a tolerance for doubles.

Both sides are normalised per column kind:
  text   NULL and '' are the same value (the CLI prints NULL as empty)
  int    parsed exactly
  float  compared with a relative tolerance (sums may be added in any order)
  date   'YYYY-MM-DD'
then sorted by the same key and compared pair by pair; a mismatch reports the
first few differing rows and the rows only one side has.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Mapping, Sequence

REL_TOL = 1e-9
ABS_TOL = 1e-6


def norm(value, kind: str):
    if kind == "text":
        return "" if value is None else str(value)
    if value is None or value == "":
        return None
    if kind == "int":
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                f = float(value)
                assert f.is_integer(), f"not an integer: {value!r}"
                return int(f)
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "date":
        return str(value)[:10]
    raise ValueError(kind)


def _sort_key(row: tuple, kinds: Sequence[str]) -> tuple:
    # Exact columns first (they decide the order); floats last and coarsely
    # rounded, so a last-bit difference cannot reorder the two sides.
    exact = [(v is None, v if v is not None else 0) for v, k in zip(row, kinds) if k != "float"]
    approx = [(v is None, round(v, 3) if v is not None else 0.0)
              for v, k in zip(row, kinds) if k == "float"]
    return tuple(exact + approx)


def _close(a, b, kind: str) -> bool:
    if kind != "float" or a is None or b is None:
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def normalise(rows: Iterable[Mapping], schema: Mapping[str, str]) -> list[tuple]:
    cols = list(schema)
    kinds = [schema[c] for c in cols]
    out = []
    for r in rows:
        missing = [c for c in cols if c not in r]
        assert not missing, f"columns {missing} missing from row {dict(r)}"
        out.append(tuple(norm(r[c], k) for c, k in zip(cols, kinds)))
    out.sort(key=lambda t: _sort_key(t, kinds))
    return out


def assert_same_rows(actual: Iterable[Mapping], expected: Iterable[Mapping],
                     schema: Mapping[str, str], label: str, show: int = 8) -> None:
    """Assert both row sets are equal as multisets, doubles within tolerance."""
    cols = list(schema)
    kinds = [schema[c] for c in cols]
    a = normalise(actual, schema)
    e = normalise(expected, schema)
    diffs = []
    if len(a) == len(e):
        for i, (ra, re_) in enumerate(zip(a, e)):
            if not all(_close(x, y, k) for x, y, k in zip(ra, re_, kinds)):
                diffs.append((i, ra, re_))
        if not diffs:
            return
    only_a = Counter(_rounded(a, kinds)) - Counter(_rounded(e, kinds))
    only_e = Counter(_rounded(e, kinds)) - Counter(_rounded(a, kinds))
    msg = [f"{label}: rxgate has {len(a)} rows, oracle {len(e)}; columns {cols}"]
    for i, ra, re_ in diffs[:show]:
        msg.append(f"  row {i}: rxgate {ra}\n          oracle {re_}")
    if only_a:
        msg.append(f"  only in rxgate ({sum(only_a.values())}): {list(only_a)[:show]}")
    if only_e:
        msg.append(f"  only in oracle ({sum(only_e.values())}): {list(only_e)[:show]}")
    raise AssertionError("\n".join(msg))


def _rounded(rows: list[tuple], kinds: Sequence[str]) -> list[tuple]:
    return [tuple(round(v, 4) if k == "float" and v is not None else v
                  for v, k in zip(r, kinds)) for r in rows]


# Column kinds of the curated tables (DESIGN.md §3) that the tests compare.
CITY_REPORT = {
    "city": "text", "state_name": "text", "county_name": "text", "population": "int",
    "zip_counts": "int", "trx_counts": "int", "presc_counts": "int",
}
TOP_PRESCRIBERS = {
    "npi": "text", "presc_full_name": "text", "presc_state": "text",
    "country_name": "text", "years_of_exp": "int", "trx_cnt": "int",
    "total_day_supply": "int", "total_drug_cost": "float", "rank": "int",
}
PRESCRIBER_DRUG = {
    "npi": "text", "presc_last_name": "text", "presc_first_name": "text",
    "presc_full_name": "text", "presc_city": "text", "presc_state": "text",
    "presc_specialty": "text", "description_flag": "text", "drug_name": "text",
    "generic_name": "text", "bene_count": "int", "trx_cnt": "int",
    "total_30_day_fill_count": "float", "total_day_supply": "int",
    "total_drug_cost": "float", "bene_count_ge65": "int",
    "bene_count_ge65_suppress_flag": "text", "total_claim_count_ge65": "int",
    "ge65_suppress_flag": "text", "total_30_day_fill_count_ge65": "float",
    "total_day_supply_ge65": "int", "total_drug_cost_ge65": "float",
    "years_of_exp": "int", "country_name": "text",
}
US_CITIES = {
    "city": "text", "state_id": "text", "state_name": "text", "county_name": "text",
    "population": "int", "zips": "text", "zip_count": "int",
}
