//! The tables of the session's objects: `pg_namespace`, `pg_class`, `pg_attribute`,
//! `pg_description` (from every relation the session's catalog shows), and `pg_index`,
//! `pg_constraint` (empty: Iceberg tables have neither).

use std::sync::Arc;

use datafusion::arrow::array::Float32Array;
use datafusion::arrow::datatypes::{DataType, Field};

use super::{boolf, i16f, i16list, i32f, i32list, listn, pg_type_of, textf, textn, Cols, OwnTable, Rel, Rows};
use crate::{PgContext, SESSION_ROLE_OID};

/// `pg_namespace`: one row per schema the session sees, plus pg_catalog and information_schema.
pub(super) const NAMESPACE: OwnTable =
    OwnTable { name: "pg_namespace", columns: namespace_columns, rows: Rows::Context(namespace_rows) };

fn namespace_columns() -> Vec<Field> {
    vec![i32f("oid"), textf("nspname"), i32f("nspowner"), listn("nspacl")]
}

fn namespace_rows(pg: &PgContext, c: &mut Cols) {
    let names = pg.schema_names();
    let oids: Vec<i32> = {
        let mut m = pg.oids.lock().expect("oid lock");
        names.iter().map(|n| m.namespace(n)).collect()
    };
    let n = names.len();
    c.i32(oids).s(names).i32c(SESSION_ROLE_OID, n).null_list(n);
}

/// `pg_class`: every relation (tables `r`, views `v`).
pub(super) const CLASS: OwnTable =
    OwnTable { name: "pg_class", columns: class_columns, rows: Rows::Relations(class_rows) };

fn class_columns() -> Vec<Field> {
    vec![
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
    ]
}

fn class_rows(pg: &PgContext, rels: &[Rel], c: &mut Cols) {
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

/// `pg_attribute`: the columns of every relation, typed as the wire sends them.
pub(super) const ATTRIBUTE: OwnTable =
    OwnTable { name: "pg_attribute", columns: attribute_columns, rows: Rows::Relations(attribute_rows) };

fn attribute_columns() -> Vec<Field> {
    vec![
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
    ]
}

fn attribute_rows(pg: &PgContext, rels: &[Rel], c: &mut Cols) {
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

/// `pg_description`: the lakehouse's column documentation (loaded by listing the relations).
pub(super) const DESCRIPTION: OwnTable =
    OwnTable { name: "pg_description", columns: description_columns, rows: Rows::Relations(description_rows) };

fn description_columns() -> Vec<Field> {
    vec![i32f("objoid"), i32f("classoid"), i32f("objsubid"), textf("description")]
}

fn description_rows(pg: &PgContext, _rels: &[Rel], c: &mut Cols) {
    let docs = pg.column_docs.lock().expect("docs lock").clone();
    let mut keys: Vec<_> = docs.into_iter().collect();
    keys.sort();
    let n = keys.len();
    c.i32(keys.iter().map(|((o, _), _)| *o).collect())
        .i32c(1259, n)
        .i32(keys.iter().map(|((_, a), _)| *a).collect())
        .s(keys.iter().map(|(_, d)| d.clone()).collect());
}

/// `pg_index`: Iceberg tables have no indexes (no rows; PostgreSQL's columns).
pub(super) const INDEX: OwnTable = OwnTable { name: "pg_index", columns: index_columns, rows: Rows::Empty };

fn index_columns() -> Vec<Field> {
    vec![
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
    ]
}

/// `pg_constraint`: no constraints either.
pub(super) const CONSTRAINT: OwnTable =
    OwnTable { name: "pg_constraint", columns: constraint_columns, rows: Rows::Empty };

fn constraint_columns() -> Vec<Field> {
    vec![
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
    ]
}
