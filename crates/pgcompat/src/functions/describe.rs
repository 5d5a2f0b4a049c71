//! Describing objects: PostgreSQL's type names for `information_schema.columns`, sizes
//! (always 0, and `pg_size_pretty`), column documentation (`col_description`), and the
//! `pg_get_*def` / `obj_description` family (NULL: the objects they describe do not exist).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Volatility;
use datafusion::prelude::SessionContext;

use super::{const_fn, int_arg, null_fn, rows_of, text_arg, text_result, udf, Args};
use crate::tables::pg_type_of;
use crate::PgContext;

/// Registers this family's functions into the session.
pub(super) fn register(ctx: &SessionContext, pg: &Arc<PgContext>) {
    // information_schema.columns shows PostgreSQL's type names (see rewrite.rs): data_type
    // as the SQL standard spells it, udt_name as pg_type does, from DataFusion's Arrow names.
    for (name, udt) in [("rxgate_pg_data_type", false), ("rxgate_pg_udt_name", true)] {
        ctx.register_udf(udf(name, Args::Any, DataType::Utf8, Volatility::Immutable, move |args, rows| {
            let n = rows_of(args, rows);
            let values =
                text_arg(args, 0, n)?.into_iter().map(|t| t.map(|t| information_schema_type(&t, udt))).collect();
            text_result(args, values)
        }));
    }

    for name in ["pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_database_size"] {
        ctx.register_udf(const_fn(name, ScalarValue::Int64(Some(0))));
    }
    ctx.register_udf(udf("pg_size_pretty", Args::Any, DataType::Utf8, Volatility::Immutable, |args, rows| {
        let n = rows_of(args, rows);
        let out = int_arg(args, 0, n)?.into_iter().map(|v| v.map(size_pretty)).collect();
        text_result(args, out)
    }));

    for name in [
        "obj_description",
        "shobj_description",
        "pg_get_constraintdef",
        "pg_get_indexdef",
        "pg_get_viewdef",
        "pg_get_triggerdef",
        "pg_get_ruledef",
        "pg_get_functiondef",
        "pg_get_function_result",
        "pg_get_function_arguments",
        "pg_get_function_identity_arguments",
        "pg_get_serial_sequence",
        "pg_get_partkeydef",
        "pg_get_statisticsobjdef_columns",
        "pg_partition_ancestors",
    ] {
        ctx.register_udf(null_fn(name, DataType::Utf8));
    }

    // col_description(table oid, attnum): the column's documentation in the lakehouse.
    let p = pg.clone();
    ctx.register_udf(udf("col_description", Args::Any, DataType::Utf8, Volatility::Stable, move |args, rows| {
        let n = rows_of(args, rows);
        let docs = p.column_docs.lock().expect("docs lock");
        let out = int_arg(args, 0, n)?
            .into_iter()
            .zip(int_arg(args, 1, n)?)
            .map(|(o, a)| docs.get(&(o? as i32, a? as i32)).cloned())
            .collect();
        text_result(args, out)
    }));
}

fn size_pretty(bytes: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v.abs() >= 10.0 * 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{} {}", v.round() as i64, units[i])
}

/// PostgreSQL's information_schema name of an Arrow type given as DataFusion shows it
/// (`Int64`, `Utf8View`, `Timestamp(µs)`…): `data_type` (`bigint`, `text`, `ARRAY`…), or with
/// `udt` the pg_type name (`int8`, `_int4`…). An unparsable name is kept as is.
pub(crate) fn information_schema_type(arrow: &str, udt: bool) -> String {
    let Ok(dt) = arrow.parse::<DataType>() else { return arrow.to_string() };
    let info = pg_type_of(&dt);
    let ty = datafusion::arrow::datatypes::DataType::clone(&dt);
    let typ = arrow_pg::datatypes::into_pg_type(&ty).ok();
    let typname = typ.as_ref().map(|t| t.name().to_string()).unwrap_or_else(|| "text".into());
    if udt {
        return typname;
    }
    if info.array {
        return "ARRAY".into();
    }
    match typname.as_str() {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "time" => "time without time zone",
        "timetz" => "time with time zone",
        other => return other.to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod size_tests {
    use super::size_pretty;

    #[test]
    fn sizes_print_like_postgres() {
        assert_eq!(size_pretty(20_000), "20 kB");
        assert_eq!(size_pretty(100), "100 bytes");
    }
}

#[cfg(test)]
mod information_schema_tests {
    use super::information_schema_type as t;

    #[test]
    fn arrow_names_become_postgresql_names() {
        for (arrow, data_type, udt) in [
            ("Int32", "integer", "int4"),
            ("Int64", "bigint", "int8"),
            ("Float64", "double precision", "float8"),
            ("Utf8", "text", "text"),
            ("Utf8View", "text", "text"),
            ("Date32", "date", "date"),
            ("Boolean", "boolean", "bool"),
            ("Decimal128(10, 2)", "numeric", "numeric"),
        ] {
            assert_eq!(t(arrow, false), data_type, "{arrow}");
            assert_eq!(t(arrow, true), udt, "{arrow}");
        }
        let ts = datafusion::arrow::datatypes::DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            None,
        )
        .to_string();
        assert_eq!(t(&ts, false), "timestamp without time zone");
        assert_eq!(t(&ts, true), "timestamp");
        let list =
            datafusion::arrow::datatypes::DataType::new_list(datafusion::arrow::datatypes::DataType::Int32, true)
                .to_string();
        assert_eq!(t(&list, false), "ARRAY");
        assert_eq!(t(&list, true), "_int4");
    }
}
