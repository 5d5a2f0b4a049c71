"""A small, deterministic, *Python-only* generator of dirty raw inputs.

It exists so the oracle (tests/oracle.py) and the harness can be exercised
without the `rxgate` binary: tests/test_oracle.py feeds it to the oracle, and
the bench/harness scripts can be dry-run on it.  It imitates the raw layouts
of DESIGN.md §3 (seed prescriber CSV, current CMS CSV, simplemaps cities
Parquet) and injects every kind of dirt the cleaning rules talk about.  It is
NOT the rxgate datagen and shares no code with it.

Usage as a script:
    python tests/fakegen.py --rows 2000 --out DIR [--layout seed|cms] [--seed N]
"""
from __future__ import annotations

import argparse
import csv
import io
import random
from pathlib import Path

from oracle import SEED_COLUMNS as SEED_HEADER  # one list of the seed layout

# Current CMS "Part D Prescribers by Provider and Drug" header, and for each
# of its columns the seed column holding the same value (None: no seed twin).
CMS_HEADER = [
    ("Prscrbr_NPI", "npi"),
    ("Prscrbr_Last_Org_Name", "nppes_provider_last_org_name"),
    ("Prscrbr_First_Name", "nppes_provider_first_name"),
    ("Prscrbr_City", "nppes_provider_city"),
    ("Prscrbr_State_Abrvtn", "nppes_provider_state"),
    ("Prscrbr_State_FIPS", None),
    ("Prscrbr_Type", "specialty_description"),
    ("Prscrbr_Type_Src", "description_flag"),
    ("Brnd_Name", "drug_name"),
    ("Gnrc_Name", "generic_name"),
    ("Tot_Clms", "total_claim_count"),
    ("Tot_30day_Fills", "total_30_day_fill_count"),
    ("Tot_Day_Suply", "total_day_supply"),
    ("Tot_Drug_Cst", "total_drug_cost"),
    ("Tot_Benes", "bene_count"),
    ("GE65_Sprsn_Flag", "ge65_suppress_flag"),
    ("GE65_Tot_Clms", "total_claim_count_ge65"),
    ("GE65_Tot_30day_Fills", "total_30_day_fill_count_ge65"),
    ("GE65_Tot_Drug_Cst", "total_drug_cost_ge65"),
    ("GE65_Tot_Day_Suply", "total_day_supply_ge65"),
    ("GE65_Bene_Sprsn_Flag", "bene_count_ge65_suppress_flag"),
    ("GE65_Tot_Benes", "bene_count_ge65"),
]

CITIES_COLUMNS = [
    "city", "city_ascii", "state_id", "state_name", "county_fips", "county_name",
    "lat", "lng", "population", "density", "source", "military", "incorporated",
    "timezone", "ranking", "zips", "id",
]

LAST = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER",
        "DAVIS", "RODRIGUEZ", "MARTINEZ", "O'BRIEN", "SMITH, JR", "NGUYEN"]
FIRST = ["JAMES", "MARY", "ROBERT", "PATRICIA", "JOHN", "JENNIFER", "MICHAEL",
         "LINDA", "DAVID", "ELIZABETH", "JOSÉ", "ZOË"]
SPECIALTY = ["Internal Medicine", "Family Practice", "Cardiology",
             "Nurse Practitioner", "Psychiatry", "Dentist"]
DRUGS = [("LIPITOR", "ATORVASTATIN CALCIUM"), ("LISINOPRIL", "LISINOPRIL"),
         ("METFORMIN HCL", "METFORMIN HCL"), ("ELIQUIS", "APIXABAN"),
         ("AMOXICILLIN", "AMOXICILLIN"), ("SYNTHROID", "LEVOTHYROXINE SODIUM"),
         ("HUMALOG, KWIKPEN", "INSULIN LISPRO"), ("XARELTO", "RIVAROXABAN")]


def _default_cities_csv() -> Path:
    """The city list that ships with the repo (used as a realistic dimension)."""
    return Path(__file__).resolve().parent.parent / "crates/datagen/data/us_cities.csv"


