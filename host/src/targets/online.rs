//! The online target: one hash per (feature set, version, entity) in the online store
//! ([`crate::store`]: Redis, or the embedded file), readable field names holding JSON values,
//! plus `_ts` (event time, µs) and `_seq` (input sequence); a TTL refreshed on write; the last
//! applied input sequence of the feature set; all written atomically per batch.
//!
//! The store skips rows whose input sequence was already applied (redelivery after a crash)
//! and rows older (by event time, then sequence) than what the hash holds, and writes values
//! as absolute values, so replaying a batch changes nothing.

use std::sync::Arc;

use crate::event::json_text;
use crate::rows::Rows;
use crate::steps::aggregate::StateWrite;
use crate::store::{BatchWrite, HashWrite, OnlineStore, RowWrite, StoreError};

/// What one batch makes durable in the online store.
#[derive(Debug, Default)]
pub struct Durable {
    /// Its feature rows.
    pub rows: Rows,
    /// The highest input sequence it covers.
    pub last_seq: u64,
    /// Aggregation state it changed.
    pub state: Vec<StateWrite>,
    /// Events it refused as late.
    pub late: u64,
}

/// Writes a feature set's rows to the online store.
#[derive(Clone)]
pub struct OnlineTarget {
    store: Arc<dyn OnlineStore>,
    prefix: String,
    ttl_ms: u64,
    /// Fields not stored with the row: windowed aggregates, evaluated from their tiles on read.
    derived: Arc<std::collections::HashSet<String>>,
}

impl OnlineTarget {
    /// A target for the hashes under a set version's prefix (see [`crate::keys`]).
    pub fn new(store: Arc<dyn OnlineStore>, set_prefix: &str, ttl_ms: u64) -> Self {
        OnlineTarget {
            store,
            prefix: set_prefix.to_string(),
            ttl_ms,
            derived: Default::default(),
        }
    }

    /// Leaves these fields out of the rows (they are evaluated on read; see [`crate::online`]).
    pub fn without(mut self, derived: Vec<String>) -> Self {
        self.derived = Arc::new(derived.into_iter().collect());
        self
    }

    /// The hash of an entity (the entity is the cluster hash tag).
    pub fn key(&self, entity: &str) -> String {
        crate::keys::entity_hash(&self.prefix, entity)
    }

    /// The counter holding the last applied input sequence.
    pub fn applied_key(&self) -> String {
        crate::keys::applied_counter(&self.prefix)
    }

    /// The counter of events refused as late.
    pub fn late_key(&self) -> String {
        crate::keys::late_counter(&self.prefix)
    }

    /// The last applied input sequence (0 before any).
    pub async fn applied(&self) -> Result<u64, StoreError> {
        self.store.counter(&self.applied_key()).await
    }

    /// What a batch writes: its rows (read, not taken: the offline side may still need
    /// them), its aggregation state and its count of late events, with `last_seq` marked
    /// applied. Only the latest row of each entity (by event time, then sequence) is kept:
    /// the others would be overwritten in the same transaction.
    pub fn batch(&self, rows: &Rows, last_seq: u64, state: Vec<StateWrite>, late: u64) -> BatchWrite {
        let stored: Vec<usize> = (0..rows.batch.fields.len())
            .filter(|&f| !self.derived.contains(&rows.batch.fields[f]))
            .collect();
        // State by hash (the hash names move, none is copied).
        let mut by_hash: std::collections::HashMap<String, HashWrite> =
            std::collections::HashMap::with_capacity(state.len());
        for StateWrite { hash, set, delete } in state {
            let entry = by_hash.entry(hash).or_default();
            entry.set.extend(set);
            entry.delete.extend(delete);
        }
        // One entry per hash: its row with the state written to the same hash, then
        // state-only hashes in a stable order.
        let latest = latest_per_entity(rows);
        let mut hashes: Vec<HashWrite> = Vec::with_capacity(latest.len() + by_hash.len());
        for i in latest {
            let event = &rows.batch.events[i];
            let hash = self.key(&event.key);
            let mut write = by_hash.remove(&hash).unwrap_or_default();
            write.hash = hash;
            write.row = Some(RowWrite {
                seq: rows.seqs[i],
                time: event.time,
                values: stored
                    .iter()
                    .map(|&f| event.values.get(f).map_or_else(|| "null".to_string(), json_text))
                    .collect(),
            });
            hashes.push(write);
        }
        let mut state_only: Vec<(String, HashWrite)> = by_hash.into_iter().collect();
        state_only.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        hashes.extend(state_only.into_iter().map(|(hash, write)| HashWrite { hash, ..write }));
        BatchWrite {
            applied_key: self.applied_key(),
            last_seq,
            ttl_ms: self.ttl_ms,
            fields: stored.iter().map(|&f| rows.batch.fields[f].clone()).collect(),
            hashes,
            late,
            late_key: self.late_key(),
        }
    }

    /// Writes a batch atomically.
    pub async fn apply(&self, batch: &BatchWrite) -> Result<(), StoreError> {
        self.store.apply(batch).await
    }
}

/// Positions of the rows to write: per entity, the one with the latest (time, sequence), in
/// batch order.
fn latest_per_entity(rows: &Rows) -> Vec<usize> {
    let mut best: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(rows.len());
    for (i, event) in rows.batch.events.iter().enumerate() {
        let newer = |&j: &usize| (event.time, rows.seqs[i]) > (rows.batch.events[j].time, rows.seqs[j]);
        match best.get_mut(event.key.as_str()) {
            Some(j) if !newer(j) => {}
            Some(j) => *j = i,
            None => {
                best.insert(&event.key, i);
            }
        }
    }
    let mut chosen: Vec<usize> = best.into_values().collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Value};

    #[test]
    fn only_the_latest_row_of_each_entity_is_written() {
        let mut rows = Rows::new(vec!["x".into()]);
        for (seq, key, time) in [(1, "a", 10), (2, "b", 5), (3, "a", 9), (4, "a", 10), (5, "b", 5)] {
            rows.push(
                seq,
                Event {
                    key: key.into(),
                    time,
                    values: vec![Value::Integer(seq as i64)],
                },
            );
        }
        // a: (10, 4) beats (10, 1) and (9, 3); b: (5, 5) beats (5, 2).
        assert_eq!(latest_per_entity(&rows), [3, 4]);
    }
}
