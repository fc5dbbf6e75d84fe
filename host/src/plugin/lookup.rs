//! The online lookup a plugin may import (`host.lookup`), behind a trait: the pipeline backs
//! it with the online store; tests and `sluice plugin run` use the in-memory one.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::event::{Field, Value};

/// A lookup that could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// The online store did not answer: trying again can help.
    #[error("{0}")]
    Unavailable(String),
    /// The lookup cannot be answered (an unknown feature set, no online store here, a row that
    /// cannot be read, a store that refused): trying again cannot help.
    #[error("{0}")]
    Refused(String),
}

impl crate::fault::Transient for LookupError {
    fn transient(&self) -> bool {
        matches!(self, LookupError::Unavailable(_))
    }
}

impl LookupError {
    /// A store error, with what was being looked up before it.
    pub fn store(what: &str, e: crate::store::StoreError) -> LookupError {
        use crate::fault::Transient;
        let message = if what.is_empty() {
            e.to_string()
        } else {
            format!("{what}: {e}")
        };
        if e.transient() {
            LookupError::Unavailable(message)
        } else {
            LookupError::Refused(message)
        }
    }
}

/// Reads the online features of several entities of a feature set at once.
pub trait OnlineLookup: Send + Sync {
    /// One entry per key, in order: `None` when the entity has no features. An error names
    /// the feature set and the cause (unknown set, store unreachable).
    fn lookup(&self, feature_set: &str, keys: &[String]) -> Result<Vec<Option<Vec<Field>>>, LookupError>;

    /// The features of `keys[i]` as of `times[i]` (µs), for the `join` step: the latest row
    /// with event time `<= t` within the set's TTL, windowed aggregates evaluated at `t`;
    /// `None` where no row applies.
    fn as_of(&self, feature_set: &str, keys: &[&str], times: &[i64]) -> Result<Vec<Option<AsOfRow>>, LookupError> {
        let _ = (keys, times);
        Err(LookupError::Refused(format!(
            "join with feature set \"{feature_set}\": no online store or offline rows are available here"
        )))
    }
}

/// The features of one entity as of a time, by name.
pub type AsOfRow = indexmap::IndexMap<String, Value>;

/// A lookup for contexts without an online store: every call fails with a clear message.
pub struct NoLookup;

impl OnlineLookup for NoLookup {
    fn lookup(&self, feature_set: &str, _keys: &[String]) -> Result<Vec<Option<Vec<Field>>>, LookupError> {
        Err(LookupError::Refused(format!(
            "lookup of feature set \"{feature_set}\" failed: no online store is configured here"
        )))
    }
}

/// An in-memory online store: feature set → entity key → features.
#[derive(Default)]
pub struct MemoryLookup {
    sets: RwLock<HashMap<String, HashMap<String, Vec<Field>>>>,
}

impl MemoryLookup {
    /// Stores (replaces) the features of one entity.
    pub fn put(&self, feature_set: &str, key: &str, features: Vec<(String, Value)>) {
        let features = features
            .into_iter()
            .map(|(name, value)| Field { name, value })
            .collect();
        let mut sets = self.sets.write().unwrap_or_else(|e| e.into_inner());
        sets.entry(feature_set.to_string())
            .or_default()
            .insert(key.to_string(), features);
    }
}

impl OnlineLookup for MemoryLookup {
    fn lookup(&self, feature_set: &str, keys: &[String]) -> Result<Vec<Option<Vec<Field>>>, LookupError> {
        let sets = self.sets.read().unwrap_or_else(|e| e.into_inner());
        let set = sets
            .get(feature_set)
            .ok_or_else(|| LookupError::Refused(format!("lookup failed: unknown feature set \"{feature_set}\"")))?;
        Ok(keys.iter().map(|k| set.get(k).cloned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_lookup_answers_in_key_order_with_none_for_unknown_entities() {
        let store = MemoryLookup::default();
        store.put("merchants", "m1", vec![("risk_score".into(), Value::Float(0.9))]);
        let keys = ["m2".to_string(), "m1".to_string()];
        let found = store.lookup("merchants", &keys).unwrap();
        assert_eq!(found[0], None);
        assert_eq!(found[1].as_ref().unwrap()[0].value, Value::Float(0.9));
        assert!(store
            .lookup("users", &keys)
            .unwrap_err()
            .to_string()
            .contains("unknown feature set \"users\""));
    }
}
