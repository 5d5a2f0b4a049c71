//! rxgate's SQL dialect: PostgreSQL's, which also reads Hive's backtick-quoted identifiers.
//!
//! [`RxDialect`] reports PostgreSQL's type id, so every `dialect_of!(… PostgreSqlDialect)`
//! branch in sqlparser behaves exactly as for PostgreSQL; it forwards every method that
//! PostgreSQL's dialect overrides, and changes one: a backtick also starts a quoted identifier
//! (PostgreSQL text never contains one outside literals, comments and quoted names).
//! [`tokenize`] is the one tokenizer of the engine; `super::normalize` then turns backtick
//! names into PostgreSQL's lower-cased quoted names.

use std::any::TypeId;

use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{TokenWithSpan, Tokenizer};
use rxgate_common::{Error, Result, StatusCode};

/// PostgreSQL's dialect plus Hive's backtick-quoted identifiers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxDialect;

const PG: PostgreSqlDialect = PostgreSqlDialect {};

impl Dialect for RxDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<PostgreSqlDialect>()
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '"' || ch == '`'
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        PG.identifier_quote_style(identifier)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        PG.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        PG.is_identifier_part(ch)
    }
    fn supports_unicode_string_literal(&self) -> bool {
        PG.supports_unicode_string_literal()
    }
    fn is_custom_operator_part(&self, ch: char) -> bool {
        PG.is_custom_operator_part(ch)
    }
    fn get_next_precedence(&self, parser: &Parser) -> Option<std::result::Result<u8, ParserError>> {
        PG.get_next_precedence(parser)
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        PG.supports_filter_during_aggregation()
    }
    fn supports_group_by_expr(&self) -> bool {
        PG.supports_group_by_expr()
    }
    fn prec_value(&self, prec: Precedence) -> u8 {
        PG.prec_value(prec)
    }
    fn allow_extract_custom(&self) -> bool {
        PG.allow_extract_custom()
    }
    fn allow_extract_single_quotes(&self) -> bool {
        PG.allow_extract_single_quotes()
    }
    fn supports_create_index_with_clause(&self) -> bool {
        PG.supports_create_index_with_clause()
    }
    fn supports_explain_with_utility_options(&self) -> bool {
        PG.supports_explain_with_utility_options()
    }
    fn supports_listen_notify(&self) -> bool {
        PG.supports_listen_notify()
    }
    fn supports_factorial_operator(&self) -> bool {
        PG.supports_factorial_operator()
    }
    fn supports_bitwise_shift_operators(&self) -> bool {
        PG.supports_bitwise_shift_operators()
    }
    fn supports_comment_on(&self) -> bool {
        PG.supports_comment_on()
    }
    fn supports_load_extension(&self) -> bool {
        PG.supports_load_extension()
    }
    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        PG.supports_named_fn_args_with_colon_operator()
    }
    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        PG.supports_named_fn_args_with_expr_name()
    }
    fn supports_empty_projections(&self) -> bool {
        PG.supports_empty_projections()
    }
    fn supports_nested_comments(&self) -> bool {
        PG.supports_nested_comments()
    }
    fn supports_string_escape_constant(&self) -> bool {
        PG.supports_string_escape_constant()
    }
    fn supports_numeric_literal_underscores(&self) -> bool {
        PG.supports_numeric_literal_underscores()
    }
    fn supports_array_typedef_with_brackets(&self) -> bool {
        PG.supports_array_typedef_with_brackets()
    }
    fn supports_geometric_types(&self) -> bool {
        PG.supports_geometric_types()
    }
    fn supports_set_names(&self) -> bool {
        PG.supports_set_names()
    }
    fn supports_alter_column_type_using(&self) -> bool {
        PG.supports_alter_column_type_using()
    }
    fn supports_notnull_operator(&self) -> bool {
        PG.supports_notnull_operator()
    }
    fn supports_interval_options(&self) -> bool {
        PG.supports_interval_options()
    }
}

/// Tokenizes statement text once, with locations (42601 on a lexical error).
pub fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(&RxDialect, sql).tokenize_with_location().map_err(|e| syntax(e.to_string()))
}

/// A syntax error (42601) with sqlparser's or our own description.
pub fn syntax(message: impl std::fmt::Display) -> Error {
    Error::new(StatusCode::SyntaxError, format!("syntax error: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_postgres_and_reads_backticks() {
        let d: &dyn datafusion::sql::sqlparser::dialect::Dialect = &RxDialect;
        assert!(d.is::<PostgreSqlDialect>());
        assert!(RxDialect.is_delimited_identifier_start('`'));
        let tokens = tokenize("SELECT `a b` FROM t WHERE x ? 'k'").unwrap();
        assert!(tokens.iter().any(|t| matches!(&t.token, datafusion::sql::sqlparser::tokenizer::Token::Word(w) if w.quote_style == Some('`') && w.value == "a b")));
    }
}
