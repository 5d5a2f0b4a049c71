//! Schema and table DDL on the lakehouse: namespaces, tables (created empty, or created
//! together with their first data in one step), renames and drops.
//!
//! A table created with data (CTAS) is written before it exists: its metadata is built in
//! memory ([`prepare_table`]), the data files are written under its location, the first
//! snapshot is staged on that metadata, and only then is the catalog row inserted
//! ([`create_table`]). That insert is the commit: a failure or a crash before it leaves no
//! table (only unreferenced files under the new location).

use std::collections::HashMap;

use iceberg::spec::{Schema, SortOrder, TableMetadata, TableMetadataBuilder, Transform, UnboundPartitionSpec};
use iceberg::table::Table;
use iceberg::{MetadataLocation, NamespaceIdent, TableCreation, TableIdent};
use rxgate_common::{Error, Result, StatusCode};
use uuid::Uuid;

use crate::commit::{stage, CommitOutcome, TableChange};
use crate::Lakehouse;

/// A table to create: its identity, Iceberg schema, partition fields and properties.
#[derive(Debug, Clone)]
pub struct NewTable {
    /// `namespace.table`.
    pub ident: TableIdent,
    /// Columns, with field ids 1..n.
    pub schema: Schema,
    /// Partition fields: source column and transform, in order.
    pub partition: Vec<(String, Transform)>,
    /// Table properties (`TBLPROPERTIES`, Trino's `WITH`).
    pub properties: HashMap<String, String>,
}

