//! Session and server information: `version()`, `current_schema(s)`, `current_database`,
//! the session user, `pg_get_userbyid`, `current_setting` / `set_config`, and the constants of a server that is never in recovery.

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{exec_err, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;

use super::{const_fn, int_arg, rows_of, text, text_arg, text_result, udf, Args};
use crate::settings::{version_string, DATABASE_NAME};
use crate::tables::roles;
use crate::PgContext;

/// Registers this family's functions into the session.
pub(super) fn register(ctx: &SessionContext, pg: &Arc<PgContext>) {
    let version = version_string();
    ctx.register_udf(udf("version", Args::None, DataType::Utf8, Volatility::Stable, move |_, _| {
        Ok(text(version.clone()))
    }));

    let p = pg.clone();
    ctx.register_udf(udf("current_schema", Args::None, DataType::Utf8, Volatility::Stable, move |_, _| {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(p.current_schema())))
    }));

    let p = pg.clone();
    ctx.register_udf(udf(
        "current_schemas",
        Args::Any,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        Volatility::Stable,
        move |args, _| {
            let implicit = int_arg(args, 0, 1).ok().and_then(|v| v[0]).unwrap_or(0) != 0
                || matches!(args.first(), Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))));
            let mut names = vec![];
            if implicit {
                names.push("pg_catalog".to_string());
            }
            let existing = p.schema_names();
            names.extend(p.settings.search_path().into_iter().filter(|s| existing.contains(s)));
            let list = SingleRowListArrayBuilder::new(Arc::new(StringArray::from(names))).build_list_scalar();
            Ok(ColumnarValue::Scalar(list))
        },
    ));

    for name in ["current_database", "current_catalog"] {
        ctx.register_udf(udf(name, Args::None, DataType::Utf8, Volatility::Stable, |_, _| Ok(text(DATABASE_NAME))));
    }
    for name in ["current_user", "session_user", "user", "current_role"] {
        let user = pg.user.clone();
        ctx.register_udf(udf(name, Args::None, DataType::Utf8, Volatility::Stable, move |_, _| Ok(text(user.clone()))));
    }

    let p = pg.clone();
    ctx.register_udf(udf("pg_get_userbyid", Args::Any, DataType::Utf8, Volatility::Stable, move |args, rows| {
        let n = rows_of(args, rows);
        let (names, oids) = roles(&p);
        let out = int_arg(args, 0, n)?
            .into_iter()
            .map(|o| {
                o.map(|o| {
                    oids.iter()
                        .position(|x| i64::from(*x) == o)
                        .map(|i| names[i].clone())
                        .unwrap_or_else(|| format!("unknown (OID={o})"))
                })
            })
            .collect();
        text_result(args, out)
    }));

    let p = pg.clone();
    ctx.register_udf(udf("current_setting", Args::Any, DataType::Utf8, Volatility::Stable, move |args, rows| {
        let n = rows_of(args, rows);
        let names = text_arg(args, 0, n)?;
        let missing_ok = text_arg(args, 1, n)?;
        let mut out = vec![];
        for (name, ok) in names.into_iter().zip(missing_ok) {
            let Some(name) = name else {
                out.push(None);
                continue;
            };
            match p.settings.get(&name) {
                Some(v) => out.push(Some(v)),
                None if ok.as_deref().is_some_and(|o| o == "true") => out.push(None),
                None => return exec_err!("unrecognized configuration parameter \"{name}\""),
            }
        }
        text_result(args, out)
    }));

    let p = pg.clone();
    ctx.register_udf(udf("set_config", Args::Any, DataType::Utf8, Volatility::Volatile, move |args, rows| {
        let n = rows_of(args, rows);
        let names = text_arg(args, 0, n)?;
        let values = text_arg(args, 1, n)?;
        let mut out = vec![];
        for (name, value) in names.into_iter().zip(values) {
            let (Some(name), Some(value)) = (name, value) else {
                out.push(None);
                continue;
            };
            let (_, stored) =
                p.settings.set(&name, &value).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            out.push(Some(stored));
        }
        text_result(args, out)
    }));

    // pg_backend_pid, pg_cancel_backend and pg_terminate_backend are the engine's: they act
    // on its activity registry (rxgate_engine's activity.rs).
    ctx.register_udf(const_fn("pg_is_in_recovery", ScalarValue::Boolean(Some(false))));
    ctx.register_udf(const_fn("txid_current", ScalarValue::Int64(Some(1))));
    ctx.register_udf(const_fn("pg_current_xact_id", ScalarValue::Int64(Some(1))));
}
