//! The PostgreSQL dialect layer (crate rxgate-pgcompat) as the engine uses it, under the
//! names it had when it lived here, and the one function that parses text:
//! [`parse_statements`] tokenizes, lets the dialect replace known client statements on the
//! tokens, parses, balances boolean chains ([`crate::limits`]) and rewrites each statement.

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Tokenizer;

pub(crate) use rxgate_pgcompat::{
    install, null_correlated_subqueries, output_names, placeholder_casts, touches_catalog, unique_aliases,
};

/// Parses SQL text into statements: each as written (for PostgreSQL's output column names)
/// and rewritten for DataFusion.
pub(crate) fn parse_statements(sql: &str) -> Result<Vec<(Statement, Statement)>, ParserError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location()?;
    let tokens = rxgate_pgcompat::replace_known_tokens(tokens)?;
    let statements = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens).parse_statements()?;
    Ok(statements
        .into_iter()
        .map(|mut s| {
            crate::limits::balance_boolean_chains(&mut s);
            (s.clone(), rxgate_pgcompat::rewrite(s))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_back_as_written_and_rewritten() {
        let parsed = parse_statements("SELECT 'pg_class'::regclass; SELECT 1").unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0.to_string(), "SELECT 'pg_class'::REGCLASS");
        assert!(parsed[0].1.to_string().contains("rxgate_regclass('pg_class')"), "{}", parsed[0].1);
        assert_eq!(parsed[1].0, parsed[1].1);
    }

    #[test]
    fn tokenizer_errors_stay_parser_errors() {
        assert!(matches!(parse_statements("SELECT 'open"), Err(ParserError::TokenizerError(_))));
    }
}
