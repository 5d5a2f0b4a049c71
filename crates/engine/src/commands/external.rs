//! Hive's external tables (issue 6 §4): `CREATE EXTERNAL TABLE`, `DROP TABLE` of an external
//! table (the definition only, never a file), `MSCK REPAIR TABLE` / `ALTER TABLE t RECOVER
//! PARTITIONS`, `SHOW PARTITIONS` (also of Iceberg tables), `ALTER TABLE t ADD|DROP
//! PARTITION (…)`.
//!
//! The definitions live in the catalog database (`rxgate_catalog::external`). Tables are
//! named and resolved through the session's catalog like any query: a table the principal
//! is not granted is absent (42P01). Creating, dropping and altering external tables and
//! MSCK are for administrators (42501).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use iceberg::{NamespaceIdent, TableIdent};
use rxgate_catalog::external::{
    discover_partitions, escape_path_name, location_has_files, object_store, protected_locations, ExternalFormat,
    ExternalTableDef, HivePartition,
};
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};

use super::{denied, is_engine_schema, lakehouse, no_relation, qualify, resolve, tag, text_rows, text_schema};
use crate::planned::{Planned, QueryOutput};
use crate::secure::SecuredTable;
use crate::statement::{Command, ExternalCommand, SessionCommand, Spec};

/// Plans an external-table statement: the table resolved through the session's catalog (else
/// 42P01) and its name qualified; changes are for administrators (42501). `admin`: whether
/// the session's principal holds an admin role. `SHOW PARTITIONS` also lists an Iceberg
/// table's partitions (as Hive 4 does).
pub(crate) async fn plan(ctx: &SessionContext, cmd: ExternalCommand, admin: bool) -> Result<Planned> {
    let lake = lakehouse(ctx)?;
    let mut cmd = cmd;
    let (schema, table) = qualify(ctx, cmd.table())?;
    match &cmd {
        ExternalCommand::Create { .. } => {
            if !admin {
                return Err(denied("CREATE EXTERNAL TABLE"));
            }
            if is_engine_schema(&schema) {
                return Err(Error::new(StatusCode::PermissionDenied, format!("schema {schema} is reserved")));
            }
        }
        ExternalCommand::Drop { .. } => {
            if !admin {
                return Err(denied("DROP TABLE"));
            }
        }
        other => {
            // The table must be visible to the session, and external (or, for SHOW
            // PARTITIONS, an Iceberg table).
            let resolved = resolve(ctx, cmd.table()).await?;
            let external = lake.external().get(&schema, &table).await?.is_some();
            let iceberg = matches!(other, ExternalCommand::ShowPartitions { .. })
                && !is_engine_schema(&schema)
                && lake.load_table(&format!("{schema}.{table}")).await.is_ok();
            // An Iceberg table's partition values are governed like its metadata tables:
            // only a principal who sees the table whole (no mask, no row filter, every
            // column) may list them; others would learn values of rows they cannot read.
            // The session's catalog hands such a principal a `SecuredTable`.
            if iceberg && !external && resolved.provider.as_any().is::<SecuredTable>() {
                return Err(Error::new(
                    StatusCode::PermissionDenied,
                    format!(
                        "permission denied: SHOW PARTITIONS of {schema}.{table} needs the whole table \
                         (it is read through a mask or a row filter)"
                    ),
                ));
            }
            if !external && !iceberg {
                return Err(Error::new(
                    StatusCode::Unsupported,
                    format!(
                        "{schema}.{table} is not an external table (partitions are for Hive-style external tables)"
                    ),
                ));
            }
            let what = match other {
                ExternalCommand::Repair { .. } => Some("MSCK REPAIR TABLE"),
                ExternalCommand::AddPartitions { .. } | ExternalCommand::DropPartitions { .. } => Some("ALTER TABLE"),
                _ => None,
            };
            if let Some(what) = what {
                if !admin {
                    return Err(denied(what));
                }
            }
        }
    }
    *cmd.table_mut() = vec![schema, table];
    let schema = schema_of(&cmd);
    Ok(Planned::Command(Command::External(cmd), schema))
}

