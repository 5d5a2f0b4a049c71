//! The lakehouse: Iceberg tables in a SQL catalog (SQLite embedded, PostgreSQL shared), the
//! declarative table definitions of `catalog/`, atomic partition-replacing commits, and the
//! DataFusion catalog provider that exposes it all to the engine.

pub mod backup;
pub mod bloom;
mod commit;
mod config;
pub mod ddl;
mod definition;
pub mod external;
pub mod iceberg_admin;
mod lakehouse;
pub mod maintenance;
mod provider;
mod registry;
mod scan;
pub mod storage;
mod table_cache;
pub mod txn;
pub mod views;
mod write;

pub use commit::{commit_change, replace_partition, CommitOutcome, PartitionReplace, Removal, TableChange};
pub use config::{LakehouseConfig, DEFAULT_CONNECT_TIMEOUT_SECS};
pub use definition::{apply_definitions, load_definitions, parse_definitions, ApplyAction, ColumnDef, TableDef};
pub use lakehouse::Lakehouse;
pub use provider::LakehouseCatalogProvider;
pub use scan::LakehouseTable;
pub use write::{live_data_files, read_data_file, table_arrow_schema, TableWriter};
