//! The `pg_catalog` schema of a session: the static tables of datafusion-pg-catalog, and our
//! own tables for this session's objects (namespaces, relations, columns, database, roles,
//! settings), computed when a query scans them.
//!
//! Each own table is one [`OwnTable`] (name, columns, how its rows are built), defined beside
//! its code by family: `objects` (what the session's catalog holds) and `server` (the
//! database, roles and parameters); [`OWN_TABLES`] lists them.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int16Array, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PG_CATALOG_TABLES};

use crate::{PgContext, SESSION_ROLE_OID};

mod objects;
mod server;

/// One table we compute ourselves; every other pg_catalog name comes from
/// datafusion-pg-catalog.
pub(crate) struct OwnTable {
    pub(crate) name: &'static str,
    columns: fn() -> Vec<Field>,
    rows: Rows,
}

/// How an own table's rows are built, when a query scans it.
#[derive(Clone, Copy)]
enum Rows {
    /// From the session's context alone.
    Context(fn(&PgContext, &mut Cols)),
    /// From every relation the session can see (listing them also records the column
    /// documentation).
    Relations(fn(&PgContext, &[Rel], &mut Cols)),
    /// Always empty.
    Empty,
}

/// The tables we compute.
pub(crate) const OWN_TABLES: &[OwnTable] = &[
    objects::NAMESPACE,
    objects::CLASS,
    objects::ATTRIBUTE,
    server::DATABASE,
    server::ROLES,
    server::USER,
    server::SETTINGS,
    server::STAT_ACTIVITY,
    objects::INDEX,
    objects::CONSTRAINT,
    objects::DESCRIPTION,
];

/// The own table of a (lower-case) name.
fn own_table(name: &str) -> Option<&'static OwnTable> {
    OWN_TABLES.iter().find(|t| t.name == name)
}

/// Whether a (lower-case) pg_catalog name is one of our tables.
pub(crate) fn is_own_table(name: &str) -> bool {
    own_table(name).is_some()
}

impl std::fmt::Debug for OwnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnTable({})", self.name)
    }
}

/// pg_catalog relations that PostgreSQL defines as views (relkind `v`).
const VIEWS: &[&str] = &[
    "pg_roles",
    "pg_user",
    "pg_settings",
    "pg_tables",
    "pg_views",
    "pg_matviews",
    "pg_stat_gssapi",
    "pg_stat_activity",
    "pg_stat_user_tables",
    "pg_replication_slots",
];

/// The `pg_catalog` schema provider of one session.
#[derive(Debug)]
pub(crate) struct PgCatalogSchema {
    pg: Arc<PgContext>,
    upstream: PgCatalogSchemaProvider<SessionCatalog, EmptyContextProvider>,
}

impl PgCatalogSchema {
    pub(crate) fn new(pg: Arc<PgContext>) -> Result<Self> {
        let upstream = PgCatalogSchemaProvider::try_new(
            SessionCatalog(pg.clone()),
            pg.static_tables.clone(),
            EmptyContextProvider,
        )?;
        Ok(Self { pg, upstream })
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = PG_CATALOG_TABLES.iter().map(|s| s.to_string()).collect();
        names.extend(OWN_TABLES.iter().map(|t| t.name.to_string()));
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        if let Some(table) = own_table(&lower) {
            let schema = Arc::new(Schema::new((table.columns)()));
            let part = Arc::new(Lazy { schema: schema.clone(), pg: self.pg.clone(), table });
            return Ok(Some(Arc::new(StreamingTable::try_new(schema, vec![part])?)));
        }
        if lower == "pg_authid" {
            return Ok(Some(pg_authid_without_verifiers(&self.pg.static_tables.pg_authid)?));
        }
        self.upstream.table(&lower).await
    }

    fn table_exist(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        is_own_table(&lower) || self.upstream.table_exist(&lower)
    }
}

