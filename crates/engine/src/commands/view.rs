//! Views: `CREATE [OR REPLACE] VIEW` and `DROP VIEW`, kept in the catalog database
//! (`rxgate_catalog::views`) and expanded when a statement names them (`crate::views`).
//!
//! **Policy.** Creating needs `create` in the schema, dropping `drop` on the view; the query is
//! planned under the creator's policy (it must be able to read what it names). A view runs
//! with the invoker's rights unless an administrator created it `SECURITY DEFINER`; either way
//! a session needs a grant on the view's own name to see it. A view that would refer to itself
//! (through `OR REPLACE`, directly or through other views) is 42P17.

use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use iceberg::{NamespaceIdent, TableIdent};
use rxgate_catalog::views::{ViewColumn, ViewDef, ViewSecurity};
use rxgate_common::{Error, Result, StatusCode};
use rxgate_policy::Privilege;

use super::write::Writes;
use super::{denied, is_engine_schema, qualify, require, tag};
use crate::planned::{Planned, QueryOutput};
use crate::secure::Guard;
use crate::statement::{Command, ViewCommand};

/// Plans a view statement: names qualified, privileges checked, and for CREATE the output
/// columns read from `source`, the query planned under the session's policy.
pub(crate) fn plan(
    ctx: &SessionContext,
    guard: &Guard,
    mut cmd: ViewCommand,
    source: Option<Box<Planned>>,
    is_admin: bool,
) -> Result<Planned> {
    match &mut cmd {
        ViewCommand::Create { view, columns, security, output, .. } => {
            let (schema, name) = qualify(ctx, view)?;
            if is_engine_schema(&schema) {
                return Err(Error::new(
                    StatusCode::PermissionDenied,
                    format!("cannot create views in schema {schema}, which belongs to rxgate"),
                ));
            }
            require(ctx, guard, Privilege::Create, &schema, &name, &format!("schema {schema}"))?;
            if *security == ViewSecurity::Definer && !is_admin {
                return Err(denied("CREATE VIEW … SECURITY DEFINER"));
            }
            let qualified = format!("{schema}.{name}");
            if guard.expanded_views().contains(&qualified) {
                return Err(Error::new(
                    StatusCode::InvalidObjectDefinition,
                    format!("infinite recursion detected: view {qualified} would refer to itself"),
                ));
            }
            *output = output_columns(source.as_deref(), columns)?;
        }
        ViewCommand::Drop { views, .. } => {
            for view in views.iter() {
                let (schema, name) = qualify(ctx, view)?;
                require(ctx, guard, Privilege::Drop, &schema, &name, &format!("view {schema}.{name}"))?;
            }
        }
    }
    Ok(Planned::Write { command: Command::View(cmd), source: None })
}

