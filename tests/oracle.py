"""Independent reference implementation of the seed pipeline (DESIGN.md §3).

The tests compare what `rxgate` writes against what this module computes from
the same raw files.  It deliberately shares nothing with the Rust side: rows
are split and validated with Python's `csv` module, cleaning and both reports
are plain DuckDB SQL.  tests/ORACLE.md states every rule in prose, including
the conventions the design left open (line numbers, reason classes, what a
malformed number is).

Two ways to read the raw prescriber CSV, which must agree (a test checks it):

* ``mode="python"`` (the oracle proper, used by the tests): the file is read as
  bytes, one record per physical line; a line that is not valid UTF-8, or
  whose csv field count differs from the header's, is rejected.
* ``mode="duckdb"`` (used by benches/ as the DuckDB peer of the pipeline
  benchmark): DuckDB's own CSV reader with ``store_rejects`` does the
  splitting and the encoding/field-count rejection; everything after that is
  the same SQL.

Usage:
    o = Oracle.from_inputs(prescribers=Path(...), cities=Path(...),
                           delivery_date="2024-01-31")
    o.read, o.loaded, o.quarantined, o.rejects
    o.rows("SELECT * FROM city_report")
    o.write_parquet(out_dir)   # the bench writes its outputs like the gateway
"""
from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Iterable, Sequence

import duckdb

# --------------------------------------------------------------------------
# Raw layouts
# --------------------------------------------------------------------------

#: Canonical (seed layout) prescriber columns, in file order.
SEED_COLUMNS = [
    "npi", "nppes_provider_last_org_name", "nppes_provider_first_name",
    "nppes_provider_city", "nppes_provider_state", "specialty_description",
    "description_flag", "drug_name", "generic_name", "bene_count",
    "total_claim_count", "total_30_day_fill_count", "total_day_supply",
    "total_drug_cost", "bene_count_ge65", "bene_count_ge65_suppress_flag",
    "total_claim_count_ge65", "ge65_suppress_flag", "total_30_day_fill_count_ge65",
    "total_day_supply_ge65", "total_drug_cost_ge65", "years_of_exp",
]

#: Current CMS "Part D Prescribers by Provider and Drug" column -> seed column.
#: Prscrbr_State_FIPS has no seed twin; the CMS layout has no years_of_exp.
CMS_TO_SEED = {
    "prscrbr_npi": "npi",
    "prscrbr_last_org_name": "nppes_provider_last_org_name",
    "prscrbr_first_name": "nppes_provider_first_name",
    "prscrbr_city": "nppes_provider_city",
    "prscrbr_state_abrvtn": "nppes_provider_state",
    "prscrbr_type": "specialty_description",
    "prscrbr_type_src": "description_flag",
    "brnd_name": "drug_name",
    "gnrc_name": "generic_name",
    "tot_benes": "bene_count",
    "tot_clms": "total_claim_count",
    "tot_30day_fills": "total_30_day_fill_count",
    "tot_day_suply": "total_day_supply",
    "tot_drug_cst": "total_drug_cost",
    "ge65_tot_benes": "bene_count_ge65",
    "ge65_bene_sprsn_flag": "bene_count_ge65_suppress_flag",
    "ge65_tot_clms": "total_claim_count_ge65",
    "ge65_sprsn_flag": "ge65_suppress_flag",
    "ge65_tot_30day_fills": "total_30_day_fill_count_ge65",
    "ge65_tot_day_suply": "total_day_supply_ge65",
    "ge65_tot_drug_cst": "total_drug_cost_ge65",
}

#: Reject reason classes, in the order the checks are applied to a line.
REASONS = ("invalid_utf8", "field_count", "npi", "drug_name")


def reason_class(reason: str) -> str:
    """Map a free-text reject reason (as rxgate writes it) to a class.

    The order of the keyword tests matters: "drug_name field is empty" is a
    drug_name reject although it says "field"."""
    r = reason.lower()
    if "utf" in r or "encoding" in r or "unicode" in r:
        return "invalid_utf8"
    if "npi" in r:
        return "npi"
    if "drug" in r:
        return "drug_name"
    if "field" in r or "column" in r or "count" in r:
        return "field_count"
    return "unknown:" + reason


