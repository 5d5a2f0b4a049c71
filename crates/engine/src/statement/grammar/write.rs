//! The write statements: DDL (schemas, tables) and DML (INSERT, DELETE, TRUNCATE), read by
//! sqlparser's PostgreSQL grammar and named here; `CREATE TABLE`'s Spark/Hive
//! `PARTITIONED BY (…)` (transforms, or Hive's typed partition columns) and `USING` are cut
//! out of the tokens first and read with the [`Cur`], since PostgreSQL has neither.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    AlterTableOperation, ColumnOption, CreateTable, CreateTableOptions, Expr, FromTable, ObjectName, ObjectType,
    RenameTableNameKind, SchemaName, SqlOption, Statement as SqlStatement, TableFactor, TableObject, Value,
};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use rxgate_common::{Error, Result, StatusCode};

use super::sql::pg_ident;
use super::{is_kw, Cur, Parsed};
use crate::statement::ast::{DdlCommand, DmlCommand, NewColumn, PartitionField, PartitionTransform};
use crate::statement::dialect::{syntax, RxDialect};
use crate::statement::{Command, Statement};

fn unsupported<T>(m: impl Into<String>) -> Result<T> {
    Err(Error::new(StatusCode::Unsupported, m.into()))
}

/// A name's parts as the planner sees them: unquoted lower-cased, quoted exact.
pub(super) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0.iter().filter_map(|p| p.as_ident()).map(pg_ident).collect()
}

