//! Deterministic synthetic CMS Medicare Part D data at scale factors.
//!
//! [`generate`] writes, under `OUT`:
//! - `prescribers/USA_Presc_Medicare_Data_2021.csv` ([`Layout::Seed`]) or
//!   `prescribers/MUP_DPR_RY23_P04_V10_DY21_NPIBN.csv` ([`Layout::Cms`]): exactly
//!   `round(1_329_329 × scale)` prescriber-drug rows after one header line;
//! - `cities/us_cities.parquet`: the full embedded set of ~5,200 real US cities in the
//!   simplemaps column layout (GeoNames + zipcodes, see NOTICE), whatever the scale.
//!
//! Same `(scale, seed, layout)` ⇒ byte-identical files (on the same platform), however many
//! threads run: the rows are made in chunks, each drawn from its own ChaCha8 stream seeded by
//! `(seed, chunk index)`, and written in chunk order. The seed and CMS layouts of one
//! `(scale, seed)` hold the same data.
//!
//! # Shapes
//! - ~200,000 distinct prescribers (NPIs) at scale 1, proportional to the scale, at least 50
//!   (at most one per row). NPIs are valid 10-digit NPIs (Luhn check digit with the "80840"
//!   prefix). A prescriber has a fixed name, city/state (real cities, weighted by population;
//!   5% keep the mixed-case spelling, the rest are upper case like CMS), specialty,
//!   description flag ("S" 85% / "T" 15%) and years of experience ("= NN", 1..=60, ~70% in
//!   20..=50); ~0.8% of last names carry a ", JR"-style suffix and ~1% are organisations
//!   (empty first name, some with commas) — such fields are double-quoted.
//! - Each prescriber has 1..=1000 rows (lognormal weights), each a distinct real drug drawn
//!   with Zipf-like popularity (well-known Part D drugs first).
//! - `total_claim_count` = 11 + lognormal (CMS minimum 11, long tail, capped at 250,000);
//!   `bene_count` ≤ claims, blank in 90% of the rows where it is below 11 (CMS suppression);
//!   `total_30_day_fill_count` ≥ claims, one decimal; `total_day_supply` ≈ 30 × fills;
//!   `total_drug_cost` = fills × a fixed per-drug price (brands dearer), two decimals.
//! - 65+ columns ≤ the totals; claims 1..=10 → flag "*" and the 65+ measures blank, an under-65
//!   remainder of 1..=10 → flag "#" and blank; the same for the 65+ beneficiary count.
//!
//! # Dirty rows
//! Each row independently, from its chunk's random stream (so at fixed positions for a given
//! `(scale, seed)`), becomes at most one of these (rates in parts per million of rows):
//!
//! | kind | rate | what the row has | rejected by the pipeline? |
//! |---|---|---|---|
//! | [`DirtyKind::MissingNpi`] | 0.05% | empty npi | yes (npi has no digits) |
//! | [`DirtyKind::NpiNoDigits`] | 0.02% | npi `N/A` | yes |
//! | [`DirtyKind::MissingDrugName`] | 0.05% | empty drug_name | yes |
//! | [`DirtyKind::MissingClaimCount`] | 0.5% | empty total_claim_count | no: imputed |
//! | [`DirtyKind::MalformedNumber`] | 0.1% | one other numeric field `12x`, `N/A`, `-`, `1.2.3`, `abc` or `$45` | no: that field becomes NULL |
//! | [`DirtyKind::TooManyFields`] | 0.02% | an unquoted `, JR` after the last name (23 fields) | yes |
//! | [`DirtyKind::TooFewFields`] | 0.02% | the last field missing (21 fields) | yes |
//! | [`DirtyKind::InvalidUtf8`] | 0.02% | a 0xFF byte inside the last name | yes |
//!
//! [`DatagenReport::dirty_rows`] counts the rejected kinds only (~0.18% of rows).

mod cities;
mod data;
mod gen;
mod names;
mod npi;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

pub use cities::{cities_batch, cities_schema};
pub use data::{cities as embedded_cities, drugs as embedded_drugs, City, Drug, CITY_COLUMNS};
pub use npi::{is_valid_npi, is_valid_npi_str, npi_check_digit};

/// Data rows of the prescriber file at scale factor 1 (the seed's row count).
pub const SCALE1_ROWS: u64 = 1_329_329;
/// Distinct prescribers at scale factor 1.
pub const SCALE1_PRESCRIBERS: u64 = 200_000;
/// Fewest prescribers at any scale (unless there are fewer rows).
pub const MIN_PRESCRIBERS: u64 = 50;
/// File name of the city dimension under `OUT/cities/`.
pub const CITIES_FILE_NAME: &str = "us_cities.parquet";