class HeaderError(ValueError):
    """The first line is not a known prescriber layout."""


def detect_layout(header: Sequence[str]) -> tuple[str, list[str | None]]:
    """Return (layout, seed column name for each header position or None)."""
    names = [h.strip().lower() for h in header]
    if names == SEED_COLUMNS:
        return "seed", list(SEED_COLUMNS)
    if set(CMS_TO_SEED) <= set(names):
        return "cms", [CMS_TO_SEED.get(n) for n in names]
    raise HeaderError(f"unrecognised prescriber header: {header[:5]}...")


@dataclasses.dataclass(frozen=True)
class Reject:
    source_file: str
    line_number: int  # 1-based physical line; the header is line 1
    reason: str       # one of REASONS
    raw_line: str     # the line without its terminator (lossy for bad UTF-8)


def csv_files(path: Path) -> list[Path]:
    """A file, or the *.csv files of a directory in name order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv")
        if not files:
            raise FileNotFoundError(f"no .csv file in {path}")
        return files
    return [path]


def split_python(path: Path) -> tuple[list[tuple], list[Reject], int, str]:
    """Split one raw CSV the oracle's way.

    Returns (accepted rows as (source_file, line_number, *22 seed fields),
    rejects, lines read, layout).  Blank lines are not records (not read, not
    rejected); a final line without terminator is a record."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the terminator of the last line, not an empty record
    if not lines:
        raise HeaderError(f"{path}: empty file, no header")
    try:
        header_text = lines[0].rstrip(b"\r").decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        raise HeaderError(f"{path}: header is not UTF-8") from e
    header = next(csv.reader([header_text]))
    layout, mapping = detect_layout(header)
    width = len(header)
    src = str(path)

    accepted: list[tuple] = []
    rejects: list[Reject] = []
    read = 0
    npi_pos = mapping.index("npi")
    drug_pos = mapping.index("drug_name")
    seed_pos = [mapping.index(c) if c in mapping else None for c in SEED_COLUMNS]
    for idx in range(1, len(lines)):
        raw = lines[idx].rstrip(b"\r")
        if not raw:
            continue
        read += 1
        line_number = idx + 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            rejects.append(Reject(src, line_number, "invalid_utf8",
                                  raw.decode("utf-8", "replace")))
            continue
        # One record per physical line: parse the line on its own, so an
        # unbalanced quote cannot swallow the next line.
        fields = next(csv.reader([text]))
        if len(fields) != width:
            rejects.append(Reject(src, line_number, "field_count", text))
            continue
        if not re.search(r"[0-9]", fields[npi_pos]):
            rejects.append(Reject(src, line_number, "npi", text))
            continue
        if fields[drug_pos].strip() == "":
            rejects.append(Reject(src, line_number, "drug_name", text))
            continue
        accepted.append((src, line_number,
                         *(fields[p] if p is not None else None for p in seed_pos)))
    return accepted, rejects, read, layout


# --------------------------------------------------------------------------
# SQL: cleaning and reports (DESIGN.md §3)
# --------------------------------------------------------------------------

def _nth_unrejected_lines(ordinals: list[int], rejected: list[int]) -> list[int]:
    """Physical line numbers of the given (ascending) 1-based ordinals of
    accepted rows, when the header is line 1 and `rejected` (ascending)
    lists the lines that were rejected."""
    out, j = [], 0
    for k in ordinals:
        line = k + 1 + j
        while j < len(rejected) and rejected[j] <= line:
            j += 1
            line = k + 1 + j
        out.append(line)
    return out


# Surrounding whitespace is ignored in numbers (" 12 " is 12).
_WS = r"[ \t\r\n\f\v]*"


def _int(col: str) -> str:
    """A decimal integer literal (optional sign) -> BIGINT, else NULL."""
    return (f"CASE WHEN regexp_full_match({col}, '{_WS}[+-]?[0-9]+{_WS}') "
            f"THEN TRY_CAST({col} AS BIGINT) END")  # the cast skips the blanks


