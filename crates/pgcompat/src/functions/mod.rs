//! PostgreSQL functions clients call during start-up and introspection.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::{format_type, pg_get_expr_udf, quote_ident_udf};

use rxgate_common::StatusCode;

use super::{PgContext, PG_CATALOG_OID};
use crate::settings::{version_string, DATABASE_NAME};

type Body = Arc<dyn Fn(&[ColumnarValue], usize) -> Result<ColumnarValue> + Send + Sync>;

/// A scalar function defined by a closure.
struct Udf {
    name: String,
    signature: Signature,
    ret: DataType,
    body: Body,
}

impl fmt::Debug for Udf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Udf({})", self.name)
    }
}

impl PartialEq for Udf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Udf {}

impl Hash for Udf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for Udf {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.ret.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.body)(&args.args, args.number_rows)
    }
}

/// Argument shapes.
enum Args {
    /// No arguments.
    None,
    /// Any number (≥ 0) of arguments of any type.
    Any,
}

fn udf(
    name: &str,
    args: Args,
    ret: DataType,
    volatility: Volatility,
    body: impl Fn(&[ColumnarValue], usize) -> Result<ColumnarValue> + Send + Sync + 'static,
) -> ScalarUDF {
    let signature = match args {
        Args::None => Signature::new(TypeSignature::Nullary, volatility),
        Args::Any => Signature::one_of(vec![TypeSignature::Nullary, TypeSignature::VariadicAny], volatility),
    };
    ScalarUDF::new_from_impl(Udf { name: name.to_string(), signature, ret, body: Arc::new(body) })
}

fn text(v: impl Into<String>) -> ColumnarValue {
    ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.into())))
}

/// Argument `i` as text per row (`None` for NULL or a missing argument).
fn text_arg(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Vec<Option<String>>> {
    let Some(a) = args.get(i) else { return Ok(vec![None; rows]) };
    let arr = a.to_array(rows)?;
    let arr = cast(&arr, &DataType::Utf8)?;
    Ok(arr.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect())
}

/// Argument `i` as integers per row.
fn int_arg(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Vec<Option<i64>>> {
    let Some(a) = args.get(i) else { return Ok(vec![None; rows]) };
    let arr = a.to_array(rows)?;
    let arr = cast(&arr, &DataType::Int64)?;
    Ok(arr.as_primitive::<Int64Type>().iter().collect())
}

/// Whether every argument is a scalar (then the result is one scalar too).
fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

fn rows_of(args: &[ColumnarValue], rows: usize) -> usize {
    if all_scalar(args) {
        1
    } else {
        rows
    }
}

fn text_result(args: &[ColumnarValue], values: Vec<Option<String>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(StringArray::from(values));
    shape(args, arr)
}

fn int_result(args: &[ColumnarValue], values: Vec<Option<i32>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(Int32Array::from(values));
    shape(args, arr)
}

fn int64_result(args: &[ColumnarValue], values: Vec<Option<i64>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(values));
    shape(args, arr)
}

fn bool_result(args: &[ColumnarValue], values: Vec<Option<bool>>) -> Result<ColumnarValue> {
    let arr: ArrayRef = Arc::new(BooleanArray::from(values));
    shape(args, arr)
}

fn shape(args: &[ColumnarValue], arr: ArrayRef) -> Result<ColumnarValue> {
    if all_scalar(args) && arr.len() == 1 {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
    } else {
        Ok(ColumnarValue::Array(arr))
    }
}

/// A function returning NULL of a type, whatever its arguments.
fn null_fn(name: &str, ret: DataType) -> ScalarUDF {
    let null = ScalarValue::try_from(&ret).unwrap_or(ScalarValue::Null);
    udf(name, Args::Any, ret, Volatility::Stable, move |_, _| Ok(ColumnarValue::Scalar(null.clone())))
}

/// A function returning a constant, whatever its arguments.
fn const_fn(name: &str, value: ScalarValue) -> ScalarUDF {
    let ret = value.data_type();
    udf(name, Args::Any, ret, Volatility::Stable, move |_, _| Ok(ColumnarValue::Scalar(value.clone())))
}

/// Registers every function into the session.
pub(crate) fn register(ctx: &SessionContext, pg: &Arc<PgContext>) {
    // From datafusion-pg-catalog.
    ctx.register_udf(format_type::create_format_type_udf());
    ctx.register_udf(pg_get_expr_udf::create_pg_get_expr_udf());
    ctx.register_udf(quote_ident_udf::create_quote_ident_udf());
    ctx.register_udf(quote_ident_udf::create_parse_ident_udf());
    ctx.register_udtf("pg_get_keywords", pg.static_tables.pg_get_keywords.clone());

    // information_schema.columns shows PostgreSQL's type names (see rewrite.rs): data_type
    // as the SQL standard spells it, udt_name as pg_type does, from DataFusion's Arrow names.
    for (name, udt) in [("rxgate_pg_data_type", false), ("rxgate_pg_udt_name", true)] {
        ctx.register_udf(udf(name, Args::Any, DataType::Utf8, Volatility::Immutable, move |args, rows| {
            let n = rows_of(args, rows);
            let values = text_arg(args, 0, n)?
                .into_iter()
                .map(|t| t.map(|t| information_schema_type(&t, udt)))
                .collect();
            text_result(args, values)
        }));
    }

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
        let (names, oids) = super::tables::roles(&p);
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

    let pid = std::process::id() as i32;
    ctx.register_udf(udf("pg_backend_pid", Args::None, DataType::Int32, Volatility::Stable, move |_, _| {
        Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(pid))))
    }));
    ctx.register_udf(const_fn("pg_is_in_recovery", ScalarValue::Boolean(Some(false))));
    ctx.register_udf(const_fn("txid_current", ScalarValue::Int64(Some(1))));
    ctx.register_udf(const_fn("pg_current_xact_id", ScalarValue::Int64(Some(1))));
    for name in ["pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_database_size"] {
        ctx.register_udf(const_fn(name, ScalarValue::Int64(Some(0))));
    }
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
                                None if strict => return Err(not_found(code, format!("{what} \"{v}\" does not exist"))),
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
                        .or_else(|| {
                            super::FIXED_RELATION_OIDS.iter().find(|(_, v)| *v == o).map(|(t, _)| t.to_string())
                        })
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
                        super::INFORMATION_SCHEMA_OID => "information_schema".to_string(),
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
        assert_eq!(size_pretty(20_000), "20 kB");
        assert_eq!(size_pretty(100), "100 bytes");
    }
}

/// PostgreSQL's information_schema name of an Arrow type given as DataFusion shows it
/// (`Int64`, `Utf8View`, `Timestamp(µs)`…): `data_type` (`bigint`, `text`, `ARRAY`…), or with
/// `udt` the pg_type name (`int8`, `_int4`…). An unparsable name is kept as is.
pub(crate) fn information_schema_type(arrow: &str, udt: bool) -> String {
    let Ok(dt) = arrow.parse::<DataType>() else { return arrow.to_string() };
    let info = super::tables::pg_type_of(&dt);
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
        let ts = datafusion::arrow::datatypes::DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None).to_string();
        assert_eq!(t(&ts, false), "timestamp without time zone");
        assert_eq!(t(&ts, true), "timestamp");
        let list = datafusion::arrow::datatypes::DataType::new_list(datafusion::arrow::datatypes::DataType::Int32, true).to_string();
        assert_eq!(t(&list, false), "ARRAY");
        assert_eq!(t(&list, true), "_int4");
    }
}
