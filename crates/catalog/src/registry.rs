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

/// A definition kept as JSON in one of our tables, keyed by namespace and name.
pub(crate) trait Definition: serde::Serialize + serde::de::DeserializeOwned + Clone {
    /// `(namespace, name)`.
    fn key(&self) -> (String, String);
}

/// Where a kind of definition is kept: its table, key columns and what it is called.
pub(crate) struct DefinitionTable {
    /// The table (`rxgate_views`).
    pub(crate) table: &'static str,
    /// Its namespace and name columns (`view_namespace`, `view_name`).
    pub(crate) columns: (&'static str, &'static str),
    /// What a definition is, for messages ("view").
    pub(crate) what: &'static str,
    /// The `CREATE TABLE IF NOT EXISTS` statements of the table and its companions.
    pub(crate) create: &'static [&'static str],
}

/// JSON definitions in the catalog database with an in-process cache of them, which the
/// DataFusion catalog lists synchronously. Reads by name go to the database (the cache
/// follows), so another process's change is seen by the next lookup.
pub(crate) struct Definitions<T> {
    pub(crate) pool: sqlx::AnyPool,
    pub(crate) postgres: bool,
    pub(crate) catalog: String,
    kind: DefinitionTable,
    ready: tokio::sync::OnceCell<()>,
    cache: std::sync::RwLock<std::collections::BTreeMap<(String, String), std::sync::Arc<T>>>,
}

impl<T: Definition> Definitions<T> {
    pub(crate) fn new(pool: sqlx::AnyPool, postgres: bool, catalog: &str, kind: DefinitionTable) -> Self {
        Self {
            pool,
            postgres,
            catalog: catalog.to_string(),
            kind,
            ready: tokio::sync::OnceCell::new(),
            cache: Default::default(),
        }
    }

    /// `?` placeholders as the database wants them.
    pub(crate) fn sql(&self, text: &str) -> String {
        placeholders(self.postgres, text)
    }

    /// Creates the tables on first use.
    pub(crate) async fn ready(&self) -> rxgate_common::Result<()> {
        self.ready.get_or_try_init(|| create_tables(&self.pool, self.postgres, self.kind.create)).await?;
        Ok(())
    }

    fn where_key(&self) -> String {
        let (ns, name) = self.kind.columns;
        format!("catalog_name = ? AND {ns} = ? AND {name} = ?")
    }

    /// Re-reads every definition into the cache (an unreadable one is logged and skipped).
    pub(crate) async fn refresh(&self) -> rxgate_common::Result<()> {
        use sqlx::Row;
        self.ready().await?;
        let sql = self.sql(&format!("SELECT definition FROM {} WHERE catalog_name = ?", self.kind.table));
        let rows = sqlx::query(&sql).bind(self.catalog.clone()).fetch_all(&self.pool).await.map_err(db_error)?;
        let mut all = std::collections::BTreeMap::new();
        for row in rows {
            let text: String = row.try_get(0).map_err(db_error)?;
            match serde_json::from_str::<T>(&text) {
                Ok(def) => {
                    all.insert(def.key(), std::sync::Arc::new(def));
                }
                Err(e) => tracing::error!(error = %e, what = self.kind.what, "unreadable definition skipped"),
            }
        }
        *self.cache.write().expect("definition cache lock") = all;
        Ok(())
    }

    /// The cached names of a namespace.
    pub(crate) fn names(&self, namespace: &str) -> Vec<String> {
        let cache = self.cache.read().expect("definition cache lock");
        cache.keys().filter(|(ns, _)| ns == namespace).map(|(_, n)| n.clone()).collect()
    }

