//! The grammar: rxgate's own statements, read with one token cursor ([`Cur`]) over the
//! statement's tokens, and everything else read by sqlparser's PostgreSQL grammar over the
//! same tokens ([`sql`]).
//!
//! Which rule reads a statement is decided here, once, from its first words: a rule of ours
//! claims only forms PostgreSQL rejects (`SHOW TABLES`, `ALTER TABLE t ADD PARTITION (…)`,
//! `CALL system.…`), and within a rule, a malformed statement is a syntax error (42601).

mod external;
mod hive;
mod iceberg;
mod maintenance;
mod queries;
mod sql;
mod view;
mod write;

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use rxgate_common::Result;

use super::dialect::syntax;
use super::{Command, Statement};

/// A grammar rule's error text (becomes a 42601 "syntax error: …").
type Parsed<X> = std::result::Result<X, String>;

/// The one token cursor of rxgate's own grammar rules: meaningful tokens only.
pub(super) struct Cur {
    toks: Vec<Token>,
    pos: usize,
}

/// Whether `t` is the unquoted word `kw` (any case).
fn is_kw(t: &Token, kw: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
}

impl Cur {
    fn new(tokens: &[TokenWithSpan]) -> Self {
        let toks = tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
            .map(|t| t.token.clone())
            .collect();
        Self { toks, pos: 0 }
    }

    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.toks.get(self.pos + ahead)
    }

    /// Whether the word `ahead` tokens on is `kw`.
    fn is_kw_at(&self, ahead: usize, kw: &str) -> bool {
        self.peek_at(ahead).is_some_and(|t| is_kw(t, kw))
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    /// Consumes the word `kw` if it is next.
    fn kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.pos += 1;
        }
        yes
    }

    /// Consumes the words `kws` if they are all next, else nothing.
    fn kws(&mut self, kws: &[&str]) -> bool {
        let yes = kws.iter().enumerate().all(|(i, k)| self.is_kw_at(i, k));
        if yes {
            self.pos += kws.len();
        }
        yes
    }

    fn expect_kw(&mut self, kw: &str) -> Parsed<()> {
        if self.kw(kw) {
            Ok(())
        } else {
            Err(format!("expected {kw} at {}", self.here()))
        }
    }

    /// Consumes `t` if it is next.
    fn tok(&mut self, t: &Token) -> bool {
        let yes = self.peek() == Some(t);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect(&mut self, t: &Token, what: &str) -> Parsed<()> {
        if self.tok(t) {
            Ok(())
        } else {
            Err(format!("expected {what} at {}", self.here()))
        }
    }

    /// The next token, described for an error message.
    fn here(&self) -> String {
        match self.peek() {
            None => "end of statement".into(),
            Some(Token::Word(w)) => format!("\"{}\"", w.value),
            Some(Token::SingleQuotedString(s)) => format!("'{s}'"),
            Some(t) => format!("\"{t}\""),
        }
    }

    /// A name part as the planner sees it: unquoted words lower-cased, quoted ones exact.
    fn ident(&mut self) -> Option<String> {
        let name = match self.peek()? {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_lowercase(),
            Token::Word(w) => w.value.clone(),
            _ => return None,
        };
        self.pos += 1;
        Some(name)
    }

    fn expect_ident(&mut self) -> Parsed<String> {
        self.ident().ok_or_else(|| format!("expected a name at {}", self.here()))
    }

    /// `a[.b[.c]]`.
    fn name(&mut self) -> Parsed<Vec<String>> {
        let mut parts = vec![self.expect_ident()?];
        while self.tok(&Token::Period) {
            parts.push(self.expect_ident()?);
        }
        if parts.len() > 3 {
            return Err(format!("improper qualified name: {}", parts.join(".")));
        }
        Ok(parts)
    }

    /// A string literal's value, if one is next.
    fn string(&mut self) -> Option<String> {
        match self.peek()? {
            Token::SingleQuotedString(s) | Token::EscapedStringLiteral(s) => {
                let s = s.clone();
                self.pos += 1;
                Some(s)
            }
            _ => None,
        }
    }

    fn expect_string(&mut self) -> Parsed<String> {
        self.string().ok_or_else(|| format!("expected a string literal at {}", self.here()))
    }

    /// An integer, optionally negative, if one is next.
    fn integer(&mut self) -> Option<i64> {
        let save = self.pos;
        let negative = self.tok(&Token::Minus);
        if let Some(Token::Number(n, _)) = self.peek() {
            if let Ok(v) = n.parse::<i64>() {
                self.pos += 1;
                return Some(if negative { -v } else { v });
            }
        }
        self.pos = save;
        None
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn end(&self) -> Parsed<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(format!("unexpected {}", self.here()))
        }
    }
}

/// Which grammar reads a statement, from its first words.
enum Rule {
    Admin,
    Hive,
    External,
    Iceberg,
    CreateTable,
    CreateView,
    Maintenance,
    Queries,
    Sql,
}

