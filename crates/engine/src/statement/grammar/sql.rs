//! Statements read by sqlparser's PostgreSQL grammar, named: session commands (SET, SHOW,
//! RESET, DISCARD, transactions), cursors (DECLARE, FETCH, CLOSE), `COPY … TO STDOUT`,
//! `DROP TABLE`, the write statements (`write`), and plain SQL.

use datafusion::sql::sqlparser::ast::{
    CloseCursor, CopySource, CopyTarget, DiscardObject, Expr, ObjectType, Reset, ResetStatement, Set,
    Statement as SqlStatement, Value, ValueWithSpan,
};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use rxgate_common::{Error, Result, StatusCode};

use crate::cursor::CopyOptions;
use crate::statement::dialect::{syntax, RxDialect};
use crate::statement::{Command, SessionCommand, SqlText, Statement};

/// Parses one statement with sqlparser over the statement's tokens.
pub(super) fn parse(tokens: Vec<TokenWithSpan>) -> Result<SqlStatement> {
    let mut parser = Parser::new(&RxDialect).with_tokens_with_locations(tokens);
    let stmt = parser.parse_statement().map_err(syntax)?;
    loop {
        match &parser.peek_token_ref().token {
            Token::EOF => return Ok(stmt),
            Token::SemiColon => {
                parser.advance_token();
                if parser.peek_token_ref().token != Token::EOF {
                    return Err(syntax("cannot insert multiple commands into a prepared statement"));
                }
            }
            _ => return parser.expected_ref("end of statement", parser.peek_token_ref()).map_err(syntax),
        }
    }
}

fn unsupported<T>(m: &str) -> Result<T> {
    Err(Error::new(StatusCode::Unsupported, m.to_string()))
}

