//! Top-N per group without sorting every group: `WHERE rank <= N` over
//! `rank() | dense_rank() | row_number() OVER (PARTITION BY p ORDER BY o)`.
//!
//! DataFusion computes such a ranking by sorting all rows by `(p, o)` and numbering them,
//! then filters. For "the top 5 prescribers of each state" that sorts every prescriber, and
//! the sort is what grows faster than the data (it spills at scale 10). [`WindowTopKRule`]
//! puts a [`WindowTopKExec`] under the window's sort. In one streaming pass it keeps, per
//! value of `p`, the N best distinct values of `o` seen so far, and lets through only rows
//! whose `o` is among them when they arrive. The sort, the window function and the filter
//! still run, unchanged, over the rows left, so results are exactly the same:
//! - a row is dropped only when N rows already kept have distinct `o` values better than
//!   its own, so its rank, dense_rank and row_number are all above N;
//! - a row ranked N or better, and every row better than it, has fewer than N better
//!   distinct values anywhere, so it is kept, and its rank among the kept rows is its rank
//!   (its row_number too, up to the order of ties, which SQL leaves open).
//!
//! The same holds for any subset of the rows, so the prefilter may run before a hash
//! repartition, and it may stop filtering at any time. It does when it stops paying off
//! (most rows kept, e.g. `row_number() ... <= 1` per high-cardinality key) or when its keys
//! no longer fit the query's memory pool. Volatile keys (`ORDER BY random()`) and bounds
//! above [`MAX_K`] are left to the plain window.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_expr::{split_conjunction, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, WindowExpr,
};
use futures::{Stream, StreamExt};

/// Ranking functions whose `<= N` filter the prefilter may serve.
const RANKINGS: [&str; 3] = ["rank", "dense_rank", "row_number"];

/// The largest N served: each partition key keeps up to N order keys, inserted in order.
pub const MAX_K: usize = 1000;

/// Input rows after which a prefilter that keeps more than half of them stops filtering.
const PAYOFF_ROWS: usize = 1 << 16;

/// Bytes counted per partition key and per order key besides the key bytes (map entry,
/// vector and box headers, allocator rounding).
const KEY_OVERHEAD: usize = 64;

/// Physical optimizer rule: adds a [`WindowTopKExec`] under the sort of a ranking window
/// that a `<= N` / `< N` filter reads (see the module docs).
#[derive(Debug, Default)]
pub struct WindowTopKRule;

