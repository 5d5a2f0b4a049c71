//! Atomic table changes: one Iceberg snapshot that removes live data files (a partition, a
//! set of partitions, chosen files, or all) and adds new ones, committed with a
//! compare-and-swap on the catalog row.
//!
//! iceberg-rust 0.10 only offers fast-append, so re-running a delivery would duplicate it. This
//! module produces the Overwrite (or Delete) snapshot itself, following the Iceberg spec: a new
//! manifest for the added files, rewritten manifests marking replaced files `DELETED` and the
//! others `EXISTING`, untouched manifests carried over, a new manifest list and metadata file,
//! and finally the same `UPDATE … WHERE metadata_location = <old>` the SQL catalog uses, so
//! pyiceberg and Java readers see an ordinary commit. A conflicting commit is retried on the
//! fresh table; the new data files stay valid across attempts.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use iceberg::spec::{
    DataFile, Literal, ManifestContentType, ManifestFile, ManifestListWriter, ManifestStatus, ManifestWriterBuilder,
    Operation, PartitionKey, PartitionSpec, PrimitiveLiteral, SchemaRef, Snapshot, SnapshotReference,
    SnapshotRetention, Summary, TableMetadata, MAIN_BRANCH,
};
use iceberg::table::Table;
use iceberg::MetadataLocation;
use rxgate_common::{Error, Result, StatusCode};
use uuid::Uuid;

use crate::Lakehouse;

/// Which live data files a commit removes.
#[derive(Debug, Clone)]
pub enum Removal {
    /// None: an append.
    Nothing,
    /// Every live data file (TRUNCATE, INSERT OVERWRITE of an unpartitioned table).
    All,
    /// The files whose partition field `field` (by name, in the file's own spec) equals
    /// `value`. Re-evaluated on a retry, so a concurrent append to the partition is replaced too.
    Partition {
        /// Partition field name, e.g. `delivery_date`.
        field: String,
        /// The partition value.
        value: Literal,
    },
    /// The files whose partition tuple (as the default spec's partition path, `k=v/…`) is one
    /// of these (INSERT OVERWRITE's dynamic partitions).
    PartitionPaths(HashSet<String>),
    /// Exactly these files, by path (copy-on-write DELETE/UPDATE, metadata DELETE). Each must
    /// still be live when the commit lands: if a concurrent commit removed one, the change was
    /// computed from rows that are gone, and the commit fails with 40001 instead of retrying.
    Files(HashSet<String>),
    /// Exactly these files, rewritten into the added ones with the same rows (compaction): as
    /// [`Removal::Files`], and the snapshot is a Replace.
    Rewritten(HashSet<String>),
}

/// One atomic change of a table's data: files added, files removed, in one snapshot.
#[derive(Debug, Clone)]
pub struct TableChange {
    /// Data files already written under the table location.
    pub add: Vec<DataFile>,
    /// What the snapshot removes.
    pub remove: Removal,
    /// Extra snapshot summary properties (`rxgate.delivery-date`, `rxgate.statement`, …).
    pub properties: HashMap<String, String>,
}

impl TableChange {
    /// Appends `files`.
    pub fn append(files: Vec<DataFile>) -> Self {
        Self { add: files, remove: Removal::Nothing, properties: HashMap::new() }
    }
}

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

/// What a committed change did.
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
    let change = TableChange {
        add: r.new_files.clone(),
        remove: Removal::Partition { field: r.field.clone(), value: r.value.clone() },
        properties: r.properties.clone(),
    };
    commit_change(lake, table_name, &change).await
}

/// Commits a [`TableChange`] on `table_name` (`namespace.table`) as one snapshot, with the
/// catalog's compare-and-swap; a lost race is retried on the fresh table (40001 after
/// [`MAX_ATTEMPTS`], or at once when a file the change removes is gone).
pub async fn commit_change(lake: &Lakehouse, table_name: &str, change: &TableChange) -> Result<CommitOutcome> {
    rxgate_common::failpoint("write.before_commit");
    let commit_uuid = Uuid::new_v4();
    for attempt in 1..=MAX_ATTEMPTS {
        let table = lake.load_table(table_name).await?;
        let staged = stage(&table, change, commit_uuid, attempt).await?;
        if swap_metadata(lake, &table, staged.metadata).await?.is_some() {
            return Ok(CommitOutcome { attempts: attempt, ..staged.outcome });
        }
        tracing::info!(table = table_name, attempt, "commit conflict, retrying on the fresh table");
        rxgate_common::metrics::record_commit_conflict(true);
        tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
    }
    rxgate_common::metrics::record_commit_conflict(false);
    Err(Error::new(
        StatusCode::CommitConflict,
        format!("{table_name}: gave up after {MAX_ATTEMPTS} conflicting commits"),
    ))
}

