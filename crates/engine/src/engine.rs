//! Process-wide engine state: the lakehouse, the shared memory pool and the limits.

use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::CatalogProvider;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use rxgate_catalog::{Lakehouse, LakehouseCatalogProvider};
use rxgate_common::{Identity, Result};

use crate::audit::AuditLog;
use crate::pgcompat;
use crate::secure::{Guard, PolicyStore, SecuredCatalog};
use crate::settings::SessionSettings;
use crate::system::SystemSchema;
use crate::EngineSession;
use rxgate_policy::Policy;

/// Limits and tuning of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Memory all running queries may hold together; operators that can spill do so beyond it.
    pub memory_limit_bytes: usize,
    /// Directory for spill files (the OS temp dir when `None`).
    pub spill_dir: Option<std::path::PathBuf>,
    /// Wall-clock limit of one query; `None` for no limit.
    pub query_timeout: Option<Duration>,
    /// DataFusion target partitions (parallelism of one query).
    pub target_partitions: usize,
    /// Rows per record batch.
    pub batch_size: usize,
    /// The access policy file (`catalog/policies.toml`), reloaded when it changes. `None`:
    /// the built-in copy of the shipped `catalog/policies.toml`.
    pub policy_file: Option<std::path::PathBuf>,
    /// Secret key of the keyed pseudonym mask; without one, pseudonym masks show NULL.
    pub pseudonym_key: Option<Vec<u8>>,
    /// Directory of the audit trail (`audit.jsonl`); `None` keeps none.
    pub audit_dir: Option<std::path::PathBuf>,
    /// Size at which the audit file rotates.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept.
    pub audit_keep: usize,
    /// `[external] allowed_locations`: URL/path prefixes external tables may point under
    /// (empty: none). Never the warehouse or an Iceberg table's location.
    pub external_allowed_locations: Vec<String>,
    /// `[maintenance] min_orphan_age_secs`: the shortest window orphan removal accepts.
    pub min_orphan_age: Duration,
    /// Per-statement limits: text size, expression depth, value size (`[limits]`).
    pub limits: crate::limits::StatementLimits,
    /// Resident memory of the process beyond which the guard cancels the statement holding
    /// the most memory (53200); 0 turns the guard off.
    pub process_memory_limit_bytes: usize,
    /// `[monitoring] slow_query_ms`: statements running at least this long are logged (WARN)
    /// with their plan's metrics; `None` turns the log off.
    pub slow_query: Option<Duration>,
    /// `[monitoring] query_history_size`: the statements `system.query_history` shows.
    pub query_history_size: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 2 << 30,
            spill_dir: None,
            query_timeout: Some(Duration::from_secs(300)),
            target_partitions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            batch_size: 8192,
            policy_file: None,
            pseudonym_key: None,
            audit_dir: None,
            audit_max_bytes: 64 << 20,
            audit_keep: 8,
            external_allowed_locations: Vec::new(),
            min_orphan_age: Duration::from_millis(rxgate_catalog::maintenance::orphans::DEFAULT_ORPHAN_AGE_MS as u64),
            limits: Default::default(),
            process_memory_limit_bytes: 0,
            slow_query: None,
            query_history_size: 1000,
        }
    }
}

/// Shared engine: create once per process, then one [`EngineSession`] per client session.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    lake: Lakehouse,
    runtime: Arc<RuntimeEnv>,
    config: EngineConfig,
    policy: Arc<PolicyStore>,
    audit: Arc<AuditLog>,
    activity: Arc<crate::activity::Activity>,
}

/// The policy in force when no policy file is configured: the shipped
/// `catalog/policies.toml` (the demo roles admin, analyst, state_auditor, public).
pub const BUILTIN_POLICY: &str = include_str!("../../../catalog/policies.toml");

