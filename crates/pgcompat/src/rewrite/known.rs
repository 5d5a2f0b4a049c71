//! Client statements DataFusion cannot plan, replaced whole on the token stream.

use std::sync::OnceLock;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Client statements DataFusion cannot plan, replaced by an equivalent over what rxgate has
/// (always an empty result of the same shape: the objects they ask about do not exist here).
/// Matched on tokens, ignoring whitespace and case of keywords; `$1` in a pattern matches any
/// one token (psql inlines the table's OID as a literal).
const KNOWN: &[(&str, &str)] = &[
    // psql 15 `\d TABLE`: row-level security policies (there are none).
    (
        "SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
    WHEN 'r' THEN 'SELECT'
    WHEN 'a' THEN 'INSERT'
    WHEN 'w' THEN 'UPDATE'
    WHEN 'd' THEN 'DELETE'
    END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = $1 ORDER BY 1",
        "SELECT NULL::TEXT AS polname, NULL::BOOLEAN AS polpermissive, NULL::TEXT AS array_to_string,
  NULL::TEXT AS pg_get_expr, NULL::TEXT AS pg_get_expr_1, NULL::TEXT AS cmd WHERE false",
    ),
    // psql 15 `\d TABLE`: extended statistics objects (there are none).
    (
        "SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS nsp, stxname,
pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,
  'd' = any(stxkind) AS ndist_enabled,
  'f' = any(stxkind) AS deps_enabled,
  'm' = any(stxkind) AS mcv_enabled,
stxstattarget
FROM pg_catalog.pg_statistic_ext
WHERE stxrelid = $1
ORDER BY nsp, stxname",
        "SELECT NULL::INT AS oid, NULL::TEXT AS stxrelid, NULL::TEXT AS nsp, NULL::TEXT AS stxname,
  NULL::TEXT AS columns, NULL::BOOLEAN AS ndist_enabled, NULL::BOOLEAN AS deps_enabled,
  NULL::BOOLEAN AS mcv_enabled, NULL::INT AS stxstattarget WHERE false",
    ),
    // psql 15 `\d TABLE`: publications (there are none).
    (
        "SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
WHERE pc.oid =$1 and pg_catalog.pg_relation_is_publishable($1)
UNION
SELECT pubname
     , pg_get_expr(pr.prqual, c.oid)
     , (CASE WHEN pr.prattrs IS NOT NULL THEN
         (SELECT string_agg(attname, ', ')
           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,
                pg_catalog.pg_attribute
          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
        ELSE NULL END) FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
WHERE pr.prrelid = $1
UNION
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable($1)
ORDER BY 1",
        "SELECT NULL::TEXT AS pubname, NULL::TEXT AS a, NULL::TEXT AS b WHERE false",
    ),
    // pgcli 4 completion refresh: foreign keys (there are none).
    (
        r#"SELECT s_p.nspname AS parentschema,
                       t_p.relname AS parenttable,
                       unnest((
                        select
                            array_agg(attname ORDER BY i)
                        from
                            (select unnest(confkey) as attnum, generate_subscripts(confkey, 1) as i) x
                            JOIN pg_catalog.pg_attribute c USING(attnum)
                            WHERE c.attrelid = fk.confrelid
                        )) AS parentcolumn,
                       s_c.nspname AS childschema,
                       t_c.relname AS childtable,
                       unnest((
                        select
                            array_agg(attname ORDER BY i)
                        from
                            (select unnest(conkey) as attnum, generate_subscripts(conkey, 1) as i) x
                            JOIN pg_catalog.pg_attribute c USING(attnum)
                            WHERE c.attrelid = fk.conrelid
                        )) AS childcolumn
                FROM pg_catalog.pg_constraint fk
                JOIN pg_catalog.pg_class      t_p ON t_p.oid = fk.confrelid
                JOIN pg_catalog.pg_namespace  s_p ON s_p.oid = t_p.relnamespace
                JOIN pg_catalog.pg_class      t_c ON t_c.oid = fk.conrelid
                JOIN pg_catalog.pg_namespace  s_c ON s_c.oid = t_c.relnamespace
                WHERE fk.contype = 'f'"#,
        "SELECT NULL::TEXT AS parentschema, NULL::TEXT AS parenttable, NULL::TEXT AS parentcolumn,
  NULL::TEXT AS childschema, NULL::TEXT AS childtable, NULL::TEXT AS childcolumn WHERE false",
    ),
    // pgcli 4 completion refresh: functions (rxgate has no user-defined ones; the built-in
    // ones pgcli completes from its own keyword list).
    (
        r#"SELECT n.nspname schema_name,
                        p.proname func_name,
                        p.proargnames,
                        COALESCE(proallargtypes::regtype[], proargtypes::regtype[])::text[],
                        p.proargmodes,
                        prorettype::regtype::text return_type,
                        p.prokind = 'a' is_aggregate,
                        p.prokind = 'w' is_window,
                        p.proretset is_set_returning,
                        d.deptype = 'e' is_extension,
                        pg_get_expr(proargdefaults, 0) AS arg_defaults
                FROM pg_catalog.pg_proc p
                        INNER JOIN pg_catalog.pg_namespace n
                            ON n.oid = p.pronamespace
                LEFT JOIN pg_depend d ON d.objid = p.oid and d.deptype = 'e'
                WHERE p.prorettype::regtype <> 'trigger'::regtype
                ORDER BY 1, 2"#,
        "SELECT NULL::TEXT AS schema_name, NULL::TEXT AS func_name, NULL::TEXT AS proargnames,
  NULL::TEXT AS coalesce, NULL::TEXT AS proargmodes, NULL::TEXT AS return_type,
  NULL::BOOLEAN AS is_aggregate, NULL::BOOLEAN AS is_window, NULL::BOOLEAN AS is_set_returning,
  NULL::BOOLEAN AS is_extension, NULL::TEXT AS arg_defaults WHERE false",
    ),
    // pgcli 4 keyword casing from the bodies of SQL functions (there are none).
    (
        r#"WITH Words AS (
                SELECT regexp_split_to_table(prosrc, '\W+') AS Word, COUNT(1)
                FROM pg_catalog.pg_proc P
                JOIN pg_catalog.pg_namespace N ON N.oid = P.pronamespace
                JOIN pg_catalog.pg_language L ON L.oid = P.prolang
                WHERE L.lanname IN ('sql', 'plpgsql')
                AND N.nspname NOT IN ('pg_catalog', 'information_schema')
                GROUP BY Word
            ),
            OrderWords AS (
                SELECT Word,
                    ROW_NUMBER() OVER(PARTITION BY LOWER(Word) ORDER BY Count DESC)
                FROM Words
                WHERE Word ~* '.*[a-z].*'
            ),
            Names AS (
                --Column names
                SELECT attname AS Name
                FROM pg_catalog.pg_attribute
                UNION -- Table/view names
                SELECT relname
                FROM pg_catalog.pg_class
                UNION -- Function names
                SELECT proname
                FROM pg_catalog.pg_proc
                UNION -- Type names
                SELECT typname
                FROM pg_catalog.pg_type
                UNION -- Schema names
                SELECT nspname
                FROM pg_catalog.pg_namespace
                UNION -- Parameter names
                SELECT unnest(proargnames)
                FROM pg_proc
            )
            SELECT Word
            FROM OrderWords
            WHERE LOWER(Word) IN (SELECT Name FROM Names)
            AND Row_Number = 1"#,
        "SELECT NULL::TEXT AS word WHERE false",
    ),
];

