//! Prescriber-drug ingest: read raw CMS files, validate, clean, impute, quarantine rejects,
//! and replace the delivery in `health.prescriber_drug` with one atomic commit.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Builder, Int32Builder, Int64Array, Int64Builder, StringBuilder};
use arrow::datatypes::Int64Type;
use indicatif::ProgressBar;
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};
use serde::Serialize;

use crate::batch::{assemble, epoch_days, Constant};
use crate::clean;
use crate::csvline::split_fields;
use crate::layout::{Layout, LayoutKind};
use crate::progress::Progress;
use crate::writer::commit_delivery;
use crate::writer::table_arrow_schema;
use rxgate_catalog::TableWriter;

/// Curated fact table.
pub const FACT_TABLE: &str = "health.prescriber_drug";
/// Quarantine of rejected raw lines.
pub const REJECT_TABLE: &str = "health_quarantine.prescriber_drug_rejects";

const BATCH_ROWS: usize = 64 * 1024;

/// Why a raw line was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// More fields than the header.
    TooManyFields,
    /// Fewer fields than the header.
    TooFewFields,
    /// The npi field is empty or has no digits.
    NpiWithoutDigits,
    /// The drug_name field is empty.
    MissingDrugName,
}

impl RejectReason {
    /// Stable text stored in the quarantine table.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::TooManyFields => "too_many_fields",
            RejectReason::TooFewFields => "too_few_fields",
            RejectReason::NpiWithoutDigits => "npi_without_digits",
            RejectReason::MissingDrugName => "missing_drug_name",
        }
    }
}

/// Counts of one ingest; `read == loaded + quarantined` always holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    /// Target table.
    pub table: String,
    /// The delivery replaced.
    pub delivery_date: String,
    /// Input files read.
    pub files: Vec<String>,
    /// Data lines read (header and empty lines excluded).
    pub read: u64,
    /// Rows loaded into the curated table.
    pub loaded: u64,
    /// Rows quarantined with a reason.
    pub quarantined: u64,
    /// Quarantined rows per reason.
    pub rejects_by_reason: HashMap<String, u64>,
    /// NULL claim counts imputed from the prescriber's average.
    pub imputed_trx: u64,
    /// Rows whose claim count stayed NULL (no other claim count for that prescriber).
    pub trx_still_null: u64,
    /// The curated table's new snapshot.
    pub snapshot_id: Option<i64>,
    /// Data files written.
    pub data_files: u64,
    /// Rows of the previous content of this delivery that were replaced.
    pub replaced_rows: u64,
}

struct Reject {
    file: Arc<str>,
    line: u64,
    raw: String,
    reason: RejectReason,
}

/// Column builders for the curated fact columns taken from the raw file.
struct FactBuilders {
    text: Vec<StringBuilder>,
    ints: Vec<Int64Builder>,
    floats: Vec<Float64Builder>,
    full_name: StringBuilder,
    years: Int32Builder,
    rows: usize,
}

/// Raw field index → curated text column.
const TEXT_COLS: [(usize, &str); 11] = [
    (0, "npi"),
    (1, "presc_last_name"),
    (2, "presc_first_name"),
    (3, "presc_city"),
    (4, "presc_state"),
    (5, "presc_specialty"),
    (6, "description_flag"),
    (7, "drug_name"),
    (8, "generic_name"),
    (15, "bene_count_ge65_suppress_flag"),
    (17, "ge65_suppress_flag"),
];
/// Raw field index → curated bigint column.
const INT_COLS: [(usize, &str); 6] = [
    (9, "bene_count"),
    (10, "trx_cnt"),
    (12, "total_day_supply"),
    (14, "bene_count_ge65"),
    (16, "total_claim_count_ge65"),
    (19, "total_day_supply_ge65"),
];
/// Raw field index → curated double column.
const FLOAT_COLS: [(usize, &str); 4] = [
    (11, "total_30_day_fill_count"),
    (13, "total_drug_cost"),
    (18, "total_30_day_fill_count_ge65"),
    (20, "total_drug_cost_ge65"),
];