def load_city_rows(limit: int | None = 400) -> list[dict]:
    """City rows for the dimension; falls back to a tiny built-in list."""
    path = _default_cities_csv()
    rows: list[dict] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                rows.append(r)
                if limit and len(rows) >= limit:
                    break
    if not rows:
        rows = [
            dict(city="Boston", city_ascii="Boston", state_id="MA", state_name="Massachusetts",
                 county_fips="25025", county_name="Suffolk", lat="42.3", lng="-71.0",
                 population="675647", density="5344", source="polygon", military="FALSE",
                 incorporated="TRUE", timezone="America/New_York", ranking="1",
                 zips="02108 02109 02110", id="1840000455"),
            dict(city="Los Angeles", city_ascii="Los Angeles", state_id="CA",
                 state_name="California", county_fips="06037", county_name="Los Angeles",
                 lat="34.1", lng="-118.2", population="3898747", density="3275",
                 source="polygon", military="FALSE", incorporated="TRUE",
                 timezone="America/Los_Angeles", ranking="1", zips="90001 90002", id="1840020491"),
        ]
    return rows


def write_cities_parquet(path: Path, rows: list[dict]) -> None:
    """Write the simplemaps-layout dimension as Parquet (typed like simplemaps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def num(v, conv):
        try:
            return conv(v)
        except (TypeError, ValueError):
            return None

    cols = {c: [r.get(c) or None for r in rows] for c in CITIES_COLUMNS}
    table = pa.table({
        "city": pa.array(cols["city"], pa.string()),
        "city_ascii": pa.array(cols["city_ascii"], pa.string()),
        "state_id": pa.array(cols["state_id"], pa.string()),
        "state_name": pa.array(cols["state_name"], pa.string()),
        "county_fips": pa.array(cols["county_fips"], pa.string()),
        "county_name": pa.array(cols["county_name"], pa.string()),
        "lat": pa.array([num(v, float) for v in cols["lat"]], pa.float64()),
        "lng": pa.array([num(v, float) for v in cols["lng"]], pa.float64()),
        "population": pa.array([num(v, int) for v in cols["population"]], pa.int64()),
        "density": pa.array([num(v, float) for v in cols["density"]], pa.float64()),
        "source": pa.array(cols["source"], pa.string()),
        "military": pa.array(cols["military"], pa.string()),
        "incorporated": pa.array(cols["incorporated"], pa.string()),
        "timezone": pa.array(cols["timezone"], pa.string()),
        "ranking": pa.array([num(v, int) for v in cols["ranking"]], pa.int64()),
        "zips": pa.array([r.get("zips", "") for r in rows], pa.string()),
        "id": pa.array([num(v, int) for v in cols["id"]], pa.int64()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _csv_line(fields: list[str]) -> str:
    """One CSV record, quoted only where needed, without the line terminator."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()