/// `CREATE [OR REPLACE] TABLE …` (not EXTERNAL): the Spark clauses cut out, the rest read by
/// sqlparser.
pub(super) fn create_table(mut tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    let mut partition = vec![];
    let mut extra_columns = vec![];
    let mut depth = 0i32;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && is_kw(t, "PARTITIONED") => {
                let end = clause_end(&tokens, i)?;
                let mut c = Cur::new(&tokens[i..end]);
                c.expect_kw("PARTITIONED").and_then(|()| c.expect_kw("BY")).map_err(syntax)?;
                partition_list(&mut c, &mut partition, &mut extra_columns).map_err(syntax)?;
                tokens.drain(i..end);
                continue;
            }
            t if depth == 0 && is_kw(t, "USING") => {
                let mut j = i + 1;
                while matches!(tokens.get(j).map(|t| &t.token), Some(Token::Whitespace(_))) {
                    j += 1;
                }
                match tokens.get(j).map(|t| &t.token) {
                    Some(t @ Token::Word(_)) if is_kw(t, "ICEBERG") || is_kw(t, "PARQUET") => {}
                    Some(t) => return unsupported(format!("USING {t}: rxgate creates Iceberg tables (USING iceberg)")),
                    None => return Err(syntax("expected a table format after USING")),
                }
                tokens.drain(i..=j);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let stmt = super::sql::parse(tokens)?;
    let SqlStatement::CreateTable(ct) = stmt else {
        return Err(syntax("expected CREATE TABLE"));
    };
    create_table_command(ct, partition, extra_columns)
}

/// The token after a `PARTITIONED BY (…)` clause starting at `start`.
fn clause_end(tokens: &[TokenWithSpan], start: usize) -> Result<usize> {
    let mut depth = 0i32;
    let mut seen = false;
    for (k, t) in tokens.iter().enumerate().skip(start) {
        match t.token {
            Token::LParen => {
                depth += 1;
                seen = true;
            }
            Token::RParen => {
                depth -= 1;
                if depth == 0 && seen {
                    return Ok(k + 1);
                }
            }
            _ => {}
        }
    }
    Err(syntax("PARTITIONED BY needs a parenthesized list"))
}

/// `( item, … )` of PARTITIONED BY: `col`, `transform(col)`, `bucket(n, col)`,
/// `truncate(w, col)`, or Hive's `col TYPE` (a partition column declared there).
fn partition_list(c: &mut Cur, out: &mut Vec<PartitionField>, columns: &mut Vec<NewColumn>) -> Parsed<()> {
    c.expect(&Token::LParen, "(")?;
    loop {
        let name = c.expect_ident()?;
        if c.tok(&Token::LParen) {
            let mut args = vec![];
            loop {
                if let Some(n) = c.integer() {
                    args.push(Err(n));
                } else {
                    args.push(Ok(c.expect_ident()?));
                }
                if !c.tok(&Token::Comma) {
                    break;
                }
            }
            c.expect(&Token::RParen, ")")?;
            out.push(transform(&name, &args)?);
        } else if matches!(c.peek(), Some(Token::Comma | Token::RParen)) {
            out.push(PartitionField { column: name, transform: PartitionTransform::Identity });
        } else {
            // Hive: a typed partition column, added to the table's columns.
            let start = c.pos;
            let mut depth = 0;
            while let Some(t) = c.peek() {
                match t {
                    Token::LParen => depth += 1,
                    Token::RParen if depth == 0 => break,
                    Token::RParen => depth -= 1,
                    Token::Comma if depth == 0 => break,
                    _ => {}
                }
                c.pos += 1;
            }
            let type_tokens: Vec<TokenWithSpan> =
                c.toks[start..c.pos].iter().map(|t| TokenWithSpan::wrap(t.clone())).collect();
            let data_type = Parser::new(&RxDialect)
                .with_tokens_with_locations(type_tokens)
                .parse_data_type()
                .map_err(|e| format!("partition column {name}: {e}"))?;
            columns.push(NewColumn { name: name.clone(), data_type, not_null: false, comment: None });
            out.push(PartitionField { column: name, transform: PartitionTransform::Identity });
        }
        if !c.tok(&Token::Comma) {
            break;
        }
    }
    c.expect(&Token::RParen, ")")
}

/// A transform by name over its arguments (`Ok(column)`, `Err(number)`), in Spark's order
/// (`bucket(16, id)`) or Trino's (`bucket(id, 16)`).
fn transform(name: &str, args: &[std::result::Result<String, i64>]) -> Parsed<PartitionField> {
    let column = args.iter().find_map(|a| a.as_ref().ok().cloned());
    let number = args.iter().find_map(|a| a.as_ref().err().copied());
    let (Some(column), n_args) = (column, args.len()) else {
        return Err(format!("{name}(…) needs a column"));
    };
    let width = || -> Parsed<u32> {
        match number {
            Some(n) if n > 0 && n <= i64::from(i32::MAX) && n_args == 2 => Ok(n as u32),
            _ => Err(format!("{name}(…) needs a positive number and a column")),
        }
    };
    let transform = match name.to_ascii_lowercase().as_str() {
        "identity" if n_args == 1 => PartitionTransform::Identity,
        "years" | "year" if n_args == 1 => PartitionTransform::Year,
        "months" | "month" if n_args == 1 => PartitionTransform::Month,
        "days" | "day" | "date" if n_args == 1 => PartitionTransform::Day,
        "hours" | "hour" | "date_hour" if n_args == 1 => PartitionTransform::Hour,
        "bucket" => PartitionTransform::Bucket(width()?),
        "truncate" | "trunc" => PartitionTransform::Truncate(width()?),
        other => return Err(format!("unknown partition transform {other}({} arguments)", n_args)),
    };
    Ok(PartitionField { column, transform })
}

/// Trino's `partitioning = ARRAY['day(ts)', 'bucket(id, 16)', 'region']`.
fn trino_partitioning(value: &Expr, out: &mut Vec<PartitionField>) -> Result<()> {
    let Expr::Array(array) = value else {
        return Err(syntax("partitioning must be an ARRAY['…', …] of partition fields"));
    };
    for e in &array.elem {
        let Expr::Value(v) = e else { return Err(syntax("partitioning items are string literals")) };
        let Value::SingleQuotedString(text) = &v.value else {
            return Err(syntax("partitioning items are string literals"));
        };
        let tokens = crate::statement::dialect::tokenize(&format!("({text})"))?;
        let mut c = Cur::new(&tokens);
        let mut columns = vec![];
        partition_list(&mut c, out, &mut columns).and_then(|()| c.end()).map_err(syntax)?;
        if !columns.is_empty() {
            return Err(syntax(format!("partitioning item '{text}' is not a column or a transform")));
        }
    }
    Ok(())
}

/// A SQL option's value as text (`'v'`, `v`, `1`, `true`).
fn option_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn create_table_command(
    ct: CreateTable,
    mut partition: Vec<PartitionField>,
    extra_columns: Vec<NewColumn>,
) -> Result<Statement> {
    if ct.or_replace || ct.temporary || ct.like.is_some() || ct.clone.is_some() || ct.location.is_some() {
        return unsupported(
            "CREATE TABLE supports IF NOT EXISTS, columns, PARTITIONED BY, TBLPROPERTIES / WITH and AS query",
        );
    }
    if !ct.constraints.is_empty() {
        return unsupported("table constraints (PRIMARY KEY, UNIQUE, FOREIGN KEY, CHECK) are not supported");
    }
    let mut columns = vec![];
    for c in &ct.columns {
        let mut column =
            NewColumn { name: pg_ident(&c.name), data_type: c.data_type.clone(), not_null: false, comment: None };
        for o in &c.options {
            match &o.option {
                ColumnOption::NotNull => column.not_null = true,
                ColumnOption::Null => {}
                ColumnOption::Comment(text) => column.comment = Some(text.clone()),
                other => return unsupported(format!("column option {other} is not supported")),
            }
        }
        columns.push(column);
    }
    columns.extend(extra_columns);
    let mut properties = BTreeMap::new();
    let options: &[SqlOption] = match &ct.table_options {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(o) | CreateTableOptions::TableProperties(o) | CreateTableOptions::Options(o) => o,
        CreateTableOptions::Plain(_) => return unsupported("table options other than TBLPROPERTIES / WITH"),
    };
    for o in options {
        let SqlOption::KeyValue { key, value } = o else {
            return unsupported(format!("table option {o} is not supported"));
        };
        let key = key.value.clone();
        match key.to_ascii_lowercase().as_str() {
            "partitioning" | "partitioned_by" => trino_partitioning(value, &mut partition)?,
            "format" | "write.format.default" if !option_text(value).eq_ignore_ascii_case("parquet") => {
                return unsupported(format!("table format {}: rxgate writes Parquet", option_text(value)));
            }
            "format" => {}
            _ => {
                properties.insert(key, option_text(value));
            }
        }
    }
    if let Some(comment) = &ct.comment {
        let text = match comment {
            datafusion::sql::sqlparser::ast::CommentDef::WithEq(t)
            | datafusion::sql::sqlparser::ast::CommentDef::WithoutEq(t) => t.clone(),
        };
        properties.insert("comment".into(), text);
    }
    if columns.is_empty() && ct.query.is_none() {
        return Err(syntax("CREATE TABLE needs columns or AS query"));
    }
    Ok(Statement::Command(Command::Ddl(DdlCommand::CreateTable {
        table: name_parts(&ct.name),
        if_not_exists: ct.if_not_exists,
        columns,
        partition,
        properties,
        query: ct.query,
    })))
}

/// Names a write statement sqlparser read; `None` for any other statement.
pub(super) fn named(stmt: &SqlStatement) -> Option<Result<Command>> {
    Some(match stmt {
        SqlStatement::CreateSchema { schema_name, if_not_exists, .. } => match schema_name {
            SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) => {
                single(name).map(|name| Command::Ddl(DdlCommand::CreateSchema { name, if_not_exists: *if_not_exists }))
            }
            SchemaName::UnnamedAuthorization(_) => unsupported("CREATE SCHEMA needs a name"),
        },
        SqlStatement::CreateDatabase { db_name, if_not_exists, location: None, managed_location: None, .. } => {
            single(db_name).map(|name| Command::Ddl(DdlCommand::CreateSchema { name, if_not_exists: *if_not_exists }))
        }
        SqlStatement::CreateDatabase { .. } => unsupported("CREATE DATABASE … LOCATION is not supported"),
        SqlStatement::Drop {
            object_type: ObjectType::Schema | ObjectType::Database,
            names,
            if_exists,
            cascade,
            ..
        } => match names.as_slice() {
            [name] => single(name)
                .map(|name| Command::Ddl(DdlCommand::DropSchema { name, if_exists: *if_exists, cascade: *cascade })),
            _ => unsupported("DROP SCHEMA of several schemas"),
        },
        SqlStatement::AlterTable(alter) => match alter.operations.as_slice() {
            [AlterTableOperation::RenameTable {
                table_name: RenameTableNameKind::To(to) | RenameTableNameKind::As(to),
            }] => Ok(Command::Ddl(DdlCommand::RenameTable { table: name_parts(&alter.name), to: name_parts(to) })),
            _ => return None,
        },
        SqlStatement::Insert(insert) => insert_command(insert),
        SqlStatement::Delete(delete) => {
            if delete.using.is_some()
                || delete.returning.is_some()
                || delete.limit.is_some()
                || !delete.tables.is_empty()
            {
                return Some(unsupported("DELETE supports FROM table [WHERE predicate]"));
            }
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            match from.as_slice() {
                [t] if t.joins.is_empty() => match &t.relation {
                    TableFactor::Table { name, alias: None, .. } => Ok(Command::Dml(DmlCommand::Delete {
                        table: name_parts(name),
                        predicate: delete.selection.clone().map(Box::new),
                    })),
                    _ => unsupported("DELETE supports one table, without an alias"),
                },
                _ => unsupported("DELETE supports one table"),
            }
        }
        SqlStatement::Truncate(t) => match t.table_names.as_slice() {
            [target] if t.partitions.is_none() => {
                Ok(Command::Dml(DmlCommand::Truncate { table: name_parts(&target.name) }))
            }
            _ => unsupported("TRUNCATE supports one table"),
        },
        SqlStatement::Update(update) => update_command(update),
        _ => return None,
    })
}

