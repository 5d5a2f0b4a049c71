//! Loaded Iceberg tables kept between queries, keyed by their metadata file.
//!
//! A metadata file never changes once written, so a table whose catalog pointer still names
//! the file we loaded is the same table: the query reuses it, and with it the table's object
//! cache of manifest lists and manifests (iceberg's `ObjectCache`, 32 MiB per table). Each
//! query still reads the pointer from the catalog database, so a commit by this or another
//! process is seen by the next query.

use std::collections::HashMap;
use std::sync::Mutex;

use iceberg::table::Table;
use iceberg::TableIdent;
use rxgate_common::Result;
use sqlx::Row;

use crate::Lakehouse;

/// At most this many tables are kept; beyond it the cache is cleared (tables are few here).
const MAX_TABLES: usize = 256;

/// Tables by identifier, each with the metadata location it was loaded from.
#[derive(Default)]
pub(crate) struct TableCache {
    tables: Mutex<HashMap<TableIdent, Table>>,
}

impl TableCache {
    fn get(&self, ident: &TableIdent, location: &str) -> Option<Table> {
        let tables = self.tables.lock().expect("table cache lock");
        tables.get(ident).filter(|t| t.metadata_location() == Some(location)).cloned()
    }

    fn put(&self, table: Table) {
        let mut tables = self.tables.lock().expect("table cache lock");
        if tables.len() >= MAX_TABLES {
            tables.clear();
        }
        tables.insert(table.identifier().clone(), table);
    }
}

impl Lakehouse {
    /// The table's current state: the cached table when the catalog still points at its
    /// metadata file, else a fresh load (then cached).
    pub async fn current_table(&self, ident: &TableIdent) -> Result<Table> {
        if let Some(location) = self.metadata_pointer(ident).await? {
            if let Some(table) = self.table_cache().get(ident, &location) {
                return Ok(table);
            }
        }
        let table = self.catalog().load_table(ident).await?;
        self.table_cache().put(table.clone());
        Ok(table)
    }

    /// The catalog row's `metadata_location` (`None` if the row is missing: the load then
    /// reports the missing table in the catalog's own words).
    async fn metadata_pointer(&self, ident: &TableIdent) -> Result<Option<String>> {
        let sql = if self.config().is_postgres() {
            "SELECT metadata_location FROM iceberg_tables \
             WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3"
        } else {
            "SELECT metadata_location FROM iceberg_tables \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?"
        };
        let row = sqlx::query(sql)
            .bind(&self.config().name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .fetch_optional(self.pool())
            .await
            .map_err(|e| {
                rxgate_common::Error::new(
                    rxgate_common::StatusCode::CatalogUnavailable,
                    format!("catalog lookup of {ident}: {e}"),
                )
            })?;
        Ok(row.and_then(|r| r.try_get::<Option<String>, _>(0).ok().flatten()))
    }
}
