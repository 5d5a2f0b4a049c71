//! An optimizer rule that groups and counts by a pseudonymised column's real values and
//! masks only the groups.
//!
//! The keyed pseudonym is injective in practice (HMAC-SHA256 cut to 128 bits for text: odds
//! of any collision among a billion values ~10^-21; 63 bits for integers: ~10^-7 among a
//! million) and keeps NULL as NULL. So grouping by `pseudonym(x)` makes exactly the groups
//! that grouping by `x` makes, and `count([DISTINCT] pseudonym(x))` equals
//! `count([DISTINCT] x)`. The rule rewrites
//!
//! ```text
//! Aggregate: groupBy=[c], aggr=[count(DISTINCT c)]        Projection: pseudonym(c) AS c, …
//!   Projection: pseudonym(x) AS c, …                 ⇒      Aggregate: groupBy=[c], aggr=[count(DISTINCT c)]
//!                                                             Projection: x AS c, …
//! ```
//!
//! so a dashboard's `count(DISTINCT npi)` over 200k rows computes no pseudonym at all, and a
//! `GROUP BY npi` computes one per group instead of one per row. The real value travels only
//! between the masking projection and the aggregate right above it; everything above sees
//! the same masked column as before, under the same name and type. A column is rewritten
//! only when the aggregate uses it in nothing but plain group keys and `count` arguments.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, Result as DfResult};
use datafusion::logical_expr::expr::{AggregateFunction, Alias, ScalarFunction};
use datafusion::logical_expr::{cast, Aggregate, Expr, LogicalPlan, Projection, ScalarUDF, SubqueryAlias};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use crate::mask::PSEUDONYM_UDF;

/// Moves a pseudonym above the aggregate that groups or counts by it (see the module doc).
#[derive(Debug, Default)]
pub struct InjectiveMaskRule;

impl OptimizerRule for InjectiveMaskRule {
    fn name(&self) -> &str {
        "rxgate_injective_mask"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_aggregate(&agg)? {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(LogicalPlan::Aggregate(agg))),
        }
    }
}

/// How the aggregate uses one input column.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    Unused,
    /// Only as plain group keys and `count` arguments.
    Safe,
    /// Anywhere else: the column keeps its mask.
    Other,
}

/// One column of the masking projection that is moved above the aggregate.
struct Moved {
    /// Index of the column in the aggregate's input schema (= in the projection).
    index: usize,
    udf: Arc<ScalarUDF>,
    /// A lossless string cast the pseudonym's argument had (a view column to Utf8); the
    /// aggregate groups by the uncast value and the cast is applied again above it.
    cast_to: Option<DataType>,
}

fn rewrite_aggregate(agg: &Aggregate) -> DfResult<Option<LogicalPlan>> {
    if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
        return Ok(None);
    }
    let Some((aliases, projection)) = masking_projection(&agg.input) else {
        return Ok(None);
    };
    let input_schema = agg.input.schema();
    let mut uses = vec![Use::Unused; input_schema.fields().len()];
    for e in &agg.group_expr {
        classify(e, input_schema, &mut uses, |e| plain_column(e).is_some());
    }
    for e in &agg.aggr_expr {
        classify(e, input_schema, &mut uses, is_count_of_column);
    }
    let mut moved = Vec::new();
    let mut exprs = projection.expr.clone();
    for (index, u) in uses.iter().enumerate() {
        if *u != Use::Safe {
            continue;
        }
        let Some((alias, udf, arg)) = pseudonym_call(&projection.expr[index]) else { continue };
        let (raw, cast_to) = strip_string_cast(arg, projection.input.schema());
        exprs[index] = Expr::Alias(Alias { expr: Box::new(raw.clone()), ..alias.clone() });
        moved.push(Moved { index, udf: udf.clone(), cast_to });
    }
    if moved.is_empty() {
        return Ok(None);
    }
    let mut input = LogicalPlan::Projection(Projection::try_new(exprs, projection.input.clone())?);
    for alias in aliases.iter().rev() {
        input = LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(input), alias.alias.clone())?);
    }
    let new_agg = Aggregate::try_new(Arc::new(input), agg.group_expr.clone(), agg.aggr_expr.clone())?;
    // Mask the group keys that are moved columns, in the aggregate's output.
    let keys = agg.group_expr.len();
    let mut masked = false;
    let mut out = Vec::with_capacity(agg.schema.fields().len());
    for (i, (qualifier, field)) in new_agg.schema.iter().enumerate() {
        let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
        let key_of = (i < keys).then(|| plain_column(&agg.group_expr[i])).flatten();
        let m = key_of
            .and_then(|c| input_schema.maybe_index_of_column(c))
            .and_then(|ix| moved.iter().find(|m| m.index == ix));
        out.push(match m {
            Some(m) => {
                masked = true;
                let arg = match &m.cast_to {
                    Some(t) => cast(column, t.clone()),
                    None => column,
                };
                m.udf.call(vec![arg]).alias_qualified(qualifier.cloned(), field.name())
            }
            None => column,
        });
    }
    let new_agg = LogicalPlan::Aggregate(new_agg);
    let plan = if masked { LogicalPlan::Projection(Projection::try_new(out, Arc::new(new_agg))?) } else { new_agg };
    // The plan above must see exactly the columns it saw before.
    if !same_columns(plan.schema(), &agg.schema) {
        return Ok(None);
    }
    Ok(Some(plan))
}

