//! Compaction (Spark's `rewrite_data_files`, Trino's `EXECUTE optimize`): the live data files
//! smaller than a threshold are bin-packed per partition — each partition holding at least
//! `min_input_files` of them is read and rewritten by the one table writer (sized files of
//! `write.target-file-size-bytes`, sorted by the table's sort order) — and committed as one
//! Replace snapshot that removes exactly those files. The rows written are counted against the
//! rows read before anything is committed; if the commit fails, the new files are deleted.

use std::collections::{BTreeMap, HashSet};

use datafusion::logical_expr::Expr;
use iceberg::spec::DataFile;
use rxgate_common::{Error, Result, StatusCode};

use super::{delete_all, property};
use crate::{commit_change, read_data_file, table_arrow_schema, Lakehouse, Removal, TableChange, TableWriter};

/// Iceberg's default `write.target-file-size-bytes`: 512 MiB; rxgate's writer and compaction
/// default to 128 MiB, which suits 2-core gateways and keeps partitions parallel.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// How to compact.
#[derive(Debug, Clone, Default)]
pub struct CompactOptions {
    /// Output file size (default: `write.target-file-size-bytes`, else 128 MiB).
    pub target_size: Option<u64>,
    /// Files smaller than this are rewritten (default: 3/4 of the target size).
    pub threshold: Option<u64>,
    /// A partition is rewritten only when it has at least this many small files (default 2).
    pub min_input_files: Option<usize>,
    /// Only files that may hold rows matching these filters (`WHERE`), pruned by iceberg.
    pub filters: Vec<Expr>,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactOutcome {
    /// Files replaced.
    pub rewritten_files: u64,
    /// Their bytes.
    pub rewritten_bytes: u64,
    /// Files written.
    pub added_files: u64,
    /// Their bytes.
    pub added_bytes: u64,
    /// Rows rewritten (the same before and after).
    pub rows: u64,
    /// The Replace snapshot (`None`: nothing to compact).
    pub snapshot_id: Option<i64>,
}

/// The files to rewrite, by partition: the small live files, in partitions with enough of them.
async fn candidates(table: &iceberg::table::Table, options: &CompactOptions, threshold: u64) -> Result<Vec<DataFile>> {
    let md = table.metadata();
    if md.current_snapshot().is_none() {
        return Ok(vec![]);
    }
    let allowed: Option<HashSet<String>> = if options.filters.is_empty() {
        None
    } else {
        let filters = crate::scan::plain_string_literals(&options.filters);
        let predicate = iceberg_datafusion::physical_plan::convert_filters_to_predicate(&filters).ok_or_else(|| {
            Error::new(
                StatusCode::Unsupported,
                "the WHERE of a compaction must be comparisons of columns with constants (iceberg prunes files by it)",
            )
        })?;
        let scan = table.scan().with_filter(predicate).build()?;
        let files = futures::TryStreamExt::try_collect::<Vec<_>>(scan.plan_files().await?).await?;
        Some(files.into_iter().map(|t| t.data_file_path).collect())
    };
    let mut groups: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
    for (spec_id, f) in crate::write::live_entries(table).await? {
        if f.file_size_in_bytes() >= threshold || allowed.as_ref().is_some_and(|a| !a.contains(f.file_path())) {
            continue;
        }
        groups.entry(format!("{spec_id}:{:?}", f.partition())).or_default().push(f);
    }
    let min = options.min_input_files.unwrap_or(2).max(1);
    Ok(groups.into_values().filter(|g| g.len() >= min).flatten().collect())
}

/// Compacts `table_name`'s small files into one Replace snapshot.
pub async fn rewrite_data_files(
    lake: &Lakehouse,
    table_name: &str,
    options: &CompactOptions,
) -> Result<CompactOutcome> {
    let table = lake.load_table(table_name).await?;
    let table = crate::iceberg_admin::with_current_schema(table)?;
    let target = options
        .target_size
        .unwrap_or_else(|| property(&table, "write.target-file-size-bytes", DEFAULT_TARGET_FILE_SIZE));
    let threshold = options.threshold.unwrap_or(target / 4 * 3).max(1);
    let inputs = candidates(&table, options, threshold).await?;
    let mut outcome = CompactOutcome::default();
    if inputs.is_empty() {
        return Ok(outcome);
    }
    let schema = table_arrow_schema(&table)?;
    let mut writer = TableWriter::sized(&table, Some(target))?;
    for f in &inputs {
        for batch in read_data_file(lake.storage(), f.file_path(), &schema).await? {
            writer.write(batch).await?;
        }
    }
    let written_rows = writer.rows();
    let added = writer.close().await?;
    let read_rows: u64 = inputs.iter().map(|f| f.record_count()).sum();
    let new_paths: Vec<String> = added.iter().map(|f| f.file_path().to_string()).collect();
    if written_rows != read_rows || added.iter().map(|f| f.record_count()).sum::<u64>() != read_rows {
        delete_all(lake.storage(), new_paths).await?;
        return Err(Error::internal(format!(
            "{table_name}: compaction read {read_rows} rows but wrote {written_rows}; nothing committed"
        )));
    }
    outcome.rewritten_files = inputs.len() as u64;
    outcome.rewritten_bytes = inputs.iter().map(|f| f.file_size_in_bytes()).sum();
    outcome.added_files = added.len() as u64;
    outcome.added_bytes = added.iter().map(|f| f.file_size_in_bytes()).sum();
    outcome.rows = read_rows;
    let mut change = TableChange {
        add: added,
        remove: Removal::Rewritten(inputs.iter().map(|f| f.file_path().to_string()).collect()),
        properties: Default::default(),
    };
    change.properties.insert("rxgate.operation".into(), "rewrite_data_files".into());
    rxgate_common::failpoint("compact.before_commit");
    match commit_change(lake, table_name, &change).await {
        Ok(committed) => {
            outcome.snapshot_id = Some(committed.snapshot_id);
            Ok(outcome)
        }
        Err(e) => {
            // Nothing references the new files: remove them rather than leave orphans.
            if let Err(cleanup) = delete_all(lake.storage(), new_paths).await {
                tracing::warn!(table = table_name, error = %cleanup.message, "compaction's files not removed");
            }
            Err(e)
        }
    }
}