impl PhysicalOptimizerRule for WindowTopKRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            Ok(match rewrite(&node)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "window_topk"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `FilterExec(rank <= N) → [projections, repartitions] → window → [merge] → SortExec →
/// [hash RepartitionExec →] input`, with the prefilter on top of `input`; `None` when
/// `node` is not of that shape.
fn rewrite(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(filter) = node.as_any().downcast_ref::<FilterExec>() else { return Ok(None) };
    // Between the filter and the window: nodes that pass rows through unchanged.
    let mut above = vec![];
    let mut window = filter.input();
    let exprs = loop {
        let any = window.as_any();
        if let Some(w) = any.downcast_ref::<BoundedWindowAggExec>() {
            break w.window_expr();
        } else if let Some(w) = any.downcast_ref::<WindowAggExec>() {
            break w.window_expr();
        } else if any.is::<ProjectionExec>() || any.is::<RepartitionExec>() {
            above.push(window);
            window = window.children()[0];
        } else {
            return Ok(None);
        }
    };
    // One window function only: a prefilter would change any other's values.
    let [expr] = exprs else { return Ok(None) };
    let keys = || expr.partition_by().iter().chain(expr.order_by().iter().map(|s| &s.expr));
    if !is_ranking(expr) || expr.order_by().is_empty() || keys().any(is_volatile) {
        return Ok(None);
    }
    // The ranking is the window's last column; where is it in the filter's input?
    let mut rank_columns = vec![window.schema().fields().len() - 1];
    for node in above.iter().rev() {
        if let Some(p) = node.as_any().downcast_ref::<ProjectionExec>() {
            rank_columns = (p.expr().iter().enumerate())
                .filter(|(_, e)| {
                    e.expr.as_any().downcast_ref::<Column>().is_some_and(|c| rank_columns.contains(&c.index()))
                })
                .map(|(i, _)| i)
                .collect();
        }
    }
    let Some(k) = split_conjunction(filter.predicate()).into_iter().filter_map(|c| rank_bound(c, &rank_columns)).min()
    else {
        return Ok(None);
    };
    if k > MAX_K {
        return Ok(None);
    }
    // Below the window: an optional merge of sorted partitions, then the sort.
    let mut below = vec![];
    let mut sort = window.children()[0];
    while sort.as_any().is::<SortPreservingMergeExec>() {
        below.push(sort);
        sort = sort.children()[0];
    }
    let Some(sort_exec) = sort.as_any().downcast_ref::<SortExec>() else { return Ok(None) };
    let below_sort = sort_exec.input();
    let schema = below_sort.schema();
    let fields = keys().map(|e| e.data_type(&schema).map(SortField::new)).collect::<Result<Vec<_>>>()?;
    if !RowConverter::supports_fields(&fields) {
        return Ok(None);
    }
    let topk = |input: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
        Arc::new(WindowTopKExec::new(input, expr.partition_by().to_vec(), expr.order_by().to_vec(), k))
    };
    // Below a hash repartition too, so that only candidates are shuffled: a row among the
    // N best of its partition overall is among the N best of any subset holding it.
    let input = match below_sort.as_any().downcast_ref::<RepartitionExec>() {
        Some(r) if matches!(r.partitioning(), Partitioning::Hash(..)) => {
            below_sort.clone().with_new_children(vec![topk(r.input().clone())])?
        }
        _ => topk(below_sort.clone()),
    };
    // Rebuild the path from the sort up to the filter over the new input.
    let mut plan = sort.clone().with_new_children(vec![input])?;
    for parent in below.iter().rev().chain([&window]).chain(above.iter().rev()).chain([&node]) {
        plan = (*parent).clone().with_new_children(vec![plan])?;
    }
    Ok(Some(plan))
}

fn is_ranking(expr: &Arc<dyn WindowExpr>) -> bool {
    expr.as_any()
        .downcast_ref::<StandardWindowExpr>()
        .and_then(|s| s.get_standard_func_expr().as_any().downcast_ref::<WindowUDFExpr>())
        .is_some_and(|u| RANKINGS.contains(&u.fun().name()))
}

/// N from `col <= N`, `col < N + 1`, `N >= col` or `N + 1 > col` on the ranking's column.
fn rank_bound(conjunct: &Arc<dyn PhysicalExpr>, rank_columns: &[usize]) -> Option<usize> {
    let b = conjunct.as_any().downcast_ref::<BinaryExpr>()?;
    let is_rank = |e: &Arc<dyn PhysicalExpr>| {
        e.as_any().downcast_ref::<Column>().is_some_and(|c| rank_columns.contains(&c.index()))
    };
    // Integer literals only: `r < 5.5` is not `r <= 4`.
    let int = |e: &Arc<dyn PhysicalExpr>| -> Option<i64> {
        let value = e.as_any().downcast_ref::<Literal>()?.value();
        match value.data_type().is_integer().then(|| value.cast_to(&DataType::Int64)) {
            Some(Ok(ScalarValue::Int64(Some(v)))) => Some(v),
            _ => None,
        }
    };
    let bound = match b.op() {
        Operator::LtEq if is_rank(b.left()) => int(b.right())?,
        Operator::Lt if is_rank(b.left()) => int(b.right())?.saturating_sub(1),
        Operator::GtEq if is_rank(b.right()) => int(b.left())?,
        Operator::Gt if is_rank(b.right()) => int(b.left())?.saturating_sub(1),
        _ => return None,
    };
    // Ranks start at 1; a bound below it keeps nothing, which the filter does by itself.
    usize::try_from(bound).ok().filter(|&k| k >= 1)
}