/// The projection under `plan`, through subquery aliases, and the aliases on the way.
fn masking_projection(plan: &LogicalPlan) -> Option<(Vec<&SubqueryAlias>, &Projection)> {
    let mut aliases = Vec::new();
    let mut p = plan;
    loop {
        match p {
            LogicalPlan::SubqueryAlias(a) => {
                aliases.push(a);
                p = &a.input;
            }
            LogicalPlan::Projection(proj) => {
                return proj.expr.iter().any(|e| pseudonym_call(e).is_some()).then_some((aliases, proj));
            }
            _ => return None,
        }
    }
}

/// Records, for every input column `e` references, whether this expression is a safe use.
fn classify(e: &Expr, schema: &DFSchema, uses: &mut [Use], safe: impl Fn(&Expr) -> bool) {
    let ok = safe(e);
    for c in e.column_refs() {
        if let Some(i) = schema.maybe_index_of_column(c) {
            uses[i] = match (uses[i], ok) {
                (Use::Other, _) | (_, false) => Use::Other,
                _ => Use::Safe,
            };
        }
    }
}

/// The column a (possibly aliased) bare column expression names.
fn plain_column(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => plain_column(&a.expr),
        _ => None,
    }
}

/// `count(c)` or `count(DISTINCT c)` with no filter or ordering: the same under any
/// injective, NULL-keeping function of `c`.
fn is_count_of_column(e: &Expr) -> bool {
    match e {
        Expr::Alias(a) => is_count_of_column(&a.expr),
        Expr::AggregateFunction(AggregateFunction { func, params }) => {
            func.name() == "count"
                && params.args.len() == 1
                && matches!(params.args[0], Expr::Column(_))
                && params.filter.is_none()
                && params.order_by.is_empty()
        }
        _ => false,
    }
}

/// The alias, the pseudonym UDF and its argument, when `e` is `pseudonym(arg) AS name`.
fn pseudonym_call(e: &Expr) -> Option<(&Alias, &Arc<ScalarUDF>, &Expr)> {
    let Expr::Alias(a) = e else { return None };
    match a.expr.as_ref() {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == PSEUDONYM_UDF && args.len() == 1 => {
            Some((a, func, &args[0]))
        }
        _ => None,
    }
}

/// `CAST(x AS Utf8)` of a string column `x` is lossless: group by `x`, cast above.
fn strip_string_cast<'a>(arg: &'a Expr, schema: &DFSchema) -> (&'a Expr, Option<DataType>) {
    let string = |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
    match arg {
        Expr::Cast(c) if string(&c.data_type) => match c.expr.as_ref() {
            Expr::Column(x) if schema.qualified_field_from_column(x).is_ok_and(|(_, f)| string(f.data_type())) => {
                (c.expr.as_ref(), Some(c.data_type.clone()))
            }
            _ => (arg, None),
        },
        _ => (arg, None),
    }
}