/// `DROP TABLE [IF EXISTS] t`: `Some` when t is an external table the session sees (its
/// definition is dropped, never a file), or when `IF EXISTS` names a table the session cannot
/// see (nothing to do, as PostgreSQL); `None`: another table, not this module's.
pub(crate) async fn plan_drop(
    ctx: &SessionContext,
    table: &[String],
    if_exists: bool,
    admin: bool,
) -> Result<Option<Planned>> {
    let lake = lakehouse(ctx)?;
    let visible = resolve(ctx, table).await.is_ok();
    if !visible && if_exists {
        return Ok(Some(Planned::Command(Command::Session(SessionCommand::Accept("DROP TABLE".into())), None)));
    }
    let (schema, name) = qualify(ctx, table)?;
    if !visible || lake.external().get(&schema, &name).await?.is_none() {
        return Ok(None);
    }
    plan(ctx, ExternalCommand::Drop { table: table.to_vec(), if_exists }, admin).await.map(Some)
}

/// Result schema (`SHOW PARTITIONS`: `partition`; MSCK: `action`, `partition`); the other
/// statements return no rows.
fn schema_of(cmd: &ExternalCommand) -> Option<SchemaRef> {
    match cmd {
        ExternalCommand::ShowPartitions { .. } => Some(text_schema(&["partition"])),
        ExternalCommand::Repair { .. } => Some(text_schema(&["action", "partition"])),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------
// Execution
// ------------------------------------------------------------------------------------------

fn rows(cmd: &ExternalCommand, rows: Vec<Vec<String>>) -> Result<QueryOutput> {
    let schema = schema_of(cmd).ok_or_else(|| Error::internal("statement returns no rows"))?;
    let rows: Vec<Vec<Option<String>>> = rows.into_iter().map(|r| r.into_iter().map(Some).collect()).collect();
    text_rows(schema, &rows)
}

/// A location as a directory URL ending in `/` (a plain path becomes `file:///abs/`).
fn directory_url(location: &str) -> Result<String> {
    let mut loc = location.trim().to_string();
    if loc.is_empty() {
        return Err(Error::invalid("LOCATION must not be empty"));
    }
    if !loc.ends_with('/') {
        loc.push('/');
    }
    let url = ListingTableUrl::parse(&loc)?;
    Ok(url.as_str().to_string())
}

async fn definition(lake: &Lakehouse, cmd: &ExternalCommand) -> Result<Arc<ExternalTableDef>> {
    let [schema, table] = cmd.table() else { return Err(Error::new(StatusCode::Internal, "unresolved name")) };
    lake.external().get(schema, table).await?.ok_or_else(|| no_relation(cmd.table()))
}

/// Resolves a spec against the partition columns: every key known; values canonical.
/// `complete`: every partition column must be given (ADD); else a partial spec (DROP, SHOW).
fn resolve_spec(def: &ExternalTableDef, spec: &Spec, complete: bool) -> Result<Vec<Option<String>>> {
    let mut values: Vec<Option<String>> = vec![None; def.partition_columns.len()];
    for (k, v) in spec {
        let i = def
            .partition_columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(k))
            .ok_or_else(|| Error::invalid(format!("{k} is not a partition column of {}", def.qualified())))?;
        values[i] = Some(def.canonical_value(i, v)?);
    }
    if complete && values.iter().any(Option::is_none) {
        let names: Vec<&str> = def.partition_columns.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::invalid(format!(
            "a partition spec must give every partition column ({})",
            names.join(", ")
        )));
    }
    Ok(values)
}

fn matches(values: &[String], spec: &[Option<String>]) -> bool {
    values.iter().zip(spec).all(|(v, s)| s.as_ref().is_none_or(|s| s == v))
}

