//! Metadata-only table changes, committed like our snapshots (a new metadata file and a
//! compare-and-swap on the catalog row, retried on conflict; see `commit::swap_metadata`):
//! schema evolution (add, rename, drop column: new schema, same field ids, so old data files
//! read correctly), partition evolution (a new default spec; old files keep theirs) and
//! moving `main` to another snapshot (rollback). iceberg-rust 0.10's `Transaction` has none
//! of these actions, but its `TableMetadataBuilder` checks each change against the spec.

use std::sync::Arc;

use iceberg::spec::{
    FormatVersion, NestedField, NullOrder, PrimitiveType, Schema, SnapshotReference, SnapshotRetention, SortDirection,
    SortField, SortOrder, TableMetadata, Transform, Type, UnboundPartitionField, UnboundPartitionSpec, MAIN_BRANCH,
};
use iceberg::table::Table;
use rxgate_common::{Error, Result, StatusCode};

use crate::commit::swap_metadata;
use crate::Lakehouse;

/// A schema change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    /// `ADD COLUMN name type [COMMENT doc]`: an optional column, NULL in existing files.
    AddColumn {
        /// Column name.
        name: String,
        /// SQL type name (`string`, `bigint`, `decimal(10,2)`, …).
        ty: String,
        /// Column comment.
        comment: Option<String>,
    },
    /// `RENAME COLUMN from TO to`: same field id, so existing data keeps its values.
    RenameColumn {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// `DROP COLUMN name`.
    DropColumn(String),
}

/// One key of a table's sort order (Spark's `WRITE ORDERED BY c [ASC|DESC] [NULLS FIRST|LAST]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Column.
    pub column: String,
    /// `DESC`.
    pub descending: bool,
    /// `NULLS FIRST` (default for ASC, as Spark), else last.
    pub nulls_first: bool,
}

/// Sets the table's default sort order (empty: unsorted), which every writer and compaction
/// follow. Returns the order's id.
pub async fn set_sort_order(lake: &Lakehouse, table_name: &str, keys: &[SortKey]) -> Result<i64> {
    commit_change(lake, table_name, |table| {
        let md = table.metadata();
        let schema = md.current_schema();
        let mut order = SortOrder::builder();
        for key in keys {
            let source = find_field(schema, &key.column)?;
            order.with_sort_field(
                SortField::builder()
                    .source_id(source.id)
                    .transform(Transform::Identity)
                    .direction(if key.descending { SortDirection::Descending } else { SortDirection::Ascending })
                    .null_order(if key.nulls_first { NullOrder::First } else { NullOrder::Last })
                    .build(),
            );
        }
        let order = order.build(schema)?;
        let new_md = builder(table).add_sort_order(order)?.set_default_sort_order(-1)?.build()?.metadata;
        let id = new_md.default_sort_order_id();
        Ok((new_md, id))
    })
    .await
}

/// A partition spec change (Spark's `ADD|DROP PARTITION FIELD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionChange {
    /// Adds `transform(column) [AS name]` to the default spec.
    Add {
        /// Source column.
        column: String,
        /// Transform (`identity`, `year`, `month`, `day`, `hour`, `bucket[n]`, `truncate[w]`).
        transform: Transform,
        /// Partition field name; Iceberg's default naming when absent.
        name: Option<String>,
    },
    /// Removes the field called `name`, or the one that is `transform(column)`.
    Drop {
        /// Partition field name, or the source column of `transform`.
        name: String,
        /// The transform, when the field was named by its expression.
        transform: Option<Transform>,
    },
}

/// What a `main` move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMove {
    /// The current snapshot before.
    pub previous_snapshot_id: Option<i64>,
    /// The current snapshot now.
    pub current_snapshot_id: i64,
}

const MAX_ATTEMPTS: u32 = 8;