/// Column layout of the prescriber file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// The seed project's `USA_Presc_Medicare_Data_2021.csv` (npi, nppes_provider_…,
    /// years_of_exp).
    Seed,
    /// CMS "Medicare Part D Prescribers - by Provider and Drug" (Prscrbr_NPI, …, Tot_Clms, …).
    Cms,
}

impl Layout {
    /// File name of the prescriber file under `OUT/prescribers/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Layout::Seed => "USA_Presc_Medicare_Data_2021.csv",
            Layout::Cms => "MUP_DPR_RY23_P04_V10_DY21_NPIBN.csv",
        }
    }

    /// The header line, without the trailing `\n`.
    pub fn header(self) -> &'static str {
        gen::header(self).trim_end_matches('\n')
    }

    /// Column names, in order.
    pub fn columns(self) -> Vec<&'static str> {
        self.header().split(',').collect()
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct DatagenOptions {
    /// Scale factor: 1.0 = 1,329,329 prescriber-drug rows. Must be finite and > 0.
    pub scale: f64,
    /// Output directory; `prescribers/` and `cities/` are created under it.
    pub out: PathBuf,
    pub layout: Layout,
    pub seed: u64,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagenReport {
    /// Data rows written to the prescriber file (header excluded), dirty ones included.
    pub prescriber_rows: u64,
    /// Rows the pipeline must reject: missing / no-digit npi, missing drug_name, wrong field
    /// count, invalid UTF-8.
    pub dirty_rows: u64,
    /// Distinct NPIs on the rows the pipeline loads (rejected rows not counted).
    pub distinct_npis: u64,
    /// Rows of the city dimension.
    pub cities: u64,
    pub prescriber_file: PathBuf,
    pub cities_file: PathBuf,
}

/// Errors of [`generate`].
#[derive(Debug, thiserror::Error)]
pub enum DatagenError {
    #[error("invalid datagen options: {0}")]
    InvalidOptions(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded reference data is broken: {0}")]
    EmbeddedData(String),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("a generator thread panicked")]
    WorkerPanicked,
}

impl DatagenError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DatagenError::Io { path: path.to_path_buf(), source }
    }
}

/// The kinds of dirty rows, their fixed rates and whether the pipeline rejects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirtyKind {
    MissingNpi = 0,
    NpiNoDigits = 1,
    MissingDrugName = 2,
    MissingClaimCount = 3,
    MalformedNumber = 4,
    TooManyFields = 5,
    TooFewFields = 6,
    InvalidUtf8 = 7,
}

/// All dirty kinds, in the order their rate bands are laid out.
pub const DIRTY_KINDS: [DirtyKind; 8] = [
    DirtyKind::MissingNpi,
    DirtyKind::NpiNoDigits,
    DirtyKind::MissingDrugName,
    DirtyKind::MissingClaimCount,
    DirtyKind::MalformedNumber,
    DirtyKind::TooManyFields,
    DirtyKind::TooFewFields,
    DirtyKind::InvalidUtf8,
];

impl DirtyKind {
    /// Rate in parts per million of rows.
    pub const fn ppm(self) -> u32 {
        match self {
            DirtyKind::MissingNpi => 500,
            DirtyKind::NpiNoDigits => 200,
            DirtyKind::MissingDrugName => 500,
            DirtyKind::MissingClaimCount => 5_000,
            DirtyKind::MalformedNumber => 1_000,
            DirtyKind::TooManyFields => 200,
            DirtyKind::TooFewFields => 200,
            DirtyKind::InvalidUtf8 => 200,
        }
    }

    /// Whether the pipeline must reject (quarantine) such a row.
    pub const fn is_reject(self) -> bool {
        !matches!(self, DirtyKind::MissingClaimCount | DirtyKind::MalformedNumber)
    }
}

/// Prescriber-drug rows at a scale factor: `round(1_329_329 × scale)`.
pub fn rows_for_scale(scale: f64) -> u64 {
    (SCALE1_ROWS as f64 * scale).round() as u64
}

/// Distinct prescribers at a scale factor: `round(200_000 × scale)`, at least 50, at most the
/// number of rows.
pub fn prescribers_for_scale(scale: f64) -> u64 {
    let rows = rows_for_scale(scale);
    ((SCALE1_PRESCRIBERS as f64 * scale).round() as u64).max(MIN_PRESCRIBERS).min(rows)
}

fn check(opts: &DatagenOptions) -> Result<(), DatagenError> {
    if !opts.scale.is_finite() || opts.scale <= 0.0 {
        return Err(DatagenError::InvalidOptions(format!("scale must be a finite number > 0, got {}", opts.scale)));
    }
    // keep NPIs distinct (200M bases) and row counts sane
    if opts.scale > 1000.0 {
        return Err(DatagenError::InvalidOptions(format!("scale must be at most 1000, got {}", opts.scale)));
    }
    Ok(())
}

