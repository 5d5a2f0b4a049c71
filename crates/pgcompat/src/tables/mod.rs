//! The `pg_catalog` schema of a session: the static tables of datafusion-pg-catalog, and our
//! own tables for this session's objects (namespaces, relations, columns, database, roles,
//! settings), computed when a query scans them.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
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

use super::{PgContext, DATABASE_OID, SESSION_ROLE_OID};
use crate::settings::DATABASE_NAME;

/// Tables we compute ourselves; every other pg_catalog name comes from datafusion-pg-catalog.
pub(crate) const OWN_TABLES: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_settings",
    "pg_index",
    "pg_constraint",
    "pg_description",
];

/// pg_catalog relations that PostgreSQL defines as views (relkind `v`).
const VIEWS: &[&str] = &[
    "pg_roles",
    "pg_user",
    "pg_settings",
    "pg_tables",
    "pg_views",
    "pg_matviews",
    "pg_stat_gssapi",
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
        names.extend(OWN_TABLES.iter().map(|s| s.to_string()));
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        if let Some(kind) = Kind::from_name(&lower) {
            let schema = kind.schema();
            let part = Arc::new(Lazy { schema: schema.clone(), pg: self.pg.clone(), kind });
            return Ok(Some(Arc::new(StreamingTable::try_new(schema, vec![part])?)));
        }
        if lower == "pg_authid" {
            return Ok(Some(pg_authid_without_verifiers(&self.pg.static_tables.pg_authid)?));
        }
        self.upstream.table(&lower).await
    }

    fn table_exist(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        OWN_TABLES.contains(&lower.as_str()) || self.upstream.table_exist(&lower)
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

#[derive(Debug, Clone, Copy)]
enum Kind {
    Namespace,
    Class,
    Attribute,
    Database,
    Roles,
    User,
    Settings,
    /// Indexes: Iceberg tables have none (an empty table, with PostgreSQL's array columns).
    Index,
    /// Constraints: none either.
    Constraint,
    /// Comments: the lakehouse's column documentation.
    Description,
}

impl Kind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "pg_namespace" => Kind::Namespace,
            "pg_class" => Kind::Class,
            "pg_attribute" => Kind::Attribute,
            "pg_database" => Kind::Database,
            "pg_roles" => Kind::Roles,
            "pg_user" => Kind::User,
            "pg_settings" => Kind::Settings,
            "pg_index" => Kind::Index,
            "pg_constraint" => Kind::Constraint,
            "pg_description" => Kind::Description,
            _ => return None,
        })
    }

    fn schema(self) -> SchemaRef {
        let text_list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        let i32f = |n: &str| Field::new(n, DataType::Int32, false);
        let i16f = |n: &str| Field::new(n, DataType::Int16, false);
        let boolf = |n: &str| Field::new(n, DataType::Boolean, false);
        let textf = |n: &str| Field::new(n, DataType::Utf8, false);
        let textn = |n: &str| Field::new(n, DataType::Utf8, true);
        let listn = |n: &str| Field::new(n, text_list(), true);
        let i16list =
            |n: &str| Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Int16, true))), true);
        let i32list =
            |n: &str| Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Int32, true))), true);
        Arc::new(Schema::new(match self {
            Kind::Namespace => vec![i32f("oid"), textf("nspname"), i32f("nspowner"), listn("nspacl")],
            Kind::Class => vec![
                i32f("oid"),
                textf("relname"),
                i32f("relnamespace"),
                i32f("reltype"),
                i32f("reloftype"),
                i32f("relowner"),
                i32f("relam"),
                i32f("relfilenode"),
                i32f("reltablespace"),
                i32f("relpages"),
                Field::new("reltuples", DataType::Float32, false),
                i32f("relallvisible"),
                i32f("reltoastrelid"),
                boolf("relhasindex"),
                boolf("relisshared"),
                textf("relpersistence"),
                textf("relkind"),
                i16f("relnatts"),
                i16f("relchecks"),
                boolf("relhasrules"),
                boolf("relhastriggers"),
                boolf("relhassubclass"),
                boolf("relrowsecurity"),
                boolf("relforcerowsecurity"),
                boolf("relispopulated"),
                textf("relreplident"),
                boolf("relispartition"),
                i32f("relrewrite"),
                i32f("relfrozenxid"),
                i32f("relminmxid"),
                listn("relacl"),
                listn("reloptions"),
                textn("relpartbound"),
            ],
            Kind::Attribute => vec![
                i32f("attrelid"),
                textf("attname"),
                i32f("atttypid"),
                i16f("attlen"),
                i16f("attnum"),
                i32f("attcacheoff"),
                i32f("atttypmod"),
                i16f("attndims"),
                boolf("attbyval"),
                textf("attalign"),
                textf("attstorage"),
                textf("attcompression"),
                boolf("attnotnull"),
                boolf("atthasdef"),
                boolf("atthasmissing"),
                textf("attidentity"),
                textf("attgenerated"),
                boolf("attisdropped"),
                boolf("attislocal"),
                i16f("attinhcount"),
                i16f("attstattarget"),
                i32f("attcollation"),
                listn("attacl"),
                listn("attoptions"),
                listn("attfdwoptions"),
                textn("attmissingval"),
            ],
            Kind::Database => vec![
                i32f("oid"),
                textf("datname"),
                i32f("datdba"),
                i32f("encoding"),
                textf("datlocprovider"),
                boolf("datistemplate"),
                boolf("datallowconn"),
                i32f("datconnlimit"),
                i32f("datfrozenxid"),
                i32f("datminmxid"),
                i32f("dattablespace"),
                textf("datcollate"),
                textf("datctype"),
                textn("daticulocale"),
                textn("daticurules"),
                textn("datcollversion"),
                listn("datacl"),
            ],
            Kind::Roles => vec![
                textf("rolname"),
                boolf("rolsuper"),
                boolf("rolinherit"),
                boolf("rolcreaterole"),
                boolf("rolcreatedb"),
                boolf("rolcanlogin"),
                boolf("rolreplication"),
                i32f("rolconnlimit"),
                textn("rolpassword"),
                textn("rolvaliduntil"),
                boolf("rolbypassrls"),
                listn("rolconfig"),
                i32f("oid"),
            ],
            Kind::User => vec![
                textf("usename"),
                i32f("usesysid"),
                boolf("usecreatedb"),
                boolf("usesuper"),
                boolf("userepl"),
                boolf("usebypassrls"),
                textn("passwd"),
                textn("valuntil"),
                listn("useconfig"),
            ],
            Kind::Settings => vec![
                textf("name"),
                textn("setting"),
                textn("unit"),
                textn("category"),
                textn("short_desc"),
                textn("extra_desc"),
                textn("context"),
                textn("vartype"),
                textn("source"),
                textn("min_val"),
                textn("max_val"),
                listn("enumvals"),
                textn("boot_val"),
                textn("reset_val"),
                textn("sourcefile"),
                Field::new("sourceline", DataType::Int32, true),
                boolf("pending_restart"),
            ],
            Kind::Description => vec![i32f("objoid"), i32f("classoid"), i32f("objsubid"), textf("description")],
            Kind::Index => vec![
                i32f("indexrelid"),
                i32f("indrelid"),
                i16f("indnatts"),
                i16f("indnkeyatts"),
                boolf("indisunique"),
                boolf("indnullsnotdistinct"),
                boolf("indisprimary"),
                boolf("indisexclusion"),
                boolf("indimmediate"),
                boolf("indisclustered"),
                boolf("indisvalid"),
                boolf("indcheckxmin"),
                boolf("indisready"),
                boolf("indislive"),
                boolf("indisreplident"),
                i16list("indkey"),
                i32list("indcollation"),
                i32list("indclass"),
                i16list("indoption"),
                textn("indexprs"),
                textn("indpred"),
            ],
            Kind::Constraint => vec![
                i32f("oid"),
                textf("conname"),
                i32f("connamespace"),
                textf("contype"),
                boolf("condeferrable"),
                boolf("condeferred"),
                boolf("convalidated"),
                i32f("conrelid"),
                i32f("contypid"),
                i32f("conindid"),
                i32f("conparentid"),
                i32f("confrelid"),
                textf("confupdtype"),
                textf("confdeltype"),
                textf("confmatchtype"),
                boolf("conislocal"),
                i16f("coninhcount"),
                boolf("connoinherit"),
                i16list("conkey"),
                i16list("confkey"),
                i32list("conpfeqop"),
                i32list("conppeqop"),
                i32list("conffeqop"),
                i16list("confdelsetcols"),
                i32list("conexclop"),
                textn("conbin"),
            ],
        }))
    }
}