/// Loads `table_name`, applies `change` to its metadata and commits, retrying on conflicts
/// (the change is recomputed on the fresh table). Returns what `change` returned.
async fn commit_change<T>(
    lake: &Lakehouse,
    table_name: &str,
    change: impl Fn(&Table) -> Result<(TableMetadata, T)>,
) -> Result<T> {
    for attempt in 1..=MAX_ATTEMPTS {
        let table = lake.load_table(table_name).await?;
        let (md, out) = change(&table)?;
        if swap_metadata(lake, &table, md).await?.is_some() {
            return Ok(out);
        }
        tracing::info!(table = table_name, attempt, "metadata commit conflict, retrying on the fresh table");
        rxgate_common::metrics::record_commit_conflict(true);
        tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
    }
    Err(Error::new(
        StatusCode::CommitConflict,
        format!("{table_name}: gave up after {MAX_ATTEMPTS} conflicting commits"),
    ))
}

fn builder(table: &Table) -> iceberg::spec::TableMetadataBuilder {
    table.metadata().clone().into_builder(table.metadata_location().map(str::to_string))
}

/// The Iceberg type of a SQL type name.
pub fn parse_type(ty: &str) -> Result<PrimitiveType> {
    let t = ty.trim().to_ascii_lowercase();
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some(args) = compact.strip_prefix("decimal(").or_else(|| compact.strip_prefix("numeric(")) {
        let args = args.strip_suffix(')').unwrap_or(args);
        let (p, s) = args.split_once(',').unwrap_or((args, "0"));
        let (precision, scale) = (p.parse::<u32>(), s.parse::<u32>());
        if let (Ok(precision), Ok(scale)) = (precision, scale) {
            if (1..=38).contains(&precision) && scale <= precision {
                return Ok(PrimitiveType::Decimal { precision, scale });
            }
        }
        return Err(Error::invalid(format!("invalid decimal type {ty}")));
    }
    Ok(match t.as_str() {
        "string" | "text" | "varchar" | "character varying" => PrimitiveType::String,
        "int" | "integer" | "int4" => PrimitiveType::Int,
        "bigint" | "long" | "int8" => PrimitiveType::Long,
        "float" | "real" | "float4" => PrimitiveType::Float,
        "double" | "double precision" | "float8" => PrimitiveType::Double,
        "boolean" | "bool" => PrimitiveType::Boolean,
        "date" => PrimitiveType::Date,
        "timestamp" | "timestamp without time zone" | "timestamp_ntz" => PrimitiveType::Timestamp,
        "timestamptz" | "timestamp with time zone" | "timestamp_ltz" => PrimitiveType::Timestamptz,
        "binary" | "bytea" => PrimitiveType::Binary,
        "uuid" => PrimitiveType::Uuid,
        _ => return Err(Error::invalid(format!("unsupported column type {ty}"))),
    })
}

/// The top-level field called `name` (exact, else case-insensitive).
fn find_field<'a>(schema: &'a Schema, name: &str) -> Result<&'a Arc<NestedField>> {
    find(schema.as_struct().fields(), name)
}

fn find<'a>(fields: &'a [Arc<NestedField>], name: &str) -> Result<&'a Arc<NestedField>> {
    fields
        .iter()
        .find(|f| f.name == name)
        .or_else(|| fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)))
        .ok_or_else(|| Error::new(StatusCode::ColumnNotFound, format!("column \"{name}\" does not exist")))
}

fn schema_with(md: &TableMetadata, fields: Vec<Arc<NestedField>>) -> Result<Schema> {
    let current = md.current_schema();
    let ids: Vec<i32> = current.identifier_field_ids().filter(|id| fields.iter().any(|f| f.id == *id)).collect();
    Ok(Schema::builder().with_fields(fields).with_identifier_field_ids(ids).build()?)
}

