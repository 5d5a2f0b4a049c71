//! Atomic partition replacement: one Iceberg snapshot that removes every live data file of one
//! partition value and adds new ones, committed with a compare-and-swap on the catalog row.
//!
//! iceberg-rust 0.10 only offers fast-append, so re-running a delivery would duplicate it. This
//! module produces the Overwrite (or Delete) snapshot itself, following the Iceberg spec: a new
//! manifest for the added files, rewritten manifests marking replaced files `DELETED` and the
//! others `EXISTING`, untouched manifests carried over, a new manifest list and metadata file,
//! and finally the same `UPDATE … WHERE metadata_location = <old>` the SQL catalog uses, so
//! pyiceberg and Java readers see an ordinary commit. A conflicting commit is retried on the
//! fresh table; the new data files stay valid across attempts.

use std::collections::HashMap;
use std::str::FromStr;

use iceberg::spec::{
    DataFile, Literal, ManifestContentType, ManifestFile, ManifestListWriter, ManifestStatus, ManifestWriterBuilder,
    Operation, PrimitiveLiteral, Snapshot, SnapshotReference, SnapshotRetention, Summary, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::MetadataLocation;
use rxgate_common::{Error, Result, StatusCode};
use uuid::Uuid;

use crate::lakehouse::parse_ident;
use crate::Lakehouse;

/// Replace the data of one partition value with new files (possibly none).
#[derive(Debug, Clone)]
pub struct PartitionReplace {
    /// Name of the identity partition field, e.g. `delivery_date`.
    pub field: String,
    /// The partition value whose files are replaced.
    pub value: Literal,
    /// Data files already written under the table location.
    pub new_files: Vec<DataFile>,
    /// Extra snapshot summary properties (`rxgate.delivery-date`, `rxgate.step`, …).
    pub properties: HashMap<String, String>,
}

/// What a committed replacement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The new snapshot.
    pub snapshot_id: i64,
    /// Data files added.
    pub added_files: u64,
    /// Rows added.
    pub added_records: u64,
    /// Data files removed (the partition's previous content).
    pub deleted_files: u64,
    /// Rows removed.
    pub deleted_records: u64,
    /// Commit attempts needed (1 unless another writer raced us).
    pub attempts: u32,
}

const MAX_ATTEMPTS: u32 = 8;

/// Commits a [`PartitionReplace`] on `table_name` atomically, retrying on conflicts.
pub async fn replace_partition(lake: &Lakehouse, table_name: &str, r: &PartitionReplace) -> Result<CommitOutcome> {
    let commit_uuid = Uuid::new_v4();
    for attempt in 1..=MAX_ATTEMPTS {
        let table = lake.load_table(table_name).await?;
        match try_commit(lake, &table, r, commit_uuid, attempt).await? {
            Some(mut outcome) => {
                outcome.attempts = attempt;
                return Ok(outcome);
            }
            None => {
                tracing::info!(table = table_name, attempt, "commit conflict, retrying on the fresh table");
                tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
            }
        }
    }
    Err(Error::new(
        StatusCode::CommitConflict,
        format!("{table_name}: gave up after {MAX_ATTEMPTS} conflicting commits"),
    ))
}

fn partition_matches(data_file: &DataFile, idx: usize, want: &PrimitiveLiteral) -> bool {
    data_file
        .partition()
        .fields()
        .get(idx)
        .and_then(|v| v.as_ref())
        .and_then(|l| l.as_primitive_literal())
        .is_some_and(|p| &p == want)
}

