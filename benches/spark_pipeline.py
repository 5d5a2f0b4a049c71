"""The PySpark peer of workload W1: the seed project's pipeline, on Spark as the seed ran it.

Same inputs and the same work as `rxgate pipeline run` and benches/duckdb_pipeline.py: read
the prescriber CSV (seed layout) and the cities Parquet, reject rows (wrong field count,
undecodable UTF-8, npi without digits, empty drug_name) into a quarantine with a reason,
clean (digits of npi and years_of_exp, full name, country, NULL for malformed numbers),
impute a missing claim count with the prescriber's rounded average, write the facts as
Parquet partitioned by state, then the city report and the top-5 prescribers report (the
rules of DESIGN §3 / tests/oracle.py, in Spark SQL), all to Parquet.

    python benches/spark_pipeline.py --input RAW --out DIR --delivery-date D

local[2], Java 17, SPARK_LOCAL_IP=127.0.0.1. Prints one JSON line: {"read", "loaded",
"quarantined", "seconds" (without the session start), "startup_seconds"}.
Differences from the oracle: Spark's CSV reader replaces undecodable bytes with U+FFFD, so a
row with U+FFFD in any field counts as invalid UTF-8; numbers are parsed with try_cast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SEED_COLUMNS = [
    "npi", "nppes_provider_last_org_name", "nppes_provider_first_name",
    "nppes_provider_city", "nppes_provider_state", "specialty_description",
    "description_flag", "drug_name", "generic_name", "bene_count",
    "total_claim_count", "total_30_day_fill_count", "total_day_supply",
    "total_drug_cost", "bene_count_ge65", "bene_count_ge65_suppress_flag",
    "total_claim_count_ge65", "ge65_suppress_flag", "total_30_day_fill_count_ge65",
    "total_day_supply_ge65", "total_drug_cost_ge65", "years_of_exp",
]


def _int(c: str) -> str:
    return f"try_cast(trim({c}) AS BIGINT)"


def _dbl(c: str) -> str:
    return f"try_cast(trim({c}) AS DOUBLE)"


def _txt(c: str) -> str:
    return f"nullif({c}, '')"


CLEAN = f"""
WITH typed AS (
  SELECT
    regexp_replace(npi, '[^0-9]', '')                          AS npi,
    {_txt('nppes_provider_last_org_name')}                     AS presc_last_name,
    {_txt('nppes_provider_first_name')}                        AS presc_first_name,
    nullif(concat_ws(' ', nullif(nppes_provider_first_name, ''),
                     nullif(nppes_provider_last_org_name, '')), '') AS presc_full_name,
    {_txt('nppes_provider_city')}                              AS presc_city,
    {_txt('nppes_provider_state')}                             AS presc_state,
    {_txt('specialty_description')}                            AS presc_specialty,
    {_txt('description_flag')}                                 AS description_flag,
    {_txt('drug_name')}                                        AS drug_name,
    {_txt('generic_name')}                                     AS generic_name,
    {_int('bene_count')}                                       AS bene_count,
    {_int('total_claim_count')}                                AS trx_cnt_raw,
    {_dbl('total_30_day_fill_count')}                          AS total_30_day_fill_count,
    {_int('total_day_supply')}                                 AS total_day_supply,
    {_dbl('total_drug_cost')}                                  AS total_drug_cost,
    {_int('bene_count_ge65')}                                  AS bene_count_ge65,
    {_txt('bene_count_ge65_suppress_flag')}                    AS bene_count_ge65_suppress_flag,
    {_int('total_claim_count_ge65')}                           AS total_claim_count_ge65,
    {_txt('ge65_suppress_flag')}                               AS ge65_suppress_flag,
    {_dbl('total_30_day_fill_count_ge65')}                     AS total_30_day_fill_count_ge65,
    {_int('total_day_supply_ge65')}                            AS total_day_supply_ge65,
    {_dbl('total_drug_cost_ge65')}                             AS total_drug_cost_ge65,
    try_cast(nullif(regexp_replace(coalesce(years_of_exp, ''), '[^0-9]', ''), '') AS INT)
                                                               AS years_of_exp,
    'USA'                                                      AS country_name,
    DATE '{{date}}'                                            AS delivery_date
  FROM accepted
)
SELECT npi, presc_last_name, presc_first_name, presc_full_name, presc_city, presc_state,
  presc_specialty, description_flag, drug_name, generic_name, bene_count,
  coalesce(trx_cnt_raw, CAST(round(avg(trx_cnt_raw) OVER (PARTITION BY npi)) AS BIGINT)) AS trx_cnt,
  total_30_day_fill_count, total_day_supply, total_drug_cost,
  bene_count_ge65, bene_count_ge65_suppress_flag, total_claim_count_ge65,
  ge65_suppress_flag, total_30_day_fill_count_ge65, total_day_supply_ge65,
  total_drug_cost_ge65, years_of_exp, country_name, delivery_date
FROM typed
"""

CITIES = """
SELECT upper(CAST(city AS STRING)) AS city, CAST(city_ascii AS STRING) AS city_ascii,
  CAST(state_id AS STRING) AS state_id, upper(CAST(state_name AS STRING)) AS state_name,
  CAST(county_fips AS STRING) AS county_fips, upper(CAST(county_name AS STRING)) AS county_name,
  CAST(lat AS DOUBLE) AS lat, CAST(lng AS DOUBLE) AS lng, CAST(population AS BIGINT) AS population,
  CAST(density AS DOUBLE) AS density, CAST(timezone AS STRING) AS timezone,
  CAST(zips AS STRING) AS zips,
  CASE WHEN trim(coalesce(CAST(zips AS STRING), '')) = '' THEN 0
       ELSE size(split(trim(CAST(zips AS STRING)), '\\\\s+')) END AS zip_count,
  DATE '{date}' AS delivery_date