fn rule(c: &Cur) -> Rule {
    let word = |i: usize| match c.peek_at(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    match (word(0).as_str(), word(1).as_str()) {
        ("SHOW", "GRANTS" | "POLICIES") => Rule::Admin,
        ("SHOW", "DATABASES" | "SCHEMAS" | "TABLES") | ("USE" | "DESCRIBE" | "DESC", _) => Rule::Hive,
        ("SHOW", "CREATE") if word(2) == "TABLE" => Rule::Hive,
        ("SHOW", "PARTITIONS") | ("CREATE", "EXTERNAL") | ("MSCK", _) => Rule::External,
        ("CALL", _) if called(c).is_some_and(|p| maintenance::PROCEDURES.contains(&p.as_str())) => Rule::Maintenance,
        ("CALL", _) if called(c).is_some_and(|p| queries::PROCEDURES.contains(&p.as_str())) => Rule::Queries,
        ("CALL", _) => Rule::Iceberg,
        ("CREATE", "TABLE") => Rule::CreateTable,
        ("CREATE", "OR") if word(2) == "REPLACE" && word(3) == "TABLE" => Rule::CreateTable,
        ("CREATE", "VIEW") => Rule::CreateView,
        ("CREATE", "OR") if word(2) == "REPLACE" && word(3) == "VIEW" => Rule::CreateView,
        ("ALTER", "TABLE") => alter_table_rule(c),
        _ => Rule::Sql,
    }
}

/// The procedure a `CALL a.b.proc(…)` names: the last word before the parenthesis.
fn called(c: &Cur) -> Option<String> {
    let mut i = 1;
    let mut last = None;
    loop {
        match c.peek_at(i)? {
            Token::Word(w) => last = Some(w.value.to_ascii_lowercase()),
            Token::Period => {}
            Token::LParen => return last,
            _ => return None,
        }
        i += 1;
    }
}

/// `CALL …system.<proc>(…)` or `ALTER TABLE t EXECUTE <proc>…` of a maintenance procedure.
fn maintenance_statement(c: &mut Cur) -> Result<crate::statement::MaintenanceCommand> {
    if c.kw("call") {
        let name = c.name().map_err(syntax)?;
        return match name.as_slice() {
            [.., s, proc] if s == "system" => maintenance::call(c, &proc.clone()),
            _ => Err(rxgate_common::Error::new(
                rxgate_common::StatusCode::Unsupported,
                format!("unknown procedure {}", name.join(".")),
            )),
        };
    }
    c.kw("alter");
    c.kw("table");
    let table = c.name().map_err(syntax)?;
    c.kw("execute");
    maintenance::execute(c, table)
}

/// `ALTER TABLE name …`: Hive's partition forms, Iceberg's evolution forms, else PostgreSQL's.
fn alter_table_rule(c: &Cur) -> Rule {
    // Skip the name: part (. part)*.
    let mut i = 2;
    while matches!(c.peek_at(i), Some(Token::Word(_))) {
        if c.peek_at(i + 1) == Some(&Token::Period) {
            i += 2;
        } else {
            i += 1;
            break;
        }
    }
    let at = |k: usize, w: &str| c.is_kw_at(i + k, w);
    let partition_spec = |k: usize| at(k, "PARTITION") && c.peek_at(i + k + 1) == Some(&Token::LParen);
    if at(0, "RECOVER") && at(1, "PARTITIONS") {
        return Rule::External;
    }
    if at(0, "ADD") && (partition_spec(1) || (at(1, "IF") && at(2, "NOT") && at(3, "EXISTS") && partition_spec(4))) {
        return Rule::External;
    }
    if at(0, "DROP") && (partition_spec(1) || (at(1, "IF") && at(2, "EXISTS") && partition_spec(3))) {
        return Rule::External;
    }
    if at(0, "EXECUTE") && maintenance::PROCEDURES.iter().any(|p| at(1, p)) {
        return Rule::Maintenance;
    }
    let iceberg = (at(0, "ADD") && (at(1, "COLUMN") || at(1, "COLUMNS") || (at(1, "PARTITION") && at(2, "FIELD"))))
        || (at(0, "DROP") && (at(1, "COLUMN") || (at(1, "PARTITION") && at(2, "FIELD"))))
        || (at(0, "RENAME") && at(1, "COLUMN"))
        || at(0, "EXECUTE")
        || at(0, "WRITE");
    if iceberg {
        Rule::Iceberg
    } else {
        Rule::Sql
    }
}

/// Reads one statement from its tokens (no trailing semicolon).
pub(super) fn statement(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    let mut c = Cur::new(&tokens);
    let command = match rule(&c) {
        Rule::Admin => hive::admin(&mut c).map(Command::Admin),
        // Hive's forms were always recognised, not claimed: what they do not read
        // (`DESCRIBE SELECT …`, `SHOW TABLES IN`) is PostgreSQL's or DataFusion's to read.
        Rule::Hive => match hive::statement(&mut c).and_then(|cmd| c.end().map(|()| cmd)) {
            Ok(cmd) => return Ok(Statement::Command(Command::Hive(cmd))),
            Err(_) => return sql::statement(tokens),
        },
        Rule::External => external::statement(&mut c).map(Command::External),
        Rule::Iceberg => return iceberg::statement(&mut c).map(|cmd| Statement::Command(Command::Iceberg(cmd))),
        Rule::CreateTable => return write::create_table(tokens),
        Rule::CreateView => return view::create_view(tokens),
        Rule::Maintenance => {
            return maintenance_statement(&mut c).map(|cmd| Statement::Command(Command::Maintenance(cmd)))
        }
        Rule::Queries => return queries::call(&mut c).map(|cmd| Statement::Command(Command::Queries(cmd))),
        Rule::Sql => return sql::statement(tokens),
    };
    command.and_then(|cmd| c.end().map(|()| cmd)).map(Statement::Command).map_err(syntax)
}