/// Applies schema changes in one commit; returns the new current schema id.
pub async fn evolve_schema(lake: &Lakehouse, table_name: &str, changes: &[SchemaChange]) -> Result<i32> {
    commit_change(lake, table_name, |table| {
        let md = table.metadata();
        let current = md.current_schema();
        let mut fields: Vec<Arc<NestedField>> = current.as_struct().fields().to_vec();
        let mut next_id = md.last_column_id();
        for change in changes {
            let exists = |name: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(name));
            match change {
                SchemaChange::AddColumn { name, ty, comment } => {
                    if exists(name) {
                        return Err(Error::invalid(format!(
                            "column \"{name}\" of relation \"{table_name}\" already exists"
                        )));
                    }
                    next_id += 1;
                    let mut field = NestedField::optional(next_id, name, Type::Primitive(parse_type(ty)?));
                    if let Some(doc) = comment {
                        field = field.with_doc(doc);
                    }
                    fields.push(Arc::new(field));
                }
                SchemaChange::RenameColumn { from, to } => {
                    let id = find(&fields, from)?.id;
                    if fields.iter().any(|f| f.id != id && f.name.eq_ignore_ascii_case(to)) {
                        return Err(Error::invalid(format!(
                            "column \"{to}\" of relation \"{table_name}\" already exists"
                        )));
                    }
                    for f in fields.iter_mut().filter(|f| f.id == id) {
                        let mut renamed = f.as_ref().clone();
                        renamed.name = to.clone();
                        *f = Arc::new(renamed);
                    }
                }
                SchemaChange::DropColumn(name) => {
                    let id = find(&fields, name)?.id;
                    if md.default_partition_spec().fields().iter().any(|pf| pf.source_id == id) {
                        return Err(Error::invalid(format!(
                        "cannot drop column \"{name}\": the table is partitioned by it (DROP PARTITION FIELD first)"
                    )));
                    }
                    if fields.len() == 1 {
                        return Err(Error::invalid("cannot drop the last column of a table"));
                    }
                    fields.retain(|f| f.id != id);
                }
            }
        }
        let schema = schema_with(md, fields)?;
        let new_md = builder(table).add_current_schema(schema)?.build()?.metadata;
        let id = new_md.current_schema_id();
        Ok((new_md, id))
    })
    .await
}

/// Iceberg's default name of a partition field (as Java's `PartitionSpec.Builder`).
pub fn default_partition_name(column: &str, transform: &Transform) -> String {
    match transform {
        Transform::Identity => column.to_string(),
        Transform::Year => format!("{column}_year"),
        Transform::Month => format!("{column}_month"),
        Transform::Day => format!("{column}_day"),
        Transform::Hour => format!("{column}_hour"),
        Transform::Bucket(n) => format!("{column}_bucket_{n}"),
        Transform::Truncate(w) => format!("{column}_trunc_{w}"),
        other => format!("{column}_{other}"),
    }
}

/// Applies a partition spec change; returns the new default spec id.
pub async fn evolve_partition(lake: &Lakehouse, table_name: &str, change: &PartitionChange) -> Result<i32> {
    commit_change(lake, table_name, |table| {
        let md = table.metadata();
        let schema = md.current_schema();
        let mut fields: Vec<UnboundPartitionField> =
            md.default_partition_spec().fields().iter().map(|f| f.clone().into_unbound()).collect();
        match change {
            PartitionChange::Add { column, transform, name } => {
                let source = find_field(schema, column)?;
                let name = name.clone().unwrap_or_else(|| default_partition_name(&source.name, transform));
                if fields.iter().any(|f| f.source_id == source.id && &f.transform == transform) {
                    return Err(Error::invalid(format!("the table is already partitioned by {transform}({column})")));
                }
                if fields.iter().any(|f| f.name == name) {
                    return Err(Error::invalid(format!("partition field \"{name}\" already exists")));
                }
                transform.result_type(&source.field_type).map_err(|_| {
                    Error::invalid(format!(
                        "cannot partition column \"{column}\" ({}) by {transform}",
                        source.field_type
                    ))
                })?;
                fields.push(UnboundPartitionField {
                    source_id: source.id,
                    field_id: None,
                    name,
                    transform: *transform,
                });
            }
            PartitionChange::Drop { name, transform } => {
                let position = match transform {
                    None => fields.iter().position(|f| &f.name == name),
                    Some(t) => {
                        let source = find_field(schema, name)?.id;
                        fields.iter().position(|f| f.source_id == source && &f.transform == t)
                    }
                };
                let Some(position) = position else {
                    return Err(Error::invalid(format!("the table has no partition field {name}")));
                };
                if md.format_version() == FormatVersion::V1 {
                    fields[position].transform = Transform::Void;
                } else {
                    fields.remove(position);
                }
            }
        }
        let spec = UnboundPartitionSpec::builder().add_partition_fields(fields)?.build();
        let new_md = builder(table).add_default_partition_spec(spec)?.build()?.metadata;
        let id = new_md.default_partition_spec_id();
        Ok((new_md, id))
    })
    .await
}

