//! The commit path against a real embedded lakehouse: replacing a delivery is atomic and
//! idempotent, and concurrent commits of different deliveries both land.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use rxgate_catalog::{apply_definitions, load_definitions, Lakehouse, LakehouseCatalogProvider, LakehouseConfig};
use rxgate_ingest::replace_delivery;

const TABLE: &str = "health_quarantine.prescriber_drug_rejects";

async fn lakehouse(dir: &Path) -> Lakehouse {
    let lake = Lakehouse::open(&LakehouseConfig::embedded(dir)).await.unwrap();
    let defs = load_definitions(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog")).unwrap();
    apply_definitions(&lake, &defs).await.unwrap();
    lake
}

fn batch(lake_schema: arrow::datatypes::SchemaRef, date: chrono::NaiveDate, rows: usize) -> RecordBatch {
    let days = (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["f.csv"; rows])),
        Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        Arc::new(StringArray::from(vec!["raw"; rows])),
        Arc::new(StringArray::from(vec!["too_few_fields"; rows])),
        Arc::new(Date32Array::from(vec![days; rows])),
    ];
    RecordBatch::try_new(lake_schema, cols).unwrap()
}

async fn counts(lake: &Lakehouse) -> Vec<(String, i64)> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_default_catalog_and_schema("rxgate", "health"));
    ctx.register_catalog("rxgate", Arc::new(LakehouseCatalogProvider::try_new(lake).await.unwrap()));
    let batches = ctx
        .sql(&format!("SELECT CAST(delivery_date AS VARCHAR) d, count(*) n FROM rxgate.{TABLE} GROUP BY 1 ORDER BY 1"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = vec![];
    for b in batches {
        let d = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let d = d.as_any().downcast_ref::<StringArray>().unwrap();
        let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.push((d.value(i).to_string(), n.value(i)));
        }
    }
    out
}

fn date(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_is_idempotent_and_concurrent_commits_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lakehouse(dir.path()).await;
    let table = lake.load_table(TABLE).await.unwrap();
    let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema()).unwrap());

    let a = date("2021-01-31");
    replace_delivery(&lake, TABLE, a, [batch(schema.clone(), a, 10)], HashMap::new()).await.unwrap();
    // Re-running the same delivery replaces it, never duplicates it.
    let again = replace_delivery(&lake, TABLE, a, [batch(schema.clone(), a, 7)], HashMap::new()).await.unwrap();
    assert_eq!(again.deleted_records, 10);
    assert_eq!(counts(&lake).await, vec![("2021-01-31".to_string(), 7)]);

    // Two writers on different deliveries at once: optimistic concurrency retries, nothing lost.
    let (b, c) = (date("2021-02-28"), date("2021-03-31"));
    let lake2 = Lakehouse::open(&LakehouseConfig::embedded(dir.path())).await.unwrap();
    let (rb, rc) = tokio::join!(
        replace_delivery(&lake, TABLE, b, [batch(schema.clone(), b, 3)], HashMap::new()),
        replace_delivery(&lake2, TABLE, c, [batch(schema.clone(), c, 4)], HashMap::new()),
    );
    rb.unwrap();
    rc.unwrap();
    assert_eq!(
        counts(&lake).await,
        vec![("2021-01-31".to_string(), 7), ("2021-02-28".to_string(), 3), ("2021-03-31".to_string(), 4)]
    );

    // An empty replacement removes the delivery (a Delete snapshot) and leaves the others.
    let purge = replace_delivery(&lake, TABLE, a, Vec::new(), HashMap::new()).await.unwrap();
    assert_eq!(purge.deleted_records, 7);
    assert_eq!(counts(&lake).await, vec![("2021-02-28".to_string(), 3), ("2021-03-31".to_string(), 4)]);

    let table = lake.load_table(TABLE).await.unwrap();
    let snaps = table.metadata().snapshots().count();
    assert_eq!(snaps, 5, "one snapshot per commit");
}