/// datafusion-pg-catalog's `pg_authid` (exported from a real PostgreSQL) with `rolpassword`
/// NULL in every row: its `postgres` row carries a SCRAM verifier, and no verifier is ever
/// shown to a client.
fn pg_authid_without_verifiers(
    table: &datafusion_pg_catalog::pg_catalog::ArrowTable,
) -> Result<Arc<dyn TableProvider>> {
    let schema = table.schema();
    let batches = table
        .data()
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| match f.name().as_str() {
                    "rolpassword" => datafusion::arrow::array::new_null_array(f.data_type(), b.num_rows()),
                    _ => c.clone(),
                })
                .collect();
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![batches])?))
}

/// The session's catalog as datafusion-pg-catalog sees it (for pg_tables and friends): one
/// database, the user-visible schemas.
#[derive(Debug, Clone)]
struct SessionCatalog(Arc<PgContext>);

#[async_trait]
impl CatalogInfo for SessionCatalog {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        Ok(vec![self.0.catalog_name.clone()])
    }

    async fn schema_names(&self, _catalog: &str) -> Result<Option<Vec<String>>> {
        Ok(Some(user_schemas(&self.0)))
    }

    async fn table_names(&self, _catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        Ok(self.0.schema(schema).map(|s| s.table_names()))
    }

    async fn table_schema(&self, _catalog: &str, schema: &str, table: &str) -> Result<Option<SchemaRef>> {
        match self.0.schema(schema) {
            Some(s) => Ok(s.table(table).await?.map(|t| t.schema())),
            None => Ok(None),
        }
    }

    async fn table_type(&self, _catalog: &str, schema: &str, table: &str) -> Result<Option<TableType>> {
        match self.0.schema(schema) {
            Some(s) => s.table_type(table).await,
            None => Ok(None),
        }
    }
}

fn user_schemas(pg: &PgContext) -> Vec<String> {
    pg.schema_names().into_iter().filter(|s| s != "pg_catalog" && s != "information_schema").collect()
}

// Column constructors of the own tables' schemas.
fn i32f(n: &str) -> Field {
    Field::new(n, DataType::Int32, false)
}
fn i16f(n: &str) -> Field {
    Field::new(n, DataType::Int16, false)
}
fn boolf(n: &str) -> Field {
    Field::new(n, DataType::Boolean, false)
}
fn textf(n: &str) -> Field {
    Field::new(n, DataType::Utf8, false)
}
fn textn(n: &str) -> Field {
    Field::new(n, DataType::Utf8, true)
}
fn listn(n: &str) -> Field {
    Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true)
}
fn i16list(n: &str) -> Field {
    Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Int16, true))), true)
}
fn i32list(n: &str) -> Field {
    Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Int32, true))), true)
}

/// A catalog table computed when scanned.
#[derive(Debug)]
struct Lazy {
    schema: SchemaRef,
    pg: Arc<PgContext>,
    table: &'static OwnTable,
}

impl PartitionStream for Lazy {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, pg, rows) = (self.schema.clone(), self.pg.clone(), self.table.rows);
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(async move { build(rows, &pg, schema).await }),
        ))
    }
}

/// Arrays built column by column.
#[derive(Default)]
struct Cols(Vec<ArrayRef>);

impl Cols {
    fn i32(&mut self, v: Vec<i32>) -> &mut Self {
        self.0.push(Arc::new(Int32Array::from(v)));
        self
    }
    fn i16(&mut self, v: Vec<i16>) -> &mut Self {
        self.0.push(Arc::new(Int16Array::from(v)));
        self
    }
    fn b(&mut self, v: Vec<bool>) -> &mut Self {
        self.0.push(Arc::new(BooleanArray::from(v)));
        self
    }
    fn s<S: AsRef<str>>(&mut self, v: Vec<S>) -> &mut Self {
        self.0.push(Arc::new(StringArray::from_iter_values(v.iter().map(|s| s.as_ref()))));
        self
    }
    fn sn(&mut self, v: Vec<Option<String>>) -> &mut Self {
        self.0.push(Arc::new(StringArray::from(v)));
        self
    }
    fn null_s(&mut self, n: usize) -> &mut Self {
        self.sn(vec![None; n])
    }
    fn null_list(&mut self, n: usize) -> &mut Self {
        let mut b = ListBuilder::new(StringBuilder::new());
        for _ in 0..n {
            b.append_null();
        }
        self.0.push(Arc::new(b.finish()));
        self
    }
    fn i32c(&mut self, v: i32, n: usize) -> &mut Self {
        self.i32(vec![v; n])
    }
    fn i16c(&mut self, v: i16, n: usize) -> &mut Self {
        self.i16(vec![v; n])
    }
    fn bc(&mut self, v: bool, n: usize) -> &mut Self {
        self.b(vec![v; n])
    }
    fn sc(&mut self, v: &str, n: usize) -> &mut Self {
        self.s(vec![v; n])
    }
    fn finish(self, schema: SchemaRef) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(schema, self.0)?)
    }
}

