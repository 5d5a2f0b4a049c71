//! The seed's two reports, computed with DataFusion from the curated tables of one delivery
//! and materialised into `health.city_report` and `health.top_prescribers`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use rxgate_catalog::{Lakehouse, LakehouseCatalogProvider};
use rxgate_common::Result;

use crate::batch::{assemble, epoch_days, Constant};
use crate::writer::replace_delivery;
use crate::writer::table_arrow_schema;

/// City report table.
pub const CITY_REPORT: &str = "health.city_report";
/// Top prescribers table.
pub const TOP_PRESCRIBERS: &str = "health.top_prescribers";

/// Per (state, city): distinct prescribers and total claims, joined to the city dimension on
/// state_id + upper(city) (the latest city delivery not after this one); only cities that
/// have prescribers.
pub fn city_report_sql(date: chrono::NaiveDate) -> String {
    format!(
        "WITH p AS (
            SELECT presc_state, upper(presc_city) AS city_key,
                   sum(trx_cnt) AS trx_counts, count(DISTINCT npi) AS presc_counts
            FROM rxgate.health.prescriber_drug
            WHERE delivery_date = DATE '{date}'
            GROUP BY presc_state, upper(presc_city)
        ), c AS (
            SELECT * FROM rxgate.health.us_cities
            WHERE delivery_date = (SELECT max(delivery_date) FROM rxgate.health.us_cities
                                   WHERE delivery_date <= DATE '{date}')
        )
        SELECT c.city, c.state_name, c.county_name, c.population, c.zip_count AS zip_counts,
               p.trx_counts, p.presc_counts
        FROM p JOIN c ON c.state_id = p.presc_state AND c.city = p.city_key"
    )
}

/// Prescribers with 20 ≤ years_of_exp ≤ 50, aggregated per prescriber, top 5 per state by
/// claims with `dense_rank`, descending with NULLs last (explicit: engines disagree).
pub fn top_prescribers_sql(date: chrono::NaiveDate) -> String {
    format!(
        "WITH per_prescriber AS (
            SELECT npi, presc_full_name, presc_state, country_name, years_of_exp,
                   sum(trx_cnt) AS trx_cnt, sum(total_day_supply) AS total_day_supply,
                   sum(total_drug_cost) AS total_drug_cost
            FROM rxgate.health.prescriber_drug
            WHERE delivery_date = DATE '{date}' AND years_of_exp BETWEEN 20 AND 50
            GROUP BY npi, presc_full_name, presc_state, country_name, years_of_exp
        ), ranked AS (
            SELECT *, dense_rank() OVER (PARTITION BY presc_state ORDER BY trx_cnt DESC NULLS LAST) AS rank
            FROM per_prescriber
        )
        SELECT npi, presc_full_name, presc_state, country_name, years_of_exp, trx_cnt,
               total_day_supply, total_drug_cost, rank
        FROM ranked WHERE rank <= 5"
    )
}

/// Rows written by a report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportSummary {
    /// Target table.
    pub table: String,
    /// Rows materialised.
    pub rows: u64,
    /// New snapshot.
    pub snapshot_id: i64,
}

/// Runs a report query and replaces the delivery's partition of `table` with its result.
pub async fn materialize(
    lake: &Lakehouse,
    table: &str,
    sql: &str,
    date: chrono::NaiveDate,
    step: &str,
) -> Result<ReportSummary> {
    // Scans read data files through the lakehouse's object stores (gs://, s3://, …).
    let runtime = RuntimeEnvBuilder::new().with_object_store_registry(lake.storage().datafusion()).build_arc()?;
    let config = SessionConfig::new().with_default_catalog_and_schema("rxgate", "health");
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_catalog("rxgate", Arc::new(LakehouseCatalogProvider::try_new(lake).await?));
    let batches = ctx.sql(sql).await?.collect().await?;
    let target = lake.load_table(table).await?;
    let schema = table_arrow_schema(&target)?;
    let mut out = vec![];
    let mut rows = 0u64;
    for b in batches {
        let source = b.schema();
        let cols: HashMap<&str, ArrayRef> =
            source.fields().iter().map(|f| f.name().as_str()).zip(b.columns().iter().cloned()).collect();
        rows += b.num_rows() as u64;
        out.push(assemble(&schema, b.num_rows(), cols, &[("delivery_date", Constant::Date(epoch_days(date)))])?);
    }
    let props = HashMap::from([("rxgate.step".to_string(), step.to_string())]);
    let outcome = replace_delivery(lake, table, date, out, props).await?;
    Ok(ReportSummary { table: table.to_string(), rows, snapshot_id: outcome.snapshot_id })
}
