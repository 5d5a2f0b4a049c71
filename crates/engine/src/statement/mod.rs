//! The statement layer: one dialect ([`dialect::RxDialect`]), one tokenization, one parser
//! ([`parse`]) and one statement type ([`Statement`]) naming everything rxgate runs.
//!
//! A statement's text is tokenized once; the tokens are checked against the statement limits,
//! normalized (`normalize`: Hive backticks, `?` placeholders, table versioning) and handed to
//! the grammar (`grammar`), which reads rxgate's own statements (Hive, Iceberg, admin) with
//! sqlparser's `Parser` and gives every other statement to sqlparser's PostgreSQL grammar.
//! Hive's and Iceberg's forms only claim text PostgreSQL would reject, so PostgreSQL text
//! always means what PostgreSQL says it means.
//!
//! **Invariant:** this module imports no command and no session: commands and the session
//! import it.

mod ast;
pub(crate) mod dialect;
mod grammar;
mod normalize;

pub use ast::{
    AdminCommand, Cutoff, DdlCommand, DmlCommand, ExternalCommand, HiveCommand, IcebergCommand, MaintenanceAction,
    MaintenanceCommand, NewColumn, PartitionField, PartitionTransform, QueryCommand, RollbackTarget, SourceQuery, Spec,
    ViewCommand,
};
pub(crate) use normalize::{bad_time_travel, parse_timestamp};

use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::tokenizer::Token;
use rxgate_common::Result;

use crate::cursor::CopyOptions;
use crate::limits::StatementLimits;

/// A statement DataFusion plans: as the client wrote it (for PostgreSQL's output column
/// names) and after the PostgreSQL compatibility rewrites (what is planned).
#[derive(Debug, Clone)]
pub struct SqlText {
    /// As written (after token normalization).
    pub written: SqlStatement,
    /// After `pgcompat`'s rewrites.
    pub rewritten: SqlStatement,
}

impl SqlText {
    /// Wraps a parsed statement: bounds its boolean chains and applies the PostgreSQL
    /// compatibility rewrites.
    pub fn new(mut written: SqlStatement) -> Self {
        crate::limits::balance_boolean_chains(&mut written);
        let rewritten = crate::pgcompat::rewrite(written.clone());
        Self { written, rewritten }
    }
}

