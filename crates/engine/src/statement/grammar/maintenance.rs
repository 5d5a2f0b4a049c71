//! Table maintenance procedures, in Spark's and Trino's spellings:
//! `CALL [catalog.]system.expire_snapshots|remove_orphan_files|rewrite_data_files(…)` (named
//! or positional arguments, `TIMESTAMP '…'`, `map('k', 'v', …)`) and `ALTER TABLE t EXECUTE
//! expire_snapshots|remove_orphan_files(retention_threshold => '7d')`, `… EXECUTE
//! optimize[(file_size_threshold => '128MB')] [WHERE predicate]`. Also the CALL argument
//! reader the Iceberg procedures share ([`call_args`]).

use datafusion::sql::sqlparser::tokenizer::Token;
use rxgate_common::{Error, Result, StatusCode};

use super::Cur;
use crate::statement::{bad_time_travel, parse_timestamp, Cutoff, MaintenanceAction, MaintenanceCommand};

fn syntax(m: impl Into<String>) -> Error {
    crate::statement::dialect::syntax(m.into())
}

/// The procedures this module reads.
pub(super) const PROCEDURES: [&str; 6] = [
    "expire_snapshots",
    "remove_orphan_files",
    "rewrite_data_files",
    "optimize",
    "rewrite_manifests",
    "optimize_manifests",
];

/// One CALL / EXECUTE argument value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Str(String),
    Int(i64),
    /// `TIMESTAMP '…'`, as epoch ms.
    Time(i64),
    Bool(bool),
    /// `map('k', 'v', …)`.
    Map(Vec<(String, String)>),
}

/// A call's arguments: the positional ones, then the named ones, each in order.
pub(super) type CallArgs = (Vec<Arg>, Vec<(String, Arg)>);

/// `( [name =>] value, … )`: the positional and the named arguments, in order.
pub(super) fn call_args(c: &mut Cur, proc: &str) -> Result<CallArgs> {
    let (mut positional, mut named) = (vec![], vec![]);
    if !c.tok(&Token::LParen) {
        return Err(syntax(format!("{proc}(…) expected")));
    }
    if c.tok(&Token::RParen) {
        return Ok((positional, named));
    }
    loop {
        let key = if matches!(c.peek_at(1), Some(Token::RArrow)) {
            let k = c.ident().ok_or_else(|| syntax("argument name expected"))?;
            c.pos += 1;
            Some(k)
        } else {
            None
        };
        let value = arg(c, proc)?;
        match key {
            Some(k) => named.push((k, value)),
            None => positional.push(value),
        }
        if c.tok(&Token::Comma) {
            continue;
        }
        if c.tok(&Token::RParen) {
            return Ok((positional, named));
        }
        return Err(syntax(format!("expected , or ) in {proc}(…)")));
    }
}

fn arg(c: &mut Cur, proc: &str) -> Result<Arg> {
    if c.kw("timestamp") {
        let s = c.string().ok_or_else(|| syntax("TIMESTAMP needs a string"))?;
        return Ok(Arg::Time(parse_timestamp(&s).ok_or_else(|| bad_time_travel(format!("invalid timestamp '{s}'")))?));
    }
    if c.kw("true") {
        return Ok(Arg::Bool(true));
    }
    if c.kw("false") {
        return Ok(Arg::Bool(false));
    }
    if c.is_kw("map") && c.peek_at(1) == Some(&Token::LParen) {
        c.pos += 2;
        let mut pairs = vec![];
        let mut items = vec![];
        if !c.tok(&Token::RParen) {
            loop {
                // Scalars only: a map never nests, so reading one never recurses.
                items.push(if let Some(s) = c.string() {
                    s
                } else if let Some(n) = c.integer() {
                    n.to_string()
                } else {
                    return Err(syntax("map(…) takes strings and numbers"));
                });
                if c.tok(&Token::Comma) {
                    continue;
                }
                if c.tok(&Token::RParen) {
                    break;
                }
                return Err(syntax("expected , or ) in map(…)"));
            }
        }
        if items.len() % 2 != 0 {
            return Err(syntax("map(…) takes key, value pairs"));
        }
        for kv in items.chunks(2) {
            pairs.push((kv[0].clone(), kv[1].clone()));
        }
        return Ok(Arg::Map(pairs));
    }
    if let Some(s) = c.string() {
        return Ok(Arg::Str(s));
    }
    if let Some(n) = c.integer() {
        return Ok(Arg::Int(n));
    }
    Err(syntax(format!("unexpected argument {} of {proc}", c.here())))
}