/// Creates the namespace `name`. `Ok(false)`: it already existed and `if_not_exists` was set.
pub async fn create_namespace(lake: &Lakehouse, name: &str, if_not_exists: bool) -> Result<bool> {
    let ns = NamespaceIdent::from_strs(name.split('.'))?;
    let catalog = lake.catalog();
    if catalog.namespace_exists(&ns).await? {
        return if if_not_exists {
            Ok(false)
        } else {
            Err(Error::new(StatusCode::AlreadyExists, format!("schema \"{name}\" already exists")))
        };
    }
    match catalog.create_namespace(&ns, HashMap::new()).await {
        Ok(_) => {
            lake.bump_ddl_version();
            Ok(true)
        }
        Err(_) if if_not_exists && catalog.namespace_exists(&ns).await.unwrap_or(false) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Drops the namespace `name`: with `cascade`, its tables first (their files stay, as for a
/// DROP TABLE without PURGE); without, a namespace that still holds tables is 2BP01.
/// `Ok(false)`: it did not exist and `if_exists` was set.
pub async fn drop_namespace(lake: &Lakehouse, name: &str, if_exists: bool, cascade: bool) -> Result<bool> {
    let ns = NamespaceIdent::from_strs(name.split('.'))?;
    let catalog = lake.catalog();
    if !catalog.namespace_exists(&ns).await? {
        return if if_exists {
            Ok(false)
        } else {
            Err(Error::new(StatusCode::SchemaNotFound, format!("schema \"{name}\" does not exist")))
        };
    }
    let tables = catalog.list_tables(&ns).await?;
    let external = lake.external().names(name);
    let views = lake.views().list(name).await?;
    if !cascade && (!tables.is_empty() || !external.is_empty() || !views.is_empty()) {
        return Err(Error::new(
            StatusCode::DependentObjectsExist,
            format!(
                "cannot drop schema {name} because other objects depend on it ({} tables, {} views); use DROP SCHEMA {name} CASCADE",
                tables.len() + external.len(),
                views.len()
            ),
        ));
    }
    for v in &views {
        lake.views().drop_view(name, v).await?;
    }
    for t in &tables {
        catalog.drop_table(t).await?;
    }
    for t in &external {
        lake.external().drop_table(name, t).await?;
    }
    catalog.drop_namespace(&ns).await?;
    lake.bump_ddl_version();
    Ok(true)
}

/// Builds a new table's metadata in memory, at its default location
/// (`<warehouse>/<namespace>/<table>`), as an unregistered [`Table`] that a
/// [`crate::TableWriter`] can write data files for. Nothing is stored yet. `staged`: the
/// caller (a transaction) has checked the name itself — it may be dropping a table of that
/// name before creating this one.
pub async fn prepare_table(lake: &Lakehouse, new: &NewTable, staged: bool) -> Result<Table> {
    let catalog = lake.catalog();
    let ns = new.ident.namespace();
    if !catalog.namespace_exists(ns).await? {
        return Err(Error::new(StatusCode::SchemaNotFound, format!("schema \"{}\" does not exist", ns.join("."))));
    }
    if !staged && catalog.table_exists(&new.ident).await? {
        return Err(already_exists(&new.ident));
    }
    let mut spec = UnboundPartitionSpec::builder();
    for (column, transform) in &new.partition {
        let field = new.schema.field_by_name(column).ok_or_else(|| {
            Error::new(
                StatusCode::ColumnNotFound,
                format!("partition column \"{column}\" is not a column of the table"),
            )
        })?;
        let name = match transform {
            Transform::Identity => column.clone(),
            Transform::Bucket(n) => format!("{column}_bucket_{n}"),
            Transform::Truncate(w) => format!("{column}_trunc_{w}"),
            other => format!("{column}_{}", other.to_string().to_lowercase()),
        };
        spec = spec.add_partition_field(field.id, name, *transform).map_err(|e| {
            Error::new(StatusCode::InvalidArgument, format!("partition field {transform}({column}): {e}"))
        })?;
    }
    let location = format!("{}/{}/{}", lake.config().warehouse.trim_end_matches('/'), ns.join("/"), new.ident.name());
    let creation = TableCreation::builder()
        .name(new.ident.name().to_string())
        .location(location)
        .schema(new.schema.clone())
        .partition_spec(spec.build())
        .sort_order(SortOrder::unsorted_order())
        .properties(new.properties.clone())
        .build();
    let metadata = TableMetadataBuilder::from_table_creation(creation)
        .map_err(|e| Error::new(StatusCode::InvalidArgument, format!("table {}: {e}", new.ident)))?
        .build()
        .map_err(|e| Error::new(StatusCode::InvalidArgument, format!("table {}: {e}", new.ident)))?
        .metadata;
    Ok(Table::builder()
        .file_io(lake.file_io())
        .identifier(new.ident.clone())
        .metadata(metadata)
        .runtime(iceberg::Runtime::current())
        .build()?)
}

/// Registers a table built by [`prepare_table`], with `first` as its first snapshot (CTAS)
/// or empty: writes its metadata file and inserts its catalog row, in that order, so the
/// insert is the commit. A table of that name created meanwhile is 42P07.
pub async fn create_table(
    lake: &Lakehouse,
    table: &Table,
    first: Option<&TableChange>,
) -> Result<Option<CommitOutcome>> {
    let (metadata, outcome): (TableMetadata, _) = match first {
        Some(change) => {
            let staged = stage(table, change, Uuid::new_v4(), 1).await?;
            (staged.metadata, Some(staged.outcome))
        }
        None => (table.metadata().clone(), None),
    };
    if first.is_some() {
        rxgate_common::failpoint("write.before_commit");
    }
    let location = MetadataLocation::new_with_metadata(table.metadata().location(), &metadata);
    metadata.write_to(table.file_io(), &location).await?;
    let step = crate::txn::Step::Insert { ident: table.identifier().clone(), location: location.to_string() };
    crate::txn::run_steps(lake, &[step]).await?;
    lake.bump_ddl_version();
    Ok(outcome)
}

/// Drops a table from the catalog; with `purge`, also every file its metadata references.
/// `Ok(false)`: it did not exist and `if_exists` was set.
pub async fn drop_table(lake: &Lakehouse, ident: &TableIdent, if_exists: bool, purge: bool) -> Result<bool> {
    let catalog = lake.catalog();
    if !catalog.table_exists(ident).await? {
        return if if_exists { Ok(false) } else { Err(not_found(ident)) };
    }
    if purge {
        catalog.purge_table(ident).await?;
    } else {
        catalog.drop_table(ident).await?;
    }
    lake.bump_ddl_version();
    Ok(true)
}

/// Renames a table (its files stay where they are); the new name may be in another schema.
pub async fn rename_table(lake: &Lakehouse, from: &TableIdent, to: &TableIdent) -> Result<()> {
    let catalog = lake.catalog();
    if !catalog.table_exists(from).await? {
        return Err(not_found(from));
    }
    if !catalog.namespace_exists(to.namespace()).await? {
        return Err(Error::new(
            StatusCode::SchemaNotFound,
            format!("schema \"{}\" does not exist", to.namespace().join(".")),
        ));
    }
    if catalog.table_exists(to).await? || lake.external().cached(&to.namespace().join("."), to.name()).is_some() {
        return Err(already_exists(to));
    }
    catalog.rename_table(from, to).await?;
    lake.bump_ddl_version();
    Ok(())
}

fn already_exists(ident: &TableIdent) -> Error {
    Error::new(StatusCode::AlreadyExists, format!("relation \"{ident}\" already exists"))
}

fn not_found(ident: &TableIdent) -> Error {
    Error::new(StatusCode::TableNotFound, format!("table \"{ident}\" does not exist"))
}

/// The Iceberg type of an Arrow type, for columns created by SQL (`CREATE TABLE`, CTAS).
/// Narrow integers widen to `int`; text of any kind is `string`; timestamps are stored in
/// microseconds (`timestamp`, or `timestamptz` with a time zone).
pub fn iceberg_type(t: &arrow::datatypes::DataType) -> Result<iceberg::spec::Type> {
    use arrow::datatypes::DataType as A;
    use iceberg::spec::{PrimitiveType as P, Type};
    Ok(Type::Primitive(match t {
        A::Boolean => P::Boolean,
        A::Int8 | A::Int16 | A::Int32 | A::UInt8 | A::UInt16 => P::Int,
        A::Int64 | A::UInt32 => P::Long,
        A::Float16 | A::Float32 => P::Float,
        A::Float64 => P::Double,
        A::Decimal128(p, s) if *p <= 38 && *s >= 0 => P::Decimal { precision: u32::from(*p), scale: *s as u32 },
        A::Utf8 | A::LargeUtf8 | A::Utf8View => P::String,
        A::Binary | A::LargeBinary | A::BinaryView => P::Binary,
        A::Date32 | A::Date64 => P::Date,
        A::Time32(_) | A::Time64(_) => P::Time,
        A::Timestamp(_, None) => P::Timestamp,
        A::Timestamp(_, Some(_)) => P::Timestamptz,
        A::Null => {
            return Err(Error::new(
                StatusCode::InvalidArgument,
                "a column of unknown type (a bare NULL): cast it, e.g. CAST(NULL AS int)",
            ))
        }
        other => return Err(Error::new(StatusCode::Unsupported, format!("columns of type {other} are not supported"))),
    }))
}
