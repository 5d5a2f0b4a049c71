#!/usr/bin/env python3
"""Derive crates/datagen/data/drugs.csv: real US drug names as (drug_name, generic_name) pairs.

Source: PyPI drug-named-entity-recognition 2.0.9 (MIT, Fast Data Science Ltd), file
drug_ner_dictionary.pkl.bz2 (a pickled dict shipped in the wheel; loaded here with pickle from
the installed, pinned package -- nothing is downloaded). Its first block of
`drug_variant_to_canonical` entries is built from MedlinePlus drug information pages
(U.S. National Library of Medicine): every canonical drug of that block has a
`medline_plus_id`, and each MedlinePlus page lists the generic name and its US brand names.
We take exactly that block -- the longest prefix of the dictionary in which every canonical
name has a medline_plus_id -- and nothing from the later DrugBank/MeSH/Wikipedia/NHS blocks
(which carry chemistry synonyms and non-US brands).

Rows:
  * each generic name G:             drug_name = G,     generic_name = G   (CMS does the same
                                                                           for generics)
  * each brand B of generic G:       drug_name = B,     generic_name = G
Normalisation (to look like CMS Part D):
  * upper-case; "®"/"™" removed;
  * parenthesised qualifiers dropped ("ALEMTUZUMAB (MULTIPLE SCLEROSIS)" -> "ALEMTUZUMAB");
  * combinations written with "/" as CMS does ("AMLODIPINE AND BENAZEPRIL" ->
    "AMLODIPINE/BENAZEPRIL", "ABACAVIR, DOLUTEGRAVIR, AND LAMIVUDINE" ->
    "ABACAVIR/DOLUTEGRAVIR/LAMIVUDINE"); other commas dropped;
  * brand variants that are not brand names are skipped: those containing a comma, starting
    with a digit, equal to some generic name, or shorter than 3 characters;
  * duplicates removed; sorted by (generic_name, drug_name). Deterministic.
Known limits: MedlinePlus names the active moiety ("ATORVASTATIN"), not the CMS salt form
("ATORVASTATIN CALCIUM"); a few entries are classes or supplements rather than single drugs.

Run:  /tmp/dgvenv/bin/python tools/cities/derive_drugs.py   (venv as in derive_cities.py)
"""
import bz2
import csv
import os
import pathlib
import pickle
import re
import sys

import drug_named_entity_recognition

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "datagen" / "data" / "drugs.csv"


def clean(name: str) -> str:
    s = re.sub(r"\([^)]*\)", " ", name.upper()).replace("®", "").replace("™", "")
    if " AND " in s:
        parts = re.split(r",\s*AND\s+|,\s*|\s+AND\s+", s)
        s = "/".join(p.strip() for p in parts if p.strip())
    else:
        s = s.replace(",", " ")
    s = re.sub(r"\s+", " ", s).strip(" ,")
    s = re.sub(r"\s*/\s*", "/", s)
    return s


def main() -> int:
    pkl = pathlib.Path(drug_named_entity_recognition.__file__).parent / "drug_ner_dictionary.pkl.bz2"
    with bz2.open(pkl, "rb") as f:
        d = pickle.load(f)
    v2c = d["drug_variant_to_canonical"]
    canon = d["drug_canonical_to_data"]

    block = []
    for variant, canonicals in v2c.items():  # dict order is the file's order
        if not canonicals or not all("medline_plus_id" in canon.get(c, {}) for c in canonicals):
            break
        block.append((variant, canonicals[0]))
    if not 3000 <= len(block) <= 5000:
        print(f"unexpected MedlinePlus block size {len(block)}", file=sys.stderr)
        return 1

    generics = {clean(c) for _, c in block}
    rows = set()
    for variant, c in block:
        g = clean(c)
        if not g:
            continue
        rows.add((g, g))
        if variant == c:
            continue
        if "," in variant or variant[:1].isdigit() or len(variant) < 3:
            continue
        b = clean(variant)
        if not b or b in generics:
            continue
        rows.add((b, g))

    # a brand name must map to exactly one generic name
    by_brand = {}
    for b, g in rows:
        by_brand.setdefault(b, set()).add(g)
    rows = {(b, g) for b, g in rows if len(by_brand[b]) == 1}

    out = sorted(rows, key=lambda r: (r[1], r[0]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(["drug_name", "generic_name"])
        w.writerows(out)
    os.replace(tmp, OUT)
    nb = sum(1 for b, g in out if b != g)
    print(f"wrote {len(out)} drugs ({nb} brand, {len(out) - nb} generic) to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
