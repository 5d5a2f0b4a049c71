"""End to end: rxgate datagen -> pipeline run -> curated tables and reports,
checked row for row against the independent oracle (tests/oracle.py)."""
from __future__ import annotations

import hashlib

import pyarrow.parquet as pq

import lake
from conftest import D1, D2, D3, generate
from oracle import REASONS, SEED_COLUMNS, Oracle
from rxcli import REPO_ROOT, Rxgate

SIMPLEMAPS_COLUMNS = [
    "city", "city_ascii", "state_id", "state_name", "county_fips", "county_name",
    "lat", "lng", "population", "density", "source", "military", "incorporated",
    "timezone", "ranking", "zips", "id",
]
ROWS_AT_SCALE_1 = 1_329_329


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# datagen
# --------------------------------------------------------------------------

def test_datagen_layout_and_determinism(rxgate_bin, dataset, tmp_path):
    with dataset.prescribers.open("rb") as f:
        assert f.readline().rstrip(b"\r\n").decode() == ",".join(SEED_COLUMNS)
    schema = pq.read_schema(dataset.cities)
    assert schema.names == SIMPLEMAPS_COLUMNS
    cities = pq.read_table(dataset.cities)
    assert cities.num_rows > 100
    assert all(z is None or isinstance(z, str) for z in cities.column("zips").to_pylist()[:50])

    again = generate(rxgate_bin, tmp_path / "again")
    assert sha256(again.prescribers) == sha256(dataset.prescribers), "same seed, other CSV"
    assert pq.read_table(again.cities).equals(cities), "same seed, other cities"
    other = generate(rxgate_bin, tmp_path / "other", seed="7")
    assert sha256(other.prescribers) != sha256(dataset.prescribers), "seed is ignored"


