//! The console's JSON API: each page's data, as statements of the logged-in user's
//! `EngineSession` (see `sql`). A result the user may not see comes back as its error
//! (`42P01`, `42501`), which the page shows as such.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::HeaderMap;
use axum::http::StatusCode as Http;
use axum::response::{IntoResponse, Response};
use axum::Json;
use datafusion::common::ScalarValue;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sql::{object, run};
use super::{authenticated, csrf_ok, Console};

/// Minutes of history the overview's charts show.
const OVERVIEW_MINUTES: u64 = 30;

macro_rules! session {
    ($console:expr, $headers:expr) => {
        match authenticated(&$console, &$headers) {
            Ok(s) => s,
            Err(r) => return r.into_response(),
        }
    };
}

fn text(v: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(v.to_string()))
}

/// Microseconds since the epoch, `minutes` ago (a UTC timestamp parameter).
fn minutes_ago(minutes: u64) -> ScalarValue {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let then = now.saturating_sub(Duration::from_secs(minutes * 60));
    ScalarValue::TimestampMicrosecond(Some(then.as_micros() as i64), None)
}

/// `GET /console/api/me`: who is logged in, and the CSRF token for changes.
pub(crate) async fn me(State(console): State<Console>, headers: HeaderMap) -> Response {
    let s = session!(console, headers);
    Json(json!({
        "user": s.principal.user,
        "roles": s.principal.roles,
        "admin": s.admin,
        "csrf": s.csrf,
    }))
    .into_response()
}

/// `GET /console/api/overview`: the recent minutes of `system.metrics_history` (admins), and
/// the sessions and statements the user may see.
pub(crate) async fn overview(State(console): State<Console>, headers: HeaderMap) -> Response {
    let s = session!(console, headers);
    let history = run(
        &s,
        "SELECT ts, uptime_secs, sessions, statements_per_sec, memory_used_bytes, memory_limit_bytes, \
         cache_hits, cache_misses, cache_bytes FROM system.metrics_history WHERE ts >= $1 ORDER BY ts",
        vec![minutes_ago(OVERVIEW_MINUTES)],
    )
    .await;
    let sessions = run(&s, "SELECT count(*) AS sessions FROM system.sessions", vec![]).await;
    let queries = run(&s, "SELECT count(*) AS queries FROM system.queries", vec![]).await;
    Json(object(vec![
        ("minutes", json!(OVERVIEW_MINUTES)),
        ("history", history),
        ("sessions", sessions),
        ("queries", queries),
    ]))
    .into_response()
}

/// `GET /console/api/queries`: the running statements the user may see (`system.queries`).
pub(crate) async fn queries(State(console): State<Console>, headers: HeaderMap) -> Response {
    let s = session!(console, headers);
    let queries = run(
        &s,
        "SELECT query_id, \"user\", protocol, client_addr, started, elapsed_ms, state, rows_sent, memory_bytes, query \
         FROM system.queries ORDER BY started, query_id",
        vec![],
    )
    .await;
    Json(object(vec![("queries", queries)])).into_response()
}

#[derive(Deserialize)]
pub(crate) struct KillBody {
    id: String,
}

/// A statement id as `system.queries` shows it (`20261207_040812_00042`): short, letters,
/// digits, `-`, `_`, `:`, `.`.
fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
}

/// `POST /console/api/kill` `{"id": …}` with `X-CSRF-Token`: `CALL system.kill_query('<id>')`
/// as the user (the engine decides whether the user may: own statements, or any for admins).
pub(crate) async fn kill(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let s = session!(console, headers);
    if let Err(r) = csrf_ok(&s, &headers) {
        return r.into_response();
    }
    let Ok(body) = serde_json::from_slice::<KillBody>(&body) else {
        return (
            Http::BAD_REQUEST,
            Json(json!({ "error": { "sqlstate": "22023", "message": "expected {\"id\": …}" } })),
        )
            .into_response();
    };
    // CALL takes literal arguments; the id is checked to be a plain token first, so quoting
    // it is all it needs.
    if !plausible_id(&body.id) {
        return (Http::BAD_REQUEST, Json(json!({ "error": { "sqlstate": "22023", "message": "not a query id" } })))
            .into_response();
    }
    let result = run(&s, &format!("CALL system.kill_query('{}')", body.id), vec![]).await;
    let status = match result.pointer("/error/sqlstate").and_then(Value::as_str) {
        None => Http::OK,
        Some("42501") => Http::FORBIDDEN,
        Some(_) => Http::BAD_REQUEST,
    };
    (status, Json(object(vec![("result", result)]))).into_response()
}