/// Names a statement sqlparser read.
pub(super) fn statement(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    let stmt = match parse(tokens.clone()) {
        Ok(stmt) => stmt,
        // sqlparser reads `COPY … FROM STDIN` only with its data inline, after a `;`: the
        // data comes through the protocol instead, so give it an empty inline part.
        Err(e) if super::is_kw(first_word(&tokens), "COPY") => {
            let mut with_data = tokens;
            with_data.push(TokenWithSpan::wrap(Token::SemiColon));
            let mut parser = Parser::new(&RxDialect).with_tokens_with_locations(with_data);
            match parser.parse_statement() {
                Ok(stmt @ SqlStatement::Copy { to: false, .. }) => stmt,
                _ => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if let Some(cmd) = session_command(&stmt) {
        return Ok(Statement::Command(Command::Session(cmd)));
    }
    if let Some(cmd) = super::write::named(&stmt) {
        return cmd.map(Statement::Command);
    }
    if let Some(cmd) = super::view::named(&stmt) {
        return cmd.map(Statement::Command);
    }
    Ok(match stmt {
        SqlStatement::Declare { stmts } => {
            let [declare] = stmts.as_slice() else { return unsupported("DECLARE of several names") };
            let (Some(name), Some(query)) = (declare.names.first(), &declare.for_query) else {
                return unsupported("only DECLARE … CURSOR FOR query is supported");
            };
            if declare.binary == Some(true) {
                return unsupported("binary cursors are not supported");
            }
            if declare.scroll == Some(true) {
                return unsupported("cursor can only scan forward: declare it NO SCROLL");
            }
            Statement::Declare {
                name: name.value.clone(),
                query: Box::new(SqlText::new(SqlStatement::Query(query.clone()))),
                hold: declare.hold == Some(true),
            }
        }
        SqlStatement::Fetch { name, direction, into: None, .. } => {
            Statement::Fetch { name: name.value.clone(), count: crate::cursor::fetch_count(&direction)? }
        }
        SqlStatement::Close { cursor } => Statement::Command(Command::Session(SessionCommand::Close(match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(name.value.clone()),
        }))),
        SqlStatement::Copy { source, to, target, options, legacy_options, .. } => {
            if !to {
                let CopySource::Table { table_name, columns } = source else {
                    return unsupported("COPY (query) FROM is not a thing: COPY a table FROM STDIN");
                };
                if target != CopyTarget::Stdin {
                    return Err(Error::new(
                        StatusCode::PermissionDenied,
                        "COPY from a file or program is not allowed; use COPY … FROM STDIN (psql \\copy)",
                    ));
                }
                return Ok(Statement::Command(Command::Dml(crate::statement::DmlCommand::CopyFrom {
                    table: super::write::name_parts(&table_name),
                    columns: columns.iter().map(pg_ident).collect(),
                    options: CopyOptions::parse(&options, &legacy_options)?,
                })));
            }
            if target != CopyTarget::Stdout {
                return Err(Error::new(
                    StatusCode::PermissionDenied,
                    "COPY to a file or program is not allowed; use COPY … TO STDOUT (psql \\copy)",
                ));
            }
            let options = CopyOptions::parse(&options, &legacy_options)?;
            let query = match source {
                CopySource::Query(q) => SqlStatement::Query(q),
                CopySource::Table { table_name, columns } => {
                    let cols = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
                    };
                    let sql = format!("SELECT {cols} FROM {table_name}");
                    parse(super::super::dialect::tokenize(&sql)?)?
                }
            };
            Statement::Copy { query: Box::new(SqlText::new(query)), options }
        }
        SqlStatement::Drop { object_type: ObjectType::Table, ref names, if_exists, purge, .. } if names.len() == 1 => {
            Statement::DropTable { table: super::write::name_parts(&names[0]), if_exists, purge }
        }
        other => Statement::Sql(Box::new(SqlText::new(other))),
    })
}

/// The statement's first meaningful token.
fn first_word(tokens: &[TokenWithSpan]) -> &Token {
    tokens.iter().map(|t| &t.token).find(|t| !matches!(t, Token::Whitespace(_))).unwrap_or(&Token::EOF)
}

/// Text of a `SET` value: `'x'` → x, `x` → x, `1` → 1; `DEFAULT` → `None`.
fn value_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(ValueWithSpan { value: Value::SingleQuotedString(s), .. }) => Some(s.clone()),
        Expr::Value(ValueWithSpan { value: Value::Number(n, _), .. }) => Some(n.to_string()),
        Expr::Value(ValueWithSpan { value: Value::Boolean(b), .. }) => Some(if *b { "on" } else { "off" }.into()),
        Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") => None,
        Expr::Identifier(i) => Some(i.value.clone()),
        other => Some(other.to_string()),
    }
}

/// A dotted name as DataFusion reads it: the identifiers' values joined with `.` (so a quoted
/// `"datafusion.runtime.memory_limit"` is the same option as the unquoted one).
fn name_text(name: &datafusion::sql::sqlparser::ast::ObjectName) -> String {
    name.0.iter().map(|p| p.as_ident().map(|i| i.value.clone()).unwrap_or_default()).collect::<Vec<_>>().join(".")
}

/// An identifier as PostgreSQL folds it: unquoted names are lower-cased.
pub(super) fn pg_ident(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if i.quote_style.is_none() {
        i.value.to_lowercase()
    } else {
        i.value.clone()
    }
}

