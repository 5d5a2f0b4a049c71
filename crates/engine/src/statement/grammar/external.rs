//! Hive's external-table statements: `CREATE EXTERNAL TABLE`, `MSCK [REPAIR] TABLE`, Spark's
//! `ALTER TABLE t RECOVER PARTITIONS`, `SHOW PARTITIONS t [PARTITION (…)]`, and `ALTER TABLE t
//! ADD|DROP [IF [NOT] EXISTS] PARTITION (k='v', …)`. (`DROP TABLE` is PostgreSQL's statement,
//! read by sqlparser; the command decides whether the table is external.)

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::Token;
use rxgate_catalog::external::ExternalColumn;

use super::{Cur, Parsed};
use crate::statement::{ExternalCommand, Spec};

impl Cur {
    /// A partition value: `'text'`, a number, `true`, `DATE 'x'`.
    fn value(&mut self) -> Parsed<String> {
        if self.kw("DATE") || self.kw("TIMESTAMP") {
            return self.expect_string();
        }
        if let Some(s) = self.string() {
            return Ok(s);
        }
        let negative = self.tok(&Token::Minus);
        match self.peek().cloned() {
            Some(Token::Number(n, _)) => {
                self.pos += 1;
                Ok(if negative { format!("-{n}") } else { n })
            }
            _ if negative => Err(format!("expected a number at {}", self.here())),
            Some(Token::Word(w)) => {
                self.pos += 1;
                Ok(w.value)
            }
            _ => Err(format!("expected a partition value at {}", self.here())),
        }
    }

    /// `(k = v, …)`.
    fn spec(&mut self) -> Parsed<Spec> {
        self.expect(&Token::LParen, "(")?;
        let mut spec = vec![];
        loop {
            let k = self.expect_ident()?;
            self.expect(&Token::Eq, "=")?;
            spec.push((k, self.value()?));
            if !self.tok(&Token::Comma) {
                break;
            }
        }
        self.expect(&Token::RParen, ")")?;
        Ok(spec)
    }

    /// A Hive type: `string`, `decimal(10,2)`, `varchar(20)`, `double precision`.
    fn hive_type(&mut self) -> Parsed<String> {
        let base = match self.peek() {
            Some(Token::Word(w)) => w.value.to_lowercase(),
            _ => return Err(format!("expected a type at {}", self.here())),
        };
        self.pos += 1;
        if base == "double" && self.kw("PRECISION") {
            return Ok("double".into());
        }
        if self.peek() == Some(&Token::Lt) {
            return Err(format!("type {base}<…> is not supported for external tables"));
        }
        if self.tok(&Token::LParen) {
            let mut args = vec![];
            loop {
                match self.peek().cloned() {
                    Some(Token::Number(n, _)) => {
                        self.pos += 1;
                        args.push(n);
                    }
                    _ => return Err(format!("expected a number at {}", self.here())),
                }
                if !self.tok(&Token::Comma) {
                    break;
                }
            }
            self.expect(&Token::RParen, ")")?;
            return Ok(format!("{base}({})", args.join(",")));
        }
        Ok(base)
    }

    /// `(name type [COMMENT 'c'], …)`.
    fn columns(&mut self) -> Parsed<Vec<ExternalColumn>> {
        self.expect(&Token::LParen, "(")?;
        let mut cols = vec![];
        loop {
            let name = self.expect_ident()?;
            let hive_type = self.hive_type()?;
            let comment = if self.kw("COMMENT") { Some(self.expect_string()?) } else { None };
            cols.push(ExternalColumn { name, hive_type, comment });
            if !self.tok(&Token::Comma) {
                break;
            }
        }
        self.expect(&Token::RParen, ")")?;
        Ok(cols)
    }

    /// `('k' = 'v', …)`; OPTIONS also takes unquoted keys (`header 'true'`, `format.delimiter ','`).
    fn properties(&mut self, into: &mut BTreeMap<String, String>) -> Parsed<()> {
        self.expect(&Token::LParen, "(")?;
        if self.tok(&Token::RParen) {
            return Ok(());
        }
        loop {
            let k = match self.string() {
                Some(s) => s,
                None => {
                    let mut parts = vec![self.expect_ident()?];
                    while self.tok(&Token::Period) {
                        parts.push(self.expect_ident()?);
                    }
                    parts.join(".")
                }
            };
            self.tok(&Token::Eq);
            let v = self.value()?;
            into.insert(k.to_lowercase(), v);
            if !self.tok(&Token::Comma) {
                break;
            }
        }
        self.expect(&Token::RParen, ")")?;
        Ok(())
    }
}