/// The query history's filters (all optional).
#[derive(Deserialize, Default)]
pub(crate) struct HistoryFilter {
    /// Exactly this user.
    user: Option<String>,
    /// `ok`, `error`, `cancelled`, … as the table says it.
    outcome: Option<String>,
    /// Statement text containing this (case-insensitive).
    text: Option<String>,
    /// Only the last this many minutes.
    minutes: Option<u64>,
    /// At most this many rows (default 100, at most 1000).
    limit: Option<u64>,
}

/// `GET /console/api/history?user=&outcome=&text=&minutes=&limit=`: `system.query_history`
/// filtered; every filter value is a `$n` parameter.
pub(crate) async fn history(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(f): Query<HistoryFilter>,
) -> Response {
    let s = session!(console, headers);
    let (sql, params) = history_sql(&f);
    let history = run(&s, &sql, params).await;
    Json(object(vec![("history", history)])).into_response()
}

/// The history statement and its parameters for a filter.
fn history_sql(f: &HistoryFilter) -> (String, Vec<ScalarValue>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<ScalarValue> = Vec::new();
    let mut param = |clause: &str, value: ScalarValue| {
        params.push(value);
        clauses.push(clause.replace("$?", &format!("${}", params.len())));
    };
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    if let Some(u) = given(&f.user) {
        param("\"user\" = $?", text(&u));
    }
    if let Some(o) = given(&f.outcome) {
        param("outcome = $?", text(&o));
    }
    if let Some(t) = given(&f.text) {
        param("strpos(lower(query), lower($?)) > 0", text(&t));
    }
    if let Some(m) = f.minutes.filter(|m| *m > 0) {
        param("started >= $?", minutes_ago(m));
    }
    let filter = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    let limit = f.limit.unwrap_or(100).clamp(1, 1000);
    let columns =
        "started, \"user\", protocol, duration_ms, rows, bytes_scanned, outcome, error_code, error, query, query_id";
    (format!("SELECT {columns} FROM system.query_history{filter} ORDER BY started DESC LIMIT {limit}"), params)
}

/// `GET /console/api/catalog`: the schemas, tables and columns the user's catalog lists.
pub(crate) async fn catalog(State(console): State<Console>, headers: HeaderMap) -> Response {
    let s = session!(console, headers);
    let tables = run(
        &s,
        "SELECT table_schema, table_name, table_type FROM information_schema.tables \
         WHERE table_schema NOT IN ('information_schema', 'pg_catalog', 'system') ORDER BY 1, 2",
        vec![],
    )
    .await;
    let columns = run(
        &s,
        "SELECT table_schema, table_name, column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema NOT IN ('information_schema', 'pg_catalog', 'system') \
         ORDER BY table_schema, table_name, ordinal_position",
        vec![],
    )
    .await;
    Json(object(vec![("tables", tables), ("columns", columns)])).into_response()
}

#[derive(Deserialize)]
pub(crate) struct TableName {
    schema: String,
    table: String,
}

/// A name the console puts into SQL text: lower-case letters, digits and `_` only.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `GET /console/api/table?schema=&table=`: a table's partitions and snapshots, from the
/// Iceberg metadata tables (which exist only for users who see the table whole).
pub(crate) async fn table(State(console): State<Console>, headers: HeaderMap, Query(t): Query<TableName>) -> Response {
    let s = session!(console, headers);
    if !plain_name(&t.schema) || !plain_name(&t.table) {
        return (Http::BAD_REQUEST, Json(json!({ "error": { "sqlstate": "42602", "message": "unsupported name" } })))
            .into_response();
    }
    // Only a table the user's own catalog lists (the listing is itself under the policy).
    let listed = run(
        &s,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
        vec![text(&t.schema), text(&t.table)],
    )
    .await;
    if listed.get("rows").and_then(Value::as_array).is_none_or(|r| r.is_empty()) {
        return (Http::NOT_FOUND, Json(json!({ "error": { "sqlstate": "42P01", "message": "no such table" } })))
            .into_response();
    }
    let (schema, name) = (&t.schema, &t.table);
    let partitions = run(
        &s,
        &format!(
            "SELECT partition, record_count, file_count, total_data_file_size_in_bytes \
             FROM \"{schema}\".\"{name}$partitions\" ORDER BY partition LIMIT 500"
        ),
        vec![],
    )
    .await;
    let snapshots = run(
        &s,
        &format!(
            "SELECT committed_at, snapshot_id, parent_id, operation, summary \
             FROM \"{schema}\".\"{name}$snapshots\" ORDER BY committed_at DESC LIMIT 50"
        ),
        vec![],
    )
    .await;
    Json(object(vec![("partitions", partitions), ("snapshots", snapshots)])).into_response()
}