def test_datagen_rows_follow_scale(oracle_d1, dataset):
    expected = round(ROWS_AT_SCALE_1 * float(dataset.scale))
    assert abs(oracle_d1.read - expected) <= max(2, expected // 100), \
        f"scale {dataset.scale}: {oracle_d1.read} rows, expected about {expected}"


def test_dataset_has_every_kind_of_dirt(oracle_d1):
    """The generated file must exercise every rule, or the tests prove little."""
    found = {r.reason for r in oracle_d1.rejects}
    assert found == set(REASONS), f"reject classes present: {found}"
    o = oracle_d1
    assert o.scalar("SELECT count(*) FROM prescriber_drug WHERE trx_cnt_imputed") > 0, \
        "no missing/malformed total_claim_count to impute"
    assert o.scalar("SELECT count(*) FROM prescriber_drug WHERE trx_cnt_imputed "
                    "AND trx_cnt IS NOT NULL") > 0, "no imputed value"
    assert o.scalar("SELECT count(*) FROM city_report") > 0
    assert o.scalar("SELECT count(*) FROM top_prescribers") > 0


def test_oracle_and_duckdb_peer_agree_on_datagen(dataset, oracle_d1):
    """benches/ times the DuckDB peer; it must compute what the oracle does."""
    peer = Oracle.from_inputs(dataset.root / "prescribers", dataset.root / "cities", D1,
                              mode="duckdb")
    assert peer.reject_classes() == oracle_d1.reject_classes()
    for table in ("city_report", "top_prescribers"):
        q = f"SELECT * FROM {table} ORDER BY ALL"
        assert peer.rows(q) == oracle_d1.rows(q), table
    q = "SELECT * EXCLUDE (source_file, line_number) FROM prescriber_drug ORDER BY ALL"
    assert peer.rows(q) == oracle_d1.rows(q)


# --------------------------------------------------------------------------
# pipeline run (the shared, read-only `lakehouse` of delivery D1)
# --------------------------------------------------------------------------

def test_pipeline_summary_reconciles(lakehouse, oracle_d1):
    s = lakehouse.pipeline
    assert s["delivery_date"] == D1
    lake.assert_counts(s, oracle_d1, "pipeline run")
    names = [st["name"] for st in s["steps"]]
    assert len(names) >= 5, names
    assert all(st["status"] == "done" for st in s["steps"]), s["steps"]
    assert all(float(st["seconds"]) >= 0 for st in s["steps"]), s["steps"]


def test_table_counts_reconcile(lakehouse, oracle_d1, dataset):
    rx = lakehouse.rx
    assert rx.count(lake.PRESCRIBER_DRUG) == oracle_d1.loaded
    assert rx.count(lake.REJECTS) == oracle_d1.quarantined
    assert rx.count(lake.US_CITIES) == pq.read_metadata(dataset.cities).num_rows
    assert rx.count(lake.PRESCRIBER_DRUG, lake.on(D1)) == oracle_d1.loaded


def test_prescriber_files_follow_the_tables_sort_order(lakehouse):
    """catalog/health.toml gives prescriber_drug the Iceberg sort order (presc_specialty,
    drug_name): the metadata records it and every data file is written in that order."""
    import json
    table_dir = lakehouse.rx.data_dir / "warehouse" / "health" / "prescriber_drug"
    meta = max((table_dir / "metadata").glob("*.metadata.json"), key=lambda p: p.stat().st_mtime)
    md = json.loads(meta.read_text())
    order = next(o for o in md["sort-orders"] if o["order-id"] == md["default-sort-order-id"])
    names = {f["id"]: f["name"] for f in md["schemas"][-1]["fields"]}
    assert [names[f["source-id"]] for f in order["fields"]] == ["presc_specialty", "drug_name"]
    files = sorted(table_dir.glob("data/**/*.parquet"))
    assert len(files) > 10
    for f in files:
        t = pq.read_table(f, columns=["presc_specialty", "drug_name"])
        keys = list(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
        # Nulls first, then ascending (None sorts as "" here: no value is empty).
        norm = [tuple("" if v is None else v for v in k) for k in keys]
        assert norm == sorted(norm), f"{f.name} is not sorted by (presc_specialty, drug_name)"


def test_quarantine_matches_oracle(lakehouse, oracle_d1):
    lake.assert_quarantine_matches(lakehouse.rx, oracle_d1, D1)


def test_prescriber_drug_matches_oracle(lakehouse, oracle_d1):
    from compare import PRESCRIBER_DRUG, assert_same_rows
    rx = lakehouse.rx
    assert_same_rows(
        rx.sql_dicts(f"SELECT {lake.select_cols(PRESCRIBER_DRUG)} FROM {lake.PRESCRIBER_DRUG}"),
        lake.oracle_dicts(oracle_d1, "prescriber_drug", PRESCRIBER_DRUG),
        PRESCRIBER_DRUG, "health.prescriber_drug")


def test_us_cities_matches_oracle(lakehouse, oracle_d1):
    from compare import US_CITIES, assert_same_rows
    assert_same_rows(
        lakehouse.rx.sql_dicts(f"SELECT {lake.select_cols(US_CITIES)} FROM {lake.US_CITIES}"),
        lake.oracle_dicts(oracle_d1, "us_cities", US_CITIES), US_CITIES, "health.us_cities")


def test_city_report_matches_oracle(lakehouse, oracle_d1):
    from compare import CITY_REPORT, assert_same_rows
    cols = lake.select_cols(CITY_REPORT)
    assert_same_rows(
        lakehouse.rx.sql_dicts(f"SELECT {cols} FROM {lake.CITY_REPORT} ORDER BY {cols}"),
        lake.oracle_dicts(oracle_d1, "city_report", CITY_REPORT),
        CITY_REPORT, "health.city_report")


def test_top_prescribers_matches_oracle(lakehouse, oracle_d1):
    from compare import TOP_PRESCRIBERS, assert_same_rows
    rows = lakehouse.rx.sql_dicts(
        f"SELECT {lake.select_cols(TOP_PRESCRIBERS)} FROM {lake.TOP_PRESCRIBERS} "
        f'ORDER BY presc_state, "rank", npi')
    assert rows and all(1 <= int(r["rank"]) <= 5 for r in rows)
    assert all(20 <= int(r["years_of_exp"]) <= 50 for r in rows)
    assert_same_rows(rows, lake.oracle_dicts(oracle_d1, "top_prescribers", TOP_PRESCRIBERS),
                     TOP_PRESCRIBERS, "health.top_prescribers")


def test_full_check_helper_agrees(lakehouse, oracle_d1):
    """The helper the other modules use passes on the reference lakehouse."""
    lake.assert_tables_match_oracle(lakehouse.rx, oracle_d1, D1)


# --------------------------------------------------------------------------
# Idempotence and deliveries (each test has its own data dir)
# --------------------------------------------------------------------------

def test_ingest_same_delivery_twice_replaces(rx, dataset, oracle_d1):
    rx.apply_catalog()
    rx.apply_catalog()  # idempotent
    c1 = rx.ingest("cities", dataset.cities, D1)
    p1 = rx.ingest("prescribers", dataset.prescribers, D1)
    for key in ("table", "read", "loaded", "quarantined", "snapshot_id"):
        assert key in p1, f"ingest --json lacks {key!r}: {p1}"
    assert "prescriber_drug" in p1["table"] and "us_cities" in c1["table"]
    lake.assert_counts(p1, oracle_d1, "first ingest")
    first = lake.fingerprint(rx, D1)
    assert first[lake.PRESCRIBER_DRUG] == oracle_d1.loaded

    c2 = rx.ingest("cities", dataset.cities, D1)
    p2 = rx.ingest("prescribers", dataset.prescribers, D1)
    lake.assert_counts(p2, oracle_d1, "second ingest")
    assert c2["loaded"] == c1["loaded"]
    assert lake.fingerprint(rx, D1) == first, "re-ingesting a delivery must replace it"
    assert rx.count(lake.PRESCRIBER_DRUG) == oracle_d1.loaded
    assert rx.count(lake.US_CITIES) == c1["loaded"]
    assert rx.count(lake.REJECTS) == oracle_d1.quarantined
    lake.assert_tables_match_oracle(rx, oracle_d1, D1, with_cities=False)


def test_pipeline_rerun_skips_committed_steps(rx, dataset, oracle_d1):
    first = rx.pipeline(dataset.root, D1)
    assert all(st["status"] == "done" for st in first["steps"]), first["steps"]
    before = lake.fingerprint(rx, D1)
    second = rx.pipeline(dataset.root, D1)
    work = [st for st in second["steps"] if "catalog" not in st["name"].lower()]
    assert len(work) >= 4, second["steps"]
    assert all(st["status"] == "skipped" for st in work), second["steps"]
    assert lake.fingerprint(rx, D1) == before
    assert rx.count(lake.PRESCRIBER_DRUG) == oracle_d1.loaded


def test_second_delivery_adds_a_partition(rx, rxgate_bin, dataset, oracle_d1, tmp_path):
    rx.pipeline(dataset.root, D1)
    d1_before = lake.fingerprint(rx, D1)
    d1_files = lake.partition_files(rx.data_dir, D1)

    ds2 = generate(rxgate_bin, tmp_path / "raw2", seed="7")
    oracle_d2 = Oracle.from_inputs(ds2.root / "prescribers", ds2.root / "cities", D2)
    s2 = rx.pipeline(ds2.root, D2)
    assert s2["delivery_date"] == D2
    lake.assert_counts(s2, oracle_d2, "pipeline run of D2")
    assert all(st["status"] == "done" for st in s2["steps"]
               if "catalog" not in st["name"].lower()), s2["steps"]

    assert lake.fingerprint(rx, D1) == d1_before, "delivery D2 changed D1's data"
    assert lake.partition_files(rx.data_dir, D1) == d1_files, "D2 rewrote D1's files"
    lake.assert_tables_match_oracle(rx, oracle_d2, D2)
    assert rx.count(lake.PRESCRIBER_DRUG) == oracle_d1.loaded + oracle_d2.loaded
    dates = rx.sql(f"SELECT DISTINCT CAST(delivery_date AS VARCHAR) AS d "
                   f"FROM {lake.PRESCRIBER_DRUG} ORDER BY d")[1]
    assert [r[0] for r in dates] == [D1, D2]


def test_cms_layout_loads_like_the_oracle(rx, rxgate_bin, tmp_path):
    ds = generate(rxgate_bin, tmp_path / "cms", layout="cms")
    presc_dir = ds.root / "prescribers"
    oracle = Oracle.from_inputs(presc_dir, None, D3)
    assert oracle.layouts == {"cms"}, "datagen --layout cms did not write the CMS header"
    assert oracle.loaded > 0 and oracle.quarantined > 0
    rx.apply_catalog()
    s = rx.ingest("prescribers", presc_dir, D3)
    lake.assert_counts(s, oracle, "CMS layout ingest")
    assert rx.count(lake.PRESCRIBER_DRUG, lake.on(D3)) == oracle.loaded
    assert rx.scalar(f"SELECT sum(trx_cnt) FROM {lake.PRESCRIBER_DRUG} WHERE {lake.on(D3)}") \
        == oracle.scalar("SELECT sum(trx_cnt) FROM prescriber_drug")
    lake.assert_quarantine_matches(rx, oracle, D3)


# --------------------------------------------------------------------------
# Fatal errors: non-zero exit, a message, no panic, nothing committed
# --------------------------------------------------------------------------

def message(proc) -> str:
    return (proc.stderr + proc.stdout).strip()


def test_missing_input_is_fatal(rx, tmp_path):
    rx.apply_catalog()
    missing = tmp_path / "no-such-dir" / "USA_Presc_Medicare_Data_2021.csv"
    p = rx.fail("ingest", "prescribers", missing, "--delivery-date", D1)
    text = message(p).lower()
    assert "no-such-dir" in text or "not found" in text or "no such file" in text, message(p)
    p = rx.fail("pipeline", "run", "--input", tmp_path / "no-such-dir", "--delivery-date", D1)
    assert message(p)
    assert rx.count(lake.PRESCRIBER_DRUG) == 0


def test_unreadable_header_is_fatal(rx, tmp_path):
    rx.apply_catalog()
    not_ours = tmp_path / "semicolons.csv"
    not_ours.write_bytes(b"foo;bar;baz\n1;2;3\n")
    p = rx.fail("ingest", "prescribers", not_ours, "--delivery-date", D1)
    assert "header" in message(p).lower(), message(p)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage\x00\n\x00\x00\n")
    p = rx.fail("ingest", "prescribers", binary, "--delivery-date", D1)
    assert message(p)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    p = rx.fail("ingest", "prescribers", empty, "--delivery-date", D1)
    assert message(p)
    assert rx.count(lake.PRESCRIBER_DRUG) == 0
    assert rx.count(lake.REJECTS) == 0


def test_unreachable_catalog_is_fatal(rxgate_bin, dataset, tmp_path):
    plain = tmp_path / "plain-file"
    plain.write_text("not a directory\n")
    bad = Rxgate(rxgate_bin, plain / "data")
    for args in (("catalog", "apply", REPO_ROOT / "catalog"),
                 ("ingest", "prescribers", dataset.prescribers, "--delivery-date", D1),
                 ("pipeline", "run", "--input", dataset.root, "--delivery-date", D1),
                 ("sql", "SELECT count(*) FROM health.prescriber_drug")):
        p = bad.fail(*args)
        assert message(p), f"no message from {args}"
    assert plain.read_text() == "not a directory\n"
