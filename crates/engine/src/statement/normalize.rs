//! Token passes between the tokenizer and the parser, each a no-op on plain PostgreSQL text:
//! - Hive's backtick names become PostgreSQL's quoted names, lower-cased (Hive names are
//!   case-insensitive);
//! - `?` placeholders, for sessions whose clients write them (Flight SQL: ADBC's DB-API and
//!   JDBC use qmark), become `$1`, `$2`, … in order;
//! - table versioning after a table reference — `[FOR] VERSION|SYSTEM_VERSION AS OF <id>`,
//!   `[FOR] TIMESTAMP|SYSTEM_TIME AS OF <ts>` (Spark 3.3, Trino, Hive 4) — and Spark's
//!   `db.t.<metadata table>` names become the names the lakehouse catalog resolves:
//!   `"t@v=<id>"` / `"t@ts=<ms>"` aliased `t`, and Trino's `"t$files"`.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Word};
use rxgate_catalog::iceberg_admin::{MetadataKind, TableView};
use rxgate_common::{Error, Result, StatusCode};

use super::dialect::syntax;

/// A quoted identifier token.
fn quoted(value: String) -> Token {
    Token::Word(Word { value, quote_style: Some('"'), keyword: Keyword::NoKeyword })
}

/// Backtick names → lower-cased double-quoted names.
pub fn backticks(tokens: &mut [TokenWithSpan]) {
    for t in tokens {
        if let Token::Word(w) = &mut t.token {
            if w.quote_style == Some('`') {
                w.value = w.value.to_lowercase();
                w.quote_style = Some('"');
            }
        }
    }
}

/// `?` → `$n` in order. Mixing both styles in one statement is an error (42601).
pub fn question_marks(tokens: &mut [TokenWithSpan]) -> Result<()> {
    let mut n = 0usize;
    let mut numbered = false;
    for t in tokens.iter_mut() {
        match &t.token {
            Token::Question => {
                n += 1;
                t.token = Token::Placeholder(format!("${n}"));
            }
            Token::Placeholder(p) if p.starts_with('$') => numbered = true,
            _ => {}
        }
    }
    if n > 0 && numbered {
        return Err(syntax("a statement cannot mix ? and $n placeholders"));
    }
    Ok(())
}

fn is_kw(t: &Token, kw: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
}

/// A name part as the planner sees it: unquoted words are lower-cased.
fn name_part(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_lowercase()),
        Token::Word(w) if w.quote_style == Some('"') => Some(w.value.clone()),
        _ => None,
    }
}

/// Words that end a table reference (so the word after a table is not its alias).
const CLAUSE_WORDS: &[&str] = &[
    "where",
    "group",
    "order",
    "limit",
    "offset",
    "fetch",
    "having",
    "window",
    "qualify",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "union",
    "except",
    "intersect",
    "lateral",
    "for",
    "tablesample",
];

/// Words after which a comma no longer separates table references.
const FROM_ENDS: &[&str] = &[
    "where",
    "group",
    "order",
    "having",
    "limit",
    "offset",
    "fetch",
    "window",
    "qualify",
    "select",
    "on",
    "using",
    "union",
    "except",
    "intersect",
    "values",
    "set",
    "returning",
];

/// Parses a point in time: RFC 3339, `YYYY-MM-DD[ HH:MM:SS[.f]][±HH[:MM]| UTC]` (naive = UTC).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let s = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')).unwrap_or(s);
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_millis());
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

pub(crate) fn bad_time_travel(m: impl Into<String>) -> Error {
    Error::new(StatusCode::InvalidArgument, m)
}

