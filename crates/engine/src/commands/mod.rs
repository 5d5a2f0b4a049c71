//! The commands: one module per family of statements the engine runs itself, each planned
//! (names resolved, permissions checked) and executed against the session's own catalog.
//! The session's one dispatch (`crate::session`) hands each [`crate::statement::Command`] to
//! its module. Commands import the statement types and the shared planned types, never the
//! session.

pub(crate) mod admin;
pub mod copy_in;
pub(crate) mod ddl;
pub(crate) mod dml;
pub(crate) mod external;
pub(crate) mod hive;
pub(crate) mod iceberg;
pub mod ingest;
pub(crate) mod maintenance;
pub(crate) mod queries;
pub(crate) mod view;
pub(crate) mod write;

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::prelude::SessionContext;
use rxgate_catalog::Lakehouse;
use rxgate_common::{Error, Result, StatusCode};

use crate::planned::QueryOutput;

/// Schemas of the engine's own (PostgreSQL's catalogs and rxgate's `system`): never a
/// lakehouse namespace, never a place to create a table in.
pub(crate) const ENGINE_SCHEMAS: [&str; 3] = ["pg_catalog", "information_schema", "system"];

/// Whether `schema` is one of [`ENGINE_SCHEMAS`].
pub(crate) fn is_engine_schema(schema: &str) -> bool {
    ENGINE_SCHEMAS.contains(&schema)
}

/// The lakehouse, kept in the session's config for the commands that read Iceberg metadata
/// or commit.
#[derive(Debug)]
struct SessionLakehouse(Lakehouse);

/// Gives a session the lakehouse its commands use.
pub(crate) fn set_lakehouse(ctx: &SessionContext, lake: &Lakehouse) {
    ctx.state_ref().write().config_mut().set_extension(Arc::new(SessionLakehouse(lake.clone())));
}

/// The session's lakehouse.
pub(crate) fn lakehouse(ctx: &SessionContext) -> Result<Lakehouse> {
    ctx.state()
        .config()
        .get_extension::<SessionLakehouse>()
        .map(|m| m.0.clone())
        .ok_or_else(|| Error::internal("the session has no lakehouse"))
}

/// 42501 for a statement that is for administrators only.
pub(crate) fn denied(what: &str) -> Error {
    Error::new(StatusCode::PermissionDenied, format!("permission denied: {what} is for administrators"))
}

/// Checks that the session may use `privilege` on `schema.table` (`table = ""`: on the
/// schema). Refused: 42P01 when the session cannot even see the table (a table it may not
/// read looks absent, as for queries), else 42501 naming `what`.
pub(crate) fn require(
    ctx: &SessionContext,
    guard: &crate::secure::Guard,
    privilege: rxgate_policy::Privilege,
    schema: &str,
    table: &str,
    what: &str,
) -> Result<()> {
    let (policy, _, principal) = guard.view();
    let catalog = ctx.state().config().options().catalog.default_catalog.clone();
    if policy.allows(&principal, privilege, &catalog, schema, table) {
        return Ok(());
    }
    if privilege != rxgate_policy::Privilege::Create
        && !table.is_empty()
        && !policy.table_visible(&principal, &catalog, schema, table)
    {
        return Err(no_relation(&[schema.to_string(), table.to_string()]));
    }
    Err(Error::new(
        StatusCode::PermissionDenied,
        format!("permission denied: {} on {what} is not granted", privilege.name().to_uppercase()),
    ))
}

/// 42P01 for a name the session cannot resolve (missing and invisible look the same).
pub(crate) fn no_relation(parts: &[String]) -> Error {
    Error::new(StatusCode::TableNotFound, format!("relation \"{}\" does not exist", parts.join(".")))
}

/// `[t]` → the session's current schema; `[db, t]`; `[catalog, db, t]` → `(schema, table)`.
pub(crate) fn qualify(ctx: &SessionContext, parts: &[String]) -> Result<(String, String)> {
    let state = ctx.state();
    let options = state.config().options();
    match parts {
        [t] => Ok((options.catalog.default_schema.clone(), t.clone())),
        [s, t] => Ok((s.clone(), t.clone())),
        [c, s, t] if *c == options.catalog.default_catalog => Ok((s.clone(), t.clone())),
        _ => Err(no_relation(parts)),
    }
}

/// The schemas the session's catalog shows (policy-filtered), plus information_schema.
pub(crate) fn visible_schemas(ctx: &SessionContext) -> Vec<String> {
    let state = ctx.state();
    let options = state.config().options();
    let mut names = ctx.catalog(&options.catalog.default_catalog).map(|c| c.schema_names()).unwrap_or_default();
    if options.catalog.information_schema && !names.iter().any(|n| n == "information_schema") {
        names.push("information_schema".into());
    }
    names.sort();
    names.dedup();
    names
}

/// A table resolved through the session's catalog.
pub(crate) struct Resolved {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub table: String,
    /// What a query would read.
    pub provider: Arc<dyn TableProvider>,
}

impl Resolved {
    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// Resolves `[t]`, `[db, t]` or `[catalog, db, t]` the way a query would: through the
/// session's (policy-filtered) catalog. Missing and invisible tables give the same error.
pub(crate) async fn resolve(ctx: &SessionContext, parts: &[String]) -> Result<Resolved> {
    let (schema, table) = qualify(ctx, parts)?;
    if !visible_schemas(ctx).contains(&schema) {
        return Err(no_relation(parts));
    }
    let state = ctx.state();
    let catalog = state.config().options().catalog.default_catalog.clone();
    let provider = state
        .schema_for_ref(TableReference::full(catalog.as_str(), schema.as_str(), table.as_str()))
        .map_err(|_| no_relation(parts))?
        .table(&table)
        .await?
        .ok_or_else(|| no_relation(parts))?;
    Ok(Resolved { schema, table, provider })
}

/// A schema of nullable text columns.
pub(crate) fn text_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>()))
}

/// Rows of text as a one-batch result.
pub(crate) fn text_rows(schema: SchemaRef, rows: &[Vec<Option<String>>]) -> Result<QueryOutput> {
    let columns = (0..schema.fields().len())
        .map(|i| Arc::new(rows.iter().map(|r| r[i].clone()).collect::<StringArray>()) as _)
        .collect();
    let batch = RecordBatch::try_new(schema, columns).map_err(datafusion::error::DataFusionError::from)?;
    batch_output(batch)
}

/// One batch as a result.
pub(crate) fn batch_output(batch: RecordBatch) -> Result<QueryOutput> {
    let schema = batch.schema();
    let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
    Ok(QueryOutput::Rows { schema, stream: Box::pin(stream) })
}

/// A command's completion tag.
pub(crate) fn tag(t: &str) -> Result<QueryOutput> {
    Ok(QueryOutput::Command { tag: t.to_string() })
}
