//! Name ↔ OID: `to_regclass` / `to_regtype` / `to_regnamespace`, the strict `rxgate_reg*`
//! forms behind `'name'::regclass` casts, and the `rxgate_reg*_name` functions behind
//! `oid::regclass::text`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::Volatility;
use datafusion::prelude::SessionContext;
use rxgate_common::StatusCode;

use super::{int_arg, int_result, rows_of, text_arg, text_result, udf, Args};
use crate::{PgContext, FIXED_RELATION_OIDS, INFORMATION_SCHEMA_OID, PG_CATALOG_OID};

/// Registers this family's functions into the session.
pub(super) fn register(ctx: &SessionContext, pg: &Arc<PgContext>) {
    // Name → OID lookups: to_reg* return NULL for an unknown name; the rxgate_reg* forms back
    // the `'name'::regclass` casts and fail like PostgreSQL does. A number is already an OID.
    type Resolve = fn(&PgContext, &str) -> Option<i32>;
    let lookups: [(&str, &str, StatusCode, Resolve); 3] = [
        ("regclass", "relation", StatusCode::TableNotFound, |p, v| p.resolve_relation(v)),
        ("regtype", "type", StatusCode::PlanError, |p, v| type_oids(p).get(&normalise_type_name(v)).copied()),
        ("regnamespace", "schema", StatusCode::PlanError, |p, v| p.resolve_namespace(v)),
    ];
    for (suffix, what, code, resolve) in lookups {
        for strict in [false, true] {
            let name = if strict { format!("rxgate_{suffix}") } else { format!("to_{suffix}") };
            let p = pg.clone();
            ctx.register_udf(udf(&name, Args::Any, DataType::Int32, Volatility::Stable, move |args, rows| {
                let n = rows_of(args, rows);
                let mut out = vec![];
                for v in text_arg(args, 0, n)? {
                    let oid = match v {
                        None => None,
                        Some(v) => match v.trim().parse::<i32>() {
                            Ok(o) => Some(o),
                            Err(_) => match resolve(&p, &v) {
                                Some(o) => Some(o),
                                None if strict => {
                                    return Err(not_found(code, format!("{what} \"{v}\" does not exist")))
                                }
                                None => None,
                            },
                        },
                    };
                    out.push(oid);
                }
                int_result(args, out)
            }));
        }
    }
    // OID → name, for `oid::regclass::text`, `oid::regtype::text` and `oid::regnamespace::text`.
    let p = pg.clone();
    ctx.register_udf(udf("rxgate_regclass_name", Args::Any, DataType::Utf8, Volatility::Stable, move |args, rows| {
        let n = rows_of(args, rows);
        let path = p.settings.search_path();
        let oids = p.oids.lock().expect("oid lock");
        let out = int_arg(args, 0, n)?
            .into_iter()
            .map(|o| {
                let o = o? as i32;
                let found = oids.relations.iter().find(|(_, v)| **v == o).map(|((s, t), _)| {
                    if s == "pg_catalog" || path.contains(s) {
                        t.clone()
                    } else {
                        format!("{s}.{t}")
                    }
                });
                Some(
                    found
                        .or_else(|| FIXED_RELATION_OIDS.iter().find(|(_, v)| *v == o).map(|(t, _)| t.to_string()))
                        .unwrap_or_else(|| o.to_string()),
                )
            })
            .collect();
        text_result(args, out)
    }));
    let p = pg.clone();
    ctx.register_udf(udf("rxgate_regtype_name", Args::Any, DataType::Utf8, Volatility::Stable, move |args, rows| {
        let n = rows_of(args, rows);
        let names = type_names(&p);
        let out = int_arg(args, 0, n)?
            .into_iter()
            .map(|o| {
                o.map(|o| {
                    if o == 0 {
                        "-".to_string()
                    } else {
                        names.get(&(o as i32)).cloned().unwrap_or_else(|| o.to_string())
                    }
                })
            })
            .collect();
        text_result(args, out)
    }));
    let p = pg.clone();
    ctx.register_udf(udf(
        "rxgate_regnamespace_name",
        Args::Any,
        DataType::Utf8,
        Volatility::Stable,
        move |args, rows| {
            let n = rows_of(args, rows);
            let oids = p.oids.lock().expect("oid lock");
            let out = int_arg(args, 0, n)?
                .into_iter()
                .map(|o| {
                    let o = o? as i32;
                    Some(match o {
                        PG_CATALOG_OID => "pg_catalog".to_string(),
                        INFORMATION_SCHEMA_OID => "information_schema".to_string(),
                        _ => oids
                            .namespaces
                            .iter()
                            .find(|(_, v)| **v == o)
                            .map(|(k, _)| k.clone())
                            .unwrap_or_else(|| o.to_string()),
                    })
                })
                .collect();
            text_result(args, out)
        },
    ));
}

fn not_found(code: StatusCode, message: String) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(rxgate_common::Error::new(code, message)))
}

/// `typname` → OID from the static pg_type table, plus the SQL spellings of common types.
fn type_oids(pg: &PgContext) -> &'static HashMap<String, i32> {
    static MAP: OnceLock<HashMap<String, i32>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map: HashMap<String, i32> = type_names(pg).iter().map(|(o, n)| (n.clone(), *o)).collect();
        for (alias, oid) in [
            ("integer", 23),
            ("int", 23),
            ("smallint", 21),
            ("bigint", 20),
            ("real", 700),
            ("double precision", 701),
            ("float", 701),
            ("boolean", 16),
            ("character varying", 1043),
            ("varchar", 1043),
            ("character", 1042),
            ("char", 1042),
            ("decimal", 1700),
            ("timestamp without time zone", 1114),
            ("timestamp with time zone", 1184),
            ("timestamptz", 1184),
            ("time without time zone", 1083),
            ("time with time zone", 1266),
        ] {
            map.insert(alias.to_string(), oid);
        }
        map
    })
}

/// OID → `typname` from the static pg_type table.
fn type_names(pg: &PgContext) -> &'static HashMap<i32, String> {
    static MAP: OnceLock<HashMap<i32, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for batch in pg.static_tables.pg_type.data() {
            let (Some(oid), Some(name)) = (batch.column_by_name("oid"), batch.column_by_name("typname")) else {
                continue;
            };
            let (Ok(oid), Ok(name)) = (cast(oid, &DataType::Int64), cast(name, &DataType::Utf8)) else { continue };
            let oid = oid.as_primitive::<Int64Type>();
            let name = name.as_string::<i32>();
            for i in 0..batch.num_rows() {
                if oid.is_valid(i) && name.is_valid(i) {
                    map.insert(oid.value(i) as i32, name.value(i).to_string());
                }
            }
        }
        map
    })
}

/// `pg_catalog.int4`, `"int4"`, `INTEGER`, `varchar(20)` → a key of [`type_oids`].
fn normalise_type_name(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase().replace('"', "");
    if let Some(rest) = n.strip_prefix("pg_catalog.") {
        n = rest.to_string();
    }
    if let Some(i) = n.find('(') {
        let tail = n[n.find(')').map(|j| j + 1).unwrap_or(n.len())..].to_string();
        n = format!("{}{}", n[..i].trim_end(), tail);
    }
    if let Some(base) = n.strip_suffix("[]") {
        return format!("_{}", base.trim());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_normalise() {
        assert_eq!(normalise_type_name("pg_catalog.INT4"), "int4");
        assert_eq!(normalise_type_name("character varying(20)"), "character varying");
        assert_eq!(normalise_type_name("text[]"), "_text");
    }
}
