//! The types every part of the statement path shares: a planned statement ([`Planned`]), what
//! the audit trail records of it ([`StatementInfo`]) and what running it produces
//! ([`QueryOutput`]). This module imports no command and no session.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, LogicalPlan};
use rxgate_common::Identity;

use crate::audit::AuditRecord;
use crate::cursor::CopyOptions;
use crate::secure::Applied;
use crate::statement::Command;

/// What running one statement produced.
pub enum QueryOutput {
    /// A result set, streamed.
    Rows {
        /// Result schema.
        schema: SchemaRef,
        /// Batches, produced as the client reads them.
        stream: SendableRecordBatchStream,
    },
    /// A command without rows, with its completion tag (`SET`, …).
    Command {
        /// Completion tag.
        tag: String,
    },
    /// `BEGIN` / `START TRANSACTION`.
    TransactionStart,
    /// `COMMIT` (true) or `ROLLBACK` (false).
    TransactionEnd {
        /// Whether the transaction committed.
        commit: bool,
    },
    /// Rows of a `FETCH` from a cursor (completion tag `FETCH n`).
    Fetched {
        /// Result schema.
        schema: SchemaRef,
        /// The fetched rows, produced as the client reads them.
        stream: SendableRecordBatchStream,
    },
    /// Rows of `COPY … TO STDOUT`, to be written in the COPY format of `options`.
    Copy {
        /// Result schema.
        schema: SchemaRef,
        /// Rows, produced as the client reads them.
        stream: SendableRecordBatchStream,
        /// Format, delimiter, NULL string, header.
        options: CopyOptions,
    },
    /// `COPY … FROM STDIN` ready for the client's data: the frontend feeds it and finishes it.
    CopyIn(Box<crate::commands::copy_in::CopyIn>),
    /// A write committed (DDL with rows, DML): its completion tag (`INSERT 0 n`, `DELETE n`),
    /// the table, the rows affected and the snapshot committed (none when nothing changed).
    Written {
        /// Completion tag.
        tag: String,
        /// `schema.table` written.
        table: String,
        /// Rows inserted, deleted or created.
        rows: u64,
        /// The snapshot the write committed.
        snapshot_id: Option<i64>,
    },
    /// An empty statement.
    Empty,
}

/// One statement, planned and ready to execute (possibly several times with parameters).
// One value per statement: boxing the plan would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Planned {
    /// A DataFusion plan (queries, EXPLAIN, transactions), with the output schema the client
    /// sees when its column names differ from the plan's (PostgreSQL names `count(*)`
    /// "count", an unnamed expression "?column?").
    Plan(LogicalPlan, Option<SchemaRef>, Vec<Option<DataType>>, Option<Box<LogicalPlan>>),
    /// A statement the engine runs itself, with the schema of the rows it returns.
    Command(Command, Option<SchemaRef>),
    /// `DECLARE name CURSOR [WITH HOLD] FOR query`.
    Declare {
        /// Cursor name.
        name: String,
        /// The query whose rows the cursor returns.
        query: Box<Planned>,
        /// `WITH HOLD`: the cursor outlives the transaction.
        hold: bool,
    },
    /// `FETCH`.
    Fetch {
        /// Cursor name.
        name: String,
        /// Rows to fetch; `None` for all that remain.
        count: Option<u64>,
        /// The cursor's row schema.
        schema: SchemaRef,
    },
    /// `COPY (query) TO STDOUT`: the query, and how to write its rows.
    Copy(Box<Planned>, CopyOptions),
    /// A write the engine runs itself (DDL, DML), with the planned query whose rows it
    /// writes (INSERT's source brought to the table's columns, CTAS's query).
    Write {
        /// The statement.
        command: Command,
        /// Its rows' query.
        source: Option<Box<Planned>>,
    },
    /// A client's statement as [`EngineSession::plan`] returns it: the planned statement and
    /// what its audit record says of it (text, tables, columns, masks, row filters).
    Audited(Box<Planned>, Arc<StatementInfo>),
    /// Nothing to do.
    Empty,
}

/// What the audit trail records of a planned statement.
#[derive(Debug, Clone, Default)]
pub struct StatementInfo {
    /// The statement text.
    pub sql: String,
    /// Tables it reads.
    pub tables: Vec<String>,
    /// Columns it names.
    pub columns: Vec<String>,
    /// Masks applied (`schema.table.column: mask`).
    pub masks: Vec<String>,
    /// Row filters applied (`schema.table: predicate`).
    pub row_filters: Vec<String>,
    /// Whether a table is read through a mask or a row filter ([`Applied::hides`]).
    pub hides: bool,
}

