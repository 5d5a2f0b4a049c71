"""Checks of a lakehouse written by rxgate, read back through `rxgate sql`.

Shared by the end-to-end, crash and wire-protocol tests.
"""
from __future__ import annotations

from pathlib import Path

import compare
from oracle import Oracle, reason_class
from rxcli import Rxgate, sql_quote

PRESCRIBER_DRUG = "health.prescriber_drug"
US_CITIES = "health.us_cities"
CITY_REPORT = "health.city_report"
TOP_PRESCRIBERS = "health.top_prescribers"
REJECTS = "health_quarantine.prescriber_drug_rejects"
ALL_TABLES = (PRESCRIBER_DRUG, US_CITIES, CITY_REPORT, TOP_PRESCRIBERS, REJECTS)


def on(delivery_date: str) -> str:
    """SQL predicate selecting one delivery."""
    return f"delivery_date = CAST({sql_quote(delivery_date)} AS DATE)"


def select_cols(schema: dict) -> str:
    return ", ".join(f'"{c}"' for c in schema)


def fingerprint(rx: Rxgate, delivery_date: str) -> dict:
    """Counts and sums that change if a delivery's data changes at all."""
    d = on(delivery_date)
    fp = {t: rx.count(t, d) for t in ALL_TABLES}
    _, rows = rx.sql(f"""SELECT count(DISTINCT npi), sum(trx_cnt), sum(total_day_supply),
                                sum(bene_count), count(years_of_exp), count(drug_name)
                         FROM {PRESCRIBER_DRUG} WHERE {d}""")
    fp["prescriber_drug_sums"] = tuple(rows[0])
    _, rows = rx.sql(f"SELECT sum(trx_counts), sum(presc_counts) FROM {CITY_REPORT} WHERE {d}")
    fp["city_report_sums"] = tuple(rows[0])
    _, rows = rx.sql(f"SELECT sum(trx_cnt), max(\"rank\") FROM {TOP_PRESCRIBERS} WHERE {d}")
    fp["top_prescribers_sums"] = tuple(rows[0])
    return fp


def table_counts(rx: Rxgate) -> dict:
    return {t: rx.count(t) for t in ALL_TABLES}


def partition_files(data_dir: Path, delivery_date: str) -> dict:
    """Files under the warehouse whose path names this delivery's partition,
    with size and mtime: a later delivery must not touch any of them."""
    out = {}
    for p in Path(data_dir).rglob("*"):
        if p.is_file() and f"delivery_date={delivery_date}" in str(p):
            st = p.stat()
            out[str(p.relative_to(data_dir))] = (st.st_size, st.st_mtime_ns)
    return out


def assert_counts(summary: dict, oracle: Oracle, label: str) -> None:
    """A --json summary (ingest or pipeline) against the oracle."""
    got = {k: summary.get(k) for k in ("read", "loaded", "quarantined")}
    want = {"read": oracle.read, "loaded": oracle.loaded, "quarantined": oracle.quarantined}
    assert got == want, f"{label}: rxgate reported {got}, oracle {want} ({summary})"
    assert summary["read"] == summary["loaded"] + summary["quarantined"], summary


def assert_tables_match_oracle(rx: Rxgate, oracle: Oracle, delivery_date: str,
                               with_cities: bool = True) -> None:
    """Every curated table of one delivery equals the oracle's, row for row."""
    d = on(delivery_date)
    assert rx.count(PRESCRIBER_DRUG, d) == oracle.loaded
    assert rx.count(REJECTS, d) == oracle.quarantined
    assert_quarantine_matches(rx, oracle, delivery_date)
    compare.assert_same_rows(
        rx.sql_dicts(f"SELECT {select_cols(compare.PRESCRIBER_DRUG)} FROM {PRESCRIBER_DRUG} "
                     f"WHERE {d}"),
        oracle_dicts(oracle, "prescriber_drug", compare.PRESCRIBER_DRUG),
        compare.PRESCRIBER_DRUG, f"{PRESCRIBER_DRUG} @ {delivery_date}")
    if not with_cities:
        return
    for table, local, schema in ((US_CITIES, "us_cities", compare.US_CITIES),
                                 (CITY_REPORT, "city_report", compare.CITY_REPORT),
                                 (TOP_PRESCRIBERS, "top_prescribers", compare.TOP_PRESCRIBERS)):
        compare.assert_same_rows(
            rx.sql_dicts(f"SELECT {select_cols(schema)} FROM {table} WHERE {d} "
                         f"ORDER BY {select_cols(schema)}"),
            oracle_dicts(oracle, local, schema), schema, f"{table} @ {delivery_date}")


def oracle_dicts(oracle: Oracle, table: str, schema: dict) -> list[dict]:
    cols = select_cols(schema)
    names = list(schema)
    return [dict(zip(names, r)) for r in oracle.rows(f"SELECT {cols} FROM {table}")]


def assert_quarantine_matches(rx: Rxgate, oracle: Oracle, delivery_date: str) -> None:
    """Same rejected lines (1-based physical line numbers) with the same
    reason classes; the raw text of each valid-UTF-8 reject is kept."""
    rows = rx.sql_dicts(f"SELECT source_file, line_number, reason, raw_line FROM {REJECTS} "
                        f"WHERE {on(delivery_date)} ORDER BY line_number")
    got = sorted((int(r["line_number"]), reason_class(r["reason"])) for r in rows)
    want = oracle.reject_classes()
    if got != want:
        only_got = sorted(set(got) - set(want))[:10]
        only_want = sorted(set(want) - set(got))[:10]
        raise AssertionError(
            f"quarantine differs: rxgate {len(got)} rejects, oracle {len(want)}\n"
            f"  only rxgate: {only_got}\n  only oracle: {only_want}\n"
            f"  reasons seen: {sorted({r['reason'] for r in rows})[:10]}")
    names = {Path(r.source_file).name for r in oracle.rejects}
    assert {Path(r["source_file"]).name for r in rows} <= names, \
        f"source_file values {sorted({r['source_file'] for r in rows})[:3]} vs {names}"
    raw = {r.line_number: r.raw_line for r in oracle.rejects if r.reason != "invalid_utf8"}
    bad = [(int(r["line_number"]), r["raw_line"]) for r in rows
           if int(r["line_number"]) in raw and r["raw_line"].rstrip("\r\n") != raw[int(r["line_number"])]]
    assert not bad, f"raw_line differs from the file for lines {bad[:3]}"