/// The external-table statements (the rule is chosen by `super::rule`).
pub(super) fn statement(c: &mut Cur) -> Parsed<ExternalCommand> {
    if c.kws(&["CREATE", "EXTERNAL", "TABLE"]) {
        return create(c);
    }
    if c.kw("MSCK") {
        c.kw("REPAIR");
        c.expect_kw("TABLE")?;
        let table = c.name()?;
        let (add, drop) = if c.kw("ADD") {
            (true, false)
        } else if c.kw("DROP") {
            (false, true)
        } else if c.kw("SYNC") {
            (true, true)
        } else {
            (true, false)
        };
        if !c.at_end() {
            c.expect_kw("PARTITIONS")?;
        }
        return Ok(ExternalCommand::Repair { table, add, drop });
    }
    if c.kws(&["SHOW", "PARTITIONS"]) {
        let table = c.name()?;
        let spec = if c.kw("PARTITION") { c.spec()? } else { vec![] };
        return Ok(ExternalCommand::ShowPartitions { table, spec });
    }
    c.expect_kw("ALTER")?;
    c.expect_kw("TABLE")?;
    let table = c.name()?;
    // Spark's (and EMR Hive's) spelling of MSCK REPAIR TABLE.
    if c.kws(&["RECOVER", "PARTITIONS"]) {
        return Ok(ExternalCommand::Repair { table, add: true, drop: false });
    }
    if c.kw("ADD") {
        let if_not_exists = c.kws(&["IF", "NOT", "EXISTS"]);
        let mut partitions = vec![];
        while c.kw("PARTITION") {
            let spec = c.spec()?;
            let location = if c.kw("LOCATION") { Some(c.expect_string()?) } else { None };
            partitions.push((spec, location));
        }
        return Ok(ExternalCommand::AddPartitions { table, if_not_exists, partitions });
    }
    c.expect_kw("DROP")?;
    let if_exists = c.kws(&["IF", "EXISTS"]);
    let mut specs = vec![];
    loop {
        c.expect_kw("PARTITION")?;
        specs.push(c.spec()?);
        if !c.tok(&Token::Comma) {
            break;
        }
    }
    c.kw("PURGE");
    Ok(ExternalCommand::DropPartitions { table, if_exists, specs })
}

fn create(c: &mut Cur) -> Parsed<ExternalCommand> {
    let if_not_exists = c.kws(&["IF", "NOT", "EXISTS"]);
    let table = c.name()?;
    let columns = c.columns()?;
    let (mut partition_columns, mut format, mut location) = (vec![], None, None);
    let mut properties = BTreeMap::new();
    while !c.at_end() {
        if c.kw("COMMENT") {
            properties.insert("comment".into(), c.expect_string()?);
        } else if c.kws(&["PARTITIONED", "BY"]) {
            partition_columns = c.columns()?;
        } else if c.kws(&["ROW", "FORMAT"]) {
            if c.kw("DELIMITED") {
                loop {
                    if c.kws(&["FIELDS", "TERMINATED", "BY"]) {
                        properties.insert("field.delim".into(), c.expect_string()?);
                        if c.kws(&["ESCAPED", "BY"]) {
                            properties.insert("escape.delim".into(), c.expect_string()?);
                        }
                    } else if c.kws(&["LINES", "TERMINATED", "BY"]) {
                        let lines = c.expect_string()?;
                        if lines != "\n" && lines != "\\n" {
                            return Err("only LINES TERMINATED BY '\\n' is supported".into());
                        }
                    } else if c.kws(&["NULL", "DEFINED", "AS"]) {
                        properties.insert("serialization.null.format".into(), c.expect_string()?);
                    } else {
                        break;
                    }
                }
            } else if c.kw("SERDE") {
                properties.insert("serde".into(), c.expect_string()?);
                if c.kws(&["WITH", "SERDEPROPERTIES"]) {
                    c.properties(&mut properties)?;
                }
            } else {
                return Err(format!("expected DELIMITED or SERDE at {}", c.here()));
            }
        } else if c.kws(&["STORED", "AS"]) {
            format = Some(match c.peek() {
                Some(Token::Word(w)) => w.value.to_ascii_uppercase(),
                _ => return Err(format!("expected a file format at {}", c.here())),
            });
            c.pos += 1;
        } else if c.kw("LOCATION") {
            location = Some(c.expect_string()?);
        } else if c.kw("TBLPROPERTIES") || c.kw("OPTIONS") {
            c.properties(&mut properties)?;
        } else {
            return Err(format!("unexpected {}", c.here()));
        }
    }
    let format = format.ok_or("STORED AS PARQUET|CSV is required")?;
    let location = location.ok_or("LOCATION is required for an external table")?;
    Ok(ExternalCommand::Create { table, if_not_exists, columns, partition_columns, format, location, properties })
}