/// One relation as pg_class and pg_attribute need it.
struct Rel {
    schema: String,
    name: String,
    kind: &'static str,
    columns: SchemaRef,
}

/// Every relation the session can see, with its columns. Lakehouse tables load their
/// current metadata here; one that fails to load is left out (and logged), so one broken
/// table does not break every client's catalog browser.
async fn relations(pg: &PgContext) -> Vec<Rel> {
    let mut out = vec![];
    for schema_name in pg.schema_names() {
        let Some(schema) = pg.schema(&schema_name) else { continue };
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            match schema.table(&name).await {
                Ok(Some(table)) => {
                    let kind = if table.table_type() == TableType::View
                        || (schema_name == "pg_catalog" && VIEWS.contains(&name.as_str()))
                        || schema_name == "information_schema"
                    {
                        "v"
                    } else {
                        "r"
                    };
                    let columns = table.schema();
                    let oid = pg.oids.lock().expect("oid lock").relation(&schema_name, &name);
                    let mut docs = pg.column_docs.lock().expect("docs lock");
                    for (i, f) in columns.fields().iter().enumerate() {
                        if let Some(doc) = f.metadata().get("doc") {
                            docs.insert((oid, i as i32 + 1), doc.clone());
                        }
                    }
                    drop(docs);
                    out.push(Rel { schema: schema_name.clone(), name, kind, columns });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(schema = %schema_name, table = %name, error = %e, "catalog: table skipped"),
            }
        }
    }
    out
}

async fn build(rows: Rows, pg: &PgContext, schema: SchemaRef) -> Result<RecordBatch> {
    let mut c = Cols::default();
    match rows {
        Rows::Context(f) => f(pg, &mut c),
        Rows::Relations(f) => f(pg, &relations(pg).await, &mut c),
        Rows::Empty => return Ok(RecordBatch::new_empty(schema)),
    }
    c.finish(schema)
}

/// The session user (OID 10) and its roles (then 16384 downwards, clear of table OIDs).
pub(crate) fn roles(pg: &PgContext) -> (Vec<String>, Vec<i32>) {
    let mut names = vec![pg.user.clone()];
    let mut oids = vec![SESSION_ROLE_OID];
    for (i, r) in pg.roles.iter().enumerate() {
        if *r != pg.user {
            names.push(r.clone());
            oids.push(16_000 - i as i32);
        }
    }
    (names, oids)
}

/// The PostgreSQL type a column of an Arrow type is sent as.
pub(crate) struct PgTypeInfo {
    pub(crate) oid: i32,
    pub(crate) len: i16,
    pub(crate) typmod: i32,
    pub(crate) array: bool,
    pub(crate) collatable: bool,
}

pub(crate) fn pg_type_of(dt: &DataType) -> PgTypeInfo {
    let t = arrow_pg::datatypes::into_pg_type(dt)
        .unwrap_or(arrow_pg::datatypes::into_pg_type(&DataType::Utf8).expect("text"));
    let oid = t.oid() as i32;
    let len = match oid {
        16 | 18 => 1,
        21 => 2,
        23 | 26 | 700 | 1082 => 4,
        20 | 701 | 1083 | 1114 | 1184 => 8,
        1186 => 16,
        _ => -1,
    };
    let typmod = match dt {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => ((i32::from(*p) << 16) | (*s as i32 & 0xffff)) + 4,
        _ => -1,
    };
    let array = matches!(dt, DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..));
    let collatable = matches!(oid, 25 | 1043 | 1042 | 19);
    PgTypeInfo { oid, len, typmod, array, collatable }
}