def _dbl(col: str) -> str:
    """A finite decimal float literal -> DOUBLE, else NULL (no inf/nan)."""
    return (f"CASE WHEN regexp_full_match({col}, "
            f"'{_WS}[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?{_WS}') "
            f"THEN TRY_CAST({col} AS DOUBLE) END")


def _txt(col: str) -> str:
    """Text is kept as is; an empty field and NULL are the same (NULL)."""
    return f"NULLIF({col}, '')"


# raw_presc(source_file, line_number, <22 seed columns as VARCHAR>) ->
# prescriber_drug with the curated columns of DESIGN.md §3.
CLEAN_PRESCRIBERS_SQL = f"""
CREATE OR REPLACE TABLE prescriber_drug AS
WITH typed AS (
  SELECT
    regexp_replace(npi, '[^0-9]', '', 'g')                     AS npi,
    {_txt('nppes_provider_last_org_name')}                     AS presc_last_name,
    {_txt('nppes_provider_first_name')}                        AS presc_first_name,
    -- first || ' ' || last; a missing part is left out (no stray blank)
    NULLIF(concat_ws(' ', NULLIF(nppes_provider_first_name, ''),
                     NULLIF(nppes_provider_last_org_name, '')), '')
                                                               AS presc_full_name,
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
    TRY_CAST(NULLIF(regexp_replace(coalesce(years_of_exp, ''), '[^0-9]', '', 'g'), '')
             AS INTEGER)                                       AS years_of_exp,
    'USA'                                                      AS country_name,
    CAST($delivery_date AS DATE)                               AS delivery_date,
    source_file, line_number
  FROM raw_presc
)
SELECT
  npi, presc_last_name, presc_first_name, presc_full_name, presc_city, presc_state,
  presc_specialty, description_flag, drug_name, generic_name, bene_count,
  -- A missing/malformed claim count is imputed with the rounded average of
  -- the same prescriber's counts in this delivery (NULL if all are missing).
  coalesce(trx_cnt_raw,
           CAST(round(avg(trx_cnt_raw) OVER (PARTITION BY npi)) AS BIGINT)) AS trx_cnt,
  total_30_day_fill_count, total_day_supply, total_drug_cost,
  bene_count_ge65, bene_count_ge65_suppress_flag, total_claim_count_ge65,
  ge65_suppress_flag, total_30_day_fill_count_ge65, total_day_supply_ge65,
  total_drug_cost_ge65, years_of_exp, country_name, delivery_date,
  source_file, line_number,
  trx_cnt_raw IS NULL AS trx_cnt_imputed
FROM typed
"""

# raw_cities (simplemaps Parquet) -> us_cities.
CLEAN_CITIES_SQL = r"""
CREATE OR REPLACE TABLE us_cities AS
SELECT
  upper(CAST(city AS VARCHAR))                        AS city,
  CAST(city_ascii AS VARCHAR)                         AS city_ascii,
  CAST(state_id AS VARCHAR)                           AS state_id,
  upper(CAST(state_name AS VARCHAR))                  AS state_name,
  CAST(county_fips AS VARCHAR)                        AS county_fips,
  upper(CAST(county_name AS VARCHAR))                 AS county_name,
  CAST(lat AS DOUBLE)                                 AS lat,
  CAST(lng AS DOUBLE)                                 AS lng,
  CAST(population AS BIGINT)                          AS population,
  CAST(density AS DOUBLE)                             AS density,
  CAST(timezone AS VARCHAR)                           AS timezone,
  CAST(zips AS VARCHAR)                               AS zips,
  -- number of whitespace-separated tokens; no zips (empty/NULL) counts 0
  CAST(CASE WHEN trim(coalesce(CAST(zips AS VARCHAR), '')) = '' THEN 0
            ELSE len(regexp_split_to_array(trim(CAST(zips AS VARCHAR)), '\s+'))
       END AS INTEGER)                                AS zip_count,
  CAST($delivery_date AS DATE)                        AS delivery_date
FROM raw_cities
"""

