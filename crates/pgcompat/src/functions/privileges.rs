//! Privileges and visibility: every object the session can see, it may read
//! (`has_*_privilege`, `pg_*_is_visible`); `pg_table_is_visible` follows the search path.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::Volatility;
use datafusion::prelude::SessionContext;

use super::{bool_result, int_arg, rows_of, udf, Args};
use crate::PgContext;

/// Registers this family's functions into the session.
pub(super) fn register(ctx: &SessionContext, pg: &Arc<PgContext>) {
    // Privileges: every object the session can see, it may read. (Policies, when they come,
    // hide what a session may not see from the catalog itself.)
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "has_type_privilege",
        "has_language_privilege",
        "has_tablespace_privilege",
        "has_foreign_data_wrapper_privilege",
        "has_server_privilege",
        "pg_has_role",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_operator_is_visible",
        "pg_opclass_is_visible",
        "pg_opfamily_is_visible",
        "pg_collation_is_visible",
        "pg_conversion_is_visible",
        "pg_ts_config_is_visible",
        "pg_ts_dict_is_visible",
        "pg_ts_parser_is_visible",
        "pg_ts_template_is_visible",
        "pg_statistics_obj_is_visible",
        "pg_relation_is_publishable",
    ] {
        let value = name != "pg_relation_is_publishable";
        ctx.register_udf(udf(name, Args::Any, DataType::Boolean, Volatility::Stable, move |args, rows| {
            let n = rows_of(args, rows);
            bool_result(args, vec![Some(value); n])
        }));
    }

    // pg_table_is_visible: the relation's schema is on the search path (or is pg_catalog).
    let p = pg.clone();
    ctx.register_udf(udf(
        "pg_table_is_visible",
        Args::Any,
        DataType::Boolean,
        Volatility::Stable,
        move |args, rows| {
            let n = rows_of(args, rows);
            let path = p.settings.search_path();
            let oids = p.oids.lock().expect("oid lock");
            let out = int_arg(args, 0, n)?
                .into_iter()
                .map(|o| {
                    let o = o? as i32;
                    if o < 16_384 {
                        return Some(true);
                    }
                    Some(oids.relations.iter().any(|((s, _), v)| *v == o && (s == "pg_catalog" || path.contains(s))))
                })
                .collect();
            bool_result(args, out)
        },
    ));
}
