//! What Flight SQL clients receive: plain Arrow strings and binaries.
//!
//! The engine reads strings as `Utf8View` (see `rxgate_catalog::scan`). Not every Flight SQL
//! client reads view types yet (older Arrow Java and Go releases do not), and a view array's
//! IPC form carries every buffer it points into, so results leave as `Utf8`/`Binary`: the
//! dataset schemas announced (GetFlightInfo, GetSchema, prepared statements, GetTables with
//! schemas) and every batch streamed (`crate::encode` writes views as plain strings itself
//! and uses [`wire_batch`] for the results it leaves to arrow-flight).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

/// The type a column of type `t` is sent as, when it is not sent as it is.
pub(crate) fn wire_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

/// `schema` with its view-typed fields as plain strings or binaries.
pub(crate) fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| wire_type(f.data_type()).is_some()) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match wire_type(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` in the schema `wire` (from [`wire_schema`] of the batch's schema).
pub(crate) fn wire_batch(batch: RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema_ref() == wire {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(wire.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int32Array, StringArray, StringViewArray};

    #[test]
    fn views_leave_as_plain_strings() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("n", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from(vec![Some("a fairly long string value"), None])),
                Arc::new(Int32Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let wire = wire_schema(&schema);
        assert_eq!(wire.field(0).data_type(), &DataType::Utf8);
        assert_eq!(wire.field(1).data_type(), &DataType::Int32);
        let out = wire_batch(batch, &wire).unwrap();
        let s = out.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(s.value(0), "a fairly long string value");
        assert!(s.is_null(1));
        let plain = wire_schema(&wire);
        assert!(Arc::ptr_eq(&plain, &wire), "a schema without views is returned as it is");
    }
}