/// `'7d'`, `'12h'`, `'30m'`, `'45s'`, `'1.5d'`, `'500ms'` (Trino's durations) in ms.
pub(super) fn duration_ms(text: &str) -> Result<i64> {
    let t = text.trim();
    let split =
        t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(|| syntax(format!("duration '{text}' needs a unit")))?;
    let (number, unit) = t.split_at(split);
    let n: f64 = number.trim().parse().map_err(|_| syntax(format!("invalid duration '{text}'")))?;
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        "d" => 86400e3,
        other => return Err(syntax(format!("unknown duration unit {other} (ms, s, m, h, d)"))),
    };
    if n < 0.0 || !n.is_finite() {
        return Err(syntax(format!("invalid duration '{text}'")));
    }
    Ok((n * scale) as i64)
}

/// `'128MB'`, `'10kB'`, `'1GB'`, `'512B'`, `'1048576'` (Trino's data sizes, powers of 1024).
pub(super) fn size_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.trim().parse().map_err(|_| syntax(format!("invalid data size '{text}'")))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0f64.powi(4),
        other => return Err(syntax(format!("unknown data size unit {other} (B, kB, MB, GB, TB)"))),
    };
    if n <= 0.0 || !n.is_finite() {
        return Err(syntax(format!("invalid data size '{text}'")));
    }
    Ok((n * scale) as u64)
}

fn table_arg(v: Arg) -> Result<Vec<String>> {
    match v {
        Arg::Str(t) if !t.is_empty() => Ok(t.split('.').map(str::to_string).collect()),
        _ => Err(syntax("the table argument is a 'schema.table' string")),
    }
}

fn time_arg(v: Arg, name: &str) -> Result<i64> {
    match v {
        Arg::Time(ms) => Ok(ms),
        Arg::Str(s) => parse_timestamp(&s).ok_or_else(|| bad_time_travel(format!("invalid timestamp '{s}'"))),
        _ => Err(syntax(format!("{name} takes a TIMESTAMP"))),
    }
}

fn count_arg(v: Arg, name: &str) -> Result<usize> {
    match v {
        Arg::Int(n) if n > 0 => Ok(n as usize),
        Arg::Str(s) => s.trim().parse().map_err(|_| syntax(format!("{name} takes a positive number"))),
        _ => Err(syntax(format!("{name} takes a positive number"))),
    }
}

fn bool_arg(v: Arg, name: &str) -> Result<bool> {
    match v {
        Arg::Bool(b) => Ok(b),
        Arg::Str(s) => rxgate_pgcompat::parse_bool(&s).ok_or_else(|| syntax(format!("{name} takes true or false"))),
        _ => Err(syntax(format!("{name} takes true or false"))),
    }
}

/// `CALL [catalog.]system.<proc>(…)` after the procedure's name.
pub(super) fn call(c: &mut Cur, proc: &str) -> Result<MaintenanceCommand> {
    let (positional, named) = call_args(c, &format!("system.{proc}"))?;
    let mut table = None;
    let mut args = vec![];
    for (i, v) in positional.into_iter().enumerate() {
        match i {
            0 => table = Some(table_arg(v)?),
            _ => return Err(syntax(format!("system.{proc} takes named arguments after the table"))),
        }
    }
    for (k, v) in named {
        if k == "table" {
            table = Some(table_arg(v)?);
        } else {
            args.push((k, v));
        }
    }
    let table = table.ok_or_else(|| syntax(format!("system.{proc} needs table => 'schema.table'")))?;
    let mut action = match proc {
        "expire_snapshots" => MaintenanceAction::ExpireSnapshots { older_than: None, retain_last: None },
        "remove_orphan_files" => MaintenanceAction::RemoveOrphanFiles { older_than: None, dry_run: false },
        "rewrite_data_files" => MaintenanceAction::RewriteDataFiles {
            filter: None,
            target_size: None,
            threshold: None,
            min_input_files: None,
        },
        "rewrite_manifests" => MaintenanceAction::RewriteManifests,
        other => return Err(Error::new(StatusCode::Unsupported, format!("procedure system.{other} is not supported"))),
    };
    for (k, v) in args {
        match (&mut action, k.as_str()) {
            (MaintenanceAction::ExpireSnapshots { older_than, .. }, "older_than")
            | (MaintenanceAction::RemoveOrphanFiles { older_than, .. }, "older_than") => {
                *older_than = Some(Cutoff::At(time_arg(v, &k)?))
            }
            (MaintenanceAction::ExpireSnapshots { retain_last, .. }, "retain_last") => {
                *retain_last = Some(count_arg(v, &k)?)
            }
            (MaintenanceAction::RemoveOrphanFiles { dry_run, .. }, "dry_run") => *dry_run = bool_arg(v, &k)?,
            (MaintenanceAction::RewriteDataFiles { filter, .. }, "where") => match v {
                Arg::Str(s) => *filter = Some(s),
                _ => return Err(syntax("where takes a predicate as a string")),
            },
            // Spark's caching hint; nothing to cache here.
            (MaintenanceAction::RewriteManifests, "use_caching") => {
                bool_arg(v, &k)?;
            }
            (MaintenanceAction::RewriteDataFiles { .. }, "strategy") => match v {
                // Both write with the table's sort order.
                Arg::Str(s) if s.eq_ignore_ascii_case("binpack") || s.eq_ignore_ascii_case("sort") => {}
                _ => return Err(Error::new(StatusCode::Unsupported, "strategy is 'binpack' or 'sort'")),
            },
            (MaintenanceAction::RewriteDataFiles { target_size, threshold, min_input_files, .. }, "options") => {
                let Arg::Map(pairs) = v else { return Err(syntax("options takes map('key', 'value', …)")) };
                for (key, value) in pairs {
                    match key.as_str() {
                        "target-file-size-bytes" => *target_size = Some(size_bytes(&value)?),
                        "min-file-size-bytes" => *threshold = Some(size_bytes(&value)?),
                        "min-input-files" => *min_input_files = Some(count_arg(Arg::Str(value), &key)?),
                        // Spark's: every live file is rewritten, however large, e.g. after a
                        // new sort order.
                        "rewrite-all" => {
                            if bool_arg(Arg::Str(value), &key)? {
                                *threshold = Some(u64::MAX);
                                *min_input_files = Some(1);
                            }
                        }
                        other => {
                            return Err(Error::new(
                                StatusCode::Unsupported,
                                format!(
                                    "option {other} is not supported (target-file-size-bytes, min-file-size-bytes, \
                                     min-input-files, rewrite-all)"
                                ),
                            ))
                        }
                    }
                }
            }
            (_, other) => return Err(syntax(format!("unknown argument {other} of system.{proc}"))),
        }
    }
    if !c.at_end() {
        return Err(syntax("unexpected text after CALL"));
    }
    Ok(MaintenanceCommand { table, action, returns_rows: true })
}

