//! Prepared statements: a planned statement kept in its session under a random handle, and
//! the parameters a client bound to it with DoPut.
//!
//! Parameters arrive as Arrow record batches, one column per placeholder (`$1` is the first
//! column, whatever its name) and one row per execution. A query takes one row (the values
//! stay bound until the next DoPut); an update runs once per row. A value whose type differs
//! from the type the plan expects is cast (a JDBC `setString` for an integer, say).

use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::{IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use datafusion::common::{ParamValues, ScalarValue};
use rxgate_common::StatusCode;
use rxgate_engine::Planned;
use tonic::Status;

use crate::status::{internal, status};

/// A statement prepared by one session.
pub(crate) struct Prepared {
    /// The planned statement.
    pub(crate) planned: Planned,
    /// Types of `$1..$n` (`None`: unknown, the bound value's own type is used).
    pub(crate) parameter_types: Vec<Option<DataType>>,
    /// Parameters bound by the last DoPut.
    pub(crate) bound: Mutex<Option<ParamValues>>,
}

impl Prepared {
    pub(crate) fn new(planned: Planned) -> Arc<Self> {
        let parameter_types = planned.parameter_types();
        Arc::new(Self { planned, parameter_types, bound: Mutex::new(None) })
    }

    /// The result schema (empty for statements without rows).
    pub(crate) fn dataset_schema(&self) -> SchemaRef {
        self.planned.schema().map(|s| crate::wire::wire_schema(&s)).unwrap_or_else(|| Arc::new(Schema::empty()))
    }

    /// The parameter schema: one nullable field per placeholder, named `$1`, `$2`, …; type
    /// Null where the plan does not know it.
    pub(crate) fn parameter_schema(&self) -> Schema {
        Schema::new(
            self.parameter_types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("${}", i + 1), t.clone().unwrap_or(DataType::Null), true))
                .collect::<Vec<_>>(),
        )
    }

    /// The parameters of row `row` of `batch`, cast to the expected types.
    pub(crate) fn row_params(&self, batch: &RecordBatch, row: usize) -> Result<ParamValues, Status> {
        if batch.num_columns() != self.parameter_types.len() {
            return Err(status(
                StatusCode::InvalidArgument,
                format!(
                    "the statement takes {} parameter(s), {} were bound",
                    self.parameter_types.len(),
                    batch.num_columns()
                ),
            ));
        }
        let mut values = Vec::with_capacity(batch.num_columns());
        for (i, (column, expected)) in batch.columns().iter().zip(&self.parameter_types).enumerate() {
            let value = ScalarValue::try_from_array(column, row).map_err(internal)?;
            let value = match expected {
                Some(t) if value.data_type() != *t => value.cast_to(t).map_err(|_| {
                    status(
                        StatusCode::InvalidArgument,
                        format!("parameter ${} cannot be converted from {} to {t}", i + 1, value.data_type()),
                    )
                })?,
                _ => value,
            };
            values.push(value);
        }
        Ok(ParamValues::from(values))
    }
}

/// A schema as an IPC message, as Flight SQL puts schemas in protobuf fields.
pub(crate) fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into().map_err(internal)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn prepared(types: Vec<Option<DataType>>) -> Prepared {
        Prepared { planned: Planned::Empty, parameter_types: types, bound: Mutex::new(None) }
    }

    #[test]
    fn parameters_are_cast_to_the_expected_types() {
        let p = prepared(vec![Some(DataType::Int64), None]);
        let schema =
            Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true), Field::new("b", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["42"])), Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        let ParamValues::List(values) = p.row_params(&batch, 0).unwrap() else { panic!() };
        assert_eq!(values[0].value, ScalarValue::Int64(Some(42)));
        assert_eq!(values[1].value, ScalarValue::Utf8(Some("x".into())));
        assert_eq!(p.parameter_schema().field(0).name(), "$1");
        assert_eq!(p.parameter_schema().field(1).data_type(), &DataType::Null);
    }

    #[test]
    fn wrong_arity_or_unconvertible_values_are_invalid_arguments() {
        let p = prepared(vec![Some(DataType::Int64)]);
        let two = RecordBatch::try_from_iter(vec![
            ("a", Arc::new(Int64Array::from(vec![1])) as _),
            ("b", Arc::new(Int64Array::from(vec![2])) as _),
        ])
        .unwrap();
        assert_eq!(p.row_params(&two, 0).unwrap_err().code(), tonic::Code::InvalidArgument);
        let text = RecordBatch::try_from_iter(vec![("a", Arc::new(StringArray::from(vec!["x"])) as _)]).unwrap();
        assert_eq!(p.row_params(&text, 0).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