CITY_REPORT_SQL = """
CREATE OR REPLACE TABLE city_report AS
WITH presc AS (
  -- One group per city whatever the case it was written in ("Boston" and
  -- "BOSTON" are one city), as the join below is case-insensitive too.
  SELECT presc_state, upper(presc_city)  AS city_key,
         count(DISTINCT npi)            AS presc_counts,
         CAST(sum(trx_cnt) AS BIGINT)   AS trx_counts
  FROM prescriber_drug
  GROUP BY presc_state, upper(presc_city)
)
SELECT c.city, c.state_name, c.county_name, c.population,
       c.zip_count AS zip_counts, p.trx_counts, p.presc_counts,
       CAST($delivery_date AS DATE) AS delivery_date
FROM us_cities c
JOIN presc p ON c.state_id = p.presc_state AND upper(c.city) = p.city_key
"""

# Per prescriber (npi and its attributes), only 20 <= years_of_exp <= 50,
# dense rank per state by total claims, descending with NULLs last, top 5.
TOP_PRESCRIBERS_SQL = """
CREATE OR REPLACE TABLE top_prescribers AS
WITH per_npi AS (
  SELECT npi, presc_full_name, presc_state, country_name, years_of_exp,
         CAST(sum(trx_cnt) AS BIGINT)           AS trx_cnt,
         CAST(sum(total_day_supply) AS BIGINT)  AS total_day_supply,
         sum(total_drug_cost)                   AS total_drug_cost
  FROM prescriber_drug
  WHERE years_of_exp BETWEEN 20 AND 50
  GROUP BY npi, presc_full_name, presc_state, country_name, years_of_exp
), ranked AS (
  SELECT *, dense_rank() OVER (PARTITION BY presc_state
                               ORDER BY trx_cnt DESC NULLS LAST) AS rank
  FROM per_npi
)
SELECT npi, presc_full_name, presc_state, country_name, years_of_exp, trx_cnt,
       total_day_supply, total_drug_cost, rank,
       CAST($delivery_date AS DATE) AS delivery_date
FROM ranked WHERE rank <= 5
"""

_RAW_COLUMNS_DDL = ", ".join(
    ["source_file VARCHAR", "line_number BIGINT"] + [f"{c} VARCHAR" for c in SEED_COLUMNS])


