//! Where the catalog database and the warehouse live.

use serde::Deserialize;

use crate::storage::StorageOptions;

/// Location of the Iceberg SQL catalog and of the warehouse root.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LakehouseConfig {
    /// sqlx URI of the catalog database: `sqlite:PATH` or `postgres://…`.
    pub uri: String,
    /// Root of the warehouse: a local path or `file:///…` URL.
    pub warehouse: String,
    /// Catalog name inside the catalog database (shared with pyiceberg).
    #[serde(default = "default_name")]
    pub name: String,
    /// Object-store settings for gs://, s3://, hdfs:// warehouses and inputs.
    #[serde(default)]
    pub storage: StorageOptions,
}

fn default_name() -> String {
    "rxgate".to_string()
}

impl LakehouseConfig {
    /// Embedded defaults under one data directory: `DIR/catalog.db` and `DIR/warehouse`.
    pub fn embedded(data_dir: &std::path::Path) -> Self {
        Self {
            uri: format!("sqlite:{}", data_dir.join("catalog.db").display()),
            warehouse: data_dir.join("warehouse").display().to_string(),
            name: default_name(),
            storage: StorageOptions::default(),
        }
    }

    /// True when the catalog database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.uri.starts_with("postgres://") || self.uri.starts_with("postgresql://")
    }
}