def generate(out: Path, rows: int = 2000, seed: int = 42, layout: str = "seed",
             cities_limit: int | None = 400) -> dict:
    """Write OUT/prescribers/<file>.csv and OUT/cities/us_cities.parquet.

    Returns a dict with the paths and how many dirty rows of each kind were
    injected (the oracle must find exactly those)."""
    rng = random.Random(seed)
    cities = load_city_rows(cities_limit)
    write_cities_parquet(out / "cities" / "us_cities.parquet", cities)

    # A pool of prescribers, each with stable attributes (as in CMS data).
    n_presc = max(5, rows // 8)
    prescribers = []
    for _ in range(n_presc):
        c = rng.choice(cities)
        city = c["city"]
        if rng.random() < 0.1:
            city = city.lower()  # case differs from the dimension: join is upper()
        if rng.random() < 0.05:
            city = "NOWHERESVILLE"  # not in the dimension: inner join drops it
        prescribers.append(dict(
            npi=str(rng.randrange(1_000_000_000, 2_000_000_000)),
            last=rng.choice(LAST), first=rng.choice(FIRST), city=city,
            state=c["state_id"], spec=rng.choice(SPECIALTY),
            yoe=rng.randrange(5, 60),
        ))

    injected = {"invalid_utf8": 0, "field_count": 0, "npi": 0, "drug_name": 0}
    lines: list[bytes] = []
    for i in range(rows):
        p = rng.choice(prescribers)
        drug, generic = rng.choice(DRUGS)
        claims = rng.randrange(11, 900)
        rec = dict(zip(SEED_HEADER, [""] * len(SEED_HEADER)))
        rec.update(
            npi=p["npi"], nppes_provider_last_org_name=p["last"],
            nppes_provider_first_name=p["first"], nppes_provider_city=p["city"],
            nppes_provider_state=p["state"], specialty_description=p["spec"],
            description_flag="S", drug_name=drug, generic_name=generic,
            bene_count=str(rng.randrange(11, 200)), total_claim_count=str(claims),
            total_30_day_fill_count=f"{claims * 1.5:.1f}",
            total_day_supply=str(claims * 30),
            total_drug_cost=f"{claims * rng.uniform(2, 400):.2f}",
            bene_count_ge65=str(rng.randrange(0, 100)),
            bene_count_ge65_suppress_flag=rng.choice(["", "*", "#"]),
            total_claim_count_ge65=str(rng.randrange(0, claims)),
            ge65_suppress_flag=rng.choice(["", "*"]),
            total_30_day_fill_count_ge65=f"{rng.uniform(0, 100):.1f}",
            total_day_supply_ge65=str(rng.randrange(0, 9000)),
            total_drug_cost_ge65=f"{rng.uniform(0, 5000):.2f}",
            years_of_exp=f"= {p['yoe']}",
        )
        # Soft dirt: the row is loaded, the value becomes NULL / is cleaned.
        r = rng.random()
        if r < 0.04:
            rec["total_claim_count"] = ""  # missing -> imputed
        elif r < 0.06:
            rec["total_claim_count"] = rng.choice(["abc", "12x", "1.5.3", "--"])
        elif r < 0.08:
            rec["total_drug_cost"] = rng.choice(["N/A", "1,234.5", "$12"])
        elif r < 0.09:
            rec["bene_count"] = rng.choice(["<11", "ten"])
        elif r < 0.10:
            rec["years_of_exp"] = rng.choice(["= ?", "", "unknown"])
        elif r < 0.11:
            rec["npi"] = "NPI " + rec["npi"]  # digits are extracted
        elif r < 0.12:
            rec["total_day_supply"] = "12.5"  # not an integer -> NULL
        # Hard dirt: the row is quarantined.
        hard = rng.random()
        fields = [rec[c] for c in SEED_HEADER]
        if layout == "cms":
            fields = [rec[s] if s else "%02d" % (sum(map(ord, p["state"])) % 57)
                      for _, s in CMS_HEADER]
        drug_idx = 7 if layout == "seed" else 8
        if hard < 0.01:
            fields[0] = ""
            injected["npi"] += 1
        elif hard < 0.02:
            fields[0] = rng.choice(["UNKNOWN", "N/A", "-"])
            injected["npi"] += 1
        elif hard < 0.03:
            fields[drug_idx] = ""
            injected["drug_name"] += 1
        elif hard < 0.04:
            fields = fields + ["extra"]
            injected["field_count"] += 1
        elif hard < 0.05:
            fields = fields[:-1]
            injected["field_count"] += 1
        line = _csv_line(fields).encode("utf-8")
        if 0.05 <= hard < 0.06:
            # Latin-1 bytes in the middle of a name: not valid UTF-8.
            line = line.replace(p["last"].encode(), p["last"].encode() + b"\xe9\xff", 1)
            injected["invalid_utf8"] += 1
        lines.append(line)

    header = SEED_HEADER if layout == "seed" else [c for c, _ in CMS_HEADER]
    name = ("USA_Presc_Medicare_Data_2021.csv" if layout == "seed"
            else "MUP_DPR_RY23_P04_V10_DY21_NPIBN.csv")
    path = out / "prescribers" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(_csv_line(header).encode() + b"\n")
        for line in lines:
            f.write(line + b"\n")
    return {"prescribers": path, "cities": out / "cities" / "us_cities.parquet",
            "rows": rows, "injected": injected}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--layout", choices=["seed", "cms"], default="seed")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    info = generate(a.out, a.rows, a.seed, a.layout)
    print({k: str(v) for k, v in info.items()})


if __name__ == "__main__":
    main()