/// A session command the session answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET name = value` (also `SET TIME ZONE`, `SET NAMES`, `SET ROLE`, …); `None`: DEFAULT.
    Set {
        /// Parameter name as written.
        name: String,
        /// Value text, unquoted; `None` for `DEFAULT`.
        value: Option<String>,
    },
    /// `RESET name` (`None`: `RESET ALL`).
    Reset(Option<String>),
    /// `SHOW name` (`None`: `SHOW ALL`).
    Show(Option<String>),
    /// `DISCARD ALL` and friends.
    Discard(String),
    /// A command accepted without effect, answered with this tag (`SAVEPOINT`, …).
    Accept(String),
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END` (true) or `ROLLBACK` / `ABORT` (false).
    End(bool),
    /// `CLOSE name` (`None`: `CLOSE ALL`).
    Close(Option<String>),
}

/// A statement the engine runs itself, without a DataFusion plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Session parameters, transactions, CLOSE.
    Session(SessionCommand),
    /// `SHOW GRANTS`, `SHOW POLICIES`.
    Admin(AdminCommand),
    /// Hive's SHOW/DESCRIBE/USE.
    Hive(HiveCommand),
    /// Hive external tables.
    External(ExternalCommand),
    /// Iceberg schema/partition evolution and rollbacks.
    Iceberg(IcebergCommand),
    /// Schemas and tables: CREATE, DROP, RENAME.
    Ddl(DdlCommand),
    /// INSERT, DELETE, TRUNCATE.
    Dml(DmlCommand),
    /// CREATE VIEW, DROP VIEW.
    View(ViewCommand),
    /// Snapshot expiry, orphan removal, compaction.
    Maintenance(MaintenanceCommand),
    /// Running statements: `CALL system.kill_query`.
    Queries(QueryCommand),
}

/// One statement, named.
#[derive(Debug, Clone)]
pub enum Statement {
    /// A query (or EXPLAIN, or another statement DataFusion plans or refuses).
    Sql(Box<SqlText>),
    /// `DECLARE name CURSOR [WITH HOLD] FOR query`.
    Declare {
        /// Cursor name.
        name: String,
        /// Its query.
        query: Box<SqlText>,
        /// `WITH HOLD`.
        hold: bool,
    },
    /// `FETCH [FORWARD] n|ALL|NEXT FROM name`.
    Fetch {
        /// Cursor name.
        name: String,
        /// Rows; `None`: all that remain.
        count: Option<u64>,
    },
    /// `COPY (query) TO STDOUT` and `COPY t [(cols)] TO STDOUT`.
    Copy {
        /// The rows' query.
        query: Box<SqlText>,
        /// Format options.
        options: CopyOptions,
    },
    /// `DROP TABLE [IF EXISTS] t [PURGE]`: an external table's definition, or an Iceberg table
    /// ([`DdlCommand::DropTable`]).
    DropTable {
        /// Name parts.
        table: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
        /// `PURGE`.
        purge: bool,
    },
    /// A statement the engine runs itself.
    Command(Command),
    /// Nothing (only comments or semicolons).
    Empty,
}

/// How a session's statements are read.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// `?` placeholders are numbered parameters (Flight SQL), not PostgreSQL's `?` operator.
    pub question_marks: bool,
    /// The session's catalog name (`catalog.db.t` is an ordinary table name, not Spark's
    /// metadata table `db.t.<kind>`).
    pub catalog: String,
}

/// Parses one statement: limits first (54000, 54001), then one tokenization, the token
/// passes and the grammar. More than one statement is 42601.
pub fn parse(sql: &str, limits: &StatementLimits, options: &ParseOptions) -> Result<Statement> {
    limits.check_size(sql)?;
    let mut tokens = dialect::tokenize(sql)?;
    limits.check_depth(tokens.iter().map(|t| &t.token))?;
    normalize::backticks(&mut tokens);
    if options.question_marks {
        normalize::question_marks(&mut tokens)?;
    }
    let mut tokens = normalize::table_versions(tokens, &options.catalog)?;
    tokens = crate::pgcompat::replace_known_tokens(tokens).map_err(dialect::syntax)?;
    while matches!(tokens.last().map(|t| &t.token), Some(Token::SemiColon | Token::Whitespace(_) | Token::EOF)) {
        tokens.pop();
    }
    if tokens.iter().all(|t| matches!(t.token, Token::Whitespace(_) | Token::SemiColon)) {
        return Ok(Statement::Empty);
    }
    grammar::statement(tokens)
}

/// Splits SQL text into its statements, each with its original text (the simple query
/// protocol sends several at once).
pub fn split(sql: &str) -> Result<Vec<String>> {
    let tokens = dialect::tokenize(sql)?;
    let mut out = vec![];
    let mut cur = String::new();
    let mut meaningful = false;
    for t in tokens {
        match t.token {
            Token::SemiColon => {
                if meaningful {
                    out.push(std::mem::take(&mut cur).trim().to_string());
                }
                cur.clear();
                meaningful = false;
            }
            Token::Whitespace(_) => cur.push_str(&t.token.to_string()),
            t => {
                meaningful = true;
                cur.push_str(&token_text(&t));
            }
        }
    }
    if meaningful {
        out.push(cur.trim().to_string());
    }
    Ok(out)
}

/// A token as SQL text again. sqlparser displays quoted literals and identifiers with their
/// unescaped value (`'it's'`), so quotes inside them are doubled (escaped) here.
fn token_text(t: &Token) -> String {
    match t {
        Token::SingleQuotedString(s) => format!("'{}'", s.replace('\'', "''")),
        Token::EscapedStringLiteral(s) => format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Token::Word(w) if w.quote_style == Some('"') => format!("\"{}\"", w.value.replace('"', "\"\"")),
        Token::Word(w) if w.quote_style == Some('`') => format!("`{}`", w.value.replace('`', "``")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_quotes_inside_literals_and_identifiers() {
        let parts = split("SELECT 'it''s'; SELECT \"a\"\"b\" FROM t;; SELECT E'x\\'y'; SELECT `a;b`").unwrap();
        assert_eq!(parts, vec!["SELECT 'it''s'", "SELECT \"a\"\"b\" FROM t", "SELECT E'x\\'y'", "SELECT `a;b`"]);
    }
}

#[cfg(test)]
mod grammar_tests {
    use super::*;
    use rxgate_common::StatusCode;

    fn p(sql: &str) -> Result<Statement> {
        parse(sql, &StatementLimits::default(), &ParseOptions { question_marks: false, catalog: "rxgate".into() })
    }

    fn command(sql: &str) -> Command {
        match p(sql) {
            Ok(Statement::Command(c)) => c,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn hive_statements() {
        use HiveCommand::*;
        let hive = |sql: &str| match command(sql) {
            Command::Hive(h) => h,
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(hive("SHOW DATABASES"), ShowDatabases { like: None });
        assert_eq!(hive("show schemas like 'h*';"), ShowDatabases { like: Some("h*".into()) });
        assert_eq!(
            hive("SHOW TABLES IN health 'c*|t*'"),
            ShowTables { database: Some("health".into()), like: Some("c*|t*".into()) }
        );
        assert_eq!(
            hive("SHOW TABLES FROM \"Health\" LIKE 'p*'"),
            ShowTables { database: Some("Health".into()), like: Some("p*".into()) }
        );
        assert_eq!(hive("USE Health"), Use("health".into()));
        assert_eq!(hive("desc formatted city_report"), Describe { table: v(&["city_report"]), detail: true });
        assert_eq!(
            hive("DESCRIBE TABLE EXTENDED rxgate.health.t"),
            Describe { table: v(&["rxgate", "health", "t"]), detail: true }
        );
        assert_eq!(hive("DESCRIBE formatted"), Describe { table: v(&["formatted"]), detail: false });
        assert_eq!(hive("DESCRIBE `Health`.`T`"), Describe { table: v(&["health", "t"]), detail: false });
        assert_eq!(hive("SHOW CREATE TABLE \"health\".\"t\""), ShowCreateTable(v(&["health", "t"])));
        // PostgreSQL's SHOW is a session command; malformed Hive forms are read by sqlparser.
        assert_eq!(command("SHOW search_path"), Command::Session(SessionCommand::Show(Some("search_path".into()))));
        assert!(matches!(p("SHOW TABLES IN"), Err(e) if e.code == StatusCode::SyntaxError));
        assert!(matches!(p("DESCRIBE SELECT 1"), Ok(Statement::Sql(_))));
    }

    #[test]
    fn admin_statements() {
        assert_eq!(command("show grants"), Command::Admin(AdminCommand::ShowGrants(None)));
        assert_eq!(
            command("SHOW GRANTS FOR Analyst;"),
            Command::Admin(AdminCommand::ShowGrants(Some("analyst".into())))
        );
        assert_eq!(command("SHOW GRANTS FOR \"Bob\""), Command::Admin(AdminCommand::ShowGrants(Some("Bob".into()))));
        assert_eq!(command("show policies"), Command::Admin(AdminCommand::ShowPolicies));
        assert!(matches!(p("SELECT 'SHOW GRANTS'"), Ok(Statement::Sql(_))));
    }

    #[test]
    fn external_statements() {
        let ext = |sql: &str| match command(sql) {
            Command::External(e) => e,
            other => panic!("{sql}: {other:?}"),
        };
        let spec = |s: &[(&str, &str)]| s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Spec>();
        let ExternalCommand::Create { table, if_not_exists, columns, partition_columns, format, location, properties } = ext(
            "CREATE EXTERNAL TABLE IF NOT EXISTS \"health\".\"rx\" (npi BIGINT COMMENT 'id', cost DECIMAL(10, 2), name STRING) \
             PARTITIONED BY (delivery_date DATE, state STRING) STORED AS PARQUET LOCATION '/data/rx' \
             TBLPROPERTIES ('skip.header.line.count'='1');",
        ) else {
            panic!("not a create")
        };
        assert_eq!(table, v(&["health", "rx"]));
        assert!(if_not_exists);
        assert_eq!((columns.len(), columns[1].hive_type.as_str()), (3, "decimal(10,2)"));
        assert_eq!(partition_columns.iter().map(|c| c.hive_type.as_str()).collect::<Vec<_>>(), vec!["date", "string"]);
        assert_eq!((format.as_str(), location.as_str()), ("PARQUET", "/data/rx"));
        assert_eq!(properties.get("skip.header.line.count").map(String::as_str), Some("1"));
        assert!(
            matches!(p("CREATE EXTERNAL TABLE t (a INT) LOCATION '/x'"), Err(e) if e.code == StatusCode::SyntaxError)
        );
        assert_eq!(
            ext("msck repair table rx sync partitions"),
            ExternalCommand::Repair { table: v(&["rx"]), add: true, drop: true }
        );
        assert_eq!(
            ext("SHOW PARTITIONS rx PARTITION (state='CA')"),
            ExternalCommand::ShowPartitions { table: v(&["rx"]), spec: spec(&[("state", "CA")]) }
        );
        assert_eq!(
            ext("ALTER TABLE rx DROP IF EXISTS PARTITION (state='CA'), PARTITION (state='NY') PURGE"),
            ExternalCommand::DropPartitions {
                table: v(&["rx"]),
                if_exists: true,
                specs: vec![spec(&[("state", "CA")]), spec(&[("state", "NY")])]
            }
        );
        assert_eq!(
            ext("ALTER TABLE rx RECOVER PARTITIONS"),
            ExternalCommand::Repair { table: v(&["rx"]), add: true, drop: false }
        );
        assert!(
            matches!(p("DROP TABLE IF EXISTS a.b"), Ok(Statement::DropTable { table, if_exists: true, .. }) if table == v(&["a", "b"]))
        );
        assert!(matches!(p("DROP TABLE a, b"), Ok(Statement::Sql(_))));
    }

    #[test]
    fn kill_query_is_read_with_the_call_argument_reader() {
        let kill = |id: &str| Command::Queries(QueryCommand::Kill { query_id: id.into() });
        assert_eq!(command("CALL system.kill_query('20261207_040812_00042')"), kill("20261207_040812_00042"));
        assert_eq!(command("call rxgate.system.kill_query(query_id => 'x')"), kill("x"));
        for bad in ["CALL system.kill_query()", "CALL system.kill_query(42)", "CALL system.kill_query('a', 'b')"] {
            assert!(matches!(p(bad), Err(e) if e.code == StatusCode::SyntaxError), "{bad}");
        }
    }

    #[test]
    fn iceberg_statements() {
        let ice = |sql: &str| match command(sql) {
            Command::Iceberg(i) => i,
            other => panic!("{sql}: {other:?}"),
        };
        assert!(matches!(ice("ALTER TABLE rx ADD PARTITION FIELD bucket(16, npi)"), IcebergCommand::Partition { .. }));
        assert!(matches!(ice("ALTER TABLE rx ADD COLUMN x INT COMMENT 'c'"), IcebergCommand::Schema { .. }));
        assert!(matches!(ice("ALTER TABLE h.rx RENAME COLUMN a TO b"), IcebergCommand::Schema { .. }));
        assert_eq!(
            ice("CALL system.rollback_to_snapshot('health.t', 42)"),
            IcebergCommand::Rollback {
                table: v(&["health", "t"]),
                target: RollbackTarget::Snapshot { id: 42, ancestor_only: true },
                returns_row: true
            }
        );
        assert!(matches!(p("CALL system.nope('t')"), Err(e) if e.code == StatusCode::Unsupported));
        assert_eq!(
            command("ALTER TABLE rx RENAME TO ry"),
            Command::Ddl(DdlCommand::RenameTable { table: v(&["rx"]), to: v(&["ry"]) })
        );
    }

    #[test]
    fn write_statements() {
        let Command::Ddl(DdlCommand::CreateTable { table, columns, partition, properties, query, .. }) = command(
            "CREATE TABLE s.t (id bigint NOT NULL, ts timestamp, name string) USING iceberg \
             PARTITIONED BY (days(ts), bucket(16, id), truncate(name, 2), region string) TBLPROPERTIES ('k' = 'v')",
        ) else {
            panic!("not a create table")
        };
        assert_eq!(table, v(&["s", "t"]));
        assert_eq!(columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id", "ts", "name", "region"]);
        assert!(columns[0].not_null && query.is_none());
        use PartitionTransform::*;
        assert_eq!(
            partition.iter().map(|p| (p.column.as_str(), p.transform)).collect::<Vec<_>>(),
            [("ts", Day), ("id", Bucket(16)), ("name", Truncate(2)), ("region", Identity)]
        );
        assert_eq!(properties.get("k").map(String::as_str), Some("v"));
        let Command::Ddl(DdlCommand::CreateTable { partition, .. }) =
            command("CREATE TABLE t (ts timestamp, id int) WITH (partitioning = ARRAY['month(ts)', 'bucket(id, 4)'])")
        else {
            panic!("not a create table")
        };
        assert_eq!(partition.iter().map(|p| p.transform).collect::<Vec<_>>(), [Month, Bucket(4)]);
        assert!(matches!(
            command("CREATE TABLE t AS SELECT 1 AS a"),
            Command::Ddl(DdlCommand::CreateTable { query: Some(_), .. })
        ));
        assert!(
            matches!(p("CREATE TABLE t (a int) PARTITIONED BY (nope(a))"), Err(e) if e.code == StatusCode::SyntaxError)
        );
        assert!(matches!(p("CREATE TABLE t (a int) USING delta"), Err(e) if e.code == StatusCode::Unsupported));
        assert!(matches!(command("INSERT INTO t (a) VALUES (1)"), Command::Dml(DmlCommand::Insert { .. })));
        assert!(matches!(
            command("DELETE FROM t WHERE a > 1"),
            Command::Dml(DmlCommand::Delete { predicate: Some(_), .. })
        ));
        assert!(matches!(command("TRUNCATE TABLE t"), Command::Dml(DmlCommand::Truncate { .. })));
        assert!(matches!(
            command("COPY t (a) FROM STDIN WITH (FORMAT csv)"),
            Command::Dml(DmlCommand::CopyFrom { .. })
        ));
        assert!(matches!(p("COPY t FROM '/etc/passwd'"), Err(e) if e.code == StatusCode::PermissionDenied));
        assert!(matches!(command("DROP SCHEMA s CASCADE"), Command::Ddl(DdlCommand::DropSchema { cascade: true, .. })));
        assert!(matches!(
            command("CREATE DATABASE IF NOT EXISTS s"),
            Command::Ddl(DdlCommand::CreateSchema { if_not_exists: true, .. })
        ));
        assert!(matches!(p("DROP TABLE a.b PURGE"), Ok(Statement::DropTable { purge: true, .. })));
    }

    #[test]
    fn one_statement_and_placeholders() {
        assert!(matches!(p("SELECT 1; SELECT 2"), Err(e) if e.code == StatusCode::SyntaxError));
        assert!(matches!(p(" ; -- nothing"), Ok(Statement::Empty)));
        let q = parse(
            "SELECT ? + ?",
            &StatementLimits::default(),
            &ParseOptions { question_marks: true, catalog: "rxgate".into() },
        );
        let Ok(Statement::Sql(sql)) = q else { panic!("{q:?}") };
        assert_eq!(sql.written.to_string(), "SELECT $1 + $2");
    }
}
