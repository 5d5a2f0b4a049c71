//! Hive's aggregates `collect_list` and `collect_set`.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::array_agg::array_agg_udaf;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

/// `collect_list` / `collect_set`: DataFusion's `array_agg` accumulators, ignoring NULLs
/// (and, for the set, duplicates), giving an empty array rather than NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Collect {
    name: &'static str,
    distinct: bool,
    signature: Signature,
}

impl Collect {
    pub(crate) fn new(name: &'static str, distinct: bool) -> Self {
        Self { name, distinct, signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for Collect {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(types[0].clone(), true))))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<datafusion::arrow::datatypes::FieldRef>> {
        array_agg_udaf().inner().state_fields(StateFieldsArgs {
            is_distinct: self.distinct,
            ordering_fields: &[],
            ..args
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let item = args.expr_fields[0].data_type().clone();
        let inner = array_agg_udaf().inner().accumulator(AccumulatorArgs {
            ignore_nulls: true,
            is_distinct: self.distinct,
            order_bys: &[],
            ..args
        })?;
        Ok(Box::new(EmptyWhenNothing { inner, item }))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }
}

#[derive(Debug)]
struct EmptyWhenNothing {
    inner: Box<dyn Accumulator>,
    item: DataType,
}

impl Accumulator for EmptyWhenNothing {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let v = self.inner.evaluate()?;
        if v.is_null() {
            return Ok(ScalarValue::List(ScalarValue::new_list_nullable(&[], &self.item)));
        }
        Ok(v)
    }

    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::prelude::SessionContext;

    use crate::register;
    use crate::test_sql::one;

    #[tokio::test]
    async fn collect_list_and_set_skip_nulls() {
        let sql = "SELECT array_sort(collect_list(x)), array_sort(collect_set(x)) FROM (VALUES ('b'), ('a'), (NULL), ('b')) t(x)";
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(array_value_to_string(batches[0].column(0), 0).unwrap(), "[a, b, b]");
        assert_eq!(array_value_to_string(batches[0].column(1), 0).unwrap(), "[a, b]");
        assert_eq!(one("SELECT collect_list(x) FROM (VALUES (CAST(NULL AS TEXT))) t(x)").await, "[]");
        assert_eq!(
            one("SELECT concat_ws(',', array_sort(collect_set(x))) FROM (VALUES ('b'), ('a'), ('b')) t(x)").await,
            "a,b"
        );
        let grouped =
            "SELECT k, size(collect_list(v)) FROM (VALUES (1, 'a'), (1, 'b'), (2, NULL)) t(k, v) GROUP BY k ORDER BY k";
        let batches = ctx.sql(grouped).await.unwrap().collect().await.unwrap();
        let sizes: Vec<String> = (0..2).map(|i| array_value_to_string(batches[0].column(1), i).unwrap()).collect();
        assert_eq!(sizes, ["2", "0"]);
    }
}
