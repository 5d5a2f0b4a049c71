//! Session parameters and transactions: `SET`, `RESET`, `SHOW`, `DISCARD`, `BEGIN`/`COMMIT`,
//! `CLOSE`, and what changes are reported to the client.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::memory::MemoryStream;
use rxgate_common::{Error, Result, StatusCode};

use super::EngineSession;
use crate::planned::{show_schema, QueryOutput};
use crate::statement::SessionCommand;

/// Parameters a PostgreSQL server reports to the client (ParameterStatus) when they change.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

impl EngineSession {
    /// Runs a session command.
    pub(super) fn run_session(&self, cmd: &SessionCommand) -> Result<QueryOutput> {
        let tag = |t: &str| Ok(QueryOutput::Command { tag: t.to_string() });
        match cmd {
            SessionCommand::Set { name, value } => {
                let (name, value) = match value {
                    Some(v) => self.settings.set(name, v)?,
                    None => self.settings.reset(name)?,
                };
                self.changed(&name, &value);
                tag("SET")
            }
            SessionCommand::Reset(Some(name)) => {
                let (name, value) = self.settings.reset(name)?;
                if let Some(key) = crate::settings::datafusion_key(&name) {
                    // An allowed option (settings.reset checked): back to DataFusion's default,
                    // which is the server's for every allowed option.
                    crate::settings::reset_datafusion_option(
                        self.ctx.state_ref().write().config_mut().options_mut(),
                        &key,
                    )?;
                    return tag("RESET");
                }
                self.changed(&name, &value);
                tag("RESET")
            }
            SessionCommand::Reset(None) => {
                self.reset_all();
                tag("RESET")
            }
            SessionCommand::Discard(what) => {
                if what == "ALL" {
                    self.reset_all();
                }
                tag(&format!("DISCARD {what}"))
            }
            SessionCommand::Show(name) => {
                let schema = show_schema(name.as_deref());
                let batch = match name {
                    None => {
                        // PostgreSQL's parameters, then DataFusion's options with their values
                        // (those a session may not change too: they are the server's).
                        let mut all: Vec<(String, Option<String>, String)> =
                            self.settings.all().into_iter().map(|(n, v, _, d)| (n, Some(v), d)).collect();
                        let state = self.ctx.state();
                        all.extend(crate::settings::datafusion_rows(state.config_options(), state.runtime_env()));
                        RecordBatch::try_new(
                            schema.clone(),
                            vec![
                                Arc::new(StringArray::from_iter_values(all.iter().map(|a| a.0.as_str()))),
                                Arc::new(StringArray::from_iter(all.iter().map(|a| a.1.as_deref()))),
                                Arc::new(StringArray::from_iter_values(all.iter().map(|a| a.2.as_str()))),
                            ],
                        )
                    }
                    Some(n) => {
                        let value = self.settings.get(n).ok_or_else(|| {
                            Error::new(
                                StatusCode::InvalidArgument,
                                format!("unrecognized configuration parameter \"{n}\""),
                            )
                        })?;
                        RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec![value]))])
                    }
                }
                .map_err(|e| Error::new(StatusCode::Internal, e.to_string()))?;
                let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
                Ok(QueryOutput::Rows { schema, stream: Box::pin(stream) })
            }
            SessionCommand::Accept(t) => tag(t),
            SessionCommand::Begin => {
                self.in_transaction.store(true, Ordering::Release);
                Ok(QueryOutput::TransactionStart)
            }
            SessionCommand::End(commit) => {
                self.in_transaction.store(false, Ordering::Release);
                self.cursors.end_transaction();
                Ok(QueryOutput::TransactionEnd { commit: *commit })
            }
            SessionCommand::Close(name) => {
                self.cursors.close(name.as_deref())?;
                tag(if name.is_some() { "CLOSE CURSOR" } else { "CLOSE CURSOR ALL" })
            }
        }
    }

    /// `RESET ALL`: every parameter back to its default, changes reported.
    pub(super) fn reset_all(&self) {
        let before = self.settings.all();
        self.settings.reset_all();
        for (name, value, ..) in self.settings.all() {
            if !before.iter().any(|b| b.0 == name && b.1 == value) {
                self.changed(&name, &value);
            }
        }
        self.apply_search_path();
    }

    /// Records a parameter change: report it to the client if PostgreSQL would, and apply
    /// the ones the engine interprets.
    pub(super) fn changed(&self, name: &str, value: &str) {
        if REPORTED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            self.reported.lock().expect("reported lock").push((name.to_string(), value.to_string()));
        }
        if name.eq_ignore_ascii_case("search_path") {
            self.apply_search_path();
        }
    }

    /// Unqualified names resolve in the first schema of the search path that exists.
    pub(super) fn apply_search_path(&self) {
        let path = self.settings.search_path();
        let catalog = self.ctx.state().config().options().catalog.default_catalog.clone();
        let existing = self.ctx.catalog(&catalog).map(|c| c.schema_names()).unwrap_or_default();
        let schema = path.iter().find(|s| existing.contains(s)).or(path.first()).cloned();
        if let Some(schema) = schema {
            self.ctx.state_ref().write().config_mut().options_mut().catalog.default_schema = schema;
        }
    }
}
