//! The `aggregate` step: per-key tiles, updated on every event; every row leaves with its
//! aggregates as of its own event time (the event included).
//!
//! State lives in memory for the keys in use, at most `max_keys` of them (least recently used
//! evicted); the tiles an event changes are written to Redis with its batch, by the Redis
//! target's transaction, and a key not in memory is loaded from Redis (one pipelined round
//! trip per batch for all of them). Without a Redis target, state is kept in memory only.
//!
//! Eviction and the pipeline's overlap: the runner writes batch `k` while it computes batch
//! `k + 1`, and batch `k − 1`'s write is finished before batch `k + 1` starts. A key is only
//! evicted two batches after it was last used, so when it is loaded again its last write is
//! in Redis.

use crate::fault::Invalid;
use crate::invalid;
use std::collections::HashMap;
use std::sync::Arc;

use super::spec::AggregateSpec;
use super::state::{KeyState, Refused};
use crate::event::Value;
use crate::fault::retry_blocking;
use crate::rows::{Failure, Rows};
use crate::steps::Halt;

pub use crate::store::HashFields;

/// Where tiles are loaded from (Redis in production; tests use memory).
pub trait TileStore: Send + Sync {
    /// The fields of each hash (empty when it does not exist), in order.
    fn load(&self, hashes: &[String]) -> Result<Vec<HashFields>, crate::store::StoreError>;
}

/// Aggregation state kept in the online store, beside the entity rows.
pub struct StoreTiles(pub Arc<dyn crate::store::OnlineStore>);

impl TileStore for StoreTiles {
    fn load(&self, hashes: &[String]) -> Result<Vec<HashFields>, crate::store::StoreError> {
        self.0.read_blocking(hashes)
    }
}

/// Hash fields to set and delete in one Redis hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateWrite {
    /// The hash.
    pub hash: String,
    /// Fields to set (absolute values).
    pub set: Vec<(String, Vec<u8>)>,
    /// Fields to delete.
    pub delete: Vec<String>,
}

/// Where an `aggregate` step keeps its state durable.
#[derive(Clone)]
pub struct TileHome {
    /// Hash prefix of the feature set version (`<prefix>:<set>:v<version>`).
    pub prefix: String,
    /// Loads hashes.
    pub store: Arc<dyn TileStore>,
}

/// The hash of a key: the entity's own hash (beside its row), or, for a step keyed by another
/// field (`step` given), a hash of that step's own.
fn hash_of(prefix: &str, step: Option<&str>, key: &str) -> String {
    match step {
        None => crate::keys::entity_hash(prefix, key),
        Some(step) => crate::keys::step_hash(prefix, step, key),
    }
}

