//! `CREATE [OR REPLACE] VIEW` and `DROP VIEW`. sqlparser's PostgreSQL grammar reads them;
//! Trino's `SECURITY DEFINER|INVOKER` and `COMMENT '…'` before `AS` are cut out of the tokens
//! first (PostgreSQL has neither), and PostgreSQL's `WITH (security_invoker = …)` is read from
//! the options.

use datafusion::sql::sqlparser::ast::{CreateTableOptions, ObjectType, SqlOption, Statement as SqlStatement};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use rxgate_catalog::views::ViewSecurity;
use rxgate_common::{Error, Result, StatusCode};

use super::is_kw;
use super::sql::pg_ident;
use super::write::name_parts;
use crate::statement::dialect::syntax;
use crate::statement::{Command, Statement, ViewCommand};

fn unsupported<T>(m: impl Into<String>) -> Result<T> {
    Err(Error::new(StatusCode::Unsupported, m.into()))
}

/// The next meaningful token at or after `i`: its index.
fn next_meaningful(tokens: &[TokenWithSpan], i: usize) -> Option<usize> {
    (i..tokens.len()).find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
}

/// `CREATE [OR REPLACE] VIEW …`.
pub(super) fn create_view(mut tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    let mut security = None;
    let mut comment = None;
    let mut depth = 0i32;
    let mut i = 0;
    // Only the clauses before the query's `AS` (at depth 0) are ours.
    while i < tokens.len() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && is_kw(t, "AS") => break,
            t if depth == 0 && is_kw(t, "SECURITY") => {
                let j = next_meaningful(&tokens, i + 1).ok_or_else(|| syntax("expected DEFINER or INVOKER"))?;
                security = Some(match &tokens[j].token {
                    t if is_kw(t, "DEFINER") => ViewSecurity::Definer,
                    t if is_kw(t, "INVOKER") => ViewSecurity::Invoker,
                    t => return Err(syntax(format!("expected DEFINER or INVOKER after SECURITY, not {t}"))),
                });
                tokens.drain(i..=j);
                continue;
            }
            t if depth == 0 && is_kw(t, "COMMENT") => {
                let mut j = next_meaningful(&tokens, i + 1).ok_or_else(|| syntax("expected a comment"))?;
                if tokens[j].token == Token::Eq {
                    j = next_meaningful(&tokens, j + 1).ok_or_else(|| syntax("expected a comment"))?;
                }
                let Token::SingleQuotedString(text) = &tokens[j].token else {
                    return Err(syntax("COMMENT takes a string literal"));
                };
                comment = Some(text.clone());
                tokens.drain(i..=j);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let SqlStatement::CreateView(cv) = super::sql::parse(tokens)? else {
        return Err(syntax("expected CREATE VIEW"));
    };
    if cv.materialized || cv.temporary || cv.or_alter || cv.to.is_some() || cv.params.is_some() || cv.secure {
        return unsupported("CREATE VIEW supports OR REPLACE, IF NOT EXISTS, a column list, SECURITY and AS query");
    }
    let options: &[SqlOption] = match &cv.options {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(o) => o,
        other => return unsupported(format!("view options {other} are not supported")),
    };
    for o in options {
        match o {
            SqlOption::KeyValue { key, value } if key.value.eq_ignore_ascii_case("security_invoker") => {
                let on = rxgate_pgcompat::parse_bool(value.to_string().trim_matches('\''))
                    .ok_or_else(|| syntax(format!("security_invoker takes a boolean, not {value}")))?;
                let wanted = if on { ViewSecurity::Invoker } else { ViewSecurity::Definer };
                if security.is_some_and(|s| s != wanted) {
                    return Err(syntax("SECURITY and security_invoker disagree"));
                }
                security = Some(wanted);
            }
            other => return unsupported(format!("view option {other} is not supported (security_invoker)")),
        }
    }
    Ok(Statement::Command(Command::View(ViewCommand::Create {
        view: name_parts(&cv.name),
        or_replace: cv.or_replace,
        if_not_exists: cv.if_not_exists,
        columns: cv.columns.iter().map(|c| pg_ident(&c.name)).collect(),
        query: cv.query,
        security: security.unwrap_or(ViewSecurity::Invoker),
        comment: comment.or(cv.comment),
        output: vec![],
    })))
}

/// Names `DROP VIEW`; `None` for any other statement.
pub(super) fn named(stmt: &SqlStatement) -> Option<Result<Command>> {
    let SqlStatement::Drop { object_type: ObjectType::View, names, if_exists, cascade, .. } = stmt else {
        return None;
    };
    if *cascade {
        return Some(unsupported("DROP VIEW … CASCADE is not supported (views do not track dependants)"));
    }
    Some(Ok(Command::View(ViewCommand::Drop { views: names.iter().map(name_parts).collect(), if_exists: *if_exists })))
}
