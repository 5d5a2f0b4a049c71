//! The tables of the server and the session: `pg_database` (the one database), `pg_roles`,
//! `pg_user` (the session user and its roles), `pg_settings` (the session's parameters),
//! `pg_stat_activity` (the sessions the engine's activity registry lets this one see).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

use super::{boolf, i32f, listn, roles, textf, textn, Cols, OwnTable, Rows};
use crate::settings::DATABASE_NAME;
use crate::{PgContext, DATABASE_OID, SESSION_ROLE_OID};

/// `pg_database`: the one database.
pub(super) const DATABASE: OwnTable =
    OwnTable { name: "pg_database", columns: database_columns, rows: Rows::Context(database_rows) };

fn database_columns() -> Vec<Field> {
    vec![
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
    ]
}

fn database_rows(_pg: &PgContext, c: &mut Cols) {
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

/// `pg_roles`: the session user (it alone can log in) and its roles.
pub(super) const ROLES: OwnTable =
    OwnTable { name: "pg_roles", columns: roles_columns, rows: Rows::Context(roles_rows) };

fn roles_columns() -> Vec<Field> {
    vec![
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
    ]
}

fn roles_rows(pg: &PgContext, c: &mut Cols) {
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

/// `pg_user`: the session user.
pub(super) const USER: OwnTable = OwnTable { name: "pg_user", columns: user_columns, rows: Rows::Context(user_rows) };

fn user_columns() -> Vec<Field> {
    vec![
        textf("usename"),
        i32f("usesysid"),
        boolf("usecreatedb"),
        boolf("usesuper"),
        boolf("userepl"),
        boolf("usebypassrls"),
        textn("passwd"),
        textn("valuntil"),
        listn("useconfig"),
    ]
}

fn user_rows(pg: &PgContext, c: &mut Cols) {
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

/// `pg_settings`: the session's parameters.
pub(super) const SETTINGS: OwnTable =
    OwnTable { name: "pg_settings", columns: settings_columns, rows: Rows::Context(settings_rows) };

fn settings_columns() -> Vec<Field> {
    vec![
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
    ]
}

fn settings_rows(pg: &PgContext, c: &mut Cols) {
    let all = pg.settings.all();
    let n = all.len();
    let names: Vec<String> = all.iter().map(|a| a.0.clone()).collect();
    let values: Vec<Option<String>> = all.iter().map(|a| Some(a.1.clone())).collect();
    let units: Vec<Option<String>> =
        all.iter().map(|a| (a.0 == "statement_timeout" || a.0 == "lock_timeout").then(|| "ms".to_string())).collect();
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

/// `pg_stat_activity`: one row per session the viewer may see (PostgreSQL 16's columns), from
/// the engine's activity registry. Transaction ids, wait events and leader pids are NULL.
pub(super) const STAT_ACTIVITY: OwnTable =
    OwnTable { name: "pg_stat_activity", columns: stat_activity_columns, rows: Rows::Context(stat_activity_rows) };

fn stat_activity_columns() -> Vec<Field> {
    let ts = |n: &str| Field::new(n, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true);
    let i32n = |n: &str| Field::new(n, DataType::Int32, true);
    vec![
        i32f("datid"),
        textf("datname"),
        i32f("pid"),
        i32n("leader_pid"),
        i32n("usesysid"),
        textf("usename"),
        textf("application_name"),
        textn("client_addr"),
        textn("client_hostname"),
        i32n("client_port"),
        ts("backend_start"),
        ts("xact_start"),
        ts("query_start"),
        ts("state_change"),
        textn("wait_event_type"),
        textn("wait_event"),
        textf("state"),
        textn("backend_xid"),
        textn("backend_xmin"),
        Field::new("query_id", DataType::Int64, true),
        textf("query"),
        textf("backend_type"),
    ]
}

fn stat_activity_rows(pg: &PgContext, c: &mut Cols) {
    let rows = pg.activity.0.as_ref().map(|f| f()).unwrap_or_default();
    let n = rows.len();
    let ts = |v: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) };
    let i32n = |v: Vec<Option<i32>>| -> ArrayRef { Arc::new(Int32Array::from(v)) };
    c.i32c(DATABASE_OID, n).sc(DATABASE_NAME, n).i32(rows.iter().map(|r| r.pid).collect());
    c.0.push(i32n(vec![None; n]));
    c.0.push(i32n(rows.iter().map(|r| (r.user == pg.user).then_some(SESSION_ROLE_OID)).collect()));
    c.s(rows.iter().map(|r| r.user.as_str()).collect())
        .s(rows.iter().map(|r| r.application_name.as_str()).collect())
        .sn(rows.iter().map(|r| r.client_addr.map(|a| a.ip().to_string())).collect())
        .null_s(n);
    c.0.push(i32n(rows.iter().map(|r| r.client_addr.map(|a| a.port() as i32)).collect()));
    c.0.push(ts(rows.iter().map(|r| Some(r.backend_start_us)).collect()));
    c.0.push(ts(vec![None; n]));
    c.0.push(ts(rows.iter().map(|r| r.query_start_us).collect()));
    c.0.push(ts(rows.iter().map(|r| r.state_change_us).collect()));
    c.null_s(n).null_s(n).s(rows.iter().map(|r| if r.active { "active" } else { "idle" }).collect());
    c.null_s(n).null_s(n);
    c.0.push(Arc::new(Int64Array::from(rows.iter().map(|r| r.query_id).collect::<Vec<_>>())));
    c.s(rows.iter().map(|r| r.query.as_str()).collect()).sc("client backend", n);
}