/// One attempt; `Ok(None)` means another commit won the race.
async fn try_commit(
    lake: &Lakehouse,
    table: &Table,
    r: &PartitionReplace,
    commit_uuid: Uuid,
    attempt: u32,
) -> Result<Option<CommitOutcome>> {
    let md = table.metadata();
    let file_io = table.file_io();
    let want = r.value.as_primitive_literal().ok_or_else(|| Error::invalid("partition value must be primitive"))?;
    let snapshot_id = loop {
        let (a, b) = Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if md.snapshots().all(|s| s.snapshot_id() != id) {
            break id;
        }
    };
    let seq = md.next_sequence_number();
    let meta_dir = format!("{}/metadata", md.location());
    let mut counter = 0u32;
    let mut next_manifest_path = || {
        counter += 1;
        format!("{meta_dir}/{commit_uuid}-a{attempt}-m{counter}.avro")
    };

    let mut manifests: Vec<ManifestFile> = vec![];
    let (mut deleted_files, mut deleted_records, mut deleted_size) = (0u64, 0u64, 0u64);
    if let Some(current) = md.current_snapshot() {
        let list = table.manifest_list_reader(current).load().await?;
        for mf in list.entries() {
            if mf.content != ManifestContentType::Data {
                manifests.push(mf.clone());
                continue;
            }
            let spec = md
                .partition_spec_by_id(mf.partition_spec_id)
                .ok_or_else(|| Error::internal(format!("manifest references unknown spec {}", mf.partition_spec_id)))?;
            let Some(idx) = spec.fields().iter().position(|f| f.name == r.field) else {
                manifests.push(mf.clone());
                continue;
            };
            let manifest = mf.load_manifest(file_io).await?;
            let alive = || manifest.entries().iter().filter(|e| e.status() != ManifestStatus::Deleted);
            if !alive().any(|e| partition_matches(e.data_file(), idx, &want)) {
                manifests.push(mf.clone());
                continue;
            }
            let mut writer = ManifestWriterBuilder::new(
                file_io.new_output(next_manifest_path())?,
                Some(snapshot_id),
                md.current_schema().clone(),
                spec.as_ref().clone(),
            )
            .build_v2_data();
            for e in alive() {
                let df = e.data_file().clone();
                let data_seq = e.sequence_number().unwrap_or(0);
                if partition_matches(&df, idx, &want) {
                    deleted_files += 1;
                    deleted_records += df.record_count();
                    deleted_size += df.file_size_in_bytes();
                    writer.add_delete_file(df, data_seq, e.file_sequence_number)?;
                } else {
                    writer.add_existing_file(
                        df,
                        e.snapshot_id().unwrap_or(snapshot_id),
                        data_seq,
                        e.file_sequence_number,
                    )?;
                }
            }
            manifests.push(writer.write_manifest_file().await?);
        }
    }

    let added_records: u64 = r.new_files.iter().map(|f| f.record_count()).sum();
    let added_size: u64 = r.new_files.iter().map(|f| f.file_size_in_bytes()).sum();
    if !r.new_files.is_empty() {
        let mut writer = ManifestWriterBuilder::new(
            file_io.new_output(next_manifest_path())?,
            Some(snapshot_id),
            md.current_schema().clone(),
            md.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for f in &r.new_files {
            writer.add_file(f.clone(), seq)?;
        }
        manifests.push(writer.write_manifest_file().await?);
    }

    let list_path = format!("{meta_dir}/snap-{snapshot_id}-{attempt}-{commit_uuid}.avro");
    let mut list_writer = ManifestListWriter::v2(
        file_io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        md.current_snapshot_id(),
        seq,
    );
    list_writer.add_manifests(manifests.into_iter())?;
    list_writer.close().await?;

    let operation = match (deleted_files > 0, !r.new_files.is_empty()) {
        (true, true) => Operation::Overwrite,
        (true, false) => Operation::Delete,
        _ => Operation::Append,
    };
    let prev = md.current_snapshot().map(|s| s.summary().additional_properties.clone()).unwrap_or_default();
    let total = |key: &str| prev.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut props = r.properties.clone();
    for (k, v) in [
        ("added-data-files", r.new_files.len() as u64),
        ("added-records", added_records),
        ("added-files-size", added_size),
        ("deleted-data-files", deleted_files),
        ("deleted-records", deleted_records),
        ("removed-files-size", deleted_size),
        ("total-data-files", (total("total-data-files") + r.new_files.len() as u64).saturating_sub(deleted_files)),
        ("total-records", (total("total-records") + added_records).saturating_sub(deleted_records)),
        ("total-files-size", (total("total-files-size") + added_size).saturating_sub(deleted_size)),
        ("total-delete-files", 0),
        ("total-position-deletes", 0),
        ("total-equality-deletes", 0),
    ] {
        props.insert(k.to_string(), v.to_string());
    }
    let snapshot = Snapshot::builder()
        .with_manifest_list(list_path)
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(md.current_snapshot_id())
        .with_sequence_number(seq)
        .with_summary(Summary { operation, additional_properties: props })
        .with_schema_id(md.current_schema_id())
        .with_timestamp_ms(chrono_now_ms())
        .build();

    let new_md = md
        .clone()
        .into_builder(table.metadata_location().map(str::to_string))
        .add_snapshot(snapshot)?
        .set_ref(MAIN_BRANCH, SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None)))?
        .build()?
        .metadata;
    if swap_metadata(lake, table, new_md).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(CommitOutcome {
        snapshot_id,
        added_files: r.new_files.len() as u64,
        added_records,
        deleted_files,
        deleted_records,
        attempts: attempt,
    }))
}

/// Writes `new_md` as the table's next metadata file and makes it current with a
/// compare-and-swap on the catalog row (`UPDATE … WHERE metadata_location = <old>`, as the SQL
/// catalog does). `Ok(None)`: another commit won the race (the caller retries on the fresh
/// table); `Ok(Some(location))`: the new metadata location.
pub(crate) async fn swap_metadata(
    lake: &Lakehouse,
    table: &Table,
    new_md: iceberg::spec::TableMetadata,
) -> Result<Option<String>> {
    let current_location =
        table.metadata_location().ok_or_else(|| Error::internal("table has no metadata location"))?.to_string();
    let new_location = MetadataLocation::from_str(&current_location)?.with_next_version().with_new_metadata(&new_md);
    new_md.write_to(table.file_io(), &new_location).await?;

    let ident = parse_ident(&format!("{}.{}", table.identifier().namespace().join("."), table.identifier().name()))?;
    let sql = if lake.config().is_postgres() {
        "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 \
         WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 AND metadata_location = $6"
    } else {
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? AND metadata_location = ?"
    };
    let new_location = new_location.to_string();
    let done = sqlx::query(sql)
        .bind(&new_location)
        .bind(&current_location)
        .bind(&lake.config().name)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .bind(&current_location)
        .execute(lake.pool())
        .await
        .map_err(|e| crate::lakehouse::catalog_db_error(&lake.config().uri, &e).context("commit"))?;
    Ok((done.rows_affected() > 0).then_some(new_location))
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
