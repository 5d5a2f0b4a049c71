//! Value functions that clients' catalog queries use: `array_lower` / `array_upper`,
//! `pg_encoding_to_char`, `_pg_expandarray`, `generate_subscripts`, `json_build_object`, and
//! `rxgate_like_escape` (the target of the `LIKE … ESCAPE` rewrite).

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::error::Result;
use datafusion::logical_expr::Volatility;
use datafusion::prelude::SessionContext;

use super::{int64_result, int_arg, null_fn, rows_of, text_arg, text_result, udf, Args};

/// Registers this family's functions into the session.
pub(super) fn register(ctx: &SessionContext) {
    // array_lower / array_upper of one-dimensional arrays (PostgreSQL arrays start at 1).
    for (name, upper) in [("array_lower", false), ("array_upper", true)] {
        ctx.register_udf(udf(name, Args::Any, DataType::Int64, Volatility::Immutable, move |args, rows| {
            let n = rows_of(args, rows);
            let Some(a) = args.first() else { return int64_result(args, vec![None; n]) };
            let arr = a.to_array(n)?;
            let lens: Vec<Option<i32>> = match arr.data_type() {
                DataType::List(_) => {
                    let l = arr.as_list::<i32>();
                    (0..l.len()).map(|i| (l.is_valid(i) && l.value_length(i) > 0).then(|| l.value_length(i))).collect()
                }
                DataType::LargeList(_) => {
                    let l = arr.as_list::<i64>();
                    (0..l.len())
                        .map(|i| (l.is_valid(i) && l.value_length(i) > 0).then(|| l.value_length(i) as i32))
                        .collect()
                }
                _ => vec![None; arr.len()],
            };
            let dims = int_arg(args, 1, n)?;
            let out = lens
                .into_iter()
                .zip(dims)
                .map(|(len, dim)| if dim == Some(1) { len.map(|l| if upper { i64::from(l) } else { 1 }) } else { None })
                .collect();
            int64_result(args, out)
        }));
    }
    ctx.register_udf(udf("pg_encoding_to_char", Args::Any, DataType::Utf8, Volatility::Immutable, |args, rows| {
        let n = rows_of(args, rows);
        let out = int_arg(args, 0, n)?
            .into_iter()
            .map(|e| e.map(|e| if e == 6 { "UTF8".to_string() } else { String::new() }))
            .collect();
        text_result(args, out)
    }));
    // information_schema._pg_expandarray(arr) is set-returning in PostgreSQL; pgjdbc only
    // applies it to pg_index.indkey, and rxgate tables have no indexes: a NULL (x, n) pair
    // keeps those queries valid.
    let pair =
        DataType::Struct(vec![Field::new("x", DataType::Int32, true), Field::new("n", DataType::Int32, true)].into());
    ctx.register_udf(null_fn("_pg_expandarray", pair));
    // generate_subscripts(arr, dim) is set-returning too; SQLAlchemy applies it to
    // pg_index.indkey, which has no rows here.
    ctx.register_udf(null_fn("generate_subscripts", DataType::Int32));
    // A LIKE pattern written for another escape character, rewritten for the backslash
    // (`x LIKE p ESCAPE '/'` → `x LIKE rxgate_like_escape(p, '/')`).
    ctx.register_udf(udf("rxgate_like_escape", Args::Any, DataType::Utf8, Volatility::Immutable, |args, rows| {
        let n = rows_of(args, rows);
        let patterns = text_arg(args, 0, n)?;
        let escapes = text_arg(args, 1, n)?;
        let out = patterns
            .into_iter()
            .zip(escapes)
            .map(|(p, e)| {
                let p = p?;
                let esc = e.and_then(|e| e.chars().next());
                let mut out = String::with_capacity(p.len());
                let mut chars = p.chars();
                while let Some(c) = chars.next() {
                    if Some(c) == esc {
                        if let Some(next) = chars.next() {
                            out.push('\\');
                            out.push(next);
                        }
                    } else if c == '\\' {
                        out.push_str("\\\\");
                    } else {
                        out.push(c);
                    }
                }
                Some(out)
            })
            .collect();
        text_result(args, out)
    }));
    // json_build_object(k1, v1, …) as JSON text (SQLAlchemy asks for identity and collation
    // details this way).
    ctx.register_udf(udf("json_build_object", Args::Any, DataType::Utf8, Volatility::Immutable, |args, rows| {
        let n = rows_of(args, rows);
        let cols: Vec<Vec<Option<String>>> = (0..args.len()).map(|i| text_arg(args, i, n)).collect::<Result<_>>()?;
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let out = (0..n)
            .map(|r| {
                let pairs: Vec<String> = cols
                    .chunks(2)
                    .map(|kv| {
                        let k = kv[0][r].clone().unwrap_or_default();
                        let v =
                            kv.get(1).and_then(|c| c[r].clone()).map(|v| quote(&v)).unwrap_or_else(|| "null".into());
                        format!("{} : {}", quote(&k), v)
                    })
                    .collect();
                Some(format!("{{{}}}", pairs.join(", ")))
            })
            .collect();
        text_result(args, out)
    }));
}