/// `ALTER TABLE t EXECUTE <proc>[(…)] [WHERE …]` after `EXECUTE`.
pub(super) fn execute(c: &mut Cur, table: Vec<String>) -> Result<MaintenanceCommand> {
    let proc = c.ident().ok_or_else(|| syntax("EXECUTE needs a procedure"))?;
    let (_, named) = if c.peek() == Some(&Token::LParen) { call_args(c, &proc)? } else { (vec![], vec![]) };
    let mut action = match proc.as_str() {
        "expire_snapshots" => MaintenanceAction::ExpireSnapshots { older_than: None, retain_last: None },
        "remove_orphan_files" => MaintenanceAction::RemoveOrphanFiles { older_than: None, dry_run: false },
        "optimize" => MaintenanceAction::RewriteDataFiles {
            filter: None,
            target_size: None,
            threshold: None,
            min_input_files: Some(2),
        },
        "optimize_manifests" => MaintenanceAction::RewriteManifests,
        other => {
            return Err(Error::new(StatusCode::Unsupported, format!("ALTER TABLE EXECUTE {other} is not supported")))
        }
    };
    for (k, v) in named {
        let text = match v {
            Arg::Str(s) => s,
            _ => return Err(syntax(format!("{k} takes a string ('7d', '128MB')"))),
        };
        match (&mut action, k.as_str()) {
            (MaintenanceAction::ExpireSnapshots { older_than, .. }, "retention_threshold")
            | (MaintenanceAction::RemoveOrphanFiles { older_than, .. }, "retention_threshold") => {
                *older_than = Some(Cutoff::Ago(duration_ms(&text)?))
            }
            (MaintenanceAction::RewriteDataFiles { threshold, .. }, "file_size_threshold") => {
                *threshold = Some(size_bytes(&text)?)
            }
            (_, other) => return Err(syntax(format!("unknown argument {other} of EXECUTE {proc}"))),
        }
    }
    if c.kw("where") {
        let MaintenanceAction::RewriteDataFiles { filter, .. } = &mut action else {
            return Err(syntax(format!("EXECUTE {proc} takes no WHERE")));
        };
        let rest: Vec<String> = std::iter::from_fn(|| {
            let t = c.peek()?.to_string();
            c.pos += 1;
            Some(t)
        })
        .collect();
        if rest.is_empty() {
            return Err(syntax("WHERE needs a predicate"));
        }
        *filter = Some(rest.join(" "));
    }
    if !c.at_end() {
        return Err(syntax("unexpected text at the end of the statement"));
    }
    Ok(MaintenanceCommand { table, action, returns_rows: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_trino_writes_them() {
        assert_eq!(duration_ms("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(duration_ms("1.5h").unwrap(), 5_400_000);
        assert_eq!(duration_ms("500ms").unwrap(), 500);
        assert!(duration_ms("7").is_err() && duration_ms("7w").is_err());
        assert_eq!(size_bytes("128MB").unwrap(), 128 << 20);
        assert_eq!(size_bytes("10kB").unwrap(), 10 << 10);
        assert_eq!(size_bytes("1048576").unwrap(), 1 << 20);
        assert!(size_bytes("0MB").is_err() && size_bytes("3XB").is_err());
    }
}