FROM raw_cities
"""

CITY_REPORT = """
WITH presc AS (
  SELECT presc_state, upper(presc_city) AS city_key, count(DISTINCT npi) AS presc_counts,
         CAST(sum(trx_cnt) AS BIGINT) AS trx_counts
  FROM prescriber_drug GROUP BY presc_state, upper(presc_city)
)
SELECT c.city, c.state_name, c.county_name, c.population, c.zip_count AS zip_counts,
       p.trx_counts, p.presc_counts, DATE '{date}' AS delivery_date
FROM us_cities c JOIN presc p ON c.state_id = p.presc_state AND upper(c.city) = p.city_key
"""

TOP_PRESCRIBERS = """
WITH per_npi AS (
  SELECT npi, presc_full_name, presc_state, country_name, years_of_exp,
         CAST(sum(trx_cnt) AS BIGINT) AS trx_cnt,
         CAST(sum(total_day_supply) AS BIGINT) AS total_day_supply,
         sum(total_drug_cost) AS total_drug_cost
  FROM prescriber_drug WHERE years_of_exp BETWEEN 20 AND 50
  GROUP BY npi, presc_full_name, presc_state, country_name, years_of_exp
), ranked AS (
  SELECT *, dense_rank() OVER (PARTITION BY presc_state ORDER BY trx_cnt DESC NULLS LAST) AS rank
  FROM per_npi
)
SELECT npi, presc_full_name, presc_state, country_name, years_of_exp, trx_cnt,
       total_day_supply, total_drug_cost, rank, DATE '{date}' AS delivery_date
FROM ranked WHERE rank <= 5
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, required=True, help="datagen --out dir")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--delivery-date", default="2024-01-31")
    a = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    t_start = time.perf_counter()
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType
    spark = (SparkSession.builder.master("local[2]").appName("rxgate-bench-w1")
             .config("spark.driver.memory", "6g")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC")
             # Tuned for 2 cores, so the peer is not a straw man: few shuffle partitions,
             # and the facts are repartitioned by state before the partitioned write (one
             # file per state instead of one per task and state).
             .config("spark.sql.shuffle.partitions", "8")
             .config("spark.local.dir", str(a.out.parent / "spark-tmp"))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    t0 = time.perf_counter()
    startup = t0 - t_start
    date = a.delivery_date

    schema = StructType([StructField(c, StringType()) for c in SEED_COLUMNS]
                        + [StructField("_corrupt", StringType())])
    raw = (spark.read.schema(schema).option("header", True).option("mode", "PERMISSIVE")
           .option("columnNameOfCorruptRecord", "_corrupt").option("quote", '"')
           .option("escape", '"').option("encoding", "UTF-8")
           .csv(str(a.input / "prescribers")))
    any_fffd = " OR ".join(f"coalesce(instr({c}, '\ufffd'), 0) > 0" for c in SEED_COLUMNS)
    reason = (f"CASE WHEN _corrupt IS NOT NULL THEN 'field_count' "
              f"WHEN {any_fffd} THEN 'invalid_utf8' "
              f"WHEN NOT coalesce(npi, '') rlike '[0-9]' THEN 'npi' "
              f"WHEN trim(coalesce(drug_name, '')) = '' THEN 'drug_name' END")
    tagged = raw.withColumn("reason", F.expr(reason)).cache()
    tagged.createOrReplaceTempView("tagged")
    counts = {r["reason"]: r["n"] for r in spark.sql(
        "SELECT reason, count(*) AS n FROM tagged GROUP BY reason").collect()}
    read = sum(counts.values())
    quarantined = read - counts.get(None, 0)
    fields = ", ".join(f"coalesce({c}, '')" for c in SEED_COLUMNS)
    (spark.sql(f"SELECT coalesce(_corrupt, concat_ws(',', {fields})) AS raw_line, reason, "
               f"DATE '{date}' AS delivery_date FROM tagged WHERE reason IS NOT NULL")
     .write.mode("overwrite").parquet(str(a.out / "prescriber_drug_rejects")))
    spark.sql("SELECT * FROM tagged WHERE reason IS NULL").createOrReplaceTempView("accepted")
    facts = spark.sql(CLEAN.format(date=date))
    facts.repartition("presc_state").write.mode("overwrite").partitionBy("presc_state").parquet(
        str(a.out / "prescriber_drug"))
    spark.read.parquet(str(a.out / "prescriber_drug")).createOrReplaceTempView("prescriber_drug")
    loaded = spark.sql("SELECT count(*) FROM prescriber_drug").collect()[0][0]
    spark.read.parquet(str(a.input / "cities")).createOrReplaceTempView("raw_cities")
    spark.sql(CITIES.format(date=date)).write.mode("overwrite").parquet(str(a.out / "us_cities"))
    spark.read.parquet(str(a.out / "us_cities")).createOrReplaceTempView("us_cities")
    spark.sql(CITY_REPORT.format(date=date)).write.mode("overwrite").parquet(
        str(a.out / "city_report"))
    spark.sql(TOP_PRESCRIBERS.format(date=date)).write.mode("overwrite").parquet(
        str(a.out / "top_prescribers"))
    secs = time.perf_counter() - t0
    spark.stop()
    print(json.dumps({"read": read, "loaded": loaded, "quarantined": quarantined,
                      "seconds": round(secs, 3), "startup_seconds": round(startup, 3)}))


if __name__ == "__main__":
    main()
