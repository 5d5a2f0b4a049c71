//! The pgwire hot path: Arrow batches of prescriber_drug-like rows encoded as DataRow
//! messages, in text and in binary format (`cargo bench -p rxgate-pgwire`).

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use pgwire::api::portal::Format;

const ROWS: usize = 8192;

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("npi", DataType::Utf8, true),
        Field::new("presc_full_name", DataType::Utf8, true),
        Field::new("presc_state", DataType::Utf8, true),
        Field::new("drug_name", DataType::Utf8, true),
        Field::new("trx_cnt", DataType::Int64, true),
        Field::new("total_drug_cost", DataType::Float64, true),
        Field::new("years_of_exp", DataType::Int32, true),
        Field::new("delivery_date", DataType::Date32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| format!("{:010}", 1_000_000_000 + i)))),
        Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| format!("Jane Prescriber{i}")))),
        Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| ["CA", "NY", "TX"][i % 3]))),
        Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| format!("DRUG {}", i % 500)))),
        Arc::new(Int64Array::from_iter_values((0..ROWS).map(|i| i as i64 * 3))),
        Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| i as f64 * 1.25))),
        Arc::new(Int32Array::from_iter_values((0..ROWS).map(|i| (i % 50) as i32))),
        Arc::new(Date32Array::from_iter_values((0..ROWS).map(|_| 19_753))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn encode(c: &mut Criterion) {
    let batch = batch();
    let mut g = c.benchmark_group("pg_encode_8192_rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, format) in [("text", Format::UnifiedText), ("binary", Format::UnifiedBinary)] {
        let fields = Arc::new(arrow_schema_to_pg_fields(batch.schema().as_ref(), &format, None).unwrap());
        g.bench_function(name, |b| {
            b.iter(|| encode_recordbatch(fields.clone(), batch.clone()).map(|r| r.unwrap().data.len()).sum::<usize>())
        });
    }
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
