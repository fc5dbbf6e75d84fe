//! Online reads: the features of entities as the online store holds them, with every windowed aggregate
//! evaluated **as of the read time** from its tiles, not copied from the last event. A user
//! whose last transaction was two hours ago reads `count_1h = 0`.
//!
//! One round trip reads any number of entities (one pipelined `HGETALL` each on Redis). The
//! online target does not store these aggregates with the row (they would be stale, and they are
//! most of a row's bytes): they exist only as tiles. Fields computed from aggregates by later
//! steps (a `map` after the `aggregate`) describe their event and keep the value written with
//! it.

use crate::fault::Invalid;
use indexmap::IndexMap;

use crate::config::FeatureSetConfig;
use crate::event::{value_from_json, Value};
use crate::steps::aggregate::{AggregateSpec, HashFields, KeyState};
use crate::store::{OnlineStore, StoreError};

/// An online read that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The store could not answer (whether a retry can help, it says).
    #[error("online read failed: {0}")]
    Store(#[from] StoreError),
    /// A hash holds aggregation state that cannot be decoded (trying again cannot help).
    #[error("{0}")]
    Unreadable(String),
}

impl crate::fault::Transient for ReadError {
    fn transient(&self) -> bool {
        matches!(self, ReadError::Store(e) if crate::fault::Transient::transient(e))
    }
}

/// The online row of one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineRow {
    /// Event time of the row written last, µs.
    pub time: i64,
    /// Its input sequence.
    pub seq: u64,
    /// Feature name → value (aggregates as of the read time).
    pub values: IndexMap<String, Value>,
}

/// How to read one feature set version: built once, used for every read.
#[derive(Debug, Clone)]
pub struct OnlineView {
    prefix: String,
    /// The set's aggregations keyed by its entity (those live in the entity's hash).
    aggregates: Vec<AggregateSpec>,
}

impl OnlineView {
    /// The view of a feature set version under a Redis key prefix.
    pub fn new(redis_prefix: &str, set: &FeatureSetConfig) -> Result<OnlineView, Invalid> {
        Ok(OnlineView {
            prefix: crate::keys::set_prefix(redis_prefix, &set.name, set.version),
            aggregates: set.entity_aggregates()?,
        })
    }

    /// The features evaluated on read (not stored with the row).
    pub fn derived(&self) -> Vec<String> {
        self.aggregates
            .iter()
            .flat_map(|spec| spec.feature_names().map(str::to_string))
            .collect()
    }

    /// The fields a feature set's online rows leave out: its aggregates (evaluated from their
    /// tiles on read) and the plugin version of each row (kept in the feature rows, where
    /// lineage is read; in Redis it cost ~10% of the pipeline's throughput).
    pub fn left_out(&self, set: &FeatureSetConfig) -> Vec<String> {
        let mut fields = self.derived();
        fields.extend(set.steps.iter().filter_map(|s| match s.kind {
            crate::steps::StepKind::Wasm(_) => Some(format!("{}_version", s.id)),
            _ => None,
        }));
        fields
    }

    /// The hash of an entity.
    pub fn hash(&self, entity: &str) -> String {
        crate::keys::entity_hash(&self.prefix, entity)
    }

    /// Reads entities as of `at` (µs since the epoch), in one round trip; `None` for an
    /// entity with no row (never seen, expired by the TTL, or whose events all failed in a
    /// step after the aggregation).
    pub async fn read(
        &self,
        store: &dyn OnlineStore,
        entities: &[&str],
        at: i64,
    ) -> Result<Vec<Option<OnlineRow>>, ReadError> {
        let hashes: Vec<String> = entities.iter().map(|entity| self.hash(entity)).collect();
        let found = store.read(&hashes).await?;
        found
            .into_iter()
            .map(|fields| self.evaluate(&fields, Some(at)))
            .collect()
    }

    /// One entity's row from its hash fields, aggregates evaluated at `at`.
    /// `at: None` evaluates them at the row's own event time.
    pub fn evaluate(&self, fields: &HashFields, at: Option<i64>) -> Result<Option<OnlineRow>, ReadError> {
        if !fields.iter().any(|(name, _)| name == "_ts") {
            return Ok(None);
        }
        let mut row = OnlineRow {
            time: 0,
            seq: 0,
            values: IndexMap::with_capacity(fields.len()),
        };
        let number = |bytes: &[u8]| std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok());
        for (name, bytes) in fields {
            match name.as_str() {
                "_ts" => row.time = number(bytes).unwrap_or(0),
                "_seq" => row.seq = number(bytes).unwrap_or(0) as u64,
                n if n.starts_with(['_', '~']) => {}
                _ => {
                    let text = String::from_utf8_lossy(bytes);
                    let value = serde_json::from_str(&text)
                        .map(|json| value_from_json(&json))
                        .unwrap_or_else(|_| Value::Text(text.into_owned()));
                    row.values.insert(name.clone(), value);
                }
            }
        }
        for spec in &self.aggregates {
            let mut state = KeyState::decode(spec, fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
                .map_err(|e| ReadError::Unreadable(e.into()))?;
            let mut names = spec.feature_names();
            spec.evaluate(&mut state, at.unwrap_or(row.time), |value| {
                if let Some(name) = names.next() {
                    row.values.insert(name.to_string(), value);
                }
            });
        }
        Ok(Some(row))
    }
}