/// Writes the prescriber CSV and the city Parquet under `opts.out` (see the crate docs).
///
/// `progress(rows_done, rows_total)` is called on the calling thread, once before the first
/// rows and after each chunk (~55k rows) is written. Files are written to a `.tmp` name and
/// renamed when complete, so a failed run leaves no file under the final name.
pub fn generate(opts: &DatagenOptions, progress: &dyn Fn(u64, u64)) -> Result<DatagenReport, DatagenError> {
    check(opts)?;
    let rows = rows_for_scale(opts.scale);
    let prescribers = prescribers_for_scale(opts.scale);

    let presc_dir = opts.out.join("prescribers");
    let cities_dir = opts.out.join("cities");
    for d in [&presc_dir, &cities_dir] {
        fs::create_dir_all(d).map_err(|e| DatagenError::io(d, e))?;
    }

    let cities = data::cities()?;
    let drugs = data::drugs()?;

    // cities
    let cities_file = cities_dir.join(CITIES_FILE_NAME);
    let cities_tmp = cities_dir.join(format!("{CITIES_FILE_NAME}.tmp"));
    cities::write_cities_parquet(&cities, &cities_tmp)?;
    fs::rename(&cities_tmp, &cities_file).map_err(|e| DatagenError::io(&cities_file, e))?;

    // prescribers
    let model = gen::Model::new(&cities, &drugs, opts.seed, opts.layout)?;
    let prescriber_file = presc_dir.join(opts.layout.file_name());
    let tmp = presc_dir.join(format!("{}.tmp", opts.layout.file_name()));
    let stats = write_prescribers(&model, rows, prescribers, &tmp, progress)?;
    fs::rename(&tmp, &prescriber_file).map_err(|e| DatagenError::io(&prescriber_file, e))?;

    Ok(DatagenReport {
        prescriber_rows: stats.rows,
        dirty_rows: stats.rejected,
        distinct_npis: stats.npis,
        cities: cities.len() as u64,
        prescriber_file,
        cities_file,
    })
}

#[derive(Default)]
struct Stats {
    rows: u64,
    rejected: u64,
    npis: u64,
}

fn write_prescribers(
    model: &gen::Model,
    rows: u64,
    prescribers: u64,
    path: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<Stats, DatagenError> {
    let file = fs::File::create(path).map_err(|e| DatagenError::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(gen::header(model.layout()).as_bytes()).map_err(|e| DatagenError::io(path, e))?;
    progress(0, rows);

    let chunks = if prescribers == 0 { 0 } else { prescribers.div_ceil(gen::PRESCRIBERS_PER_CHUNK) };
    if chunks > 0 && rows > prescribers * 1000.min(model.drug_count() as u64) {
        return Err(DatagenError::InvalidOptions("too many rows per prescriber".into()));
    }
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    let workers = workers.min(chunks.max(1) as usize);
    let window = (2 * workers) as u64; // chunks in flight: bounds memory

    let mut stats = Stats::default();
    let (job_tx, job_rx) = mpsc::channel::<u64>();
    let job_rx = Mutex::new(job_rx);
    let result: Result<(), DatagenError> = std::thread::scope(|scope| {
        let (res_tx, res_rx) = mpsc::channel::<(u64, Option<gen::ChunkOut>)>();
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let job_rx = &job_rx;
            handles.push(scope.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(c) = job else { return };
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    gen::gen_chunk(model, rows, prescribers, chunks, c)
                }))
                .ok();
                if res_tx.send((c, out)).is_err() {
                    return;
                }
            }));
        }
        drop(res_tx);

        let mut issued = 0u64;
        while issued < chunks.min(window) {
            let _ = job_tx.send(issued);
            issued += 1;
        }
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        let mut outcome = Ok(());
        while next < chunks {
            let Ok((c, Some(out))) = res_rx.recv() else {
                outcome = Err(DatagenError::WorkerPanicked);
                break;
            };
            pending.insert(c, out);
            while let Some(out) = pending.remove(&next) {
                if let Err(e) = w.write_all(&out.buf) {
                    outcome = Err(DatagenError::io(path, e));
                    break;
                }
                stats.rows += out.rows;
                stats.rejected += out.rejected;
                stats.npis += out.npis_seen;
                next += 1;
                if issued < chunks {
                    let _ = job_tx.send(issued);
                    issued += 1;
                }
                progress(stats.rows, rows);
            }
            if outcome.is_err() {
                break;
            }
        }
        drop(job_tx); // workers exit once the queue is empty
        for h in handles {
            if h.join().is_err() && outcome.is_ok() {
                outcome = Err(DatagenError::WorkerPanicked);
            }
        }
        outcome
    });
    result?;
    w.flush().map_err(|e| DatagenError::io(path, e))?;
    debug_assert_eq!(stats.rows, rows);
    Ok(stats)
}

#[cfg(test)]
mod tests;
