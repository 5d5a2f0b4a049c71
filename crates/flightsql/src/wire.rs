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

/// The type a column of type `t` is sent as, when it is not sent as it is: views become plain
/// strings or binaries, also inside lists, structs, maps and dictionaries (`array_agg` of a
/// string column is a `List<Utf8View>`).
pub(crate) fn wire_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        DataType::List(f) => wire_field(f).map(|f| DataType::List(Arc::new(f))),
        DataType::LargeList(f) => wire_field(f).map(|f| DataType::LargeList(Arc::new(f))),
        DataType::FixedSizeList(f, n) => wire_field(f).map(|f| DataType::FixedSizeList(Arc::new(f), *n)),
        DataType::Map(f, sorted) => wire_field(f).map(|f| DataType::Map(Arc::new(f), *sorted)),
        DataType::Dictionary(k, v) => wire_type(v).map(|v| DataType::Dictionary(k.clone(), Box::new(v))),
        DataType::Struct(fields) => {
            let changed: Vec<Option<Field>> = fields.iter().map(|f| wire_field(f)).collect();
            changed.iter().any(Option::is_some).then(|| {
                let fields: Vec<Field> = changed
                    .into_iter()
                    .zip(fields.iter())
                    .map(|(c, f)| c.unwrap_or_else(|| f.as_ref().clone()))
                    .collect();
                DataType::Struct(fields.into())
            })
        }
        _ => None,
    }
}

/// `f` with the type it is sent as, when that differs.
fn wire_field(f: &Field) -> Option<Field> {
    wire_type(f.data_type()).map(|t| f.clone().with_data_type(t))
}

/// `schema` with its view-typed fields as plain strings or binaries.
pub(crate) fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| wire_type(f.data_type()).is_some()) {
        return schema.clone();
    }
    let fields: Vec<Field> =
        schema.fields().iter().map(|f| wire_field(f).unwrap_or_else(|| f.as_ref().clone())).collect();
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

    #[test]
    fn views_inside_lists_structs_and_dictionaries_leave_as_plain_strings() {
        use arrow::array::{AsArray, DictionaryArray, ListBuilder, StringViewBuilder, StructArray};
        use arrow::datatypes::Int32Type;

        let mut lists = ListBuilder::new(StringViewBuilder::new());
        lists.append_value([Some("a string longer than twelve bytes"), None, Some("b")]);
        lists.append_null();
        let lists = Arc::new(lists.finish());
        let inner = Arc::new(StringViewArray::from(vec![Some("x"), Some("another long string value")]));
        let structs = Arc::new(StructArray::from(vec![
            (Arc::new(Field::new("name", DataType::Utf8View, true)), inner as Arc<dyn Array>),
            (
                Arc::new(Field::new("n", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![1, 2])) as Arc<dyn Array>,
            ),
        ]));
        let dict: DictionaryArray<Int32Type> =
            DictionaryArray::new(Int32Array::from(vec![1, 0]), Arc::new(StringViewArray::from(vec!["p", "q"])));
        let batch = RecordBatch::try_from_iter(vec![
            ("l", lists as Arc<dyn Array>),
            ("s", structs as Arc<dyn Array>),
            ("d", Arc::new(dict) as Arc<dyn Array>),
        ])
        .unwrap();
        let wire = wire_schema(&batch.schema());
        assert_eq!(wire.field(0).data_type(), &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))));
        let DataType::Struct(fields) = wire.field(1).data_type() else { panic!("a struct") };
        assert_eq!((fields[0].data_type(), fields[1].data_type()), (&DataType::Utf8, &DataType::Int32));
        assert_eq!(
            wire.field(2).data_type(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        );
        let out = wire_batch(batch, &wire).unwrap();
        let l = out.column(0).as_list::<i32>();
        let first = l.value(0);
        let first = first.as_string::<i32>();
        assert_eq!(
            (first.value(0), first.is_null(1), first.value(2), l.is_null(1)),
            ("a string longer than twelve bytes", true, "b", true)
        );
        assert_eq!(out.column(1).as_struct().column(0).as_string::<i32>().value(1), "another long string value");
        let d = out.column(2).as_dictionary::<Int32Type>();
        assert_eq!(d.values().as_string::<i32>().value(d.keys().value(0) as usize), "q");
    }
}
