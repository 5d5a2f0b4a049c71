//! What one statement may ask of the process: the size of its text, how deep its expressions
//! chain, and how large one value it builds may grow.
//!
//! **Invariant:** no statement text reaches a recursive walk (the parser's rewrites, the
//! policy, DataFusion's planner and optimizer, physical expression evaluation, `Drop` of the
//! trees) unless [`StatementLimits::check_size`] and [`StatementLimits::check_depth`] accepted it
//! (`statement::parse` runs both on its one tokenization). The check runs over tokens in one
//! loop, so it cannot itself overflow, and it bounds the depth of every tree built from the
//! statement. The runtime's threads have stacks sized for that bound ([`WORKER_STACK_BYTES`]).

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use rxgate_common::{Error, Result, StatusCode};

/// Stack of every runtime thread that plans or runs statements (tokio workers and blocking
/// threads). Reserved address space, touched only as deep trees need it; sized so that a
/// 10,000-deep chain (twice [`StatementLimits::max_expression_depth`]'s default) plans
/// without overflowing in a debug build, whose frames are several times a release build's.
/// The default depth limit is set by planning time, not by stack: DataFusion's simplifier and
/// optimizer take time that grows faster than linearly with a chain's length (debug build:
/// a 2,000-term `OR` chain 1.4 s, 5,000 terms 8.5 s; `1+1+…` 2,000 terms 4.4 s, 10,000 terms
/// 124 s and 0.9 GB), and planning is not under the statement timeout.
pub const WORKER_STACK_BYTES: usize = 256 << 20;

/// PostgreSQL's limit on one text value (1 GB), the default of
/// [`StatementLimits::max_value_bytes`].
pub const PG_MAX_VALUE_BYTES: usize = (1 << 30) - 1;

/// Per-statement limits (`[limits]` in the server's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Largest statement text accepted, in bytes (54000 beyond).
    pub max_query_bytes: usize,
    /// Deepest operator chain or nesting one statement may hold, as counted by
    /// [`expression_depth`] (54001 beyond).
    pub max_expression_depth: usize,
    /// Largest string or binary value a function may build, in bytes (54000 beyond).
    pub max_value_bytes: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self { max_query_bytes: 4 << 20, max_expression_depth: 5_000, max_value_bytes: PG_MAX_VALUE_BYTES }
    }
}

