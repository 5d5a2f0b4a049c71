//! The statements of rxgate's own grammar (`super::grammar`): policy admin, Hive, Hive
//! external tables and Iceberg DBA statements. Types only.

use std::collections::BTreeMap;

use rxgate_catalog::external::ExternalColumn;
use rxgate_catalog::iceberg_admin::evolve::{PartitionChange, SchemaChange};

/// A policy admin statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `SHOW GRANTS` (the session's own) or `SHOW GRANTS FOR name` (a user or a role; admins
    /// only, unless it is the session's own user).
    ShowGrants(Option<String>),
    /// `SHOW POLICIES`: every rule and the policy file's reload status (admins only).
    ShowPolicies,
}

/// A Hive statement the engine answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HiveCommand {
    /// `SHOW DATABASES|SCHEMAS [[LIKE] 'pattern']`.
    ShowDatabases {
        /// Hive wildcard pattern.
        like: Option<String>,
    },
    /// `SHOW TABLES [IN|FROM db] [[LIKE] 'pattern']`.
    ShowTables {
        /// The database (schema); the session's current one when absent.
        database: Option<String>,
        /// Hive wildcard pattern.
        like: Option<String>,
    },
    /// `USE db`: planned as `SET search_path = db` once db is known to be visible.
    Use(String),
    /// `DESCRIBE [FORMATTED|EXTENDED] [db.]t`.
    Describe {
        /// The name's parts as written (`[t]`, `[db, t]` or `[catalog, db, t]`).
        table: Vec<String>,
        /// FORMATTED / EXTENDED: partition spec, location, format, properties.
        detail: bool,
    },
    /// `SHOW CREATE TABLE [db.]t`.
    ShowCreateTable(Vec<String>),
}

/// A partition spec as written: `(key, value)` pairs.
pub type Spec = Vec<(String, String)>;

/// An external-table statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalCommand {
    /// `CREATE EXTERNAL TABLE`; `table` is resolved to `[schema, table]` when planned.
    Create {
        /// Name parts.
        table: Vec<String>,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Data columns.
        columns: Vec<ExternalColumn>,
        /// `PARTITIONED BY` columns.
        partition_columns: Vec<ExternalColumn>,
        /// `STORED AS`.
        format: String,
        /// `LOCATION`.
        location: String,
        /// `TBLPROPERTIES`, `OPTIONS`, `ROW FORMAT DELIMITED …` and `COMMENT`.
        properties: BTreeMap<String, String>,
    },
    /// `DROP TABLE` of an external table.
    Drop {
        /// Name parts.
        table: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `MSCK REPAIR TABLE t [ADD|DROP|SYNC PARTITIONS]`.
    Repair {
        /// Name parts.
        table: Vec<String>,
        /// Register partitions found on storage.
        add: bool,
        /// Unregister partitions whose directory holds no file.
        drop: bool,
    },
    /// `SHOW PARTITIONS t [PARTITION (…)]`.
    ShowPartitions {
        /// Name parts.
        table: Vec<String>,
        /// Partial spec the partitions must match.
        spec: Spec,
    },
    /// `ALTER TABLE t ADD [IF NOT EXISTS] PARTITION (…) [LOCATION '…'] …`.
    AddPartitions {
        /// Name parts.
        table: Vec<String>,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Specs with their optional location.
        partitions: Vec<(Spec, Option<String>)>,
    },
    /// `ALTER TABLE t DROP [IF EXISTS] PARTITION (…) [, PARTITION (…)]`.
    DropPartitions {
        /// Name parts.
        table: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
        /// Partial specs; every partition matching one is dropped.
        specs: Vec<Spec>,
    },
}

impl ExternalCommand {
    /// The table's name parts.
    pub fn table(&self) -> &[String] {
        match self {
            Self::Create { table, .. }
            | Self::Drop { table, .. }
            | Self::Repair { table, .. }
            | Self::ShowPartitions { table, .. }
            | Self::AddPartitions { table, .. }
            | Self::DropPartitions { table, .. } => table,
        }
    }

    /// The table's name parts, to qualify them.
    pub fn table_mut(&mut self) -> &mut Vec<String> {
        match self {
            Self::Create { table, .. }
            | Self::Drop { table, .. }
            | Self::Repair { table, .. }
            | Self::ShowPartitions { table, .. }
            | Self::AddPartitions { table, .. }
            | Self::DropPartitions { table, .. } => table,
        }
    }
}

/// Where a rollback goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    /// A snapshot; `ancestor_only` for rollback_to_snapshot, not for set_current_snapshot.
    Snapshot {
        /// Snapshot id.
        id: i64,
        /// Must be an ancestor of the current snapshot.
        ancestor_only: bool,
    },
    /// The snapshot current at a time (epoch millis).
    Timestamp(i64),
}