impl StatementInfo {
    /// What `planned` reads, and the policies `applied` to it.
    pub(crate) fn new(sql: &str, planned: &Planned, applied: &[Applied]) -> Self {
        let (mut tables, mut columns) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        let mut plans: Vec<&LogicalPlan> = vec![];
        let mut stack = vec![planned];
        while let Some(p) = stack.pop() {
            match p {
                Planned::Plan(plan, ..) => plans.push(plan),
                Planned::Copy(q, _) | Planned::Audited(q, _) => stack.push(q),
                Planned::Declare { query, .. } => stack.push(query),
                Planned::Write { source: Some(q), .. } => stack.push(q),
                _ => {}
            }
        }
        for plan in plans {
            let _ = plan.apply_with_subqueries(|node| {
                if let LogicalPlan::TableScan(scan) = node {
                    tables.insert(scan.table_name.to_string());
                }
                let _ = node.apply_expressions(|e| {
                    let _ = e.apply(|e| {
                        if let Expr::Column(c) = e {
                            if c.relation.is_some() {
                                columns.insert(c.flat_name());
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    });
                    Ok(TreeNodeRecursion::Continue)
                });
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Self {
            sql: sql.to_string(),
            tables: tables.into_iter().collect(),
            columns: columns.into_iter().collect(),
            masks: applied.iter().flat_map(|a| a.masks.iter().map(move |m| format!("{}.{m}", a.table))).collect(),
            row_filters: applied
                .iter()
                .filter_map(|a| a.row_filter.as_ref().map(|f| format!("{}: {f}", a.table)))
                .collect(),
            hides: applied.iter().any(Applied::hides),
        }
    }

    /// The audit record of this statement, run by `identity` with `roles`.
    pub(crate) fn record(&self, identity: &Identity, roles: &[String]) -> AuditRecord {
        let mut r = AuditRecord::statement(identity, roles, &self.sql);
        r.tables = self.tables.clone();
        r.columns = self.columns.clone();
        r.masks = self.masks.clone();
        r.row_filters = self.row_filters.clone();
        r
    }
}

impl Planned {
    /// The statement itself, without its audit wrapper.
    pub(crate) fn unwrapped(&self) -> &Planned {
        match self {
            Planned::Audited(p, _) => p.unwrapped(),
            p => p,
        }
    }

    /// Result schema of this statement, if it returns rows.
    pub fn schema(&self) -> Option<SchemaRef> {
        match self.unwrapped() {
            Planned::Plan(_, Some(s), ..) => Some(s.clone()),
            Planned::Plan(p, None, ..) if returns_rows(p) => Some(p.schema().inner().clone()),
            Planned::Command(_, schema) => schema.clone(),
            Planned::Fetch { schema, .. } => Some(schema.clone()),
            _ => None,
        }
    }

    /// Types of `$1..$n` in order: as the plan infers them, else as the statement casts them
    /// (`$1::int`), else unknown.
    pub fn parameter_types(&self) -> Vec<Option<DataType>> {
        if let Planned::Write { source: Some(source), .. } = self.unwrapped() {
            return source.parameter_types();
        }
        let Planned::Plan(plan, _, hints, _) = self.unwrapped() else { return vec![] };
        let inferred: std::collections::BTreeMap<usize, Option<DataType>> = plan
            .get_parameter_types()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| k.trim_start_matches('$').parse::<usize>().ok().map(|i| (i, v)))
            .collect();
        let n = inferred.keys().max().copied().unwrap_or(0).max(hints.len());
        (1..=n).map(|i| inferred.get(&i).cloned().flatten().or_else(|| hints.get(i - 1).cloned().flatten())).collect()
    }

    /// Whether the statement answers with rows (a query, EXPLAIN, FETCH, SHOW …), not with a
    /// command tag, a transaction change, a COPY or nothing.
    pub fn returns_rows(&self) -> bool {
        self.schema().is_some()
    }

    /// The DataFusion plan, if this statement has one.
    pub fn logical_plan(&self) -> Option<&LogicalPlan> {
        match self.unwrapped() {
            Planned::Plan(p, ..) => Some(p),
            _ => None,
        }
    }
}

/// Whether a DataFusion plan answers with rows.
pub(crate) fn returns_rows(plan: &LogicalPlan) -> bool {
    !matches!(plan, LogicalPlan::Statement(_) | LogicalPlan::Ddl(_) | LogicalPlan::Dml(_))
}

/// The rows of `SHOW name` (`None`: `SHOW ALL`).
pub(crate) fn show_schema(name: Option<&str>) -> SchemaRef {
    Arc::new(match name {
        None => Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, true),
            Field::new("description", DataType::Utf8, true),
        ]),
        Some(n) => Schema::new(vec![Field::new(n, DataType::Utf8, true)]),
    })
}