/// A change applied to a table's metadata in memory: manifests and manifest list written,
/// the metadata not yet committed.
pub(crate) struct Staged {
    pub(crate) metadata: TableMetadata,
    pub(crate) outcome: CommitOutcome,
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

/// Whether `removal` takes `file` (written under `spec`).
fn removes(removal: &Removal, spec: &PartitionSpec, schema: &SchemaRef, file: &DataFile) -> Result<bool> {
    Ok(match removal {
        Removal::Nothing => false,
        Removal::All => true,
        Removal::Partition { field, value } => {
            let want =
                value.as_primitive_literal().ok_or_else(|| Error::invalid("partition value must be primitive"))?;
            match spec.fields().iter().position(|f| &f.name == field) {
                Some(idx) => partition_matches(file, idx, &want),
                None => false,
            }
        }
        Removal::PartitionPaths(paths) => {
            let key = PartitionKey::new(spec.clone(), schema.clone(), file.partition().clone());
            paths.contains(&key.to_path())
        }
        Removal::Files(paths) | Removal::Rewritten(paths) => paths.contains(file.file_path()),
    })
}

/// Applies `change` to `table`'s current snapshot: new manifests for the added files,
/// rewritten manifests marking removed files `DELETED` and the others `EXISTING`, untouched
/// manifests carried over, a new manifest list; returns the metadata with the new snapshot
/// as `main`. A table whose metadata has no location yet (being created) works too.
pub(crate) async fn stage(table: &Table, change: &TableChange, commit_uuid: Uuid, attempt: u32) -> Result<Staged> {
    let md = table.metadata();
    let file_io = table.file_io();
    let snapshot_id = new_snapshot_id(md);
    let seq = md.next_sequence_number();
    let meta_dir = format!("{}/metadata", md.location());
    let mut counter = 0u32;
    let mut next_manifest_path = || {
        counter += 1;
        format!("{meta_dir}/{commit_uuid}-a{attempt}-m{counter}.avro")
    };

    let mut manifests: Vec<ManifestFile> = vec![];
    let (mut deleted_files, mut deleted_records, mut deleted_size) = (0u64, 0u64, 0u64);
    let mut removed_paths: HashSet<String> = HashSet::new();
    if let Some(current) = md.current_snapshot() {
        let list = table.manifest_list_reader(current).load().await?;
        for mf in list.entries() {
            if mf.content != ManifestContentType::Data || matches!(change.remove, Removal::Nothing) {
                manifests.push(mf.clone());
                continue;
            }
            let spec = md
                .partition_spec_by_id(mf.partition_spec_id)
                .ok_or_else(|| Error::internal(format!("manifest references unknown spec {}", mf.partition_spec_id)))?;
            let schema = md.current_schema();
            let manifest = mf.load_manifest(file_io).await?;
            let alive = || manifest.entries().iter().filter(|e| e.status() != ManifestStatus::Deleted);
            let mut any = false;
            for e in alive() {
                any |= removes(&change.remove, spec, schema, e.data_file())?;
            }
            if !any {
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
                if removes(&change.remove, spec, schema, &df)? {
                    deleted_files += 1;
                    deleted_records += df.record_count();
                    deleted_size += df.file_size_in_bytes();
                    removed_paths.insert(df.file_path().to_string());
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
    if let Removal::Files(wanted) | Removal::Rewritten(wanted) = &change.remove {
        if let Some(gone) = wanted.iter().find(|p| !removed_paths.contains(*p)) {
            rxgate_common::metrics::record_commit_conflict(false);
            return Err(Error::new(
                StatusCode::CommitConflict,
                format!(
                    "could not serialize access due to a concurrent update of {}: data file {gone} was \
                     removed by another commit; retry the statement",
                    table.identifier()
                ),
            ));
        }
    }

    let added_records: u64 = change.add.iter().map(|f| f.record_count()).sum();
    let added_size: u64 = change.add.iter().map(|f| f.file_size_in_bytes()).sum();
    if !change.add.is_empty() {
        let mut writer = ManifestWriterBuilder::new(
            file_io.new_output(next_manifest_path())?,
            Some(snapshot_id),
            md.current_schema().clone(),
            md.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for f in &change.add {
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

    let operation = match (deleted_files > 0, !change.add.is_empty()) {
        _ if matches!(change.remove, Removal::Rewritten(_)) => Operation::Replace,
        (true, true) => Operation::Overwrite,
        (true, false) => Operation::Delete,
        _ => Operation::Append,
    };
    let prev = md.current_snapshot().map(|s| s.summary().additional_properties.clone()).unwrap_or_default();
    let total = |key: &str| prev.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut props = change.properties.clone();
    for (k, v) in [
        ("added-data-files", change.add.len() as u64),
        ("added-records", added_records),
        ("added-files-size", added_size),
        ("deleted-data-files", deleted_files),
        ("deleted-records", deleted_records),
        ("removed-files-size", deleted_size),
        ("total-data-files", (total("total-data-files") + change.add.len() as u64).saturating_sub(deleted_files)),
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
        .with_timestamp_ms(crate::maintenance::now_ms())
        .build();

    let metadata = with_main(table, snapshot)?;
    Ok(Staged {
        metadata,
        outcome: CommitOutcome {
            snapshot_id,
            added_files: change.add.len() as u64,
            added_records,
            deleted_files,
            deleted_records,
            attempts: attempt,
        },
    })
}

/// A snapshot id the table does not use yet (positive, random).
pub(crate) fn new_snapshot_id(md: &TableMetadata) -> i64 {
    loop {
        let (a, b) = Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if md.snapshots().all(|s| s.snapshot_id() != id) {
            return id;
        }
    }
}

/// The table's metadata with `snapshot` added and made `main`'s head.
pub(crate) fn with_main(table: &Table, snapshot: Snapshot) -> Result<TableMetadata> {
    let id = snapshot.snapshot_id();
    Ok(table
        .metadata()
        .clone()
        .into_builder(table.metadata_location().map(str::to_string))
        .add_snapshot(snapshot)?
        .set_ref(MAIN_BRANCH, SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)))?
        .build()?
        .metadata)
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

    let new_location = new_location.to_string();
    let step =
        crate::txn::Step::Swap { ident: table.identifier().clone(), old: current_location, new: new_location.clone() };
    Ok(crate::txn::run_steps(lake, &[step]).await?.then_some(new_location))
}