impl FactBuilders {
    fn new() -> Self {
        Self {
            text: (0..TEXT_COLS.len()).map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 12)).collect(),
            ints: (0..INT_COLS.len()).map(|_| Int64Builder::with_capacity(BATCH_ROWS)).collect(),
            floats: (0..FLOAT_COLS.len()).map(|_| Float64Builder::with_capacity(BATCH_ROWS)).collect(),
            full_name: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
            years: Int32Builder::with_capacity(BATCH_ROWS),
            rows: 0,
        }
    }

    /// Appends one valid row. `get(i)` returns canonical raw field i.
    fn push<'a>(&mut self, npi: &str, get: impl Fn(usize) -> Option<&'a str>, stats: &mut HashMap<String, (i64, i64)>) {
        let field = |i: usize| get(i).unwrap_or("");
        self.text[0].append_value(npi);
        for (slot, (raw, _)) in TEXT_COLS.iter().enumerate().skip(1) {
            self.text[slot].append_option(clean::text(field(*raw)));
        }
        let first = clean::text(field(2));
        let last = clean::text(field(1));
        self.full_name.append_option(clean::full_name(first, last));
        for (slot, (raw, _)) in INT_COLS.iter().enumerate() {
            let v = clean::int(field(*raw));
            if *raw == 10 {
                if let Some(t) = v {
                    let e = stats.entry(npi.to_string()).or_insert((0, 0));
                    e.0 += t;
                    e.1 += 1;
                }
            }
            self.ints[slot].append_option(v);
        }
        for (slot, (raw, _)) in FLOAT_COLS.iter().enumerate() {
            self.floats[slot].append_option(clean::float(field(*raw)));
        }
        self.years.append_option(clean::years_of_exp(field(21)));
        self.rows += 1;
    }

    fn finish(&mut self) -> (usize, HashMap<&'static str, ArrayRef>) {
        let mut cols: HashMap<&'static str, ArrayRef> = HashMap::new();
        for (slot, (_, name)) in TEXT_COLS.iter().enumerate() {
            cols.insert(name, Arc::new(self.text[slot].finish()));
        }
        for (slot, (_, name)) in INT_COLS.iter().enumerate() {
            cols.insert(name, Arc::new(self.ints[slot].finish()));
        }
        for (slot, (_, name)) in FLOAT_COLS.iter().enumerate() {
            cols.insert(name, Arc::new(self.floats[slot].finish()));
        }
        cols.insert("presc_full_name", Arc::new(self.full_name.finish()));
        cols.insert("years_of_exp", Arc::new(self.years.finish()));
        (std::mem::take(&mut self.rows), cols)
    }
}