class Oracle:
    """The expected lakehouse content for ONE delivery."""

    def __init__(self, delivery_date: str, con: duckdb.DuckDBPyConnection | None = None):
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", delivery_date):
            raise ValueError(f"delivery date must be YYYY-MM-DD: {delivery_date!r}")
        self.delivery_date = delivery_date
        self.con = con or duckdb.connect()
        self.read = 0
        self.rejects: list[Reject] = []
        self.layouts: set[str] = set()

    # -- construction -----------------------------------------------------

    @classmethod
    def from_inputs(cls, prescribers: Path | None, cities: Path | None,
                    delivery_date: str, mode: str = "python") -> "Oracle":
        """Run the whole reference pipeline on raw inputs of one delivery.

        `prescribers`: a CSV file or a directory of them; `cities`: the
        simplemaps Parquet file or a directory of them (None: no cities, and
        no city report)."""
        o = cls(delivery_date)
        if cities is not None:
            o.load_cities(Path(cities))
        if prescribers is not None:
            if mode == "python":
                o.load_prescribers_python(Path(prescribers))
            elif mode == "duckdb":
                o.load_prescribers_duckdb(Path(prescribers))
            else:
                raise ValueError(mode)
            o.clean()
            if cities is not None:
                o.reports()
        return o

    def _exec(self, template: str) -> None:
        """Run a statement template with the delivery date inlined as a
        literal (DDL cannot take prepared parameters)."""
        self.con.execute(template.replace("$delivery_date", f"DATE '{self.delivery_date}'"))

    def load_cities(self, path: Path) -> None:
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        self.con.execute("CREATE OR REPLACE TABLE raw_cities AS SELECT * FROM read_parquet($f)",
                         {"f": [str(f) for f in files]})
        self._exec(CLEAN_CITIES_SQL)

    def load_prescribers_python(self, path: Path) -> None:
        """Split with Python's csv module and hand the accepted rows to DuckDB."""
        import pyarrow as pa

        rows: list[tuple] = []
        for f in csv_files(path):
            accepted, rejects, read, layout = split_python(f)
            self.layouts.add(layout)
            rows.extend(accepted)
            self.rejects.extend(rejects)
            self.read += read
        names = ["source_file", "line_number"] + SEED_COLUMNS
        columns = list(zip(*rows)) if rows else [[] for _ in names]
        table = pa.table({
            n: pa.array(col, pa.int64() if n == "line_number" else pa.string())
            for n, col in zip(names, columns)
        })
        self.con.register("accepted_arrow", table)
        self.con.execute("CREATE OR REPLACE TABLE raw_presc AS SELECT * FROM accepted_arrow")
        self.con.unregister("accepted_arrow")

    def load_prescribers_duckdb(self, path: Path) -> None:
        """Split with DuckDB's CSV reader (the benchmark's DuckDB peer).

        DuckDB rejects lines with a bad encoding or the wrong field count into
        its rejects table; the two row rules (npi, drug_name) are SQL.  Only
        rejected rows get a line number (accepted rows' line_number is NULL,
        which keeps this path as lean as a real DuckDB pipeline would be):
        the k-th row DuckDB accepted is the k-th physical line it did not
        reject, counting from line 2."""
        parts = []
        files: dict[int, tuple[str, list[int]]] = {}
        for idx, f in enumerate(csv_files(path)):
            with f.open("rb") as fh:
                header_bytes = fh.readline()
            try:
                header = next(csv.reader([header_bytes.decode("utf-8").lstrip("\ufeff")
                                          .rstrip("\r\n")]))
            except (UnicodeDecodeError, StopIteration) as e:
                raise HeaderError(f"{f}: unreadable header") from e
            layout, mapping = detect_layout(header)
            self.layouts.add(layout)
            # Every column as text under positional names c0..cN; the table's
            # rowid follows the file order (insertion order is preserved).
            cols = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header))) + "}"
            self.con.execute(f"""
                CREATE OR REPLACE TEMP TABLE raw_file_{idx} AS
                SELECT * FROM read_csv(?, columns = {cols}, header = true, delim = ',',
                                       quote = '"', escape = '"', auto_detect = false,
                                       strict_mode = true, store_rejects = true,
                                       rejects_scan = 'rx_scans', rejects_table = 'rx_errors')
            """, [str(f)])
            # One line can carry several errors; one class per line is enough.
            rej = self.con.execute("""
                SELECT line, min(error_type::VARCHAR), any_value(csv_line)
                FROM rx_errors GROUP BY line ORDER BY line""").fetchall()
            self.con.execute("DROP TABLE rx_errors; DROP TABLE rx_scans")
            n_ok = self.con.execute(f"SELECT count(*) FROM raw_file_{idx}").fetchall()[0][0]
            self.read += n_ok + len(rej)
            for line, etype, text in rej:
                reason = "invalid_utf8" if etype == "INVALID ENCODING" else "field_count"
                self.rejects.append(Reject(str(f), int(line), reason, text or ""))
            files[idx] = (str(f), [int(r[0]) for r in rej])
            select = ", ".join(
                f"c{mapping.index(c)} AS {c}" if c in mapping else f"NULL AS {c}"
                for c in SEED_COLUMNS)
            parts.append(f"SELECT {idx} AS file_idx, rowid + 1 AS ord, {select} "
                         f"FROM raw_file_{idx}")
        self.con.execute("CREATE OR REPLACE TEMP VIEW raw_all AS " + " UNION ALL ".join(parts))
        # Row-level rejects, the same two rules as split_python(); the raw
        # line is rebuilt from the fields (quoting is not preserved).
        bad_row = ("NOT regexp_matches(coalesce(npi, ''), '[0-9]') "
                   "OR trim(coalesce(drug_name, '')) = ''")
        record = " || ',' || ".join(f"coalesce({c}, '')" for c in SEED_COLUMNS)
        bad = self.con.execute(f"""
            SELECT file_idx, ord, npi, {record} FROM raw_all WHERE {bad_row}
            ORDER BY file_idx, ord""").fetchall()
        for idx, (src, rejected_lines) in files.items():
            rows = [b for b in bad if b[0] == idx]
            lines = _nth_unrejected_lines([b[1] for b in rows], rejected_lines)
            for (_, _, npi, rec), line in zip(rows, lines):
                reason = "npi" if not re.search(r"[0-9]", npi or "") else "drug_name"
                self.rejects.append(Reject(src, line, reason, rec))
        self.rejects.sort(key=lambda r: (r.source_file, r.line_number))
        # The accepted rows, read straight from the per-file tables.
        src_case = "CASE file_idx " + " ".join(
            f"WHEN {i} THEN '{src.replace(chr(39), chr(39) * 2)}'"
            for i, (src, _) in files.items()) + " END"
        self.con.execute(f"""
            CREATE OR REPLACE TEMP VIEW raw_presc AS
            SELECT {src_case} AS source_file, CAST(NULL AS BIGINT) AS line_number,
                   * EXCLUDE (file_idx, ord)
            FROM raw_all WHERE NOT ({bad_row})""")

    def clean(self) -> None:
        self._exec(CLEAN_PRESCRIBERS_SQL)

    def reports(self) -> None:
        self._exec(CITY_REPORT_SQL)
        self._exec(TOP_PRESCRIBERS_SQL)

    # -- results ----------------------------------------------------------

    @property
    def loaded(self) -> int:
        return self.scalar("SELECT count(*) FROM prescriber_drug")

    @property
    def quarantined(self) -> int:
        return len(self.rejects)

    def reject_classes(self) -> list[tuple[int, str]]:
        return sorted((r.line_number, r.reason) for r in self.rejects)

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        return self.con.execute(sql, params or {}).fetchall()

    def scalar(self, sql: str, params: dict | None = None):
        return self.con.execute(sql, params or {}).fetchall()[0][0]

    def columns(self, table: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE {table}").fetchall()]

    def write_parquet(self, out: Path) -> None:
        """Write the curated tables, the rejects and both reports as Parquet
        (prescribers partitioned by state, like the gateway's Iceberg table)."""
        import pyarrow as pa

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.con.execute(f"""
            COPY (SELECT * EXCLUDE (source_file, line_number, trx_cnt_imputed)
                  FROM prescriber_drug)
            TO '{out / "prescriber_drug"}' (FORMAT parquet, PARTITION_BY (presc_state),
                                          OVERWRITE_OR_IGNORE)""")
        for table in ("us_cities", "city_report", "top_prescribers"):
            self.con.execute(f"COPY {table} TO '{out / (table + '.parquet')}' (FORMAT parquet)")
        rej = pa.table({
            "source_file": [r.source_file for r in self.rejects],
            "line_number": pa.array([r.line_number for r in self.rejects], pa.int64()),
            "raw_line": [r.raw_line for r in self.rejects],
            "reason": [r.reason for r in self.rejects],
        })
        self.con.register("rejects_arrow", rej)
        self.con.execute(f"""
            COPY (SELECT *, CAST($d AS DATE) AS delivery_date FROM rejects_arrow)
            TO '{out / "prescriber_drug_rejects.parquet"}' (FORMAT parquet)""",
                         {"d": self.delivery_date})
        self.con.unregister("rejects_arrow")


def summary(o: Oracle) -> dict:
    """Counts that identify a delivery, for messages and the bench."""
    by_reason: dict[str, int] = {}
    for r in o.rejects:
        by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
    return {"read": o.read, "loaded": o.loaded, "quarantined": o.quarantined,
            "rejects_by_reason": by_reason}


def iter_dicts(con: duckdb.DuckDBPyConnection, sql: str) -> Iterable[dict]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    for row in cur.fetchall():
        yield dict(zip(names, row))