/// The session command a statement is, if it is one. `SHOW datafusion.…` and `SET
/// datafusion.…` of an option sessions may change (`settings::DATAFUSION_SETTABLE`) go to
/// DataFusion; a `SET` of any other `datafusion.…` option, `SET ROLE` and `SET SESSION
/// AUTHORIZATION` become [`SessionCommand::Set`]s that `SessionSettings::set` checks (42501).
fn session_command(stmt: &SqlStatement) -> Option<SessionCommand> {
    let set = |name: &str, value: Option<String>| Some(SessionCommand::Set { name: name.to_string(), value });
    match stmt {
        SqlStatement::Set(Set::SingleAssignment { variable, values, .. }) => {
            // The name as DataFusion reads it: the identifiers' values joined, lower-case
            // (`"datafusion.runtime.memory_limit"` quoted is the same option).
            if let Some(key) = crate::settings::datafusion_key(&name_text(variable)) {
                if crate::settings::check_datafusion_settable(&key).is_ok() {
                    return None;
                }
                let value = values.first().and_then(value_text);
                return set(&key, Some(value.unwrap_or_default()));
            }
            let name = variable.to_string();
            let texts: Vec<Option<String>> = values.iter().map(value_text).collect();
            let value = if texts.iter().any(Option::is_none) {
                None
            } else {
                Some(texts.into_iter().flatten().collect::<Vec<_>>().join(", "))
            };
            set(&name, value)
        }
        SqlStatement::Set(Set::SetTimeZone { value, .. }) => set("TimeZone", value_text(value)),
        SqlStatement::Set(Set::SetNames { charset_name, .. }) => {
            set("client_encoding", Some(charset_name.value.clone()))
        }
        SqlStatement::Set(Set::SetNamesDefault {}) => set("client_encoding", None),
        SqlStatement::Set(Set::SetTransaction { .. }) => Some(SessionCommand::Accept("SET".into())),
        // Only the session's own identity is accepted (checked by `SessionSettings::set`).
        SqlStatement::Set(Set::SetRole { role_name, .. }) => {
            set("role", Some(role_name.as_ref().map(pg_ident).unwrap_or_else(|| "none".into())))
        }
        SqlStatement::Set(Set::SetSessionAuthorization(param)) => match &param.kind {
            datafusion::sql::sqlparser::ast::SetSessionAuthorizationParamKind::Default => {
                set("session_authorization", None)
            }
            datafusion::sql::sqlparser::ast::SetSessionAuthorizationParamKind::User(user) => {
                set("session_authorization", Some(pg_ident(user)))
            }
        },
        SqlStatement::ShowVariable { variable } => {
            let name = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(" ");
            // `SHOW datafusion.x.y` arrives as the identifiers `datafusion`, `x`, `y`.
            let dotted = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(".");
            if crate::settings::datafusion_key(&dotted).is_some() || crate::settings::datafusion_key(&name).is_some() {
                return None;
            }
            if name.eq_ignore_ascii_case("all") {
                return Some(SessionCommand::Show(None));
            }
            Some(SessionCommand::Show(Some(crate::settings::display_name(&crate::settings::canonical(&name)))))
        }
        SqlStatement::Reset(ResetStatement { reset }) => match reset {
            // RESET of a DataFusion option goes through the same allowlist as SET.
            Reset::ConfigurationParameter(name) if crate::settings::datafusion_key(&name_text(name)).is_some() => {
                Some(SessionCommand::Reset(crate::settings::datafusion_key(&name_text(name))))
            }
            Reset::ALL => Some(SessionCommand::Reset(None)),
            Reset::ConfigurationParameter(name) => Some(SessionCommand::Reset(Some(name.to_string()))),
        },
        SqlStatement::Discard { object_type } => Some(SessionCommand::Discard(
            match object_type {
                DiscardObject::ALL => "ALL",
                DiscardObject::PLANS => "PLANS",
                DiscardObject::SEQUENCES => "SEQUENCES",
                DiscardObject::TEMP => "TEMP",
            }
            .to_string(),
        )),
        // `DEALLOCATE ALL` (psycopg sends it after DISCARD ALL or ROLLBACK once it has
        // prepared statements): protocol-level statements are the frontend's and closed by
        // the client; DataFusion would look for a statement named "all".
        SqlStatement::Deallocate { name, .. }
            if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
        {
            Some(SessionCommand::Accept("DEALLOCATE ALL".into()))
        }
        SqlStatement::Savepoint { .. } => Some(SessionCommand::Accept("SAVEPOINT".into())),
        SqlStatement::ReleaseSavepoint { .. } => Some(SessionCommand::Accept("RELEASE".into())),
        SqlStatement::Rollback { savepoint: Some(_), .. } => Some(SessionCommand::Accept("ROLLBACK".into())),
        SqlStatement::StartTransaction { .. } => Some(SessionCommand::Begin),
        SqlStatement::Commit { .. } => Some(SessionCommand::End(true)),
        SqlStatement::Rollback { savepoint: None, .. } => Some(SessionCommand::End(false)),
        _ => None,
    }
}
