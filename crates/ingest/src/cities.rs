//! US cities dimension ingest (simplemaps layout Parquet) into `health.us_cities`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int32Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};

use crate::batch::{assemble, epoch_days, is_text, Constant};
use crate::clean;
use crate::prescribers::IngestSummary;
use crate::writer::replace_delivery;
use crate::writer::table_arrow_schema;

/// The city dimension table.
pub const CITY_TABLE: &str = "health.us_cities";

/// Columns upper-cased by the seed's cleaning rules.
const UPPER: [&str; 3] = ["city", "state_name", "county_name"];

/// Ingests city Parquet files (a file or a directory of `*.parquet`) as delivery `date`.
pub async fn ingest_cities(lake: &Lakehouse, input: &str, date: chrono::NaiveDate) -> Result<IngestSummary> {
    let files = crate::input::list(lake, input, "parquet").await?;
    let table = lake.load_table(CITY_TABLE).await?;
    let schema = table_arrow_schema(&table)?;
    let mut summary = IngestSummary {
        table: CITY_TABLE.into(),
        delivery_date: date.to_string(),
        files: files.clone(),
        ..Default::default()
    };
    let mut out = vec![];
    for f in &files {
        let file = crate::input::read(lake, f).await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| Error::new(StatusCode::BadInputLayout, format!("{}: not a readable Parquet file: {e}", f)))?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::new(StatusCode::BadInputLayout, format!("{}: {e}", f)))?;
            let rows = batch.num_rows();
            summary.read += rows as u64;
            let mut cols: HashMap<&str, ArrayRef> = HashMap::new();
            let source = batch.schema();
            for field in schema.fields() {
                let name = field.name().as_str();
                let Some(idx) = source.fields().iter().position(|f| f.name().eq_ignore_ascii_case(name)) else {
                    continue;
                };
                let mut col = batch.column(idx).clone();
                if is_text(field.data_type()) && !is_text(col.data_type()) {
                    col = cast(&col, &DataType::Utf8).map_err(|e| Error::invalid(format!("{name}: {e}")))?;
                }
                if UPPER.contains(&name) {
                    let s = cast(&col, &DataType::Utf8).map_err(|e| Error::invalid(e.to_string()))?;
                    let up: StringArray = s.as_string::<i32>().iter().map(|v| v.map(clean::upper)).collect();
                    col = Arc::new(up);
                }
                cols.insert(name, col);
            }
            if !cols.contains_key("city") || !cols.contains_key("state_id") {
                return Err(Error::new(
                    StatusCode::BadInputLayout,
                    format!("{}: city file needs at least the columns city and state_id", f),
                ));
            }
            let zips = cols
                .get("zips")
                .map(|z| cast(z, &DataType::Utf8))
                .transpose()
                .map_err(|e| Error::invalid(e.to_string()))?;
            let zip_count: Int32Array = match &zips {
                Some(z) => z.as_string::<i32>().iter().map(|v| Some(clean::zip_count(v))).collect(),
                None => Int32Array::from(vec![0; rows]),
            };
            cols.insert("zip_count", Arc::new(zip_count));
            let batch = assemble(&schema, rows, cols, &[("delivery_date", Constant::Date(epoch_days(date)))])?;
            summary.loaded += batch.num_rows() as u64;
            out.push(batch);
        }
    }
    let props = HashMap::from([
        ("rxgate.step".to_string(), "ingest-cities".to_string()),
        ("rxgate.read".to_string(), summary.read.to_string()),
        ("rxgate.quarantined".to_string(), "0".to_string()),
    ]);
    let outcome = replace_delivery(lake, CITY_TABLE, date, out, props).await?;
    summary.snapshot_id = Some(outcome.snapshot_id);
    summary.data_files = outcome.added_files;
    summary.replaced_rows = outcome.deleted_records;
    rxgate_common::metrics::record_ingest(summary.read, summary.loaded, summary.quarantined);
    Ok(summary)
}