/// Makes `snapshot_id` the current snapshot of `main`. With `ancestor_only` (Spark's
/// `rollback_to_snapshot`) it must be an ancestor of the current snapshot; without it (Spark's
/// `set_current_snapshot`) any snapshot of the table will do.
pub async fn set_current_snapshot(
    lake: &Lakehouse,
    table_name: &str,
    snapshot_id: i64,
    ancestor_only: bool,
) -> Result<SnapshotMove> {
    commit_change(lake, table_name, |table| {
        let md = table.metadata();
        if md.snapshot_by_id(snapshot_id).is_none() {
            return Err(Error::invalid(format!("table {table_name} has no snapshot {snapshot_id}")));
        }
        if ancestor_only && !super::inspect::current_ancestors(md).contains(&snapshot_id) {
            return Err(Error::invalid(format!(
                "snapshot {snapshot_id} is not an ancestor of the current snapshot of {table_name} \
                 (use system.set_current_snapshot)"
            )));
        }
        let previous = md.current_snapshot_id();
        let reference = SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None));
        let new_md = builder(table).set_ref(MAIN_BRANCH, reference)?.build()?.metadata;
        Ok((new_md, SnapshotMove { previous_snapshot_id: previous, current_snapshot_id: snapshot_id }))
    })
    .await
}

/// Rolls `main` back to the snapshot that was current at `ms` (epoch millis).
pub async fn rollback_to_timestamp(lake: &Lakehouse, table_name: &str, ms: i64) -> Result<SnapshotMove> {
    let table = lake.load_table(table_name).await?;
    let ancestors = super::inspect::current_ancestors(table.metadata());
    // The latest ancestor of the current snapshot committed strictly before `ms` (Spark).
    let target = table
        .metadata()
        .snapshots()
        .filter(|s| ancestors.contains(&s.snapshot_id()) && s.timestamp_ms() < ms)
        .max_by_key(|s| s.timestamp_ms())
        .map(|s| s.snapshot_id())
        .ok_or_else(|| Error::invalid(format!("table {table_name} has no snapshot older than the given timestamp")))?;
    set_current_snapshot(lake, table_name, target, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(parse_type("BIGINT").unwrap(), PrimitiveType::Long);
        assert_eq!(parse_type("varchar").unwrap(), PrimitiveType::String);
        assert_eq!(parse_type("decimal(10, 2)").unwrap(), PrimitiveType::Decimal { precision: 10, scale: 2 });
        assert!(parse_type("decimal(50,2)").is_err());
        assert!(parse_type("struct<a:int>").is_err());
    }

    #[test]
    fn partition_names() {
        assert_eq!(default_partition_name("d", &Transform::Year), "d_year");
        assert_eq!(default_partition_name("s", &Transform::Identity), "s");
        assert_eq!(default_partition_name("n", &Transform::Bucket(16)), "n_bucket_16");
    }
}
