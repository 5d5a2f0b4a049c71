//! The pipeline's commits: a delivery's data files, written by the lakehouse's
//! [`TableWriter`], replace that delivery's partition in one atomic snapshot.

use std::collections::HashMap;

use arrow::record_batch::RecordBatch;
use iceberg::spec::{DataFile, Literal};
use rxgate_catalog::{replace_partition, CommitOutcome, Lakehouse, PartitionReplace, TableWriter};
use rxgate_common::{failpoint, Result};

pub use rxgate_catalog::table_arrow_schema;

/// Writes `batches` into `table_name` and atomically replaces the partition
/// `delivery_date = date` with them (an empty input removes the partition's data).
pub async fn replace_delivery(
    lake: &Lakehouse,
    table_name: &str,
    date: chrono::NaiveDate,
    batches: impl IntoIterator<Item = RecordBatch>,
    properties: HashMap<String, String>,
) -> Result<CommitOutcome> {
    let table = lake.load_table(table_name).await?;
    let mut writer = TableWriter::new(&table)?;
    for b in batches {
        writer.write(b).await?;
    }
    let files = writer.close().await?;
    commit_delivery(lake, table_name, date, files, properties).await
}

/// Commits already-written data files as the new content of one delivery's partition.
pub async fn commit_delivery(
    lake: &Lakehouse,
    table_name: &str,
    date: chrono::NaiveDate,
    files: Vec<DataFile>,
    mut properties: HashMap<String, String>,
) -> Result<CommitOutcome> {
    failpoint("ingest.before_commit");
    properties.insert("rxgate.delivery-date".into(), date.to_string());
    let replace = PartitionReplace {
        field: "delivery_date".into(),
        value: Literal::date(crate::batch::epoch_days(date)),
        new_files: files,
        properties,
    };
    replace_partition(lake, table_name, &replace).await
}