impl StatementLimits {
    /// Refuses a statement whose tokens chain or nest operators deeper than
    /// [`StatementLimits::max_expression_depth`] (54001; see [`expression_depth`]).
    pub fn check_depth<'a>(&self, tokens: impl IntoIterator<Item = &'a Token>) -> Result<()> {
        let depth = depth_of(tokens);
        if depth > self.max_expression_depth {
            return Err(Error::new(
                StatusCode::StatementTooComplex,
                format!(
                    "statement too complex: its expressions chain or nest {depth} operators deep, \
                     over the limit of {} ([limits] max_expression_depth); use IN (…) lists or split the statement",
                    self.max_expression_depth
                ),
            ));
        }
        Ok(())
    }

    /// Refuses statement text over [`StatementLimits::max_query_bytes`] (54000).
    pub fn check_size(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_query_bytes {
            return Err(Error::new(
                StatusCode::ProgramLimitExceeded,
                format!(
                    "statement text of {} bytes exceeds the limit of {} bytes ([limits] max_query_bytes)",
                    sql.len(),
                    self.max_query_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The error for a value of `bytes` bytes built by `function` (54000).
    pub fn value_too_large(&self, function: &str, bytes: usize) -> Error {
        Error::new(
            StatusCode::ProgramLimitExceeded,
            format!(
                "{function}: a value of {bytes} bytes exceeds the limit of {} bytes ([limits] max_value_bytes)",
                self.max_value_bytes
            ),
        )
    }
}

/// An upper bound of how deep the trees parsed from `sql` can be, counted in one pass over its
/// tokens.
///
/// The parser recurses (and stops at its own recursion limit, 42601) for prefix forms: nested
/// parentheses, `NOT NOT …`, nested `CASE`. It loops, without recursing, over infix chains such
/// as `1+1+…` or `a=1 OR a=2 OR …`, building a tree as deep as the chain is long; `UNION` and
/// `JOIN` chains likewise become left-deep plans. So the bound is, over every point of the
/// text: the infix operators since the last list or clause boundary (a comma, `SELECT`,
/// `WHERE`, `WHEN`, …) at each open bracket level, summed over the open levels, plus the
/// number of open levels. A 10,000-item `IN (…)` list counts one per item boundary, not
/// 10,000.
pub fn expression_depth(sql: &str) -> Result<usize> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| Error::new(StatusCode::SyntaxError, format!("syntax error: {e}")))?;
    Ok(depth_of(tokens.iter()))
}

/// [`expression_depth`] over already tokenized text.
fn depth_of<'a>(tokens: impl IntoIterator<Item = &'a Token>) -> usize {
    // Infix operators in the current segment of each open bracket level.
    let mut levels: Vec<usize> = vec![0];
    let mut sum = 0usize;
    // AND/OR terms in the current segment of each open level, and their depth once balanced.
    let mut bools: Vec<usize> = vec![0];
    let mut log_sum = 0usize;
    let mut max = 0usize;
    // Whether the last significant token ends an operand (so a `*` after it multiplies).
    let mut after_operand = false;
    for token in tokens {
        if matches!(token, Token::Whitespace(_)) {
            continue;
        }
        let operand_before = std::mem::replace(&mut after_operand, ends_operand(token));
        match token {
            Token::Mul if !operand_before => {}
            Token::LParen | Token::LBracket | Token::LBrace => {
                levels.push(0);
                bools.push(0);
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                if levels.len() > 1 {
                    sum -= levels.pop().unwrap_or(0);
                    log_sum -= ceil_log2(bools.pop().unwrap_or(0) + 1);
                }
            }
            Token::Comma | Token::SemiColon => {
                let top = levels.last_mut().expect("one level");
                sum -= *top;
                *top = 0;
                let b = bools.last_mut().expect("one level");
                log_sum -= ceil_log2(*b + 1);
                *b = 0;
            }
            Token::Word(w) => match w.keyword {
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::END
                | Keyword::ON
                | Keyword::USING
                | Keyword::WINDOW
                | Keyword::PARTITION
                | Keyword::QUALIFY
                | Keyword::VALUES
                | Keyword::SET
                | Keyword::RETURNING => {
                    let top = levels.last_mut().expect("one level");
                    sum -= *top;
                    *top = 0;
                }
                Keyword::AND | Keyword::OR => {
                    // Long AND/OR chains are balanced after parsing (`balance_boolean_chains`):
                    // a chain of n terms is log2(n) deep, each term counted on its own.
                    let top = levels.last_mut().expect("one level");
                    sum -= *top;
                    *top = 0;
                    let b = bools.last_mut().expect("one level");
                    log_sum -= ceil_log2(*b + 1);
                    *b += 1;
                    log_sum += ceil_log2(*b + 1);
                }
                Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::JOIN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS
                | Keyword::XOR
                | Keyword::DIV => {
                    *levels.last_mut().expect("one level") += 1;
                    sum += 1;
                }
                _ => {}
            },
            t if is_operand_or_punctuation(t) => {}
            // Every other token is an operator: arithmetic, comparison, `||`, `::`, `->`, ….
            _ => {
                *levels.last_mut().expect("one level") += 1;
                sum += 1;
            }
        }
        max = max.max(sum + log_sum + levels.len() - 1);
    }
    max
}

fn ceil_log2(n: usize) -> usize {
    (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize
}

/// Chains of more than this many `AND`ed or `OR`ed terms are balanced.
const BALANCE_OVER: usize = 8;

/// Rebuilds long `a OR b OR c …` and `a AND b AND c …` chains, which the parser makes
/// left-deep (as deep as they are long), as balanced trees of the same terms in the same order
/// (log2 of their length deep). Both operators are associative, NULLs included, so the meaning
/// is unchanged; DataFusion's type coercion and simplifier then take time that grows like
/// n·log(n) instead of n² (debug build, 2,400 `OR` terms: 1.9 s → 0.3 s). Runs on the parsed
/// statement before anything else walks it; a chain is flattened with an explicit stack, never
/// by recursion down its length.
pub(crate) fn balance_boolean_chains(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Value, VisitMut, VisitorMut};
    use std::ops::ControlFlow;

    struct Balance;
    impl VisitorMut for Balance {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let op = match expr {
                Expr::BinaryOp { op: op @ (BinaryOperator::Or | BinaryOperator::And), left, .. } if matches!(left.as_ref(), Expr::BinaryOp { op: inner, .. } if inner == op) => {
                    op.clone()
                }
                _ => return ControlFlow::Continue(()),
            };
            let mut terms = vec![];
            let mut stack = vec![std::mem::replace(expr, Expr::Value(Value::Null.into()))];
            while let Some(e) = stack.pop() {
                match e {
                    Expr::BinaryOp { left, op: o, right } if o == op => {
                        stack.push(*right);
                        stack.push(*left);
                    }
                    other => terms.push(other),
                }
            }
            if terms.len() <= BALANCE_OVER {
                // Short chains keep their shape: rebuild them left-deep as parsed.
                let mut it = terms.into_iter();
                let first = it.next().expect("a chain has terms");
                *expr = it.fold(first, |l, r| Expr::BinaryOp { left: Box::new(l), op: op.clone(), right: Box::new(r) });
                return ControlFlow::Continue(());
            }
            while terms.len() > 1 {
                let mut next = Vec::with_capacity(terms.len().div_ceil(2));
                let mut it = terms.into_iter();
                while let Some(l) = it.next() {
                    next.push(match it.next() {
                        Some(r) => Expr::BinaryOp { left: Box::new(l), op: op.clone(), right: Box::new(r) },
                        None => l,
                    });
                }
                terms = next;
            }
            *expr = terms.pop().expect("a chain has terms");
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Balance);
}

fn is_operand_or_punctuation(t: &Token) -> bool {
    matches!(
        t,
        Token::EOF
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Whitespace(_)
            | Token::Period
            | Token::Colon
            | Token::Placeholder(_)
    )
}

fn ends_operand(t: &Token) -> bool {
    match t {
        Token::Word(w) => !matches!(
            w.keyword,
            Keyword::SELECT | Keyword::AND | Keyword::OR | Keyword::NOT | Keyword::DISTINCT | Keyword::ALL
        ),
        Token::RParen | Token::RBracket | Token::RBrace => true,
        Token::Mul | Token::Period | Token::Colon | Token::EOF | Token::Whitespace(_) => false,
        t => is_operand_or_punctuation(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_check(limits: &StatementLimits, sql: &str) -> Result<()> {
        limits.check_depth(Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().unwrap().iter())
    }

    fn chain(op: &str, n: usize) -> String {
        (0..n).map(|i| format!("{}", i % 7)).collect::<Vec<_>>().join(op)
    }

    #[test]
    fn infix_chains_count_their_length() {
        assert_eq!(expression_depth(&format!("SELECT {}", chain("+", 2000))).unwrap(), 1999);
        let ors = (0..1000).map(|i| format!("population = {i}")).collect::<Vec<_>>().join(" OR ");
        let d = expression_depth(&format!("SELECT 1 FROM t WHERE {ors}")).unwrap();
        // Balanced after parsing: log2(1000) levels of OR over one `=`.
        assert_eq!(d, 11);
    }

    #[test]
    fn lists_and_clauses_reset_the_count() {
        let list = (0..10_000).map(|i| format!("'{i:010}'")).collect::<Vec<_>>().join(", ");
        let d = expression_depth(&format!("SELECT a + 1, b * 2 FROM t WHERE npi IN ({list}) AND x = 1")).unwrap();
        assert!(d <= 4, "{d}");
        let cases = (0..5000).map(|i| format!("WHEN a = {i} THEN {i} + 1")).collect::<Vec<_>>().join(" ");
        assert!(expression_depth(&format!("SELECT CASE {cases} END FROM t")).unwrap() <= 2);
    }

    #[test]
    fn boolean_chains_are_balanced_in_order() {
        use datafusion::sql::sqlparser::parser::Parser;
        let parse = |sql: &str| Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
        let ors = (0..1000).map(|i| format!("a = {i}")).collect::<Vec<_>>().join(" OR ");
        let mut stmt = parse(&format!("SELECT 1 FROM t WHERE {ors} AND b"));
        balance_boolean_chains(&mut stmt);
        let text = stmt.to_string();
        // The same terms in the same order; only the grouping changed.
        let strip = |s: &str| s.replace(['(', ')'], "");
        assert_eq!(strip(&text), strip(&format!("SELECT 1 FROM t WHERE {ors} AND b")));
        // Short chains keep the parser's shape.
        let mut short = parse("SELECT 1 WHERE a OR b OR c");
        balance_boolean_chains(&mut short);
        assert_eq!(short, parse("SELECT 1 WHERE a OR b OR c"));
    }

    #[test]
    fn brackets_add_their_levels() {
        assert_eq!(expression_depth("SELECT (1 + (2 + (3 + 4)))").unwrap(), 6);
        assert_eq!(expression_depth("SELECT count(*), t.* FROM t").unwrap(), 1);
        assert_eq!(expression_depth("SELECT * FROM t").unwrap(), 0);
        assert_eq!(expression_depth(&format!("SELECT {}", chain(" * ", 50))).unwrap(), 49);
    }

    #[test]
    fn limits_refuse_with_their_sqlstate_codes() {
        let limits = StatementLimits { max_query_bytes: 100, max_expression_depth: 10, ..Default::default() };
        assert_eq!(limits.check_size(&"x".repeat(101)).unwrap_err().code, StatusCode::ProgramLimitExceeded);
        assert_eq!(
            depth_check(&limits, &format!("SELECT {}", chain("+", 12))).unwrap_err().code,
            StatusCode::StatementTooComplex
        );
        depth_check(&limits, &format!("SELECT {}", chain("+", 11))).unwrap();
    }
}