/// The view's columns: the query's output (PostgreSQL's names), renamed by the column list.
fn output_columns(source: Option<&Planned>, names: &[String]) -> Result<Vec<ViewColumn>> {
    let Some(Planned::Plan(plan, renamed, ..)) = source.map(Planned::unwrapped) else {
        return Err(Error::new(StatusCode::Unsupported, "a view needs a query that returns rows"));
    };
    if plan.get_parameter_types().map(|p| !p.is_empty()).unwrap_or(true) {
        return Err(Error::new(StatusCode::InvalidArgument, "a view's query cannot have parameters"));
    }
    let schema = renamed.clone().unwrap_or_else(|| std::sync::Arc::new(plan.schema().as_arrow().clone()));
    if names.len() > schema.fields().len() {
        return Err(Error::new(
            StatusCode::SyntaxError,
            "CREATE VIEW specifies more column names than columns".to_string(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = names.get(i).cloned().unwrap_or_else(|| f.name().clone());
            if !seen.insert(name.clone()) {
                return Err(Error::new(
                    StatusCode::AlreadyExists,
                    format!("column \"{name}\" specified more than once"),
                ));
            }
            let data_type = match f.data_type() {
                DataType::Null => DataType::Utf8,
                t => t.clone(),
            };
            Ok(ViewColumn { name, data_type: data_type.to_string() })
        })
        .collect()
}

/// Runs a planned view statement (never inside a transaction block: 25001).
pub(crate) async fn execute(
    ctx: &SessionContext,
    writes: &Writes,
    cmd: &ViewCommand,
    owner: &str,
    owner_roles: &[String],
) -> Result<QueryOutput> {
    let lake = &writes.lake;
    match cmd {
        ViewCommand::Create { view, or_replace, if_not_exists, query, security, comment, output, .. } => {
            writes.outside_transaction("CREATE VIEW")?;
            let (schema, name) = qualify(ctx, view)?;
            let namespace = NamespaceIdent::from_strs(schema.split('.'))?;
            if !lake.catalog().namespace_exists(&namespace).await? {
                return Err(Error::new(StatusCode::SchemaNotFound, format!("schema \"{schema}\" does not exist")));
            }
            if writes.table(&TableIdent::new(namespace, name.clone())).await?.is_some()
                || lake.external().get(&schema, &name).await?.is_some()
            {
                // As PostgreSQL: replacing a table is the wrong kind of object, creating one
                // over it a name in use.
                return Err(if *or_replace {
                    Error::new(StatusCode::WrongObjectType, format!("\"{schema}.{name}\" is a table, not a view"))
                } else {
                    Error::new(StatusCode::AlreadyExists, format!("relation \"{schema}.{name}\" already exists"))
                });
            }
            let def = ViewDef {
                namespace: schema.clone(),
                name: name.clone(),
                query: query.to_string(),
                columns: output.clone(),
                security: *security,
                owner: owner.to_string(),
                owner_roles: owner_roles.to_vec(),
                search_schema: ctx.state().config().options().catalog.default_schema.clone(),
                comment: comment.clone(),
            };
            if !lake.views().create(&def, *or_replace).await? && !*if_not_exists {
                return Err(Error::new(
                    StatusCode::AlreadyExists,
                    format!("relation \"{schema}.{name}\" already exists"),
                ));
            }
            lake.bump_ddl_version();
            tag("CREATE VIEW")
        }
        ViewCommand::Drop { views, if_exists } => {
            writes.outside_transaction("DROP VIEW")?;
            // All names checked first: one that is wrong drops none.
            let mut found = vec![];
            for view in views {
                let (schema, name) = qualify(ctx, view)?;
                if lake.views().get(&schema, &name).await?.is_some() {
                    found.push((schema, name));
                    continue;
                }
                let ident = TableIdent::new(NamespaceIdent::from_strs(schema.split('.'))?, name.clone());
                if writes.table(&ident).await?.is_some() || lake.external().get(&schema, &name).await?.is_some() {
                    return Err(Error::new(
                        StatusCode::WrongObjectType,
                        format!("\"{schema}.{name}\" is not a view; use DROP TABLE"),
                    ));
                }
                if !*if_exists {
                    return Err(Error::new(
                        StatusCode::TableNotFound,
                        format!("view \"{schema}.{name}\" does not exist"),
                    ));
                }
            }
            for (schema, name) in &found {
                lake.views().drop_view(schema, name).await?;
            }
            lake.bump_ddl_version();
            tag("DROP VIEW")
        }
    }
}

/// 42809 when `schema.name` is a view: a statement that needs a table (DROP TABLE, INSERT,
/// DELETE, …) names one.
pub(crate) async fn refuse_view(writes: &Writes, schema: &str, name: &str, what: &str) -> Result<()> {
    if writes.lake.views().get(schema, name).await?.is_some() {
        return Err(Error::new(
            StatusCode::WrongObjectType,
            format!(
                "\"{schema}.{name}\" is a view: cannot {what} it{}",
                if what == "drop" { " with DROP TABLE; use DROP VIEW" } else { "" }
            ),
        ));
    }
    Ok(())
}