/// An Iceberg DBA statement the engine runs itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcebergCommand {
    /// `ALTER TABLE t ADD|RENAME|DROP COLUMN …`.
    Schema {
        /// Table name parts as written.
        table: Vec<String>,
        /// Changes, committed together.
        changes: Vec<SchemaChange>,
    },
    /// `ALTER TABLE t ADD|DROP PARTITION FIELD …`.
    Partition {
        /// Table name parts as written.
        table: Vec<String>,
        /// The change.
        change: PartitionChange,
    },
    /// `ALTER TABLE t WRITE [LOCALLY] ORDERED BY c [ASC|DESC] [NULLS FIRST|LAST], …` and
    /// `WRITE UNORDERED`: the table's sort order.
    SortOrder {
        /// Table name parts as written.
        table: Vec<String>,
        /// The keys (empty: unsorted).
        keys: Vec<rxgate_catalog::iceberg_admin::evolve::SortKey>,
    },
    /// `CALL system.rollback_to_snapshot(…)` and friends, `ALTER TABLE t EXECUTE …`.
    Rollback {
        /// Table name parts.
        table: Vec<String>,
        /// Target.
        target: RollbackTarget,
        /// CALL returns a row (previous_snapshot_id, current_snapshot_id); EXECUTE does not.
        returns_row: bool,
    },
}

impl IcebergCommand {
    /// The table's name parts.
    pub fn table(&self) -> &[String] {
        match self {
            Self::Schema { table, .. }
            | Self::Partition { table, .. }
            | Self::SortOrder { table, .. }
            | Self::Rollback { table, .. } => table,
        }
    }
}

/// How a partition field derives from its source column (Iceberg's transforms, written as
/// Spark's `years(ts)`, `bucket(16, id)` or Trino's `'day(ts)'`, `'bucket(id, 16)'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTransform {
    /// The value itself.
    Identity,
    /// Years since 1970.
    Year,
    /// Months since 1970.
    Month,
    /// Days since 1970 (a date).
    Day,
    /// Hours since 1970.
    Hour,
    /// Murmur3 hash modulo n.
    Bucket(u32),
    /// Truncated to width w (numbers: floor to a multiple; strings: the first w characters).
    Truncate(u32),
}

/// One partition field of `CREATE TABLE … PARTITIONED BY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    /// The source column.
    pub column: String,
    /// The transform.
    pub transform: PartitionTransform,
}

/// A column of `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewColumn {
    /// Name (unquoted names lower-cased).
    pub name: String,
    /// Its SQL type, for DataFusion to read (`int`, `varchar(20)`, `decimal(10,2)`, `string`).
    pub data_type: datafusion::sql::sqlparser::ast::DataType,
    /// `NOT NULL`.
    pub not_null: bool,
    /// `COMMENT '…'`.
    pub comment: Option<String>,
}

/// Where a table's rows come from, for CTAS and INSERT.
pub type SourceQuery = Box<datafusion::sql::sqlparser::ast::Query>;

/// DDL on the lakehouse: schemas and Iceberg tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdlCommand {
    /// `CREATE SCHEMA|DATABASE [IF NOT EXISTS] name`.
    CreateSchema {
        /// Schema name.
        name: String,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
    },
    /// `DROP SCHEMA|DATABASE [IF EXISTS] name [CASCADE|RESTRICT]`.
    DropSchema {
        /// Schema name.
        name: String,
        /// `IF EXISTS`.
        if_exists: bool,
        /// `CASCADE`: its tables too.
        cascade: bool,
    },
    /// `CREATE TABLE [IF NOT EXISTS] t (cols) [PARTITIONED BY (…)] [TBLPROPERTIES|WITH (…)]
    /// [AS query]`: an Iceberg table, created with its rows in one commit for CTAS.
    CreateTable {
        /// Name parts.
        table: Vec<String>,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Columns (empty for CTAS without a column list).
        columns: Vec<NewColumn>,
        /// Partition fields.
        partition: Vec<PartitionField>,
        /// Table properties.
        properties: BTreeMap<String, String>,
        /// CTAS: the rows.
        query: Option<SourceQuery>,
    },
    /// `DROP TABLE [IF EXISTS] t [PURGE]` of an Iceberg table.
    DropTable {
        /// Name parts.
        table: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
        /// `PURGE`: its files too.
        purge: bool,
    },
    /// `ALTER TABLE t RENAME TO u`.
    RenameTable {
        /// Name parts.
        table: Vec<String>,
        /// The new name's parts (one part: same schema).
        to: Vec<String>,
    },
}

