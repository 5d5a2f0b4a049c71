//! Manifest compaction (Spark's `rewrite_manifests`, Trino's `EXECUTE optimize_manifests`): the
//! current snapshot's data manifests are merged into one per partition spec — every live entry
//! carried as EXISTING with its snapshot id and sequence numbers — in a Replace snapshot with
//! the same files. Many small appends leave one manifest each; planning a scan reads them all.

use std::collections::BTreeMap;

use iceberg::spec::{
    ManifestContentType, ManifestFile, ManifestListWriter, ManifestStatus, ManifestWriterBuilder, Operation, Snapshot,
    Summary,
};
use rxgate_common::{Error, Result, StatusCode};

use super::now_ms;
use crate::Lakehouse;

/// What a manifest rewrite did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestOutcome {
    /// Manifests replaced.
    pub rewritten_manifests: u64,
    /// Manifests written.
    pub added_manifests: u64,
    /// The Replace snapshot (`None`: nothing to merge).
    pub snapshot_id: Option<i64>,
}

const MAX_ATTEMPTS: u32 = 8;

/// Merges `table_name`'s data manifests, one per partition spec.
pub async fn rewrite_manifests(lake: &Lakehouse, table_name: &str) -> Result<ManifestOutcome> {
    for attempt in 1..=MAX_ATTEMPTS {
        let table = lake.load_table(table_name).await?;
        let md = table.metadata();
        let Some(current) = md.current_snapshot() else { return Ok(ManifestOutcome::default()) };
        let list = table.manifest_list_reader(current).load().await?;
        let mut by_spec: BTreeMap<i32, Vec<&ManifestFile>> = BTreeMap::new();
        let mut kept: Vec<ManifestFile> = vec![];
        for mf in list.entries() {
            match mf.content {
                ManifestContentType::Data => by_spec.entry(mf.partition_spec_id).or_default().push(mf),
                ManifestContentType::Deletes => kept.push(mf.clone()),
            }
        }
        if by_spec.values().all(|v| v.len() < 2) {
            return Ok(ManifestOutcome::default());
        }
        let snapshot_id = crate::commit::new_snapshot_id(md);
        let seq = md.next_sequence_number();
        let commit = uuid::Uuid::new_v4();
        let meta_dir = format!("{}/metadata", md.location());
        let mut outcome = ManifestOutcome { snapshot_id: Some(snapshot_id), ..Default::default() };
        for (spec_id, manifests) in by_spec {
            if manifests.len() < 2 {
                kept.extend(manifests.into_iter().cloned());
                continue;
            }
            let spec = md
                .partition_spec_by_id(spec_id)
                .ok_or_else(|| Error::internal(format!("manifest references unknown spec {spec_id}")))?;
            let path = format!("{meta_dir}/{commit}-a{attempt}-s{spec_id}.avro");
            let mut writer = ManifestWriterBuilder::new(
                table.file_io().new_output(&path)?,
                Some(snapshot_id),
                md.current_schema().clone(),
                spec.as_ref().clone(),
            )
            .build_v2_data();
            for mf in &manifests {
                let manifest = mf.load_manifest(table.file_io()).await?;
                for e in manifest.entries().iter().filter(|e| e.status() != ManifestStatus::Deleted) {
                    writer.add_existing_file(
                        e.data_file().clone(),
                        e.snapshot_id().unwrap_or(snapshot_id),
                        e.sequence_number().unwrap_or(0),
                        e.file_sequence_number,
                    )?;
                }
            }
            kept.push(writer.write_manifest_file().await?);
            outcome.rewritten_manifests += manifests.len() as u64;
            outcome.added_manifests += 1;
        }
        let list_path = format!("{meta_dir}/snap-{snapshot_id}-{attempt}-{commit}.avro");
        let mut list_writer = ManifestListWriter::v2(
            table.file_io().new_output(&list_path)?.writer().await?,
            snapshot_id,
            md.current_snapshot_id(),
            seq,
        );
        list_writer.add_manifests(kept.into_iter())?;
        list_writer.close().await?;
        let mut props = current.summary().additional_properties.clone();
        for key in ["added-data-files", "added-records", "added-files-size", "deleted-data-files", "deleted-records"] {
            props.remove(key);
        }
        props.insert("manifests-replaced".into(), outcome.rewritten_manifests.to_string());
        props.insert("manifests-created".into(), outcome.added_manifests.to_string());
        props.insert("rxgate.operation".into(), "rewrite_manifests".into());
        let snapshot = Snapshot::builder()
            .with_manifest_list(list_path)
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(md.current_snapshot_id())
            .with_sequence_number(seq)
            .with_summary(Summary { operation: Operation::Replace, additional_properties: props })
            .with_schema_id(md.current_schema_id())
            .with_timestamp_ms(now_ms())
            .build();
        let new_md = crate::commit::with_main(&table, snapshot)?;
        if crate::commit::swap_metadata(lake, &table, new_md).await?.is_some() {
            return Ok(outcome);
        }
        tracing::info!(table = table_name, attempt, "manifest rewrite lost a commit race, retrying");
    }
    Err(Error::new(
        StatusCode::CommitConflict,
        format!("{table_name}: manifest rewrite gave up after {MAX_ATTEMPTS} conflicting commits"),
    ))
}