/// Time travel clauses and Spark's metadata table names → catalog names (see the module
/// doc). `catalog` is the session's catalog (`rxgate.db.t` is an ordinary name).
pub fn table_versions(tokens: Vec<TokenWithSpan>, catalog: &str) -> Result<Vec<TokenWithSpan>> {
    // Indices of the meaningful tokens.
    let idx: Vec<usize> =
        (0..tokens.len()).filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_) | Token::EOF)).collect();
    let tok = |k: usize| idx.get(k).map(|&i| &tokens[i].token);
    let metadata_names = MetadataKind::ALL.iter().any(|k| {
        idx.iter().any(|&i| matches!(&tokens[i].token, Token::Word(w) if w.value.eq_ignore_ascii_case(k.name())))
    });
    let as_of = idx.windows(2).any(|w| is_kw(&tokens[w[0]].token, "as") && is_kw(&tokens[w[1]].token, "of"));
    if !metadata_names && !as_of {
        return Ok(tokens);
    }
    // Edits over meaningful positions: [from, to] replaced by new tokens.
    let mut edits: Vec<(usize, usize, Vec<Token>)> = vec![];
    let mut i = 0;
    let mut in_from = false;
    while i < idx.len() {
        let t = tok(i).expect("in range");
        if is_kw(t, "from") || is_kw(t, "join") {
            in_from = true;
        } else if FROM_ENDS.iter().any(|w| is_kw(t, w)) {
            in_from = false;
        }
        let opens_table = is_kw(t, "from") || is_kw(t, "join") || (in_from && matches!(t, Token::Comma));
        if !opens_table {
            i += 1;
            continue;
        }
        // A name after FROM/JOIN/`,`: word (. word)*, not a function call.
        let mut j = i + 1;
        let mut parts: Vec<usize> = vec![];
        while tok(j).and_then(name_part).is_some() {
            parts.push(j);
            if tok(j + 1) == Some(&Token::Period) {
                j += 2;
            } else {
                j += 1;
                break;
            }
        }
        if parts.is_empty() || matches!(tok(j), Some(Token::LParen | Token::Period)) {
            i += 1;
            continue;
        }
        let names: Vec<String> = parts.iter().map(|&p| tok(p).and_then(name_part).unwrap_or_default()).collect();
        let last = *parts.last().expect("non-empty");
        // Spark: db.t.snapshots (or catalog.db.t.snapshots).
        let spark_meta = match names.len() {
            3 => names[0] != catalog,
            4 => names[0] == catalog,
            _ => false,
        };
        if spark_meta {
            if let Some(kind) = MetadataKind::parse(&names[names.len() - 1]) {
                let table_tok = parts[parts.len() - 2];
                edits.push((table_tok, last, vec![quoted(format!("{}${}", names[names.len() - 2], kind.name()))]));
                i = j;
                continue;
            }
        }
        // Time travel: [FOR] VERSION|SYSTEM_VERSION|TIMESTAMP|SYSTEM_TIME AS OF value.
        let mut k = j;
        let has_for = tok(k).is_some_and(|t| is_kw(t, "for"));
        if has_for {
            k += 1;
        }
        let kind = match tok(k) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        };
        let kind = match kind.as_deref() {
            Some("VERSION" | "TIMESTAMP") => kind,
            Some("SYSTEM_VERSION" | "SYSTEM_TIME") if has_for => kind,
            _ => None,
        };
        let as_of = tok(k + 1).is_some_and(|t| is_kw(t, "as")) && tok(k + 2).is_some_and(|t| is_kw(t, "of"));
        let (Some(kind), true) = (kind, as_of) else {
            i += 1;
            continue;
        };
        let mut v = k + 3;
        let version = matches!(kind.as_str(), "VERSION" | "SYSTEM_VERSION");
        if !version && tok(v).is_some_and(|t| is_kw(t, "timestamp")) {
            v += 1;
        }
        let negative = tok(v) == Some(&Token::Minus);
        if negative {
            v += 1;
        }
        let table = names.last().cloned().unwrap_or_default();
        let view = match (version, tok(v)) {
            (true, Some(Token::Number(n, _))) => {
                let n = if negative { format!("-{n}") } else { n.clone() };
                TableView::Version(n.parse().map_err(|_| bad_time_travel(format!("invalid snapshot id {n}")))?)
            }
            (true, Some(Token::SingleQuotedString(s))) => TableView::Version(s.trim().parse().map_err(|_| {
                Error::new(
                    StatusCode::Unsupported,
                    format!("VERSION AS OF '{s}': only snapshot ids are supported, not branch or tag names"),
                )
            })?),
            (false, Some(Token::SingleQuotedString(s))) => TableView::Timestamp(
                parse_timestamp(s).ok_or_else(|| bad_time_travel(format!("invalid timestamp '{s}'")))?,
            ),
            (false, Some(Token::Number(n, _))) if !negative => TableView::Timestamp(
                n.parse::<i64>().map_err(|_| bad_time_travel(format!("invalid timestamp {n}")))?.saturating_mul(1000),
            ),
            _ => {
                return Err(syntax(format!(
                    "{kind} AS OF needs a {}",
                    if version { "snapshot id" } else { "timestamp" }
                )))
            }
        };
        // The word after the clause is the table's alias, unless it starts a clause.
        let has_alias = match tok(v + 1) {
            Some(Token::Word(w)) if w.quote_style.is_some() => true,
            Some(Token::Word(w)) => !CLAUSE_WORDS.contains(&w.value.to_ascii_lowercase().as_str()),
            _ => false,
        };
        let mut replacement = vec![quoted(format!("{table}{}", view.suffix()))];
        if !has_alias {
            replacement.push(Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space));
            replacement.push(Token::make_keyword("AS"));
            replacement.push(Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space));
            replacement.push(quoted(table));
        }
        edits.push((last, v, replacement));
        i = v + 1;
    }
    if edits.is_empty() {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut pos = 0;
    for (from, to, replacement) in edits {
        let (start, end) = (idx[from], idx[to]);
        let span = tokens[start].span.union(&tokens[end].span);
        out.extend(tokens[pos..start].iter().cloned());
        out.extend(replacement.into_iter().map(|t| TokenWithSpan::new(t, span)));
        pos = end + 1;
    }
    out.extend(tokens[pos..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::dialect::tokenize;

    fn rw(sql: &str) -> String {
        let tokens = table_versions(tokenize(sql).unwrap(), "rxgate").unwrap();
        tokens.iter().map(|t| t.token.to_string()).collect()
    }

    #[test]
    fn time_travel_is_rewritten_outside_literals() {
        assert_eq!(rw("SELECT 1"), "SELECT 1");
        assert_eq!(
            rw("SELECT count(*) FROM health.t FOR VERSION AS OF 42"),
            "SELECT count(*) FROM health.\"t@v=42\" AS \"t\""
        );
        assert_eq!(rw("SELECT * FROM t VERSION AS OF 42 x WHERE a = 1"), "SELECT * FROM \"t@v=42\" x WHERE a = 1");
        assert_eq!(rw("select * from t for system_version as of 7 as y"), "select * from \"t@v=7\" as y");
        assert_eq!(
            rw("SELECT * FROM t FOR TIMESTAMP AS OF '2024-01-01 00:00:00' WHERE x"),
            "SELECT * FROM \"t@ts=1704067200000\" AS \"t\" WHERE x"
        );
        assert_eq!(
            rw("SELECT * FROM t FOR TIMESTAMP AS OF TIMESTAMP '2024-01-01T00:00:00Z'\nJOIN u ON true"),
            "SELECT * FROM \"t@ts=1704067200000\" AS \"t\"\nJOIN u ON true"
        );
        assert_eq!(rw("SELECT * FROM t TIMESTAMP AS OF 1704067200"), "SELECT * FROM \"t@ts=1704067200000\" AS \"t\"");
        assert_eq!(rw("SELECT * FROM \"T\" FOR VERSION AS OF 1, u"), "SELECT * FROM \"T@v=1\" AS \"T\", u");
        // Untouched: literals, comments, non-table positions.
        for sql in [
            "SELECT 'FROM t FOR VERSION AS OF 1'",
            "SELECT 1 -- FROM t FOR VERSION AS OF 1",
            "SELECT 1 /* FROM t VERSION AS OF 1 */",
            "SELECT \"from t version as of 1\"",
            "SELECT x FROM t WHERE y = 'a as of b'",
        ] {
            assert_eq!(rw(sql), sql);
        }
        assert_eq!(
            table_versions(tokenize("SELECT * FROM t FOR VERSION AS OF 'main'").unwrap(), "rxgate").unwrap_err().code,
            StatusCode::Unsupported
        );
        assert_eq!(
            table_versions(tokenize("SELECT * FROM t FOR TIMESTAMP AS OF 'soon'").unwrap(), "rxgate").unwrap_err().code,
            StatusCode::InvalidArgument
        );
    }

    #[test]
    fn spark_metadata_names() {
        assert_eq!(rw("SELECT * FROM health.t.snapshots"), "SELECT * FROM health.\"t$snapshots\"");
        assert_eq!(rw("SELECT * FROM rxgate.health.t.files f"), "SELECT * FROM rxgate.health.\"t$files\" f");
        assert_eq!(rw("SELECT * FROM rxgate.health.files"), "SELECT * FROM rxgate.health.files");
        assert_eq!(rw("SELECT files FROM health.t"), "SELECT files FROM health.t");
        // A three-part column in a select list is not a table name.
        assert_eq!(rw("SELECT a, health.t.files FROM health.t"), "SELECT a, health.t.files FROM health.t");
        assert_eq!(
            rw("SELECT * FROM u, health.t.history WHERE f(a, health.t.files)"),
            "SELECT * FROM u, health.\"t$history\" WHERE f(a, health.t.files)"
        );
        assert_eq!(rw("SELECT * FROM health.\"t$history\""), "SELECT * FROM health.\"t$history\"");
    }

    #[test]
    fn question_marks_number_in_order() {
        let mut t = tokenize("SELECT ? , a FROM t WHERE b = ?").unwrap();
        question_marks(&mut t).unwrap();
        let s: String = t.iter().map(|t| t.token.to_string()).collect();
        assert_eq!(s, "SELECT $1 , a FROM t WHERE b = $2");
        let mut t = tokenize("SELECT ?, $1").unwrap();
        assert_eq!(question_marks(&mut t).unwrap_err().code, StatusCode::SyntaxError);
    }
}