/// DML on Iceberg tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmlCommand {
    /// `INSERT INTO t [(cols)] VALUES … | query`, and `INSERT OVERWRITE [TABLE] t
    /// [PARTITION (k='v' | k, …)] query`.
    Insert {
        /// Name parts.
        table: Vec<String>,
        /// Target columns; empty: all, in table order (without the static partition keys).
        columns: Vec<String>,
        /// The rows.
        source: SourceQuery,
        /// `OVERWRITE`: the partitions the rows fall in are replaced (dynamic overwrite).
        overwrite: bool,
        /// Static partition values of `PARTITION (k='v')`: constants of those columns.
        constants: Vec<(String, String)>,
    },
    /// `DELETE FROM t [WHERE predicate]`.
    Delete {
        /// Name parts.
        table: Vec<String>,
        /// The predicate (rows where it is true are deleted); `None`: all rows.
        predicate: Option<Box<datafusion::sql::sqlparser::ast::Expr>>,
    },
    /// `UPDATE t SET col = expr, … [WHERE predicate]`.
    Update {
        /// Name parts.
        table: Vec<String>,
        /// `(column, expression)` of each assignment.
        assignments: Vec<(String, Box<datafusion::sql::sqlparser::ast::Expr>)>,
        /// Rows where it is true are updated; `None`: all.
        predicate: Option<Box<datafusion::sql::sqlparser::ast::Expr>>,
    },
    /// `TRUNCATE [TABLE] t`.
    Truncate {
        /// Name parts.
        table: Vec<String>,
    },
    /// `COPY t [(cols)] FROM STDIN [WITH (…)]`.
    CopyFrom {
        /// Name parts.
        table: Vec<String>,
        /// Input columns; empty: all, in table order.
        columns: Vec<String>,
        /// Format, delimiter, NULL string, header, quote.
        options: crate::cursor::CopyOptions,
    },
}

impl DmlCommand {
    /// The table written.
    pub fn table(&self) -> &[String] {
        match self {
            DmlCommand::Insert { table, .. }
            | DmlCommand::Delete { table, .. }
            | DmlCommand::Update { table, .. }
            | DmlCommand::Truncate { table }
            | DmlCommand::CopyFrom { table, .. } => table,
        }
    }
}

/// Views: `CREATE [OR REPLACE] VIEW`, `DROP VIEW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewCommand {
    /// `CREATE [OR REPLACE] VIEW [IF NOT EXISTS] v [(cols)] [COMMENT '…']
    /// [SECURITY DEFINER|INVOKER] [WITH (security_invoker = …)] AS query`.
    Create {
        /// Name parts.
        view: Vec<String>,
        /// `OR REPLACE`.
        or_replace: bool,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// The column list (names for the query's columns, in order); empty: the query's names.
        columns: Vec<String>,
        /// The query.
        query: SourceQuery,
        /// Whose rights the query runs with (invoker unless `SECURITY DEFINER`).
        security: rxgate_catalog::views::ViewSecurity,
        /// `COMMENT '…'`.
        comment: Option<String>,
        /// The output columns, found when the statement is planned (empty until then).
        output: Vec<rxgate_catalog::views::ViewColumn>,
    },
    /// `DROP VIEW [IF EXISTS] v [, …]`.
    Drop {
        /// Each view's name parts.
        views: Vec<Vec<String>>,
        /// `IF EXISTS`.
        if_exists: bool,
    },
}

/// A time before which something may go: a point in time, or an age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Epoch milliseconds (`older_than => TIMESTAMP '…'`).
    At(i64),
    /// Milliseconds before the statement runs (`retention_threshold => '7d'`).
    Ago(i64),
}

/// A table maintenance procedure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceAction {
    /// `expire_snapshots`: `None`s take the table's properties.
    ExpireSnapshots {
        /// Snapshots before this may expire.
        older_than: Option<Cutoff>,
        /// Main's most recent snapshots always kept.
        retain_last: Option<usize>,
    },
    /// `remove_orphan_files`.
    RemoveOrphanFiles {
        /// Files modified before this may be orphans (default: 7 days ago).
        older_than: Option<Cutoff>,
        /// List only.
        dry_run: bool,
    },
    /// `rewrite_data_files` / Trino's `optimize`.
    RewriteDataFiles {
        /// Only files that may hold rows matching this predicate (SQL).
        filter: Option<String>,
        /// Output file size.
        target_size: Option<u64>,
        /// Files smaller than this are rewritten.
        threshold: Option<u64>,
        /// Partitions with fewer small files are left alone.
        min_input_files: Option<usize>,
    },
    /// `rewrite_manifests` / Trino's `optimize_manifests`.
    RewriteManifests,
}

/// A maintenance procedure on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceCommand {
    /// Name parts.
    pub table: Vec<String>,
    /// What to do.
    pub action: MaintenanceAction,
    /// `CALL` returns a result row (Spark's counts, or the orphan files); Trino's `EXECUTE`
    /// only a tag.
    pub returns_rows: bool,
}

/// A statement on running statements (`commands::queries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryCommand {
    /// `CALL system.kill_query('<id>')`: cancel one running statement (57014).
    Kill {
        /// Its id in `system.queries`.
        query_id: String,
    },
}
