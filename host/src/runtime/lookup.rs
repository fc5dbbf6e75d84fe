//! Synchronous online-store reads made from inside the graph (which runs on a blocking
//! thread): the plugins' `lookup` import (the online features of several entities of a
//! feature set, its highest configured version, in one round trip) and the loading of
//! aggregation state for keys not in memory.

use std::collections::HashMap;
use std::sync::Arc;

use super::PipelineError;
use crate::config::Config;
use crate::event::Field;
use crate::online::OnlineView;
use crate::plugin::LookupError;
use crate::plugin::OnlineLookup;
use crate::store::OnlineStore;

/// A set's online view and its TTL (µs).
type SetView = (OnlineView, Option<i64>);

/// Lookups against the online store, for plugins: each entity's row, its windowed
/// aggregates evaluated as of that row's event time (the lookup carries no time of its own,
/// and this keeps a replay's lookups equal to the first run's).
pub struct StoreLookup {
    store: Arc<dyn OnlineStore>,
    /// Each set's view and TTL (µs).
    views: HashMap<String, (OnlineView, Option<i64>)>,
}

impl StoreLookup {
    /// Knows every feature set of the config (by name, its highest version).
    pub fn new(config: &Config, store: Arc<dyn OnlineStore>) -> Result<Self, PipelineError> {
        let mut views: HashMap<String, (u32, OnlineView, Option<i64>)> = HashMap::new();
        for set in &config.feature_sets {
            if views.get(&set.name).is_some_and(|(v, _, _)| *v > set.version) {
                continue;
            }
            let fail = |reason| PipelineError::Build {
                set: set.name.clone(),
                reason,
            };
            let plan = crate::plan::SetPlan::compile(config, set).map_err(|e| fail(e.reason))?;
            views.insert(set.name.clone(), (set.version, plan.view, plan.ttl));
        }
        Ok(StoreLookup {
            store,
            views: views
                .into_iter()
                .map(|(name, (_, view, ttl))| (name, (view, ttl)))
                .collect(),
        })
    }
}

impl StoreLookup {
    /// The set's view and TTL, and the hashes of `keys` read in one round trip; errors start
    /// with `unknown` (an unknown set) or `failed` (the store's error).
    fn read<'k>(
        &self,
        feature_set: &str,
        keys: impl Iterator<Item = &'k str>,
        unknown: &str,
        failed: &str,
    ) -> Result<(&SetView, Vec<crate::store::HashFields>), LookupError> {
        let entry = self
            .views
            .get(feature_set)
            .ok_or_else(|| LookupError::Refused(format!("{unknown}: unknown feature set \"{feature_set}\"")))?;
        let hashes: Vec<String> = keys.map(|key| entry.0.hash(key)).collect();
        let found = self
            .store
            .read_blocking(&hashes)
            .map_err(|e| LookupError::store(failed, e))?;
        Ok((entry, found))
    }
}

impl OnlineLookup for StoreLookup {
    fn as_of(
        &self,
        feature_set: &str,
        keys: &[&str],
        times: &[i64],
    ) -> Result<Vec<Option<crate::plugin::AsOfRow>>, LookupError> {
        let ((view, ttl), found) = self.read(feature_set, keys.iter().copied(), "join", "")?;
        found
            .iter()
            .zip(times)
            .map(|(fields, &t)| {
                let row = view
                    .evaluate(fields, Some(t))
                    .map_err(|e| LookupError::Refused(e.to_string()))?;
                // The online store holds the latest row: one newer than the event is not a
                // value as of the event's time.
                Ok(row
                    .filter(|row| row.time <= t && ttl.is_none_or(|ttl| t - row.time <= ttl))
                    .map(|row| row.values))
            })
            .collect()
    }

    fn lookup(&self, feature_set: &str, keys: &[String]) -> Result<Vec<Option<Vec<Field>>>, LookupError> {
        let ((view, _), found) = self.read(
            feature_set,
            keys.iter().map(String::as_str),
            "lookup failed",
            "lookup failed",
        )?;
        found
            .into_iter()
            .map(|hash| {
                let row = view
                    .evaluate(&hash, None)
                    .map_err(|e| LookupError::Refused(format!("lookup failed: {e}")))?;
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
