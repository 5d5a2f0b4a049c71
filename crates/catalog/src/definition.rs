//! Declarative table definitions (`catalog/*.toml`) and their idempotent application.
//!
//! A definition file holds `[[table]]` entries with a name `namespace.table`, a comment, the
//! identity partition columns and the columns. Applying creates missing namespaces and tables
//! and adds columns that a definition gained; it never drops anything.

use std::collections::HashMap;
use std::path::Path;

use iceberg::spec::{
    NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder, Transform, Type,
    UnboundPartitionSpec,
};
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::TableCreation;
use rxgate_common::{Error, Result, StatusCode};
use serde::Deserialize;

use crate::lakehouse::parse_ident;
use crate::Lakehouse;

/// One column of a table definition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Type name: string, int, bigint, double, date, timestamp, boolean.
    #[serde(rename = "type")]
    pub ty: String,
    /// True for NOT NULL columns.
    #[serde(default)]
    pub required: bool,
    /// Documentation shown in DESCRIBE and catalog listings.
    #[serde(default)]
    pub comment: Option<String>,
}

/// One table definition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// `namespace.table`.
    pub name: String,
    /// Table documentation.
    #[serde(default)]
    pub comment: Option<String>,
    /// Identity-partition columns, outermost first.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// The table's Iceberg sort order (ascending, nulls first): writers sort each partition's
    /// rows by these columns, so filters on them skip row groups and pages.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// Columns in order.
    pub columns: Vec<ColumnDef>,
    /// Iceberg table properties set when the table is created (e.g.
    /// `write.parquet.bloom-filter-enabled.column.npi = "true"`).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// `[table.lifecycle]`: archive, purge, expiry and compaction of its deliveries.
    #[serde(default)]
    pub lifecycle: Option<crate::maintenance::lifecycle::LifecyclePolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    #[serde(default)]
    table: Vec<TableDef>,
}

/// What applying one definition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyAction {
    /// The table did not exist and was created.
    Created(String),
    /// The table existed and gained these columns.
    AddedColumns(String, Vec<String>),
    /// The table existed and its sort order was set to the definition's `sort_by`.
    Resorted(String, Vec<String>),
    /// The table already matched its definition.
    Unchanged(String),
}

impl std::fmt::Display for ApplyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyAction::Created(t) => write!(f, "created   {t}"),
            ApplyAction::AddedColumns(t, c) => write!(f, "altered   {t} (added {})", c.join(", ")),
            ApplyAction::Resorted(t, c) => write!(f, "sorted    {t} (by {})", c.join(", ")),
            ApplyAction::Unchanged(t) => write!(f, "unchanged {t}"),
        }
    }
}

/// Reads every `*.toml` file of a directory (or one file) holding `[[table]]` definitions.
/// Files without tables (such as policies) are ignored.
pub fn load_definitions(path: &Path) -> Result<Vec<TableDef>> {
    let mut files = vec![];
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "toml") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut defs = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| Error::invalid(format!("{}: {e}", f.display())))?;
        // A directory also holds other declarations (policies.toml): only table files count.
        let has_tables = text.parse::<toml::Table>().map(|t| t.contains_key("table")).unwrap_or(true);
        if path.is_dir() && !has_tables {
            continue;
        }
        defs.extend(parse_definitions(&text, &f.display().to_string())?);
    }
    Ok(defs)
}

/// Parses one definition file's text; `origin` names it in error messages.
pub fn parse_definitions(text: &str, origin: &str) -> Result<Vec<TableDef>> {
    let parsed: DefinitionFile = toml::from_str(text).map_err(|e| Error::invalid(format!("{origin}: {e}")))?;
    for t in &parsed.table {
        t.schema().map_err(|e| e.context(origin))?;
        t.partition_spec().map_err(|e| e.context(origin))?;
    }
    Ok(parsed.table)
}

fn primitive(ty: &str) -> Result<PrimitiveType> {
    Ok(match ty.to_ascii_lowercase().as_str() {
        "string" | "text" | "varchar" => PrimitiveType::String,
        "int" | "integer" | "int4" => PrimitiveType::Int,
        "bigint" | "long" | "int8" => PrimitiveType::Long,
        "double" | "float8" => PrimitiveType::Double,
        "date" => PrimitiveType::Date,
        "timestamp" => PrimitiveType::Timestamp,
        "boolean" | "bool" => PrimitiveType::Boolean,
        other => return Err(Error::invalid(format!("unknown column type {other}"))),
    })
}

impl TableDef {
    /// The Iceberg schema of this definition (field ids 1..n in column order).
    pub fn schema(&self) -> Result<Schema> {
        let fields = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = Type::Primitive(primitive(&c.ty).map_err(|e| e.context(&self.name))?);
                let f = if c.required {
                    NestedField::required(i as i32 + 1, &c.name, ty)
                } else {
                    NestedField::optional(i as i32 + 1, &c.name, ty)
                };
                Ok(match &c.comment {
                    Some(doc) => f.with_doc(doc),
                    None => f,
                }
                .into())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Schema::builder().with_fields(fields).build()?)
    }

    fn sort_order(&self, schema: &Schema) -> Result<SortOrder> {
        let mut builder = SortOrder::builder();
        for col in &self.sort_by {
            let field = schema
                .field_by_name(col)
                .ok_or_else(|| Error::invalid(format!("{}: sort column {col} is not a column", self.name)))?;
            builder.with_sort_field(
                SortField::builder()
                    .source_id(field.id)
                    .transform(Transform::Identity)
                    .direction(SortDirection::Ascending)
                    .null_order(NullOrder::First)
                    .build(),
            );
        }
        Ok(builder.build(schema)?)
    }

    fn partition_spec(&self) -> Result<UnboundPartitionSpec> {
        let mut builder = UnboundPartitionSpec::builder();
        for col in &self.partition_by {
            let pos = self
                .columns
                .iter()
                .position(|c| &c.name == col)
                .ok_or_else(|| Error::invalid(format!("{}: partition column {col} is not a column", self.name)))?;
            builder = builder.add_partition_field(pos as i32 + 1, col, Transform::Identity)?;
        }
        Ok(builder.build())
    }
}

