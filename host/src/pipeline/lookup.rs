//! Synchronous Redis reads made from inside the graph (which runs on a blocking thread): the
//! plugins' `lookup` import (the online features of several entities of a feature set, its
//! highest configured version, in one pipelined round trip) and the loading of aggregation
//! state for keys not in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use super::PipelineError;
use crate::config::Config;
use crate::event::Field;
use crate::online::OnlineView;
use crate::plugin::OnlineLookup;
use crate::steps::aggregate::{HashFields, TileStore};

/// One blocking connection, opened on first use and again after an error.
pub struct SyncRedis {
    client: redis::Client,
    connection: Mutex<Option<redis::Connection>>,
}

impl SyncRedis {
    /// A connection to `url` (not opened yet).
    pub fn new(url: &str) -> Result<Self, PipelineError> {
        let client = redis::Client::open(url).map_err(|e| PipelineError::Service(format!("Redis URL {url}: {e}")))?;
        Ok(SyncRedis {
            client,
            connection: Mutex::new(None),
        })
    }

    /// Runs a pipeline; on error the connection is dropped and reopened next time.
    pub fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, String> {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(
                self.client
                    .get_connection()
                    .map_err(|e| format!("Redis unreachable: {e}"))?,
            );
        }
        let connection = slot.as_mut().expect("connected above");
        pipe.query(connection).map_err(|e| {
            *slot = None;
            e.to_string()
        })
    }
}

impl TileStore for SyncRedis {
    fn load(&self, hashes: &[String]) -> Result<Vec<HashFields>, String> {
        let mut pipe = redis::pipe();
        for hash in hashes {
            pipe.cmd("HGETALL").arg(hash);
        }
        self.query(&pipe)
    }
}

/// Lookups against the online store, for plugins: each entity's row, its windowed
/// aggregates evaluated as of that row's event time (the lookup carries no time of its own,
/// and this keeps a replay's lookups equal to the first run's).
pub struct RedisLookup {
    redis: SyncRedis,
    views: HashMap<String, OnlineView>,
}

impl RedisLookup {
    /// Knows every feature set of the config (by name, its highest version).
    pub fn new(config: &Config, url: &str) -> Result<Self, PipelineError> {
        let mut views: HashMap<String, (u32, OnlineView)> = HashMap::new();
        for set in &config.feature_sets {
            if views.get(&set.name).is_some_and(|(v, _)| *v > set.version) {
                continue;
            }
            let view = OnlineView::new(&config.host.redis_prefix, set).map_err(|reason| PipelineError::Build {
                set: set.name.clone(),
                reason,
            })?;
            views.insert(set.name.clone(), (set.version, view));
        }
        Ok(RedisLookup {
            redis: SyncRedis::new(url)?,
            views: views.into_iter().map(|(name, (_, view))| (name, view)).collect(),
        })
    }
}

impl OnlineLookup for RedisLookup {
    fn lookup(&self, feature_set: &str, keys: &[String]) -> Result<Vec<Option<Vec<Field>>>, String> {
        let view = self
            .views
            .get(feature_set)
            .ok_or_else(|| format!("lookup failed: unknown feature set \"{feature_set}\""))?;
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGETALL").arg(view.hash(key));
        }
        let found: Vec<HashFields> = self.redis.query(&pipe).map_err(|e| format!("lookup failed: {e}"))?;
        found
            .into_iter()
            .map(|hash| {
                let row = view.evaluate(&hash, None).map_err(|e| format!("lookup failed: {e}"))?;
                Ok(row.map(|row| {
                    let mut fields: Vec<Field> = row
                        .values
                        .into_iter()
                        .map(|(name, value)| Field { name, value })
                        .collect();
                    fields.sort_by(|a, b| a.name.cmp(&b.name));
                    fields
                }))
            })
            .collect()
    }
}