pub(crate) struct Aggregate {
    id: String,
    spec: Arc<AggregateSpec>,
    /// Field holding the key; `None`: the entity.
    key_field: Option<String>,
    states: HashMap<String, KeyState>,
    max_keys: usize,
    home: Option<TileHome>,
    batch: u64,
    /// Keys changed in the current batch.
    touched: Vec<String>,
    writes: Vec<StateWrite>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Why state could not be loaded.
enum LoadError {
    /// The store gave up (or shutdown came): the batch halts.
    Halt(Halt),
    /// A key's stored state cannot be decoded: its events fail.
    Unreadable(String),
}

impl Aggregate {
    pub(crate) fn new(
        id: String,
        spec: AggregateSpec,
        key_field: Option<String>,
        max_keys: usize,
        home: Option<TileHome>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Aggregate {
        Aggregate {
            id,
            spec: Arc::new(spec),
            key_field,
            states: HashMap::new(),
            max_keys: max_keys.max(1),
            home,
            batch: 0,
            touched: Vec::new(),
            writes: Vec::new(),
            shutdown,
        }
    }

    /// The step id in hash names when it keys by another field than the entity.
    fn own_hashes(&self) -> Option<&str> {
        self.key_field.as_ref().map(|_| self.id.as_str())
    }

    /// Loads the state of keys not in memory, retrying while the store is unreachable.
    fn load_missing(&mut self, keys: &[String]) -> Result<(), LoadError> {
        let Some(home) = &self.home else {
            for key in keys {
                self.states.insert(key.clone(), KeyState::new(&self.spec));
            }
            return Ok(());
        };
        let hashes: Vec<String> = keys
            .iter()
            .map(|k| hash_of(&home.prefix, self.own_hashes(), k))
            .collect();
        let what = format!("step \"{}\": loading aggregation state", self.id);
        let found = retry_blocking(&what, &self.shutdown, || home.store.load(&hashes))
            .map_err(|gave_up| LoadError::Halt(Halt::gave_up(&self.id, gave_up)))?;
        for (key, fields) in keys.iter().zip(found) {
            let state = KeyState::decode(&self.spec, fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
                .map_err(|e| LoadError::Unreadable(format!("key \"{key}\": {e}")))?;
            self.states.insert(key.clone(), state);
        }
        Ok(())
    }

    /// The keys of the batch not in memory, each once.
    fn missing_keys(&self, rows: &Rows, key_at: Option<usize>) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..rows.len() {
            if let Ok(key) = Self::key_text(rows, i, key_at) {
                if !self.states.contains_key(key.as_ref()) && seen.insert(key.clone()) {
                    missing.push(key.into_owned());
                }
            }
        }
        missing
    }

    /// Adds each event to its key's state and writes the key's features, as of the event's
    /// time, into the event; returns the refused events by position (trailing ones omitted).
    fn compute(&mut self, rows: &mut Rows, key_at: Option<usize>) -> Vec<Option<Failure>> {
        let value_at: Vec<Option<usize>> = self
            .spec
            .fields
            .iter()
            .map(|f| rows.batch.fields.iter().position(|x| *x == f.field))
            .collect();
        let spec = Arc::clone(&self.spec);
        let outputs: Vec<usize> = spec.feature_names().map(|name| rows.field_position(name)).collect();
        let width = rows.batch.fields.len();
        let mut refused: Vec<Option<Failure>> = Vec::new();
        let mut computed: Vec<Value> = Vec::with_capacity(outputs.len());
        for i in 0..rows.len() {
            let seq = rows.seqs[i];
            let key = match Self::key_text(rows, i, key_at) {
                Ok(key) => key,
                Err(reason) => {
                    refused.resize(i, None);
                    refused.push(Some(Failure::new(seq, &self.id, reason)));
                    continue;
                }
            };
            let (time, state) = (
                rows.batch.events[i].time,
                self.states.get_mut(key.as_ref()).expect("loaded above"),
            );
            state.last_used = self.batch;
            let was_dirty = state.is_dirty();
            let failure = match state.add(&spec, &rows.batch.events[i].values, &value_at, time, seq) {
                Ok(()) => None,
                Err(Refused::Late(reason)) => Some(Failure::late(seq, &self.id, reason)),
                Err(Refused::Invalid(reason)) => Some(Failure::new(seq, &self.id, reason)),
            };
            if failure.is_some() {
                refused.resize(i, None);
                refused.push(failure);
                continue;
            }
            computed.clear();
            spec.evaluate(state, time, |v| computed.push(v));
            if !was_dirty && state.is_dirty() {
                self.touched.push(key.into_owned());
            } else {
                drop(key);
            }
            let row = &mut rows.batch.events[i].values;
            if row.len() < width {
                row.resize(width, Value::Null);
            }
            for (at, value) in outputs.iter().zip(computed.drain(..)) {
                row[*at] = value;
            }
        }
        refused
    }

    /// Every key changed in this batch, as absolute values to write with it; returns how many.
    fn write_out(&mut self) -> usize {
        let changed_keys = self.touched.len();
        if let Some(home) = &self.home {
            let own = self.key_field.as_ref().map(|_| self.id.as_str());
            for key in self.touched.drain(..) {
                let Some(state) = self.states.get_mut(&key) else {
                    continue;
                };
                let (set, delete) = state.take_changes(&self.spec);
                let hash = hash_of(&home.prefix, own, &key);
                self.writes.push(StateWrite { hash, set, delete });
            }
        } else {
            for key in self.touched.drain(..) {
                if let Some(state) = self.states.get_mut(&key) {
                    state.changed.clear();
                    state.removed.clear();
                }
            }
        }
        changed_keys
    }

    /// Evicts the least recently used keys above the bound (never those used in the last two
    /// batches; see the module notes).
    fn evict(&mut self) {
        if self.home.is_none() || self.states.len() <= self.max_keys + self.max_keys / 8 {
            return;
        }
        let recent = self.batch.saturating_sub(1);
        let mut old: Vec<(u64, &String)> = self
            .states
            .iter()
            .filter(|(_, s)| s.last_used < recent)
            .map(|(k, s)| (s.last_used, k))
            .collect();
        let excess = (self.states.len() - self.max_keys).min(old.len());
        if excess == 0 {
            return;
        }
        if excess < old.len() {
            old.select_nth_unstable(excess);
        }
        let victims: Vec<String> = old[..excess].iter().map(|(_, k)| (*k).clone()).collect();
        for key in victims {
            self.states.remove(&key);
        }
    }

    /// The key of row `i`, as text.
    fn key_text(rows: &Rows, i: usize, at: Option<usize>) -> Result<std::borrow::Cow<'_, str>, Invalid> {
        let Some(at) = at else {
            return Ok(std::borrow::Cow::Borrowed(rows.batch.events[i].key.as_str()));
        };
        match rows.value(i, at) {
            Value::Text(s) => Ok(std::borrow::Cow::Borrowed(s.as_str())),
            Value::Integer(n) => Ok(std::borrow::Cow::Owned(n.to_string())),
            Value::Null => Err("the key field is null".into()),
            other => Err(invalid!("the key field must be text or an integer, got {other:?}")),
        }
    }
}

/// Fails every event of the batch with `reason`.
fn fail_all(mut rows: Rows, failures: &mut Vec<Failure>, step: &str, reason: &str) -> Rows {
    for seq in rows.seqs.drain(..) {
        failures.push(Failure::new(seq, step, reason.to_string()));
    }
    rows.batch.events.clear();
    rows
}

impl crate::steps::Step for Aggregate {
    fn apply(&mut self, mut rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        self.batch += 1;
        let started = std::time::Instant::now();
        let key_at = match &self.key_field {
            Some(name) => match rows.batch.fields.iter().position(|f| f == name) {
                Some(at) => Some(at),
                // No event has the key field: each fails with the reason.
                None => return Ok(fail_all(rows, failures, &self.id, &format!("no key field \"{name}\""))),
            },
            None => None,
        };
        // Load every key this batch needs and memory lacks, in one round trip.
        let missing = self.missing_keys(&rows, key_at);
        if !missing.is_empty() {
            match self.load_missing(&missing) {
                Ok(()) => {}
                Err(LoadError::Halt(halt)) => return Err(halt),
                // Unreadable state: the batch's events fail rather than compute from nothing.
                Err(LoadError::Unreadable(e)) => {
                    return Ok(fail_all(rows, failures, &self.id, &format!("aggregation state: {e}")))
                }
            }
        }
        let loaded = started.elapsed();
        let refused = self.compute(&mut rows, key_at);
        let computed = started.elapsed();
        let changed_keys = self.write_out();
        self.evict();
        tracing::debug!(
            step = %self.id,
            events = rows.len(),
            loaded_keys = missing.len(),
            changed_keys,
            load_us = loaded.as_micros() as u64,
            compute_us = (computed - loaded).as_micros() as u64,
            write_out_us = (started.elapsed() - computed).as_micros() as u64,
            "aggregate"
        );
        if refused.iter().all(Option::is_none) {
            return Ok(rows);
        }
        let mut refused = refused;
        refused.resize(rows.len(), None);
        let mut out = Rows::new(rows.batch.fields);
        for ((event, seq), failure) in rows.batch.events.into_iter().zip(rows.seqs).zip(refused) {
            match failure {
                None => out.push(seq, event),
                Some(failure) => failures.push(failure),
            }
        }
        Ok(out)
    }

    fn take_writes(&mut self, out: &mut Vec<StateWrite>) {
        out.append(&mut self.writes);
    }
}