/// `GET /console/api/reports/city`: the city report of the latest delivery, by state and the
/// top cities (prescribers and claims).
pub(crate) async fn report_city(State(console): State<Console>, headers: HeaderMap) -> Response {
    let s = session!(console, headers);
    let latest = "(SELECT max(delivery_date) FROM health.city_report)";
    let states = run(
        &s,
        &format!(
            "SELECT state_name, sum(presc_counts) AS prescribers, sum(trx_counts) AS claims, count(*) AS cities \
             FROM health.city_report WHERE delivery_date = {latest} \
             GROUP BY state_name ORDER BY claims DESC NULLS LAST, state_name LIMIT 15"
        ),
        vec![],
    )
    .await;
    let cities = run(
        &s,
        &format!(
            "SELECT city, state_name, presc_counts AS prescribers, trx_counts AS claims \
             FROM health.city_report WHERE delivery_date = {latest} \
             ORDER BY trx_counts DESC NULLS LAST, city LIMIT 15"
        ),
        vec![],
    )
    .await;
    Json(object(vec![("states", states), ("cities", cities)])).into_response()
}

#[derive(Deserialize)]
pub(crate) struct StateFilter {
    state: Option<String>,
}

/// `GET /console/api/reports/top?state=XX`: the top prescribers of a state (the state with the
/// most claims when none is given) in the latest delivery, and the states to choose from.
pub(crate) async fn report_top(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(f): Query<StateFilter>,
) -> Response {
    let s = session!(console, headers);
    let latest = "(SELECT max(delivery_date) FROM health.top_prescribers)";
    let states = run(
        &s,
        &format!(
            "SELECT presc_state, sum(trx_cnt) AS claims FROM health.top_prescribers \
             WHERE delivery_date = {latest} GROUP BY presc_state ORDER BY claims DESC NULLS LAST, presc_state"
        ),
        vec![],
    )
    .await;
    let chosen = f
        .state
        .filter(|v| !v.trim().is_empty())
        .or_else(|| states.pointer("/rows/0/0").and_then(Value::as_str).map(str::to_string));
    let top = match &chosen {
        Some(state) => {
            run(
                &s,
                &format!(
                    "SELECT npi, presc_full_name, trx_cnt, total_drug_cost, rank FROM health.top_prescribers \
                     WHERE delivery_date = {latest} AND presc_state = $1 ORDER BY rank, npi LIMIT 25"
                ),
                vec![text(state)],
            )
            .await
        }
        None => json!({ "columns": [], "rows": [] }),
    };
    Json(object(vec![("state", json!(chosen)), ("states", states), ("top", top)])).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_filters_are_parameters() {
        let f = HistoryFilter {
            user: Some("ann' OR 1=1 --".into()),
            outcome: Some(" ".into()),
            text: Some("select".into()),
            minutes: Some(5),
            limit: Some(5000),
        };
        let (sql, params) = history_sql(&f);
        assert!(!sql.contains("OR 1=1") && !sql.contains("ann'"), "{sql}");
        assert!(sql.contains("\"user\" = $1") && sql.contains("lower($2)") && sql.contains(">= $3"), "{sql}");
        assert!(sql.ends_with("LIMIT 1000"), "{sql}");
        assert_eq!(params.len(), 3);
    }

    #[test]
    fn names_and_ids_are_checked() {
        assert!(plain_name("prescriber_drug"));
        assert!(!plain_name("x\"; DROP"));
        assert!(!plain_name("Upper"));
        assert!(plausible_id("pg-12:3"));
        assert!(!plausible_id("x'); --"));
        assert!(!plausible_id(""));
    }
}