/// Runs an external-table statement planned by [`plan`].
pub(crate) async fn execute(ctx: &SessionContext, cmd: &ExternalCommand) -> Result<QueryOutput> {
    let lake = lakehouse(ctx)?;
    match cmd {
        ExternalCommand::Create { table, if_not_exists, columns, partition_columns, format, location, properties } => {
            let [schema, name] = table.as_slice() else {
                return Err(Error::new(StatusCode::Internal, "unresolved name"));
            };
            // External locations are confined: under `[external] allowed_locations`, never
            // over the warehouse or an Iceberg table (whose policy is matched by name).
            // Checked as written first, before anything parses or lists it.
            let protected = protected_locations(&lake).await?;
            let confine = lake.external().location_policy();
            confine.check(location, &protected)?;
            let def = ExternalTableDef {
                namespace: schema.clone(),
                name: name.clone(),
                columns: columns.clone(),
                partition_columns: partition_columns.clone(),
                format: ExternalFormat::parse(format)?,
                location: directory_url(location)?,
                properties: properties.clone(),
            };
            def.validate()?;
            // The location must be on a store the server knows (file://, or one configured).
            let url = ListingTableUrl::parse(&def.location)?;
            object_store(&ctx.runtime_env(), &url.object_store())?;
            confine.check(&def.location, &protected)?;
            let ns = NamespaceIdent::from_strs(schema.split('.'))?;
            let catalog = lake.catalog();
            let exists = |what: &str| {
                Error::new(StatusCode::AlreadyExists, format!("relation \"{schema}.{name}\" already exists{what}"))
            };
            if catalog.namespace_exists(&ns).await?
                && catalog.table_exists(&TableIdent::new(ns.clone(), name.clone())).await?
            {
                if *if_not_exists {
                    return tag("CREATE TABLE");
                }
                return Err(exists(" (an Iceberg table)"));
            }
            if !catalog.namespace_exists(&ns).await? {
                if let Err(e) = catalog.create_namespace(&ns, Default::default()).await {
                    // Another session may have created it meanwhile.
                    if !catalog.namespace_exists(&ns).await? {
                        return Err(e.into());
                    }
                }
            }
            if !lake.external().create(&def).await? && !*if_not_exists {
                return Err(exists(""));
            }
            if def.properties.get("discover.partitions").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                let store = object_store(&ctx.runtime_env(), &url.object_store())?;
                let found = discover_partitions(&store, &def).await?;
                for p in &found {
                    confine.check(&p.location, &protected)?;
                }
                lake.external().add_partitions(&def, &found, true).await?;
            }
            tag("CREATE TABLE")
        }
        ExternalCommand::Drop { table, if_exists } => {
            let [schema, name] = table.as_slice() else {
                return Err(Error::new(StatusCode::Internal, "unresolved name"));
            };
            // The files stay: an external table's data is not ours.
            if !lake.external().drop_table(schema, name).await? && !*if_exists {
                return Err(no_relation(table));
            }
            tag("DROP TABLE")
        }
        ExternalCommand::ShowPartitions { table, spec } => {
            let [schema, name] = table.as_slice() else { return Err(Error::internal("unresolved name")) };
            if lake.external().get(schema, name).await?.is_none() {
                return iceberg_partitions(&lake, cmd, spec).await;
            }
            let def = definition(&lake, cmd).await?;
            if def.partition_columns.is_empty() {
                return Err(Error::invalid(format!("table {} is not partitioned", def.qualified())));
            }
            let wanted = resolve_spec(&def, spec, false)?;
            let names = lake
                .external()
                .partitions(&def)
                .await?
                .into_iter()
                .filter(|p| matches(&p.values, &wanted))
                .map(|p| vec![def.partition_name(&p.values)])
                .collect();
            rows(cmd, names)
        }
        ExternalCommand::Repair { add, drop, .. } => {
            let def = definition(&lake, cmd).await?;
            if def.partition_columns.is_empty() {
                return rows(cmd, vec![]);
            }
            let url = ListingTableUrl::parse(&def.location)?;
            let store = object_store(&ctx.runtime_env(), &url.object_store())?;
            let registered = lake.external().partitions(&def).await?;
            let mut out = vec![];
            if *add {
                let found = discover_partitions(&store, &def).await?;
                let missing: Vec<HivePartition> =
                    found.into_iter().filter(|f| !registered.iter().any(|r| r.values == f.values)).collect();
                let protected = protected_locations(&lake).await?;
                let confine = lake.external().location_policy();
                for p in &missing {
                    confine.check(&p.location, &protected)?;
                }
                lake.external().add_partitions(&def, &missing, true).await?;
                out.extend(missing.iter().map(|p| vec!["added".to_string(), def.partition_name(&p.values)]));
            }
            if *drop {
                let mut gone = vec![];
                for p in &registered {
                    let store = object_store(&ctx.runtime_env(), &ListingTableUrl::parse(&p.location)?.object_store())?;
                    if !location_has_files(&store, &p.location).await? {
                        gone.push(def.partition_name(&p.values));
                    }
                }
                lake.external().drop_partitions(&def, &gone).await?;
                out.extend(gone.into_iter().map(|n| vec!["dropped".to_string(), n]));
            }
            tracing::info!(table = %def.qualified(), changes = out.len(), "MSCK REPAIR TABLE");
            rows(cmd, out)
        }
        ExternalCommand::AddPartitions { if_not_exists, partitions, .. } => {
            let def = definition(&lake, cmd).await?;
            let protected = protected_locations(&lake).await?;
            let confine = lake.external().location_policy();
            let mut parts = vec![];
            for (spec, location) in partitions {
                let values: Vec<String> = resolve_spec(&def, spec, true)?.into_iter().flatten().collect();
                let location = match location {
                    Some(l) => {
                        confine.check(l, &protected)?;
                        directory_url(l)?
                    }
                    None => def.partition_location(&values),
                };
                confine.check(&location, &protected)?;
                parts.push(HivePartition { values, location });
            }
            lake.external().add_partitions(&def, &parts, *if_not_exists).await?;
            tag("ALTER TABLE")
        }
        ExternalCommand::DropPartitions { if_exists, specs, .. } => {
            let def = definition(&lake, cmd).await?;
            let registered = lake.external().partitions(&def).await?;
            let mut names = vec![];
            for spec in specs {
                let wanted = resolve_spec(&def, spec, false)?;
                let hit: Vec<String> = registered
                    .iter()
                    .filter(|p| matches(&p.values, &wanted))
                    .map(|p| def.partition_name(&p.values))
                    .collect();
                if hit.is_empty() && !*if_exists {
                    let text: Vec<String> = spec.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
                    return Err(Error::new(
                        StatusCode::TableNotFound,
                        format!("no partition of {} matches ({})", def.qualified(), text.join(", ")),
                    ));
                }
                names.extend(hit);
            }
            names.sort();
            names.dedup();
            lake.external().drop_partitions(&def, &names).await?;
            tag("ALTER TABLE")
        }
    }
}