/// Lets through, per partition key, the rows whose order key is among the `k` best distinct
/// order keys seen so far (a superset of the rows ranked `k` or better; see the module docs).
#[derive(Debug)]
pub struct WindowTopKExec {
    input: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<PhysicalSortExpr>,
    k: usize,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl WindowTopKExec {
    /// A prefilter over `input` keeping the `k` best distinct `order_by` keys per `partition_by` key.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        order_by: Vec<PhysicalSortExpr>,
        k: usize,
    ) -> Self {
        // A filter: same schema, partitioning and order as its input.
        let properties = input.properties().clone();
        Self { input, partition_by, order_by, k, properties, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for WindowTopKExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let partition: Vec<String> = self.partition_by.iter().map(|e| e.to_string()).collect();
        let order: Vec<String> = self.order_by.iter().map(|e| e.to_string()).collect();
        write!(
            f,
            "WindowTopKExec: k={}, partition_by=[{}], order_by=[{}]",
            self.k,
            partition.join(", "),
            order.join(", ")
        )
    }
}

impl ExecutionPlan for WindowTopKExec {
    fn name(&self) -> &str {
        "WindowTopKExec"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        Ok(Arc::new(Self::new(input, self.partition_by.clone(), self.order_by.clone(), self.k)))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let schema = input.schema();
        let fields = |exprs: Vec<(&Arc<dyn PhysicalExpr>, Option<_>)>| -> Result<Vec<SortField>> {
            exprs
                .into_iter()
                .map(|(e, options)| {
                    let t = e.data_type(&schema)?;
                    Ok(match options {
                        Some(o) => SortField::new_with_options(t, o),
                        None => SortField::new(t),
                    })
                })
                .collect()
        };
        let partition_fields = fields(self.partition_by.iter().map(|e| (e, None)).collect())?;
        let order_fields = fields(self.order_by.iter().map(|s| (&s.expr, Some(s.options))).collect())?;
        let reservation = MemoryConsumer::new(format!("WindowTopKExec[{partition}]")).register(context.memory_pool());
        Ok(Box::pin(TopKStream {
            input,
            partition_by: self.partition_by.clone(),
            order_by: self.order_by.iter().map(|s| s.expr.clone()).collect(),
            partition_rows: RowConverter::new(partition_fields)?,
            order_rows: RowConverter::new(order_fields)?,
            best: HashMap::new(),
            k: self.k,
            held: 0,
            seen: 0,
            kept: 0,
            passthrough: false,
            reservation,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct TopKStream {
    input: SendableRecordBatchStream,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<Arc<dyn PhysicalExpr>>,
    /// Row-format encoders: equal keys give equal bytes, and order keys compare as bytes in
    /// the window's sort order (best first).
    partition_rows: RowConverter,
    order_rows: RowConverter,
    /// Per partition key, its best distinct order keys so far, ascending (at most `k`).
    best: HashMap<Box<[u8]>, Vec<Box<[u8]>>>,
    k: usize,
    /// Bytes of keys held in `best` (with [`KEY_OVERHEAD`] each).
    held: usize,
    /// Rows read and rows let through while filtering.
    seen: usize,
    kept: usize,
    /// Filtering stopped (see the module docs): every row goes through.
    passthrough: bool,
    reservation: MemoryReservation,
    metrics: BaselineMetrics,
}

impl TopKStream {
    fn keep(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        if self.passthrough {
            return Ok(Some(batch));
        }
        let n = batch.num_rows();
        let eval = |exprs: &[Arc<dyn PhysicalExpr>]| -> Result<Vec<ArrayRef>> {
            exprs.iter().map(|e| e.evaluate(&batch)?.into_array(n)).collect()
        };
        // Without PARTITION BY, every row is in the one partition keyed by no bytes.
        let partitions = match self.partition_by.is_empty() {
            true => None,
            false => Some(self.partition_rows.convert_columns(&eval(&self.partition_by)?)?),
        };
        let orders = self.order_rows.convert_columns(&eval(&self.order_by)?)?;
        let mut mask = Vec::with_capacity(n);
        for i in 0..n {
            let p: &[u8] = partitions.as_ref().map_or(&[], |rows| rows.row(i).data());
            let o = orders.row(i);
            let best = match self.best.get_mut(p) {
                Some(best) => best,
                None => {
                    self.held += p.len() + KEY_OVERHEAD;
                    self.best.entry(p.into()).or_default()
                }
            };
            let keep = match best.binary_search_by(|b| b.as_ref().cmp(o.as_ref())) {
                Ok(_) => true,
                Err(at) if at < self.k => {
                    self.held += o.as_ref().len() + KEY_OVERHEAD;
                    best.insert(at, o.as_ref().into());
                    if best.len() > self.k {
                        self.held -= best.pop().map_or(0, |b| b.len() + KEY_OVERHEAD);
                    }
                    true
                }
                Err(_) => false,
            };
            mask.push(keep);
        }
        let kept = mask.iter().filter(|k| **k).count();
        (self.seen, self.kept) = (self.seen + n, self.kept + kept);
        let unprofitable = self.seen >= PAYOFF_ROWS && self.kept * 2 > self.seen;
        if unprofitable || self.reservation.try_resize(self.held).is_err() {
            // Rows dropped so far stay correctly dropped; from here on every row goes through.
            self.passthrough = true;
            self.best = HashMap::new();
            self.reservation.free();
        }
        if kept == n {
            return Ok(Some(batch));
        }
        let kept = filter_record_batch(&batch, &BooleanArray::from(mask))?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }
}

impl Stream for TopKStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let batch = match self.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) => batch,
                other => return self.metrics.record_poll(other),
            };
            let elapsed = self.metrics.elapsed_compute().clone();
            let timer = elapsed.timer();
            let kept = self.keep(batch);
            timer.done();
            match kept {
                Ok(Some(kept)) => return self.metrics.record_poll(Poll::Ready(Some(Ok(kept)))),
                Ok(None) => continue,
                Err(e) => return self.metrics.record_poll(Poll::Ready(Some(Err(e)))),
            }
        }
    }
}

impl RecordBatchStream for TopKStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// 4 partitions of 500 rows: 7 groups (one NULL), order keys with ties and NULLs.
    fn table() -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("id", DataType::Int64, false),
        ]));
        let parts = (0..4i64)
            .map(|p| {
                let ids: Vec<i64> = (p * 500..p * 500 + 500).collect();
                let g: StringArray = ids.iter().map(|i| (i % 7 != 6).then(|| format!("g{}", i % 7))).collect();
                let v: Int64Array = ids.iter().map(|i| (i % 11 != 0).then_some((i * 37) % 23)).collect();
                let f: Float64Array = ids.iter().map(|i| Some(((i * 13) % 17) as f64 / 4.0)).collect();
                vec![RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(g), Arc::new(v), Arc::new(f), Arc::new(Int64Array::from(ids))],
                )
                .unwrap()]
            })
            .collect();
        Arc::new(MemTable::try_new(schema, parts).unwrap())
    }

    fn context(rule: bool) -> SessionContext {
        let mut builder = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(4).with_batch_size(64))
            .with_default_features();
        if rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(WindowTopKRule));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_table("t", table()).unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> String {
        let batches =
            ctx.sql(&format!("SELECT * FROM ({sql}) ORDER BY 1, 2, 3")).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn ranked_top_n_equals_the_full_window() {
        let (with, without) = (context(true), context(false));
        let cases = [
            "SELECT g, v, r FROM (SELECT g, v, dense_rank() OVER (PARTITION BY g ORDER BY v DESC NULLS LAST) AS r FROM t) WHERE r <= 3",
            "SELECT g, v, r FROM (SELECT g, v, rank() OVER (PARTITION BY g ORDER BY v ASC NULLS FIRST) AS r FROM t) WHERE r < 4",
            "SELECT g, v, r FROM (SELECT g, v, rank() OVER (PARTITION BY g ORDER BY v DESC) AS r FROM t) WHERE 2 >= r",
            "SELECT g, f, r FROM (SELECT g, f, row_number() OVER (PARTITION BY g ORDER BY f, id) AS r FROM t) WHERE r <= 5",
            "SELECT g, v, r FROM (SELECT g, v, dense_rank() OVER (PARTITION BY g, v % 3 ORDER BY f DESC, v) AS r FROM t) WHERE r <= 2 AND v > 3",
            "SELECT 'all', v, r FROM (SELECT v, dense_rank() OVER (ORDER BY v DESC NULLS LAST) AS r FROM t) WHERE r <= 4",
        ];
        for sql in cases {
            let p = plan(&with, sql).await;
            assert!(p.contains("WindowTopKExec"), "no prefilter in the plan of {sql}:\n{p}");
            let (a, b) = (rows(&with, sql).await, rows(&without, sql).await);
            assert_eq!(a, b, "{sql}");
            assert!(a.lines().count() > 8, "{sql} returned almost nothing:\n{a}");
        }
    }

    #[tokio::test]
    async fn the_prefilter_drops_rows_that_cannot_rank() {
        let ctx = context(true);
        let sql = "EXPLAIN ANALYZE SELECT * FROM (SELECT g, v, dense_rank() OVER (PARTITION BY g ORDER BY v DESC) AS r FROM t) WHERE r <= 2";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let line = text.lines().find(|l| l.contains("WindowTopKExec")).expect("WindowTopKExec in the plan");
        let rows: usize = line
            .split("output_rows=")
            .nth(1)
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // 2,000 rows in; per group and input partition, only rows that were among the two best
        // values when they arrived get through.
        assert!((14..400).contains(&rows), "{rows} rows passed:\n{line}");
    }

    #[tokio::test]
    async fn the_tightest_bound_is_used() {
        let sql =
            "SELECT * FROM (SELECT g, v, rank() OVER (PARTITION BY g ORDER BY v) AS r FROM t) WHERE r <= 10 AND r < 4";
        assert!(plan(&context(true), sql).await.contains("WindowTopKExec: k=3"));
    }

    #[tokio::test]
    async fn a_prefilter_that_keeps_most_rows_stops_filtering() {
        // One row per key: every row is its key's best, so filtering cannot pay off.
        let n = 3 * PAYOFF_ROWS as i64;
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap();
        let sql = "SELECT count(*) FROM (SELECT id, row_number() OVER (PARTITION BY id ORDER BY id) AS r FROM big) WHERE r <= 1";
        for rule in [true, false] {
            let ctx = context(rule);
            ctx.register_table("big", Arc::new(MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).unwrap()))
                .unwrap();
            let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            assert_eq!(out[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0), n);
        }
    }

    #[tokio::test]
    async fn other_windows_and_filters_are_left_alone() {
        let ctx = context(true);
        for sql in [
            // A second window function would see fewer rows.
            "SELECT * FROM (SELECT g, v, rank() OVER (PARTITION BY g ORDER BY v) AS r, sum(v) OVER (PARTITION BY g) AS s FROM t) WHERE r <= 3",
            // Not an upper bound on the rank.
            "SELECT * FROM (SELECT g, v, rank() OVER (PARTITION BY g ORDER BY v) AS r FROM t) WHERE r = 3",
            "SELECT * FROM (SELECT g, v, rank() OVER (PARTITION BY g ORDER BY v) AS r FROM t) WHERE r >= 3",
            // Not a ranking function.
            "SELECT * FROM (SELECT g, v, sum(v) OVER (PARTITION BY g ORDER BY v) AS r FROM t) WHERE r <= 3",
            // A random sample per group must stay uniform.
            "SELECT * FROM (SELECT g, v, row_number() OVER (PARTITION BY g ORDER BY random()) AS r FROM t) WHERE r <= 3",
            // N too large to pay off.
            "SELECT * FROM (SELECT g, v, rank() OVER (PARTITION BY g ORDER BY v) AS r FROM t) WHERE r <= 100000",
        ] {
            assert!(!plan(&ctx, sql).await.contains("WindowTopKExec"), "prefilter in the plan of {sql}");
        }
    }
}