fn significant(sql: &str) -> Result<Vec<Token>, ParserError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| ParserError::TokenizerError(e.to_string()))?;
    Ok(normalise(tokens))
}

/// The tokens without whitespace (comments included), keywords in upper case.
fn normalise(tokens: impl IntoIterator<Item = Token>) -> Vec<Token> {
    tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            Token::Word(w) if w.keyword != Keyword::NoKeyword => Token::make_keyword(&w.value.to_ascii_uppercase()),
            t => t,
        })
        .collect()
}

fn known_patterns() -> &'static [(Vec<Token>, Vec<Token>)] {
    static P: OnceLock<Vec<(Vec<Token>, Vec<Token>)>> = OnceLock::new();
    P.get_or_init(|| {
        KNOWN
            .iter()
            .filter_map(|(from, to)| Some((significant(from).ok()?, significant(to).ok()?)))
            .map(|(mut f, t)| {
                while f.last() == Some(&Token::SemiColon) {
                    f.pop();
                }
                (f, t)
            })
            .collect()
    })
}

/// The statement's tokens (as PostgreSQL's tokenizer gives them, whitespace included) with
/// every known client statement ([`KNOWN`]) replaced by its equivalent. Matching ignores
/// whitespace, comments and the case of keywords. When nothing matches, the tokens are
/// returned unchanged; otherwise the whole stream comes back without whitespace and spans.
pub fn replace_known_tokens(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, ParserError> {
    if known_patterns().is_empty() {
        return Ok(tokens);
    }
    let significant = normalise(tokens.iter().map(|t| t.token.clone()));
    let mut out = vec![];
    let mut i = 0;
    let mut replaced = false;
    'outer: while i < significant.len() {
        for (from, to) in known_patterns() {
            let matches = significant.len() - i >= from.len()
                && from.iter().zip(&significant[i..]).all(|(p, t)| matches!(p, Token::Placeholder(_)) || p == t);
            if matches {
                out.extend(to.iter().cloned());
                i += from.len();
                replaced = true;
                continue 'outer;
            }
        }
        out.push(significant[i].clone());
        i += 1;
    }
    if !replaced {
        return Ok(tokens);
    }
    Ok(out.into_iter().map(TokenWithSpan::wrap).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(sql: &str) -> Vec<TokenWithSpan> {
        Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().unwrap()
    }

    #[test]
    fn known_statements_are_replaced_and_others_kept() {
        let sql = "select 1 -- no match\n";
        assert_eq!(replace_known_tokens(tokens(sql)).unwrap(), tokens(sql));
        let psql = KNOWN[2].0.replace("$1", "16385");
        let out: Vec<Token> = replace_known_tokens(tokens(&psql)).unwrap().into_iter().map(|t| t.token).collect();
        assert_eq!(out, significant(KNOWN[2].1).unwrap());
    }
}