impl Engine {
    /// Builds the engine over an open lakehouse.
    pub fn new(lake: Lakehouse, config: EngineConfig) -> Result<Self> {
        // Scans resolve gs://, s3://, hdfs://, file:// URLs through the lakehouse's counted
        // object stores (the ones the Iceberg FileIO uses).
        let mut builder = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit_bytes)))
            .with_object_store_registry(lake.storage().datafusion());
        if let Some(dir) = &config.spill_dir {
            std::fs::create_dir_all(dir)?;
            builder = builder.with_temp_file_path(dir.clone());
        }
        let runtime = builder.build_arc()?;
        let policy = Arc::new(match &config.policy_file {
            Some(path) => PolicyStore::open(path.clone(), config.pseudonym_key.clone())?,
            None => PolicyStore::fixed(Policy::parse(BUILTIN_POLICY, "built-in policy")?, config.pseudonym_key.clone()),
        });
        let audit = Arc::new(AuditLog::new(config.audit_dir.clone(), config.audit_max_bytes, config.audit_keep)?);
        lake.external().set_allowed_locations(&config.external_allowed_locations)?;
        lake.set_min_orphan_age(config.min_orphan_age);
        crate::memwatch::watch(config.process_memory_limit_bytes);
        let activity = Arc::new(crate::activity::Activity::new(config.slow_query));
        crate::metrics::install(&runtime, lake.storage(), &activity, config.memory_limit_bytes);
        Ok(Self { inner: Arc::new(Inner { lake, runtime, config, policy, audit, activity }) })
    }

    /// The lakehouse this engine serves.
    pub fn lakehouse(&self) -> &Lakehouse {
        &self.inner.lake
    }

    /// The access policy in force.
    pub fn policy(&self) -> &Arc<PolicyStore> {
        &self.inner.policy
    }

    /// The audit trail (frontends record login attempts here).
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.inner.audit
    }

    /// Starts the background task that samples `system.metrics_history` every 10 s (and
    /// re-reads the backup history for `rxgate_backup_age_seconds`); `rxgate serve` calls it
    /// once. Needs a Tokio runtime.
    pub fn start_metrics_sampler(&self) {
        tokio::spawn(crate::metrics::run_sampler(self.inner.lake.clone()));
    }

    /// The engine's limits.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Opens a session for an identity: a fresh `SessionContext` whose default catalog is the
    /// lakehouse (schema `health`), with information_schema on and the PostgreSQL catalog
    /// emulation (`pg_catalog`, `version()`, …) installed.
    pub async fn session(&self, identity: Identity) -> Result<EngineSession> {
        let cfg = &self.inner.config;
        let mut session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("rxgate", "health")
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(cfg.target_partitions)
            .with_batch_size(cfg.batch_size);
        // Late materialisation: a Parquet scan decodes the filter's columns first and the
        // other columns only for the rows that pass (the dashboard filters keep few rows).
        let parquet = &mut session_config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        // The session's share of the shared pool is counted for the memory guard (memwatch).
        let pool = Arc::new(crate::memwatch::SessionPool::new(self.inner.runtime.memory_pool.clone()));
        let memory = pool.used();
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.inner.runtime).with_memory_pool(pool).build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::topk::WindowTopKRule))
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        let lakehouse: Arc<dyn CatalogProvider> = Arc::new(LakehouseCatalogProvider::try_new(&self.inner.lake).await?);
        // Every table the session can name goes through the policy (see secure.rs).
        let guard = Guard::new(self.inner.policy.clone(), &identity.user, &identity.roles);
        let settings = Arc::new(SessionSettings::new(&identity.user, "health", cfg.query_timeout));
        let entry = self.inner.activity.open(&identity, settings.clone(), memory.clone());
        lakehouse.register_schema(
            "system",
            Arc::new(SystemSchema::new(
                self.inner.audit.clone(),
                self.inner.lake.clone(),
                crate::system::Monitoring {
                    activity: self.inner.activity.clone(),
                    guard: guard.clone(),
                    history_size: cfg.query_history_size,
                    pool: self.inner.runtime.memory_pool.clone(),
                },
            )),
        )?;
        let provider: Arc<dyn CatalogProvider> = Arc::new(SecuredCatalog::new(lakehouse, "rxgate", guard.clone()));
        ctx.register_catalog("rxgate", provider.clone());
        let (policy, _) = self.inner.policy.current();
        let roles = policy.roles_of(&identity.user, &identity.roles);
        let stat_activity = crate::activity::stat_activity_source(&self.inner.activity, &guard);
        pgcompat::install(&ctx, "rxgate", provider, settings.clone(), &identity.user, &roles, Some(stat_activity))?;
        crate::activity::register_functions(&ctx, &entry, &guard);
        crate::hive::install(&ctx);
        crate::commands::set_lakehouse(&ctx, &self.inner.lake);
        crate::bounded::install(&ctx, cfg.limits, ctx.runtime_env().memory_pool.clone());
        ctx.register_expr_planner(Arc::new(crate::bounded::ConcatPlanner::new(
            cfg.limits,
            ctx.runtime_env().memory_pool.clone(),
        )))?;
        ctx.add_optimizer_rule(Arc::new(rxgate_policy::PseudonymLiteralRule));
        ctx.add_optimizer_rule(Arc::new(rxgate_policy::InjectiveMaskRule));
        let state = Arc::new(ctx.state());
        guard.set_state(&state);
        Ok(EngineSession::new(
            ctx,
            identity,
            settings,
            guard,
            state,
            self.inner.audit.clone(),
            roles,
            cfg.limits,
            memory,
            entry,
        ))
    }
}
