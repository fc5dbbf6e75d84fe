//! What every running feature set of a host shares, and how it is set up: the bus and the
//! online store (NATS and Redis, or the embedded file), the deployed plugins, the metrics, and
//! the online reads steps and plugins make. `sluice run`, backfill and the skew check build
//! on it; it imports none of them.

mod lookup;

pub use crate::steps::aggregate::StoreTiles;
pub use lookup::StoreLookup;

use std::sync::Arc;

use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugin::{PluginEngine, Registry};
use crate::store::embedded::Embedded;
use crate::store::redis::RedisStore;
use crate::store::OnlineStore;
use crate::targets::dlq::DeadLetters;

/// Errors that stop the pipeline before it runs (bad plugins, unreachable services at start).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A service could not be reached or set up.
    #[error("{0}")]
    Service(String),
    /// A plugin could not be deployed.
    #[error("plugin {name}: {reason}")]
    Plugin {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A feature set could not be built.
    #[error("feature set {set}: {reason}")]
    Build {
        /// Feature set.
        set: String,
        /// Why.
        reason: String,
    },
}

/// The stream that keeps every drift-status subject (`sluice.drift.<set>`).
pub const DRIFT_STREAM: &str = "SLUICE_DRIFT";

/// What every feature set of a host shares.
#[derive(Clone)]
pub struct Services {
    /// JetStream, or the embedded logs.
    pub bus: Bus,
    /// Redis, or the embedded store.
    pub store: Arc<dyn OnlineStore>,
    /// Prefix of every online-store key.
    pub prefix: String,
    /// Deployed plugins.
    pub registry: Arc<Registry>,
    /// Counters and histograms (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// The live statistics of the monitored feature set versions.
    pub monitors: Arc<Monitors>,
}

/// The live monitors of a host's feature set versions, by `name@vN` (the runner writes them,
/// a timer closes their windows, the HTTP API reads them).
#[derive(Default)]
pub struct Monitors(std::sync::Mutex<std::collections::BTreeMap<String, SharedMonitor>>);

/// One set version's monitor, shared.
pub type SharedMonitor = Arc<std::sync::Mutex<crate::monitor::live::SetMonitor>>;

impl Monitors {
    /// Registers a set version's monitor.
    pub fn insert(&self, label: &str, monitor: SharedMonitor) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label.to_string(), monitor);
    }

    /// A set version's monitor.
    pub fn get(&self, label: &str) -> Option<SharedMonitor> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(label).cloned()
    }
}

impl Services {
    /// Connects to NATS and Redis (or opens the embedded store) and deploys the configured
    /// plugins.
    pub async fn connect(config: &Config) -> Result<Self, PipelineError> {
        let (bus, store): (Bus, Arc<dyn OnlineStore>) = if config.host.embedded() {
            let path = config.resolve(&config.host.data_dir).join(crate::config::EMBEDDED_FILE);
            let embedded = Embedded::open(&path).map_err(|e| PipelineError::Service(e.to_string()))?;
            let retention = config.host.log_retention.as_ref().map(|r| r.get());
            embedded.set_log_retention(retention.transpose().map_err(|e| PipelineError::Service(e.into()))?);
            tracing::info!(file = %path.display(), "embedded mode: online store and event logs in one file");
            (Bus::Embedded(embedded.clone()), embedded)
        } else {
            let client = async_nats::connect(&config.host.nats)
                .await
                .map_err(|e| PipelineError::Service(format!("NATS at {}: {e}", config.host.nats)))?;
            let redis = RedisStore::connect(&config.host.redis)
                .await
                .map_err(|e| PipelineError::Service(e.to_string()))?;
            (Bus::Nats(async_nats::jetstream::new(client)), Arc::new(redis))
        };
        DeadLetters::ensure_stream(&bus)
            .await
            .map_err(|e| PipelineError::Service(e.to_string()))?;
        bus.ensure_stream(DRIFT_STREAM, "sluice.drift.>", true)
            .await
            .map_err(|e| PipelineError::Service(e.to_string()))?;
        if !config.models.is_empty() {
            bus.ensure_stream(crate::capture::CAPTURE_STREAM, crate::capture::CAPTURE_SUBJECTS, true)
                .await
                .map_err(|e| PipelineError::Service(e.to_string()))?;
        }
        let registry = deploy_plugins(config)?;
        Ok(Services {
            bus,
            store,
            prefix: config.host.redis_prefix.clone(),
            registry,
            metrics: Arc::new(Metrics::default()),
            monitors: Arc::new(Monitors::default()),
        })
    }
}

impl Services {
    /// These services with a NATS connection of their own (the embedded logs are shared):
    /// for a background task whose traffic should not go through the connection the lookups'
    /// runtime drives.
    pub async fn with_own_connection(&self, config: &Config) -> Result<Services, PipelineError> {
        let mut services = self.clone();
        if let Bus::Nats(_) = &self.bus {
            let client = async_nats::connect(&config.host.nats)
                .await
                .map_err(|e| PipelineError::Service(format!("NATS at {}: {e}", config.host.nats)))?;
            services.bus = Bus::Nats(async_nats::jetstream::new(client));
        }
        Ok(services)
    }
}

/// The plugins of a config (and those deployed over HTTP since, restored), deployed in a
/// fresh registry: what `sluice run` and the offline commands run.
pub fn deploy_plugins(config: &Config) -> Result<Arc<Registry>, PipelineError> {
    let cache = config.resolve(&config.host.data_dir).join("artifacts");
    let engine = PluginEngine::new(Some(cache)).map_err(|e| PipelineError::Service(e.to_string()))?;
    let registry = Arc::new(Registry::new(engine, 4));
    for (name, path) in &config.plugins {
        let path = config.resolve(path);
        let fail = |reason: String| PipelineError::Plugin {
            name: name.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        registry
            .deploy(name, &bytes, Some("config"))
            .map_err(|e| fail(e.to_string()))?;
    }
    let stored = crate::catalog::store_dir(&config.resolve(&config.host.data_dir));
    for label in crate::catalog::restore(&registry, &stored) {
        tracing::info!(plugin = %label, "restored the plugin version deployed last over HTTP");
    }
    Ok(registry)
}