/// Creates or updates every defined table; returns what happened to each.
pub async fn apply_definitions(lake: &Lakehouse, defs: &[TableDef]) -> Result<Vec<ApplyAction>> {
    let catalog = lake.catalog();
    let mut out = vec![];
    for def in defs {
        let ident = parse_ident(&def.name)?;
        let ns = ident.namespace().clone();
        if !catalog.namespace_exists(&ns).await? {
            match catalog.create_namespace(&ns, HashMap::new()).await {
                Ok(_) => {}
                // Another gateway may have created it a moment ago.
                Err(e) if catalog.namespace_exists(&ns).await.unwrap_or(false) => drop(e),
                Err(e) => return Err(e.into()),
            }
        }
        if !catalog.table_exists(&ident).await? {
            let mut props = HashMap::from([
                ("write.parquet.compression-codec".to_string(), "zstd".to_string()),
                ("rxgate.managed".to_string(), "true".to_string()),
            ]);
            if let Some(c) = &def.comment {
                props.insert("comment".to_string(), c.clone());
            }
            props.extend(def.properties.iter().map(|(k, v)| (k.clone(), v.clone())));
            let schema = def.schema()?;
            let creation = TableCreation::builder()
                .name(ident.name().to_string())
                .sort_order(def.sort_order(&schema)?)
                .schema(schema)
                .partition_spec(def.partition_spec()?)
                .properties(props)
                .build();
            match catalog.create_table(&ns, creation).await {
                Ok(_) => {
                    out.push(ApplyAction::Created(def.name.clone()));
                    continue;
                }
                // Another process sharing the catalog created it a moment ago (the loser of
                // the race sees TableAlreadyExists or the catalog's primary-key violation):
                // go on as for an existing table.
                Err(e) if catalog.table_exists(&ident).await.unwrap_or(false) => drop(e),
                Err(e) => return Err(e.into()),
            }
        }
        let table = catalog.load_table(&ident).await?;
        let current = table.metadata().current_schema();
        // `sort_by` is the sort order every writer and compaction follow: a changed one is
        // set (ascending, nulls first); existing files are re-sorted when compacted.
        let sorted_by: Vec<String> = table
            .metadata()
            .default_sort_order()
            .fields
            .iter()
            .filter_map(|f| current.name_by_field_id(f.source_id).map(str::to_string))
            .collect();
        if sorted_by != def.sort_by && def.sort_by.iter().all(|c| current.field_by_name(c).is_some()) {
            let keys: Vec<crate::iceberg_admin::evolve::SortKey> = def
                .sort_by
                .iter()
                .map(|c| crate::iceberg_admin::evolve::SortKey {
                    column: c.clone(),
                    descending: false,
                    nulls_first: true,
                })
                .collect();
            crate::iceberg_admin::evolve::set_sort_order(lake, &def.name, &keys).await?;
            out.push(ApplyAction::Resorted(def.name.clone(), def.sort_by.clone()));
        }
        let table = catalog.load_table(&ident).await?;
        let missing: Vec<&ColumnDef> =
            def.columns.iter().filter(|c| table.metadata().current_schema().field_by_name(&c.name).is_none()).collect();
        if missing.is_empty() {
            if !matches!(out.last(), Some(ApplyAction::Resorted(t, _)) if *t == def.name) {
                out.push(ApplyAction::Unchanged(def.name.clone()));
            }
            continue;
        }
        let tx = Transaction::new(&table);
        let mut action = tx.update_schema();
        for c in &missing {
            let ty = Type::Primitive(primitive(&c.ty)?);
            let add = match &c.comment {
                Some(doc) => AddColumn::builder().name(c.name.clone()).field_type(ty).doc(doc.clone()).build(),
                None => AddColumn::optional(&c.name, ty),
            };
            action = action.add_column(add);
        }
        let tx = action.apply(tx)?;
        tx.commit(catalog.as_ref())
            .await
            .map_err(|e| Error::new(StatusCode::CommitConflict, format!("altering {}: {e}", def.name)))?;
        out.push(ApplyAction::AddedColumns(def.name.clone(), missing.iter().map(|c| c.name.clone()).collect()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_definition_and_builds_schema() {
        let text = r#"
[[table]]
name = "health.t"
partition_by = ["d"]
columns = [
  { name = "a", type = "string", comment = "A" },
  { name = "d", type = "date", required = true },
]
"#;
        let f: DefinitionFile = toml::from_str(text).unwrap();
        let s = f.table[0].schema().unwrap();
        assert_eq!(s.as_struct().fields().len(), 2);
        assert!(s.field_by_name("d").unwrap().required);
        assert_eq!(f.table[0].partition_spec().unwrap().fields().len(), 1);
    }

    #[test]
    fn rejects_unknown_type_and_partition_column() {
        let bad = TableDef {
            name: "a.b".into(),
            comment: None,
            partition_by: vec!["x".into()],
            sort_by: vec![],
            columns: vec![],
            properties: Default::default(),
            lifecycle: None,
        };
        assert!(bad.partition_spec().is_err());
        assert!(primitive("blob").is_err());
    }
}
