//! Where the catalog database and the warehouse live.

use serde::Deserialize;

use crate::storage::StorageOptions;

/// Location of the Iceberg SQL catalog and of the warehouse root. Its Debug form redacts the
/// password of the catalog URI.
#[derive(Clone, Deserialize, PartialEq)]
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
    /// How long opening the catalog database may take before it fails with a clear error
    /// (`[catalog] connect_timeout_secs`); a refused connection is retried until then.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
}

/// The default of [`LakehouseConfig::connect_timeout_secs`].
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;

fn default_name() -> String {
    "rxgate".to_string()
}

fn default_connect_timeout_secs() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}

impl std::fmt::Debug for LakehouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakehouseConfig")
            .field("uri", &rxgate_common::redact_uri(&self.uri))
            .field("warehouse", &rxgate_common::redact_uri(&self.warehouse))
            .field("name", &self.name)
            .field("storage", &self.storage)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

impl LakehouseConfig {
    /// Embedded defaults under one data directory: `DIR/catalog.db` and `DIR/warehouse`.
    pub fn embedded(data_dir: &std::path::Path) -> Self {
        Self {
            uri: format!("sqlite:{}", data_dir.join("catalog.db").display()),
            warehouse: data_dir.join("warehouse").display().to_string(),
            name: default_name(),
            storage: StorageOptions::default(),
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
        }
    }

    /// True when the catalog database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.uri.starts_with("postgres://") || self.uri.starts_with("postgresql://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_form_hides_the_catalog_password() {
        let mut c = LakehouseConfig::embedded(std::path::Path::new("var"));
        c.uri = "postgres://rxgate:hunter2@db:5432/rxgate_catalog".into();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://rxgate:***@db:5432/rxgate_catalog"), "{shown}");
    }
}