/// What parsing one chunk of a file produced.
struct ChunkOut {
    batches: Vec<(usize, HashMap<&'static str, ArrayRef>)>,
    rejects: Vec<Reject>,
    stats: HashMap<String, (i64, i64)>,
    read: u64,
}

fn parse_chunk(buf: &[u8], first_line: u64, layout: &Layout, file: &Arc<str>, progress: &ProgressBar) -> ChunkOut {
    let mut out = ChunkOut { batches: vec![], rejects: vec![], stats: HashMap::new(), read: 0 };
    let mut b = FactBuilders::new();
    let mut fields: Vec<Cow<'_, str>> = Vec::with_capacity(32);
    let mut since_tick = 0usize;
    for (this_line, raw) in (first_line..).zip(buf.split(|&c| c == b'\n')) {
        since_tick += raw.len() + 1;
        if since_tick > (1 << 20) {
            progress.inc(since_tick as u64);
            since_tick = 0;
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        out.read += 1;
        let mut reject = |reason: RejectReason, raw: &[u8]| {
            out.rejects.push(Reject {
                file: file.clone(),
                line: this_line,
                raw: String::from_utf8_lossy(raw).into_owned(),
                reason,
            });
        };
        let Ok(line) = std::str::from_utf8(raw) else {
            reject(RejectReason::InvalidUtf8, raw);
            continue;
        };
        split_fields(line, &mut fields);
        if fields.len() != layout.width {
            let reason =
                if fields.len() > layout.width { RejectReason::TooManyFields } else { RejectReason::TooFewFields };
            reject(reason, raw);
            continue;
        }
        let get = |i: usize| layout.columns[i].map(|c| fields[c].as_ref());
        let Some(npi) = get(0).and_then(clean::digits) else {
            reject(RejectReason::NpiWithoutDigits, raw);
            continue;
        };
        if get(7).is_none_or(|d| d.trim().is_empty()) {
            reject(RejectReason::MissingDrugName, raw);
            continue;
        }
        b.push(&npi, get, &mut out.stats);
        if b.rows == BATCH_ROWS {
            out.batches.push(b.finish());
        }
    }
    progress.inc(since_tick as u64);
    if b.rows > 0 {
        out.batches.push(b.finish());
    }
    out
}

/// Splits `data` into about `n` pieces at line boundaries; returns (piece, first line number).
fn chunks(data: &[u8], first_line: u64, n: usize) -> Vec<(&[u8], u64)> {
    let mut out = vec![];
    let mut start = 0;
    let mut line = first_line;
    let target = data.len() / n.max(1) + 1;
    while start < data.len() {
        let mut end = (start + target).min(data.len());
        if end < data.len() {
            end = match memchr::memchr(b'\n', &data[end..]) {
                Some(k) => end + k + 1,
                None => data.len(),
            };
        }
        out.push((&data[start..end], line));
        line += memchr::memchr_iter(b'\n', &data[start..end]).count() as u64;
        start = end;
    }
    out
}

/// Parses one raw file (read whole) in parallel chunks; `name` is its location.
fn parse_file(name: &str, data: &[u8], progress: &Progress) -> Result<(LayoutKind, Vec<ChunkOut>)> {
    let header_end = memchr::memchr(b'\n', data).unwrap_or(data.len());
    let header = std::str::from_utf8(&data[..header_end])
        .map_err(|_| Error::new(StatusCode::BadInputLayout, format!("{}: header line is not UTF-8", name)))?;
    let header = header.trim_end_matches('\r');
    if header.trim().is_empty() {
        return Err(Error::new(StatusCode::BadInputLayout, format!("{}: empty file or missing header", name)));
    }
    let mut fields = vec![];
    split_fields(header, &mut fields);
    let names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    let layout = Layout::detect(&names).map_err(|e| e.context(name))?;
    let body = if header_end < data.len() { &data[header_end + 1..] } else { &[][..] };
    let file: Arc<str> = Arc::from(name);
    let bar = progress.bar(body.len() as u64, crate::input::file_name(name));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let pieces = chunks(body, 2, threads);
    let outs = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .iter()
            .map(|(piece, first)| {
                let (layout, file, bar) = (&layout, &file, &bar);
                s.spawn(move || parse_chunk(piece, *first, layout, file, bar))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("parser thread panicked")).collect::<Vec<_>>()
    });
    bar.finish_and_clear();
    Ok((layout.kind, outs))
}

/// Ingests prescriber files (a file or a directory of `*.csv`) as delivery `date`.
pub async fn ingest_prescribers(
    lake: &Lakehouse,
    input: &str,
    date: chrono::NaiveDate,
    progress: &Progress,
) -> Result<IngestSummary> {
    let files = crate::input::list(lake, input, "csv").await?;
    let fact = lake.load_table(FACT_TABLE).await?;
    let rejects_table = lake.load_table(REJECT_TABLE).await?;
    let mut summary = IngestSummary {
        table: FACT_TABLE.into(),
        delivery_date: date.to_string(),
        files: files.clone(),
        ..Default::default()
    };

    // Read each file (local disk or object store), parse it off the async runtime (CPU-bound).
    let started = std::time::Instant::now();
    let mut parsed = Vec::with_capacity(files.len());
    for f in &files {
        let data = crate::input::read(lake, f).await?;
        let (progress_c, name) = (*progress, f.clone());
        let out = tokio::task::spawn_blocking(move || parse_file(&name, &data, &progress_c))
            .await
            .map_err(|e| Error::internal(format!("parser task: {e}")))??;
        parsed.push(out);
    }

    tracing::info!(seconds = format!("{:.2}", started.elapsed().as_secs_f64()), "parsed and validated");
    let started = std::time::Instant::now();
    let mut stats: HashMap<String, (i64, i64)> = HashMap::new();
    let mut chunk_batches = vec![];
    let mut all_rejects = vec![];
    for (kind, outs) in parsed {
        tracing::debug!(?kind, "parsed file");
        for out in outs {
            summary.read += out.read;
            for (npi, (s, c)) in out.stats {
                let e = stats.entry(npi).or_insert((0, 0));
                e.0 += s;
                e.1 += c;
            }
            chunk_batches.extend(out.batches);
            all_rejects.extend(out.rejects);
        }
    }

    // Impute NULL claim counts and write the facts, partitioned by delivery and state.
    let schema = table_arrow_schema(&fact)?;
    let constants =
        [("country_name", Constant::Text("USA".into())), ("delivery_date", Constant::Date(epoch_days(date)))];
    let mut writer = TableWriter::new(&fact)?;
    for (rows, mut cols) in chunk_batches {
        let npi = cols["npi"].clone();
        let trx = cols["trx_cnt"].clone();
        let (filled, imputed, still_null) = impute(npi.as_string::<i32>(), trx.as_primitive::<Int64Type>(), &stats);
        summary.imputed_trx += imputed;
        summary.trx_still_null += still_null;
        cols.insert("trx_cnt", Arc::new(filled));
        writer.write(assemble(&schema, rows, cols, &constants)?).await?;
    }
    summary.loaded = writer.rows();
    let fact_files = writer.close().await?;
    tracing::info!(
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        files = fact_files.len(),
        "imputed and wrote data files"
    );
    let started = std::time::Instant::now();

    // Quarantine.
    summary.quarantined = all_rejects.len() as u64;
    for r in &all_rejects {
        *summary.rejects_by_reason.entry(r.reason.as_str().to_string()).or_default() += 1;
    }
    let reject_schema = table_arrow_schema(&rejects_table)?;
    let mut reject_batches = vec![];
    for part in all_rejects.chunks(BATCH_ROWS) {
        let mut cols: HashMap<&str, ArrayRef> = HashMap::new();
        cols.insert(
            "source_file",
            Arc::new(arrow::array::StringArray::from_iter_values(part.iter().map(|r| r.file.as_ref()))),
        );
        cols.insert("line_number", Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.line as i64))));
        cols.insert(
            "raw_line",
            Arc::new(arrow::array::StringArray::from_iter_values(part.iter().map(|r| r.raw.as_str()))),
        );
        cols.insert(
            "reason",
            Arc::new(arrow::array::StringArray::from_iter_values(part.iter().map(|r| r.reason.as_str()))),
        );
        reject_batches.push(assemble(&reject_schema, part.len(), cols, &constants[1..])?);
    }
    if summary.read != summary.loaded + summary.quarantined {
        return Err(Error::internal(format!(
            "count mismatch: read {} != loaded {} + quarantined {}",
            summary.read, summary.loaded, summary.quarantined
        )));
    }
    let props = HashMap::from([
        ("rxgate.step".to_string(), "ingest-prescribers".to_string()),
        ("rxgate.read".to_string(), summary.read.to_string()),
        ("rxgate.quarantined".to_string(), summary.quarantined.to_string()),
    ]);
    // Quarantine first: if the process dies between the two commits, the facts are unchanged
    // and a re-run replaces both.
    crate::writer::replace_delivery(lake, REJECT_TABLE, date, reject_batches, props.clone()).await?;
    summary.data_files = fact_files.len() as u64;
    let outcome = commit_delivery(lake, FACT_TABLE, date, fact_files, props).await?;
    summary.snapshot_id = Some(outcome.snapshot_id);
    summary.replaced_rows = outcome.deleted_records;
    rxgate_common::metrics::record_ingest(summary.read, summary.loaded, summary.quarantined);
    tracing::info!(seconds = format!("{:.2}", started.elapsed().as_secs_f64()), "quarantine and facts committed");
    Ok(summary)
}