fn single(name: &ObjectName) -> Result<String> {
    match name_parts(name).as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::new(StatusCode::InvalidArgument, format!("schema name {name} must be one name"))),
    }
}

fn insert_command(insert: &datafusion::sql::sqlparser::ast::Insert) -> Result<Command> {
    let TableObject::TableName(name) = &insert.table else {
        return unsupported("INSERT INTO TABLE FUNCTION is not supported");
    };
    let mut constants = vec![];
    for e in insert.partitioned.iter().flatten() {
        match e {
            // Dynamic: the column comes from the query, like any other.
            Expr::Identifier(_) => {}
            Expr::BinaryOp { left, op: datafusion::sql::sqlparser::ast::BinaryOperator::Eq, right } => {
                let (Expr::Identifier(key), Expr::Value(v)) = (left.as_ref(), right.as_ref()) else {
                    return Err(syntax("PARTITION (…) takes key = 'value' or key"));
                };
                let value = match &v.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    Value::Number(n, _) => n.clone(),
                    other => return Err(syntax(format!("partition value {other} must be a literal"))),
                };
                let key = pg_ident(key);
                constants.push((key, value));
            }
            other => return Err(syntax(format!("PARTITION (…) takes key = 'value' or key, not {other}"))),
        }
    }
    if insert.on.is_some() || insert.returning.is_some() || insert.or.is_some() || insert.ignore {
        return unsupported("INSERT … ON CONFLICT / RETURNING is not supported");
    }
    let Some(source) = &insert.source else {
        return unsupported("INSERT needs VALUES or a query");
    };
    Ok(Command::Dml(DmlCommand::Insert {
        table: name_parts(name),
        columns: insert.columns.iter().map(pg_ident).collect(),
        source: source.clone(),
        overwrite: insert.overwrite,
        constants,
    }))
}

fn update_command(u: &datafusion::sql::sqlparser::ast::Update) -> Result<Command> {
    use datafusion::sql::sqlparser::ast::AssignmentTarget;
    if u.from.is_some() || u.returning.is_some() || u.limit.is_some() || u.or.is_some() || !u.table.joins.is_empty() {
        return unsupported("UPDATE supports one table, SET and WHERE");
    }
    let TableFactor::Table { name, alias: None, .. } = &u.table.relation else {
        return unsupported("UPDATE supports one table, without an alias");
    };
    let mut assignments = vec![];
    for a in &u.assignments {
        let AssignmentTarget::ColumnName(column) = &a.target else {
            return unsupported("UPDATE … SET (a, b) = … is not supported");
        };
        let Some(column) = name_parts(column).pop() else { return Err(syntax("UPDATE … SET needs a column")) };
        assignments.push((column, Box::new(a.value.clone())));
    }
    Ok(Command::Dml(DmlCommand::Update {
        table: name_parts(name),
        assignments,
        predicate: u.selection.clone().map(Box::new),
    }))
}