    /// The namespaces holding cached definitions.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.cache.read().expect("definition cache lock").keys().map(|(ns, _)| ns.clone()).collect();
        v.dedup();
        v
    }

    /// Every cached definition.
    pub(crate) fn all(&self) -> Vec<std::sync::Arc<T>> {
        self.cache.read().expect("definition cache lock").values().cloned().collect()
    }

    /// The cached definition of `namespace.name`.
    pub(crate) fn cached(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<T>> {
        self.cache.read().expect("definition cache lock").get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// The definition of `namespace.name`, read from the database (the cache follows).
    pub(crate) async fn get(&self, namespace: &str, name: &str) -> rxgate_common::Result<Option<std::sync::Arc<T>>> {
        use sqlx::Row;
        self.ready().await?;
        let sql = self.sql(&format!("SELECT definition FROM {} WHERE {}", self.kind.table, self.where_key()));
        let row = sqlx::query(&sql)
            .bind(self.catalog.clone())
            .bind(namespace.to_string())
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        let key = (namespace.to_string(), name.to_string());
        let Some(row) = row else {
            self.cache.write().expect("definition cache lock").remove(&key);
            return Ok(None);
        };
        let text: String = row.try_get(0).map_err(db_error)?;
        let def: T = serde_json::from_str(&text).map_err(|e| {
            rxgate_common::Error::new(
                rxgate_common::StatusCode::Internal,
                format!("unreadable definition of {namespace}.{name} ({})", self.kind.what),
            )
            .with_source(&e)
        })?;
        let def = std::sync::Arc::new(def);
        self.cache.write().expect("definition cache lock").insert(key, def.clone());
        Ok(Some(def))
    }

    /// Stores a definition; `replace` overwrites one of the same name (an upsert, on SQLite and
    /// PostgreSQL alike). `false` when it exists and `replace` is not set.
    pub(crate) async fn insert(&self, def: &T, replace: bool) -> rxgate_common::Result<bool> {
        self.ready().await?;
        let text = serde_json::to_string(def)
            .map_err(|e| rxgate_common::Error::new(rxgate_common::StatusCode::Internal, e.to_string()))?;
        let (ns, name) = self.kind.columns;
        let upsert = if replace {
            format!(" ON CONFLICT (catalog_name, {ns}, {name}) DO UPDATE SET definition = excluded.definition")
        } else {
            String::new()
        };
        let sql = self.sql(&format!(
            "INSERT INTO {} (catalog_name, {ns}, {name}, definition) VALUES (?, ?, ?, ?){upsert}",
            self.kind.table
        ));
        let (namespace, table) = def.key();
        let done = sqlx::query(&sql)
            .bind(self.catalog.clone())
            .bind(namespace.clone())
            .bind(table.clone())
            .bind(text)
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => {
                let def = std::sync::Arc::new(def.clone());
                self.cache.write().expect("definition cache lock").insert((namespace, table), def);
                Ok(true)
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(db_error(e)),
        }
    }

    /// Removes a definition, after the rows of `also` (companion tables with the same key
    /// columns), in one transaction. `false` when it did not exist.
    pub(crate) async fn delete(&self, namespace: &str, name: &str, also: &[&str]) -> rxgate_common::Result<bool> {
        self.ready().await?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut done = 0;
        for table in also.iter().chain(std::iter::once(&self.kind.table)) {
            let sql = self.sql(&format!("DELETE FROM {table} WHERE {}", self.where_key()));
            done = sqlx::query(&sql)
                .bind(self.catalog.clone())
                .bind(namespace.to_string())
                .bind(name.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        }
        tx.commit().await.map_err(db_error)?;
        self.cache.write().expect("definition cache lock").remove(&(namespace.to_string(), name.to_string()));
        Ok(done > 0)
    }

    /// The names of a namespace's definitions, read from the database.
    pub(crate) async fn list(&self, namespace: &str) -> rxgate_common::Result<Vec<String>> {
        use sqlx::Row;
        self.ready().await?;
        let (ns, name) = self.kind.columns;
        let sql = self.sql(&format!(
            "SELECT {name} FROM {} WHERE catalog_name = ? AND {ns} = ? ORDER BY {name}",
            self.kind.table
        ));
        let rows = sqlx::query(&sql).bind(self.catalog.clone()).bind(namespace.to_string()).fetch_all(&self.pool).await;
        rows.map_err(db_error)?.iter().map(|r| r.try_get::<String, _>(0).map_err(db_error)).collect()
    }
}
