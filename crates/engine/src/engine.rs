//! Process-wide engine state: the lakehouse, the shared memory pool and the limits.

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use rxgate_catalog::{Lakehouse, LakehouseCatalogProvider};
use datafusion::catalog::CatalogProvider;
use rxgate_common::{Identity, Result};

use crate::pgcompat;
use crate::settings::SessionSettings;
use crate::EngineSession;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 2 << 30,
            spill_dir: None,
            query_timeout: Some(Duration::from_secs(300)),
            target_partitions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            batch_size: 8192,
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
}

impl Engine {
    /// Builds the engine over an open lakehouse.
    pub fn new(lake: Lakehouse, config: EngineConfig) -> Result<Self> {
        let mut builder =
            RuntimeEnvBuilder::new().with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit_bytes)));
        if let Some(dir) = &config.spill_dir {
            std::fs::create_dir_all(dir)?;
            builder = builder.with_temp_file_path(dir.clone());
        }
        let runtime = builder.build_arc()?;
        Ok(Self { inner: Arc::new(Inner { lake, runtime, config }) })
    }

    /// The lakehouse this engine serves.
    pub fn lakehouse(&self) -> &Lakehouse {
        &self.inner.lake
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
        let session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("rxgate", "health")
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(cfg.target_partitions)
            .with_batch_size(cfg.batch_size);
        let ctx = SessionContext::new_with_config_rt(session_config, self.inner.runtime.clone());
        let provider: Arc<dyn CatalogProvider> = Arc::new(LakehouseCatalogProvider::try_new(&self.inner.lake).await?);
        ctx.register_catalog("rxgate", provider.clone());
        let settings = Arc::new(SessionSettings::new(&identity.user, "health", cfg.query_timeout));
        pgcompat::install(&ctx, "rxgate", provider, settings.clone(), &identity.user, &identity.roles)?;
        Ok(EngineSession::new(ctx, identity, settings))
    }
}
