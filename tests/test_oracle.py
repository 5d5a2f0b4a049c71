"""Tests of the oracle itself, on tiny hand-made files with known answers.

They need no rxgate binary: they pin down the rules of DESIGN.md §3 as the
oracle implements them (tests/ORACLE.md), so that a mismatch between rxgate
and the oracle later points at rxgate, not at the oracle.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

import fakegen
from oracle import SEED_COLUMNS, HeaderError, Oracle, reason_class

D = "2024-01-31"


def rec(**kw) -> dict:
    """A valid seed-layout record; keyword arguments override fields."""
    r = dict(
        npi="1234567890", nppes_provider_last_org_name="SMITH",
        nppes_provider_first_name="JOHN", nppes_provider_city="BOSTON",
        nppes_provider_state="MA", specialty_description="Cardiology",
        description_flag="S", drug_name="LIPITOR", generic_name="ATORVASTATIN",
        bene_count="20", total_claim_count="100", total_30_day_fill_count="120.5",
        total_day_supply="3000", total_drug_cost="1500.25", bene_count_ge65="15",
        bene_count_ge65_suppress_flag="", total_claim_count_ge65="80",
        ge65_suppress_flag="", total_30_day_fill_count_ge65="90.0",
        total_day_supply_ge65="2400", total_drug_cost_ge65="1200.00", years_of_exp="= 30",
    )
    r.update(kw)
    return r


def line(r: dict | list) -> bytes:
    buf = io.StringIO()
    fields = [r[c] for c in SEED_COLUMNS] if isinstance(r, dict) else r
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue().encode()


def write_csv(path: Path, lines: list[bytes], header: list[str] = SEED_COLUMNS,
              eol: bytes = b"\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(eol.join([",".join(header).encode()] + lines) + eol)
    return path


def cities(tmp: Path, rows: list[dict]) -> Path:
    full = []
    for r in rows:
        base = dict(city_ascii=r["city"], county_fips="00000", lat="1", lng="2",
                    density="1", source="x", military="FALSE", incorporated="TRUE",
                    timezone="America/New_York", ranking="1", id="1")
        base.update(r)
        full.append(base)
    p = tmp / "cities" / "us_cities.parquet"
    fakegen.write_cities_parquet(p, full)
    return p


BOSTON = dict(city="Boston", state_id="MA", state_name="Massachusetts",
              county_name="Suffolk", population="675647", zips="02108 02109  02110")
SALEM_MA = dict(city="Salem", state_id="MA", state_name="Massachusetts",
                county_name="Essex", population="44480", zips="01970")
SALEM_OR = dict(city="Salem", state_id="OR", state_name="Oregon",
                county_name="Marion", population="175535", zips="")


@pytest.mark.parametrize("mode", ["python", "duckdb"])
def test_rejects_line_numbers_and_reasons(tmp_path, mode):
    bad_utf8 = line(rec(nppes_provider_last_org_name="MULLER")).replace(b"MULLER", b"M\xfcLLER")
    f = write_csv(tmp_path / "p" / "a.csv", [
        line(rec()),                                   # line 2 ok
        line(rec(npi="")),                             # 3 npi missing
        line(rec(npi="N/A")),                          # 4 npi without digits
        line(rec(drug_name="")),                       # 5 empty drug
        line(rec()) + b",extra",                       # 6 too many fields
        line([rec()[c] for c in SEED_COLUMNS[:-1]]),   # 7 too few fields
        bad_utf8,                                      # 8 invalid UTF-8
        line(rec(nppes_provider_last_org_name="SMITH, JR")),  # 9 ok: quoted comma
        line(rec(npi="NPI 1234567890")),               # 10 ok: digits extracted
    ])
    o = Oracle.from_inputs(f.parent, None, D, mode=mode)
    assert (o.read, o.loaded, o.quarantined) == (9, 3, 6)
    assert o.reject_classes() == [(3, "npi"), (4, "npi"), (5, "drug_name"),
                                  (6, "field_count"), (7, "field_count"), (8, "invalid_utf8")]
    assert {r.source_file for r in o.rejects} == {str(f)}
    assert o.rows("SELECT DISTINCT npi FROM prescriber_drug") == [("1234567890",)]
    assert o.scalar("SELECT count(*) FROM prescriber_drug") == 3
    if mode == "python":  # the DuckDB peer numbers rejected lines only
        assert sorted(o.rows("SELECT line_number FROM prescriber_drug")) == [(2,), (9,), (10,)]
        assert [r.raw_line for r in o.rejects][3].endswith(",extra")


def test_blank_lines_crlf_and_bom(tmp_path):
    f = tmp_path / "p.csv"
    body = [("\ufeff" + ",".join(SEED_COLUMNS)).encode(), line(rec()), b"", line(rec(npi="9"))]
    f.write_bytes(b"\r\n".join(body) + b"\r\n")
    o = Oracle.from_inputs(f, None, D)
    assert (o.read, o.loaded, o.quarantined) == (2, 2, 0)
    assert sorted(o.rows("SELECT line_number, npi FROM prescriber_drug")) == [
        (2, "1234567890"), (4, "9")]
    # CR is a terminator, not part of the last field.
    assert o.scalar("SELECT max(years_of_exp) FROM prescriber_drug") == 30


def test_unknown_header_is_fatal(tmp_path):
    f = write_csv(tmp_path / "p.csv", [b"1,2"], header=["foo", "bar"])
    with pytest.raises(HeaderError):
        Oracle.from_inputs(f, None, D)


@pytest.mark.parametrize("mode", ["python", "duckdb"])
def test_cleaning_rules(tmp_path, mode):
    records = [
        rec(npi="111", total_claim_count="10", years_of_exp="= 45"),
        rec(npi="111", total_claim_count="", years_of_exp="=45 years"),
        rec(npi="111", total_claim_count="15"),
        rec(npi="222", total_claim_count="abc", bene_count="12.5",
            total_drug_cost="1e3", total_30_day_fill_count="nan",
            total_day_supply="+7", years_of_exp="unknown"),
        rec(npi="222", total_claim_count="", total_drug_cost="$12",
            total_30_day_fill_count=".5", total_day_supply=" 7"),
        rec(npi="333", total_claim_count="1", nppes_provider_first_name="",
            nppes_provider_last_org_name="ACME CLINIC"),
        rec(npi="333", total_claim_count=""),
    ]
    f = write_csv(tmp_path / "p" / "a.csv",
                  [line(dict(r, generic_name=str(n))) for n, r in enumerate(records, start=2)])
    o = Oracle.from_inputs(f.parent, None, D, mode=mode)
    # generic_name carries the line number (the DuckDB peer keeps none)
    got = o.rows("""SELECT CAST(generic_name AS INT), npi, trx_cnt, bene_count,
                           total_drug_cost, total_30_day_fill_count, total_day_supply,
                           years_of_exp, presc_full_name, country_name,
                           CAST(delivery_date AS VARCHAR)
                    FROM prescriber_drug ORDER BY 1""")
    assert got == [
        (2, "111", 10, 20, 1500.25, 120.5, 3000, 45, "JOHN SMITH", "USA", D),
        (3, "111", 13, 20, 1500.25, 120.5, 3000, 45, "JOHN SMITH", "USA", D),  # round(12.5)
        (4, "111", 15, 20, 1500.25, 120.5, 3000, 30, "JOHN SMITH", "USA", D),
        (5, "222", None, None, 1000.0, None, 7, None, "JOHN SMITH", "USA", D),
        (6, "222", None, 20, None, 0.5, 7, 30, "JOHN SMITH", "USA", D),  # " 7" is 7
        (7, "333", 1, 20, 1500.25, 120.5, 3000, 30, "ACME CLINIC", "USA", D),
        (8, "333", 1, 20, 1500.25, 120.5, 3000, 30, "JOHN SMITH", "USA", D),
    ]


def test_city_report(tmp_path):
    c = cities(tmp_path, [BOSTON, SALEM_MA, SALEM_OR,
                          dict(city="Springfield", state_id="MA", state_name="Massachusetts",
                               county_name="Hampden", population="155929", zips="01101")])
    f = write_csv(tmp_path / "p.csv", [
        line(rec(npi="1", nppes_provider_city="BOSTON", total_claim_count="10")),
        line(rec(npi="1", nppes_provider_city="BOSTON", total_claim_count="")),  # imputed 10
        line(rec(npi="2", nppes_provider_city="Boston", total_claim_count="5")),
        line(rec(npi="3", nppes_provider_city="SALEM", nppes_provider_state="OR",
                 total_claim_count="7")),
        line(rec(npi="4", nppes_provider_city="NOWHERE", total_claim_count="99")),
    ])
    o = Oracle.from_inputs(f, c, D)
    assert o.rows("""SELECT city, state_name, county_name, population, zip_count
                     FROM us_cities ORDER BY ALL""") == [
        ("BOSTON", "MASSACHUSETTS", "SUFFOLK", 675647, 3),
        ("SALEM", "MASSACHUSETTS", "ESSEX", 44480, 1),
        ("SALEM", "OREGON", "MARION", 175535, 0),
        ("SPRINGFIELD", "MASSACHUSETTS", "HAMPDEN", 155929, 1),
    ]
    # "BOSTON" and "Boston" are one city; cities without prescribers are absent.
    assert o.rows("""SELECT city, state_name, county_name, population, zip_counts,
                            trx_counts, presc_counts FROM city_report ORDER BY ALL""") == [
        ("BOSTON", "MASSACHUSETTS", "SUFFOLK", 675647, 3, 25, 2),
        ("SALEM", "OREGON", "MARION", 175535, 0, 7, 1),
    ]


def test_top_prescribers(tmp_path):
    rows = []
    # State MA: ranks by total claims desc; ties share a dense rank; NULL last.
    for npi, claims, yoe in [("1", "100", 20), ("2", "100", 50), ("3", "100", 30),
                             ("4", "80", 30), ("5", "70", 30), ("6", "60", 30),
                             ("7", "50", 30), ("8", "999", 19), ("9", "999", 51)]:
        rows.append(line(rec(npi=npi, total_claim_count=claims, years_of_exp=f"= {yoe}")))
    # a second drug of npi 1: its rows are summed
    rows.append(line(rec(npi="1", total_claim_count="1", drug_name="X", years_of_exp="= 20")))
    # State OR: one prescriber with only missing counts ranks after the others.
    rows.append(line(rec(npi="20", nppes_provider_state="OR", total_claim_count="")))
    rows.append(line(rec(npi="21", nppes_provider_state="OR", total_claim_count="3",
                         total_day_supply="x")))
    f = write_csv(tmp_path / "p.csv", rows)
    o = Oracle.from_inputs(f, cities(tmp_path, [BOSTON]), D)
    got = o.rows("""SELECT presc_state, rank, npi, trx_cnt, total_day_supply, years_of_exp
                    FROM top_prescribers ORDER BY presc_state, rank, npi""")
    assert got == [
        ("MA", 1, "1", 101, 6000, 20),
        ("MA", 2, "2", 100, 3000, 50),
        ("MA", 2, "3", 100, 3000, 30),
        ("MA", 3, "4", 80, 3000, 30),
        ("MA", 4, "5", 70, 3000, 30),
        ("MA", 5, "6", 60, 3000, 30),
        ("OR", 1, "21", 3, None, 30),
        ("OR", 2, "20", None, 3000, 30),
    ]


def test_cms_layout(tmp_path):
    info = fakegen.generate(tmp_path / "cms", rows=600, seed=3, layout="cms", cities_limit=50)
    seed = fakegen.generate(tmp_path / "seed", rows=600, seed=3, layout="seed", cities_limit=50)
    for mode in ("python", "duckdb"):
        o = Oracle.from_inputs(info["prescribers"], info["cities"], D, mode=mode)
        s = Oracle.from_inputs(seed["prescribers"], seed["cities"], D, mode=mode)
        assert o.layouts == {"cms"} and s.layouts == {"seed"}
        assert (o.read, o.loaded, o.quarantined) == (s.read, s.loaded, s.quarantined)
        assert o.reject_classes() == s.reject_classes()
        # Same values apart from years_of_exp, which the CMS layout lacks.
        assert o.scalar("SELECT count(years_of_exp) FROM prescriber_drug") == 0
        q = "SELECT npi, drug_name, trx_cnt, total_drug_cost FROM prescriber_drug ORDER BY ALL"
        assert o.rows(q) == s.rows(q)


@pytest.mark.parametrize("layout", ["seed", "cms"])
def test_fakegen_dirt_found_and_modes_agree(tmp_path, layout):
    """On a few thousand generated rows the Python splitter and the DuckDB
    peer (the benchmark's) find the same rejects and produce the same tables."""
    info = fakegen.generate(tmp_path, rows=4000, seed=11, layout=layout)
    py = Oracle.from_inputs(info["prescribers"], info["cities"], D, mode="python")
    dk = Oracle.from_inputs(info["prescribers"], info["cities"], D, mode="duckdb")
    by_class: dict[str, int] = {}
    for _, reason in py.reject_classes():
        by_class[reason] = by_class.get(reason, 0) + 1
    assert by_class == {k: v for k, v in info["injected"].items() if v}
    assert py.read == 4000 == py.loaded + py.quarantined
    assert py.reject_classes() == dk.reject_classes()
    for table in ("prescriber_drug", "us_cities", "city_report", "top_prescribers"):
        q = f"SELECT * EXCLUDE (source_file, line_number) FROM {table} ORDER BY ALL" \
            if table == "prescriber_drug" else f"SELECT * FROM {table} ORDER BY ALL"
        assert py.rows(q) == dk.rows(q), table
    assert py.scalar("SELECT count(*) FROM city_report") > 0
    if layout == "seed":  # the CMS layout has no years_of_exp: no top list
        assert py.scalar("SELECT count(*) FROM top_prescribers") > 0


def test_write_parquet(tmp_path):
    import duckdb

    info = fakegen.generate(tmp_path / "in", rows=500, seed=5)
    o = Oracle.from_inputs(info["prescribers"], info["cities"], D, mode="duckdb")
    o.write_parquet(tmp_path / "out")
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/out/prescriber_drug/**/*.parquet')"
                    ).fetchall()[0][0]
    assert n == o.loaded
    for t in ("city_report", "top_prescribers", "us_cities", "prescriber_drug_rejects"):
        assert (tmp_path / "out" / f"{t}.parquet").exists()


@pytest.mark.parametrize("reason,cls", [
    ("invalid UTF-8 in line", "invalid_utf8"),
    ("stream did not contain valid UTF-8", "invalid_utf8"),
    ("bad_encoding", "invalid_utf8"),
    ("npi has no digits", "npi"),
    ("missing NPI", "npi"),
    ("empty drug_name", "drug_name"),
    ("drug_name field is empty", "drug_name"),
    ("wrong field count: expected 22, got 23", "field_count"),
    ("too many fields", "field_count"),
    ("field_count", "field_count"),
])
def test_reason_class(reason, cls):
    assert reason_class(reason) == cls