/// Fills NULL claim counts with the prescriber's rounded average; returns the new column and
/// how many were imputed and how many stayed NULL.
fn impute(
    npi: &arrow::array::StringArray,
    trx: &arrow::array::Int64Array,
    stats: &HashMap<String, (i64, i64)>,
) -> (Int64Array, u64, u64) {
    let (mut imputed, mut still_null) = (0, 0);
    let filled: Int64Array = (0..trx.len())
        .map(|i| {
            if trx.is_valid(i) {
                return Some(trx.value(i));
            }
            let v = stats.get(npi.value(i)).and_then(|(s, c)| clean::imputed_trx(*s, *c));
            if v.is_some() {
                imputed += 1;
            } else {
                still_null += 1;
            }
            v
        })
        .collect();
    (filled, imputed, still_null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::SEED_FIELDS;

    fn layout() -> Layout {
        let names: Vec<String> = SEED_FIELDS.iter().map(|s| s.to_string()).collect();
        Layout::detect(&names).unwrap()
    }

    const GOOD: &str = "1234567893,LEE,ANN,Boston,MA,Cardiology,S,LIPITOR,ATORVASTATIN,12,40,41.5,1200,800.25,,*,20,#,21.0,600,400.5,= 31";

    fn parse(lines: &[&[u8]]) -> ChunkOut {
        let mut body = vec![];
        for l in lines {
            body.extend_from_slice(l);
            body.push(b'\n');
        }
        parse_chunk(&body, 2, &layout(), &Arc::from("f.csv"), &ProgressBar::hidden())
    }

    #[test]
    fn good_row_is_cleaned() {
        let out = parse(&[GOOD.as_bytes()]);
        assert_eq!(out.read, 1);
        assert!(out.rejects.is_empty());
        let (rows, cols) = &out.batches[0];
        assert_eq!(*rows, 1);
        assert_eq!(cols["presc_full_name"].as_string::<i32>().value(0), "ANN LEE");
        assert_eq!(cols["years_of_exp"].as_primitive::<arrow::datatypes::Int32Type>().value(0), 31);
        assert_eq!(cols["trx_cnt"].as_primitive::<Int64Type>().value(0), 40);
        assert!(cols["bene_count_ge65"].is_null(0));
        assert_eq!(out.stats["1234567893"], (40, 1));
    }

    #[test]
    fn each_reject_reason_is_detected_with_line_numbers() {
        let no_npi = GOOD.replacen("1234567893", "N/A", 1);
        let no_drug = GOOD.replacen("LIPITOR", "", 1);
        let too_many = format!("{GOOD},extra");
        let too_few = GOOD.rsplit_once(',').unwrap().0.to_string();
        let mut bad_utf8 = GOOD.as_bytes().to_vec();
        bad_utf8[12] = 0xff;
        let out = parse(&[
            no_npi.as_bytes(),
            no_drug.as_bytes(),
            too_many.as_bytes(),
            too_few.as_bytes(),
            &bad_utf8,
            GOOD.as_bytes(),
        ]);
        let reasons: Vec<_> = out.rejects.iter().map(|r| (r.line, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (2, RejectReason::NpiWithoutDigits),
                (3, RejectReason::MissingDrugName),
                (4, RejectReason::TooManyFields),
                (5, RejectReason::TooFewFields),
                (6, RejectReason::InvalidUtf8),
            ]
        );
        assert_eq!(out.read, 6);
        assert_eq!(out.batches[0].0, 1);
    }

    #[test]
    fn malformed_numbers_do_not_reject() {
        let row = GOOD.replacen(",1200,", ",12x,", 1);
        let out = parse(&[row.as_bytes()]);
        assert!(out.rejects.is_empty());
        assert!(out.batches[0].1["total_day_supply"].is_null(0));
    }

    #[test]
    fn missing_claims_are_imputed_from_the_prescribers_average() {
        let a = GOOD.replacen(",40,", ",10,", 1);
        let b = GOOD.replacen(",40,", ",15,", 1);
        let c = GOOD.replacen(",40,", ",,", 1);
        let other = GOOD.replacen("1234567893", "1111111111", 1).replacen(",40,", ",,", 1);
        let out = parse(&[a.as_bytes(), b.as_bytes(), c.as_bytes(), other.as_bytes()]);
        let (_, cols) = &out.batches[0];
        let (filled, imputed, still) =
            impute(cols["npi"].as_string::<i32>(), cols["trx_cnt"].as_primitive::<Int64Type>(), &out.stats);
        assert_eq!(filled.value(2), 13); // round(12.5)
        assert!(filled.is_null(3));
        assert_eq!((imputed, still), (1, 1));
    }

    #[test]
    fn chunks_cover_all_lines_with_correct_numbers() {
        let data = b"a\nb\nc\nd\ne\n";
        let c = chunks(data, 2, 3);
        let total: usize = c.iter().map(|(p, _)| p.len()).sum();
        assert_eq!(total, data.len());
        assert_eq!(c[0].1, 2);
        let second_first = c[1].1 as usize - 2;
        assert_eq!(c[1].0[0], data[second_first * 2]);
    }
}