fn same_columns(a: &DFSchema, b: &DFSchema) -> bool {
    a.fields().len() == b.fields().len()
        && a.iter()
            .zip(b.iter())
            .all(|((qa, fa), (qb, fb))| qa == qb && fa.name() == fb.name() && fa.data_type() == fb.data_type())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::functions_aggregate::expr_fn::{count, count_distinct, max, sum};
    use datafusion::logical_expr::{col, Expr};
    use datafusion::prelude::{Column, DataFrame, SessionContext};

    use super::InjectiveMaskRule;
    use crate::{MaskFunctions, MaskKind, PseudonymKey};

    /// 40 rows, 7 NPIs (one NULL), in two states; `npi` is a view column as in the lakehouse.
    fn batch() -> RecordBatch {
        let npi: StringViewArray =
            (0..40).map(|i| if i % 9 == 0 { None } else { Some(format!("10000000{:02}", i % 7)) }).collect();
        let state: StringViewArray = (0..40).map(|i| Some(if i % 3 == 0 { "CA" } else { "NY" })).collect();
        let trx: Int64Array = (0..40).map(Some).collect();
        let schema = Schema::new(vec![
            Field::new("npi", DataType::Utf8View, true),
            Field::new("state", DataType::Utf8View, true),
            Field::new("trx", DataType::Int64, true),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(npi), Arc::new(state), Arc::new(trx)]).unwrap()
    }

    /// The table as a masked projection (npi pseudonymised), as the policy rewrite makes it.
    fn masked(ctx: &SessionContext) -> DataFrame {
        let f = MaskFunctions::new(Some(PseudonymKey::new("k1", b"secret")));
        let df = ctx.read_batch(batch()).unwrap();
        let schema = df.schema().clone();
        let npi = f
            .expr(&MaskKind::Pseudonym, &Column::from_name("npi"), &DataType::Utf8View, &schema, &|_, _| unreachable!())
            .unwrap();
        df.select(vec![npi.alias("npi"), col("state"), col("trx")]).unwrap().alias("t").unwrap()
    }

    /// The query's sorted rows with the rule (checked equal to those without it), and the
    /// optimized plan with it.
    async fn both(query: impl Fn(DataFrame) -> DataFrame) -> (String, String) {
        let plain = SessionContext::new();
        let ruled = SessionContext::new();
        ruled.add_optimizer_rule(Arc::new(InjectiveMaskRule));
        let run = |ctx: SessionContext| {
            let df = query(masked(&ctx));
            async move {
                let plan = df.clone().into_optimized_plan().unwrap().display_indent().to_string();
                let mut rows: Vec<String> = pretty_format_batches(&df.collect().await.unwrap())
                    .unwrap()
                    .to_string()
                    .lines()
                    .map(String::from)
                    .collect();
                rows.sort();
                (rows.join("\n"), plan)
            }
        };
        let (without, _) = run(plain).await;
        let (with, plan) = run(ruled).await;
        assert_eq!(without, with, "{plan}");
        (with, plan)
    }

    /// Whether the pseudonym is computed below the (first) aggregate.
    fn masked_below_aggregate(plan: &str) -> bool {
        plan.split_once("Aggregate:").is_some_and(|(_, below)| below.contains("rxgate_pseudonym"))
    }

    #[tokio::test]
    async fn count_distinct_of_a_pseudonym_counts_the_real_values() {
        let (a, plan) = both(|df| {
            df.aggregate(vec![col("state")], vec![count_distinct(col("npi")).alias("n"), sum(col("trx")).alias("s")])
                .unwrap()
        })
        .await;
        assert!(a.contains("| CA    | 7 | 273 |") && a.contains("| NY    | 7 | 507 |"), "{a}");
        assert!(!plan.contains("rxgate_pseudonym"), "{plan}");
    }

    #[tokio::test]
    async fn group_keys_are_masked_above_the_aggregate() {
        let (a, plan) = both(|df| {
            df.aggregate(vec![col("npi"), col("state")], vec![count(col("npi")).alias("n"), sum(col("trx")).alias("s")])
                .unwrap()
        })
        .await;
        assert!(a.contains("k1:") && !a.contains("10000000"), "{a}");
        assert!(plan.contains("rxgate_pseudonym") && !masked_below_aggregate(&plan), "{plan}");
    }

    #[tokio::test]
    async fn other_uses_keep_the_mask_below() {
        let (a, plan) = both(|df| {
            df.aggregate(vec![col("state")], vec![max(col("npi")).alias("m"), count_distinct(col("npi")).alias("n")])
                .unwrap()
        })
        .await;
        assert!(a.contains("k1:") && !a.contains("10000000"), "{a}");
        assert!(masked_below_aggregate(&plan), "{plan}");
        let filtered = |df: DataFrame| {
            df.aggregate(vec![Expr::Column(Column::from_name("state"))], vec![count(col("npi")).alias("n")])
                .unwrap()
                .filter(col("n").gt(datafusion::logical_expr::lit(3i64)))
                .unwrap()
        };
        both(filtered).await;
    }
}