/// A catalog table computed when scanned.
#[derive(Debug)]
struct Lazy {
    schema: SchemaRef,
    pg: Arc<PgContext>,
    kind: Kind,
}

impl PartitionStream for Lazy {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, pg, kind) = (self.schema.clone(), self.pg.clone(), self.kind);
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(async move { build(kind, &pg, schema).await }),
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

async fn build(kind: Kind, pg: &PgContext, schema: SchemaRef) -> Result<RecordBatch> {
    let mut c = Cols::default();
    match kind {
        Kind::Namespace => {
            let names = pg.schema_names();
            let oids: Vec<i32> = {
                let mut m = pg.oids.lock().expect("oid lock");
                names.iter().map(|n| m.namespace(n)).collect()
            };
            let n = names.len();
            c.i32(oids).s(names).i32c(SESSION_ROLE_OID, n).null_list(n);
        }
        Kind::Class => {
            let rels = relations(pg).await;
            let (oids, nsps): (Vec<i32>, Vec<i32>) = {
                let mut m = pg.oids.lock().expect("oid lock");
                rels.iter().map(|r| (m.relation(&r.schema, &r.name), m.namespace(&r.schema))).unzip()
            };
            let n = rels.len();
            c.i32(oids.clone())
                .s(rels.iter().map(|r| r.name.clone()).collect())
                .i32(nsps)
                .i32c(0, n) // reltype
                .i32c(0, n) // reloftype
                .i32c(SESSION_ROLE_OID, n)
                .i32(rels.iter().map(|r| if r.kind == "r" { 2 } else { 0 }).collect()) // relam: heap
                .i32(oids)
                .i32c(0, n)
                .i32c(0, n);
            c.0.push(Arc::new(Float32Array::from(vec![-1.0f32; n])));
            c.i32c(0, n)
                .i32c(0, n)
                .bc(false, n)
                .bc(false, n)
                .sc("p", n)
                .s(rels.iter().map(|r| r.kind).collect())
                .i16(rels.iter().map(|r| r.columns.fields().len() as i16).collect())
                .i16c(0, n)
                .b(rels.iter().map(|r| r.kind == "v").collect()) // relhasrules: views are rules
                .bc(false, n)
                .bc(false, n)
                .bc(false, n)
                .bc(false, n)
                .bc(true, n)
                .sc("d", n)
                .bc(false, n)
                .i32c(0, n)
                .i32c(0, n)
                .i32c(0, n)
                .null_list(n)
                .null_list(n)
                .null_s(n);
        }
        Kind::Attribute => {
            let rels = relations(pg).await;
            let rel_oids: Vec<i32> = {
                let mut m = pg.oids.lock().expect("oid lock");
                rels.iter().map(|r| m.relation(&r.schema, &r.name)).collect()
            };
            let mut attrelid = vec![];
            let mut attname = vec![];
            let mut typid = vec![];
            let mut len = vec![];
            let mut num = vec![];
            let mut typmod = vec![];
            let mut ndims = vec![];
            let mut byval = vec![];
            let mut align = vec![];
            let mut storage = vec![];
            let mut notnull = vec![];
            let mut collation = vec![];
            for (rel, oid) in rels.iter().zip(rel_oids) {
                for (i, f) in rel.columns.fields().iter().enumerate() {
                    let t = pg_type_of(f.data_type());
                    attrelid.push(oid);
                    attname.push(f.name().clone());
                    typid.push(t.oid);
                    len.push(t.len);
                    num.push(i as i16 + 1);
                    typmod.push(t.typmod);
                    ndims.push(i16::from(t.array));
                    byval.push(t.len > 0 && t.len <= 8);
                    align.push(if t.len == 8 {
                        "d"
                    } else if t.len == 2 {
                        "s"
                    } else if t.len == 1 {
                        "c"
                    } else {
                        "i"
                    });
                    storage.push(if t.len > 0 { "p" } else { "x" });
                    notnull.push(!f.is_nullable());
                    collation.push(if t.collatable { 100 } else { 0 });
                }
            }
            let n = attrelid.len();
            c.i32(attrelid)
                .s(attname)
                .i32(typid)
                .i16(len)
                .i16(num)
                .i32c(-1, n)
                .i32(typmod)
                .i16(ndims)
                .b(byval)
                .s(align)
                .s(storage)
                .sc("", n)
                .b(notnull)
                .bc(false, n)
                .bc(false, n)
                .sc("", n)
                .sc("", n)
                .bc(false, n)
                .bc(true, n)
                .i16c(0, n)
                .i16c(-1, n)
                .i32(collation)
                .null_list(n)
                .null_list(n)
                .null_list(n)
                .null_s(n);
        }
        Kind::Database => {
            c.i32(vec![DATABASE_OID])
                .s(vec![DATABASE_NAME])
                .i32(vec![SESSION_ROLE_OID])
                .i32(vec![6]) // UTF8
                .s(vec!["c"])
                .b(vec![false])
                .b(vec![true])
                .i32(vec![-1])
                .i32(vec![0])
                .i32(vec![1])
                .i32(vec![1663])
                .s(vec!["C.UTF-8"])
                .s(vec!["C.UTF-8"])
                .null_s(1)
                .null_s(1)
                .null_s(1)
                .null_list(1);
        }
        Kind::Roles => {
            let (names, oids) = roles(pg);
            let n = names.len();
            let login: Vec<bool> = (0..n).map(|i| i == 0).collect();
            c.s(names)
                .bc(false, n)
                .bc(true, n)
                .bc(false, n)
                .bc(false, n)
                .b(login)
                .bc(false, n)
                .i32c(-1, n)
                .sn(vec![Some("********".into()); n])
                .null_s(n)
                .bc(false, n)
                .null_list(n)
                .i32(oids);
        }
        Kind::User => {
            let (names, oids) = roles(pg);
            c.s(vec![names[0].clone()])
                .i32(vec![oids[0]])
                .b(vec![false])
                .b(vec![false])
                .b(vec![false])
                .b(vec![false])
                .sn(vec![Some("********".into())])
                .null_s(1)
                .null_list(1);
        }
        Kind::Settings => {
            let all = pg.settings.all();
            let n = all.len();
            let names: Vec<String> = all.iter().map(|a| a.0.clone()).collect();
            let values: Vec<Option<String>> = all.iter().map(|a| Some(a.1.clone())).collect();
            let units: Vec<Option<String>> = all
                .iter()
                .map(|a| (a.0 == "statement_timeout" || a.0 == "lock_timeout").then(|| "ms".to_string()))
                .collect();
            c.s(names)
                .sn(values.clone())
                .sn(units)
                .sn(all.iter().map(|a| Some(a.2.clone())).collect())
                .sn(all.iter().map(|a| Some(a.3.clone())).collect())
                .null_s(n)
                .sn(vec![Some("user".into()); n])
                .sn(vec![Some("string".into()); n])
                .sn(vec![Some("session".into()); n])
                .null_s(n)
                .null_s(n)
                .null_list(n)
                .sn(values.clone())
                .sn(values)
                .null_s(n);
            c.0.push(Arc::new(Int32Array::from(vec![None::<i32>; n])));
            c.bc(false, n);
        }
        Kind::Index | Kind::Constraint => return Ok(RecordBatch::new_empty(schema)),
        Kind::Description => {
            // Listing the relations loads their schemas and so their documentation.
            relations(pg).await;
            let docs = pg.column_docs.lock().expect("docs lock").clone();
            let mut keys: Vec<_> = docs.into_iter().collect();
            keys.sort();
            let n = keys.len();
            c.i32(keys.iter().map(|((o, _), _)| *o).collect())
                .i32c(1259, n)
                .i32(keys.iter().map(|((_, a), _)| *a).collect())
                .s(keys.iter().map(|(_, d)| d.clone()).collect());
        }
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
