//! What rxgate's own catalog-database tables share (external tables, views): placeholders in
//! the database's bind style, the error for a failed statement, and the lock that serialises
//! their creation on PostgreSQL.

use rxgate_common::{Error, StatusCode};

/// Serialises the creation of our tables across processes on PostgreSQL
/// ("rxgate-external-init"; `CREATE TABLE IF NOT EXISTS` races on pg_type otherwise).
const PG_INIT_LOCK: &str = "SELECT count(*) FROM (SELECT pg_advisory_xact_lock(7278676174745031501)) AS l";

/// `?` placeholders as the database wants them: `$1, $2, …` on PostgreSQL, `?` on SQLite.
pub(crate) fn placeholders(postgres: bool, text: &str) -> String {
    if !postgres {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut n = 0;
    for ch in text.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(ch);
        }
    }
    out
}

/// A failed statement on the catalog database (58030).
pub(crate) fn db_error(e: impl std::fmt::Display) -> Error {
    Error::new(StatusCode::CatalogUnavailable, format!("catalog database error: {e}"))
}

/// Creates our tables (`CREATE TABLE IF NOT EXISTS …`) in one transaction, under
/// [`PG_INIT_LOCK`] on PostgreSQL.
pub(crate) async fn create_tables(
    pool: &sqlx::AnyPool,
    postgres: bool,
    statements: &[&str],
) -> rxgate_common::Result<()> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    if postgres {
        sqlx::query(PG_INIT_LOCK).execute(&mut *tx).await.map_err(db_error)?;
    }
    for sql in statements {
        sqlx::query(sql).execute(&mut *tx).await.map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)
}