/// `SHOW PARTITIONS` of an Iceberg table: the current snapshot's partitions in Hive's
/// `k=v/k2=v2` form (values escaped as Hive escapes them, NULL as Hive's default partition),
/// those matching the spec's `k=v` pairs (by partition field name, values compared as text).
async fn iceberg_partitions(lake: &Lakehouse, cmd: &ExternalCommand, spec: &Spec) -> Result<QueryOutput> {
    let table = lake.load_table(&cmd.table().join(".")).await?;
    if table.metadata().default_partition_spec().fields().is_empty() {
        return Err(Error::invalid(format!("table {} is not partitioned", cmd.table().join("."))));
    }
    let fields: Vec<String> =
        table.metadata().default_partition_spec().fields().iter().map(|f| f.name.clone()).collect();
    for (k, _) in spec {
        if !fields.iter().any(|f| f.eq_ignore_ascii_case(k)) {
            return Err(Error::invalid(format!("{k} is not a partition field of {}", cmd.table().join("."))));
        }
    }
    let mut names = vec![];
    for tuple in rxgate_catalog::iceberg_admin::inspect::partition_values(&table).await? {
        let keep = spec.iter().all(|(k, v)| {
            tuple.iter().any(|(name, value)| name.eq_ignore_ascii_case(k) && value.as_deref() == Some(v.as_str()))
        });
        if keep {
            let parts: Vec<String> = tuple
                .iter()
                .map(|(name, value)| match value {
                    Some(v) => format!("{}={}", escape_path_name(name), escape_path_name(v)),
                    None => format!("{}=__HIVE_DEFAULT_PARTITION__", escape_path_name(name)),
                })
                .collect();
            names.push(vec![parts.join("/")]);
        }
    }
    rows(cmd, names)
}
