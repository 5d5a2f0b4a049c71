//! Multi-table transactions: the writes of one SQL transaction, staged in memory and committed
//! together in one catalog-database transaction, so all land or none do.
//!
//! Each staged write is a [`TableChange`] (files added and removed) kept per table, plus
//! table creations and drops. [`apply`] shows a change to the transaction's own statements
//! (manifests and manifest list written, metadata kept in memory). [`commit_all`] re-applies
//! the changes to each table's *current* metadata (another commit may have landed since the
//! transaction read it: appends rebase cleanly; a change that removes a file that is gone
//! fails with 40001), writes the metadata files, and then, in one database transaction,
//! compare-and-swaps every table's catalog row, inserts the created ones and deletes the
//! dropped ones. A lost race rolls the database transaction back and starts over.

use std::str::FromStr;

use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{MetadataLocation, TableIdent};
use rxgate_common::{Error, Result, StatusCode};
use uuid::Uuid;

use crate::commit::{stage, CommitOutcome, TableChange};
use crate::Lakehouse;

/// What a transaction does to one table at COMMIT.
#[derive(Debug, Clone)]
pub enum Pending {
    /// Create it (a table built by [`crate::ddl::prepare_table`]), with these changes.
    Create {
        /// The unregistered table.
        table: Box<Table>,
        /// Its staged changes, in order.
        changes: Vec<TableChange>,
    },
    /// Change an existing table.
    Change {
        /// Its staged changes, in order.
        changes: Vec<TableChange>,
    },
    /// Drop it (with `purge`, its files too, once the commit has landed).
    Drop {
        /// `PURGE`.
        purge: bool,
    },
}

/// `table` with `change` applied in memory: what the transaction's own statements read.
pub async fn apply(table: &Table, change: &TableChange) -> Result<(Table, CommitOutcome)> {
    let staged = stage(table, change, Uuid::new_v4(), 1).await?;
    Ok((with_metadata(table, staged.metadata)?, staged.outcome))
}

fn with_metadata(table: &Table, metadata: TableMetadata) -> Result<Table> {
    let mut builder = Table::builder()
        .file_io(table.file_io().clone())
        .identifier(table.identifier().clone())
        .metadata(metadata)
        .runtime(iceberg::Runtime::current());
    if let Some(location) = table.metadata_location() {
        builder = builder.metadata_location(location);
    }
    Ok(builder.build()?)
}

/// Applies `changes` in order; the final metadata.
async fn apply_all(table: &Table, changes: &[TableChange]) -> Result<TableMetadata> {
    let mut current = table.clone();
    for change in changes {
        current = apply(&current, change).await?.0;
    }
    Ok(current.metadata().clone())
}

const MAX_ATTEMPTS: u32 = 8;

/// One change of a catalog row, the way the SQL catalog keeps them (`iceberg_tables`): every
/// commit, creation and drop of rxgate goes through [`run_steps`].
pub(crate) enum Step {
    /// Compare-and-swap the metadata location (`UPDATE … WHERE metadata_location = old`).
    Swap { ident: TableIdent, old: String, new: String },
    /// A new table's row (a unique violation is 42P07).
    Insert { ident: TableIdent, location: String },
    /// A dropped table's row, if it still points at `old`; `purge`: its files go afterwards.
    Delete { ident: TableIdent, old: String, purge: Option<Table> },
}

/// Commits every pending table change at once. Returns the new snapshot of each changed or
/// created table (`None` for drops and for tables whose changes added no snapshot).
pub async fn commit_all(lake: &Lakehouse, pending: &[(TableIdent, Pending)]) -> Result<Vec<Option<i64>>> {
    rxgate_common::failpoint("write.before_commit");
    for attempt in 1..=MAX_ATTEMPTS {
        let mut steps = vec![];
        let mut snapshots = vec![];
        for (ident, p) in pending {
            match p {
                Pending::Create { table, changes } => {
                    let md = apply_all(table, changes).await?;
                    snapshots.push(md.current_snapshot_id());
                    let location = MetadataLocation::new_with_metadata(md.location(), &md);
                    md.write_to(table.file_io(), &location).await?;
                    steps.push(Step::Insert { ident: ident.clone(), location: location.to_string() });
                }
                Pending::Change { changes } => {
                    let table = lake.catalog().load_table(ident).await?;
                    let old = table.metadata_location().ok_or_else(|| Error::internal("no metadata location"))?;
                    let md = apply_all(&table, changes).await?;
                    snapshots.push(md.current_snapshot_id());
                    let new = MetadataLocation::from_str(old)?.with_next_version().with_new_metadata(&md);
                    md.write_to(table.file_io(), &new).await?;
                    steps.push(Step::Swap { ident: ident.clone(), old: old.to_string(), new: new.to_string() });
                }
                Pending::Drop { purge } => {
                    snapshots.push(None);
                    let table = lake.catalog().load_table(ident).await?;
                    let old = table.metadata_location().ok_or_else(|| Error::internal("no metadata location"))?;
                    let old = old.to_string();
                    steps.push(Step::Delete { ident: ident.clone(), old, purge: purge.then_some(table) });
                }
            }
        }
        if run_steps(lake, &steps).await? {
            if steps.iter().any(|s| !matches!(s, Step::Swap { .. })) {
                lake.bump_ddl_version();
            }
            for step in steps {
                if let Step::Delete { purge: Some(table), .. } = step {
                    if let Err(e) = iceberg::drop_table_data(&table).await {
                        tracing::warn!(table = %table.identifier(), error = %e, "dropped, but its files were not all removed");
                    }
                }
            }
            return Ok(snapshots);
        }
        tracing::info!(attempt, "transaction commit conflict, retrying on the fresh tables");
        rxgate_common::metrics::record_commit_conflict(true);
        tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
    }
    rxgate_common::metrics::record_commit_conflict(false);
    Err(Error::new(StatusCode::CommitConflict, format!("gave up after {MAX_ATTEMPTS} conflicting commits")))
}

/// Runs the steps in one database transaction; `Ok(false)`: a row had moved (rolled back).
pub(crate) async fn run_steps(lake: &Lakehouse, steps: &[Step]) -> Result<bool> {
    let db = |e: sqlx::Error| crate::lakehouse::catalog_db_error(&lake.config().uri, &e).context("commit");
    let pg = lake.config().is_postgres();
    let bind = |sql: &str| {
        if pg {
            sql.to_string()
        } else {
            (1..=6).rev().fold(sql.to_string(), |s, i| s.replace(&format!("${i}"), "?"))
        }
    };
    let name = &lake.config().name;
    let mut tx = lake.pool().begin().await.map_err(db)?;
    for step in steps {
        let done = match step {
            Step::Swap { ident, old, new } => sqlx::query(&bind(
                "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 \
                 WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 AND metadata_location = $6",
            ))
            .bind(new)
            .bind(old)
            .bind(name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected(),
            Step::Insert { ident, location } => match sqlx::query(&bind(
                "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, iceberg_type) \
                 VALUES ($1, $2, $3, $4, 'TABLE')",
            ))
            .bind(name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(location)
            .execute(&mut *tx)
            .await
            {
                Ok(r) => r.rows_affected(),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(Error::new(StatusCode::AlreadyExists, format!("relation \"{ident}\" already exists")))
                }
                Err(e) => return Err(db(e)),
            },
            Step::Delete { ident, old, .. } => sqlx::query(&bind(
                "DELETE FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3 \
                 AND metadata_location = $4",
            ))
            .bind(name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected(),
        };
        if done == 0 {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(true)
}
