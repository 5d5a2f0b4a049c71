//! Assembling record batches in a table's exact Arrow schema (names, types, nullability and
//! Iceberg field ids), from columns keyed by name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Date32Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use rxgate_common::{Error, Result};

/// A column value repeated on every row (country_name, delivery_date).
#[derive(Debug, Clone)]
pub enum Constant {
    /// A text constant.
    Text(String),
    /// A date, as days since the Unix epoch.
    Date(i32),
}

impl Constant {
    fn array(&self, rows: usize) -> ArrayRef {
        match self {
            Constant::Text(s) => Arc::new(StringArray::from(vec![s.as_str(); rows])),
            Constant::Date(d) => Arc::new(Date32Array::from(vec![*d; rows])),
        }
    }
}

/// Builds a batch in `schema`'s column order: each column comes from `columns` or `constants`
/// by name (cast to the schema's type), or is NULL when neither has it.
pub fn assemble(
    schema: &SchemaRef,
    rows: usize,
    mut columns: HashMap<&str, ArrayRef>,
    constants: &[(&str, Constant)],
) -> Result<RecordBatch> {
    let arrays = schema
        .fields()
        .iter()
        .map(|f| {
            let array = match columns.remove(f.name().as_str()) {
                Some(a) => a,
                None => match constants.iter().find(|(n, _)| *n == f.name()) {
                    Some((_, c)) => c.array(rows),
                    None => new_null_array(f.data_type(), rows),
                },
            };
            if array.data_type() == f.data_type() {
                Ok(array)
            } else {
                cast(&array, f.data_type()).map_err(|e| Error::internal(format!("column {}: {e}", f.name())))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::internal(format!("assembling batch: {e}")))
}

/// Days since the Unix epoch of a `YYYY-MM-DD` date.
pub fn epoch_days(date: chrono::NaiveDate) -> i32 {
    (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// True when a data type is text.
pub fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}
