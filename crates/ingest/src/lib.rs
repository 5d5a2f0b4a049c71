//! The data pipeline: raw CMS files → validated, cleaned, partitioned Iceberg tables, with a
//! quarantine for rejects, the seed's reports, and the restartable pipeline sequence.
//!
//! **Invariant:** for every ingest, `read == loaded + quarantined`, and each table changes by
//! exactly one atomic commit per delivery; a crash before the commit leaves it as it was.

mod batch;
mod cities;
pub mod clean;
mod csvline;
pub mod input;
mod layout;
mod pipeline;
mod prescribers;
mod progress;
mod reports;
mod writer;

pub use cities::{ingest_cities, CITY_TABLE};
pub use layout::{Layout, LayoutKind, SEED_FIELDS};
pub use pipeline::{is_raw_dir, run_pipeline, PipelineOptions, PipelineReport, StepReport};
pub use prescribers::{ingest_prescribers, IngestSummary, RejectReason, FACT_TABLE, REJECT_TABLE};
pub use progress::Progress;
pub use reports::{city_report_sql, materialize, top_prescribers_sql, ReportSummary, CITY_REPORT, TOP_PRESCRIBERS};
pub use rxgate_common::failpoint;
pub use writer::replace_delivery;
