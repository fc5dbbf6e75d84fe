//! The online target: one Redis hash per (feature set, version, entity), readable field names
//! holding JSON values, plus `_ts` (event time, µs) and `_seq` (input sequence); a TTL
//! refreshed on write; the last applied input sequence of the feature set; all written by one
//! Lua script per batch (atomic, one round trip).
//!
//! The script skips rows whose input sequence was already applied (redelivery after a crash)
//! and rows older (by event time, then sequence) than what the hash holds, and writes values
//! as absolute values, so replaying a batch changes nothing.

use redis::aio::ConnectionManager;

use super::TargetError;
use crate::event::json_text;
use crate::graph::Rows;
use crate::steps::aggregate::StateWrite;

// Header: applied key, last sequence, TTL, nf, the nf stored field names, n. Then per hash:
// key, seq (0: no row), ts, ns, nd, the nf row values (when seq > 0), 2 * ns state
// arguments (field/value pairs), nd state fields to delete. Names travel once per batch (each
// argument costs Redis a conversion), and one reused table holds each HSET's arguments.
const APPLY: &str = r#"
local applied = tonumber(redis.call('GET', ARGV[1]) or '0')
local fresh = tonumber(ARGV[2]) > applied
local ttl = tonumber(ARGV[3])
local nf = tonumber(ARGV[4])
local n = tonumber(ARGV[5 + nf])
local i = 6 + nf
local args = {}
for r = 1, n do
  local key, seq, ts = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local ns, nd = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local v0 = i + 5
  if seq == 0 then v0 = v0 - nf end
  local s0 = v0 + nf
  local d0 = s0 + 2 * ns
  i = d0 + nd
  local k = 0
  if seq > applied then
    local cur = redis.call('HMGET', key, '_ts', '_seq')
    local cts, cseq = tonumber(cur[1]), tonumber(cur[2])
    if (not cts) or cts < ts or (cts == ts and cseq < seq) then
      args[1], args[2], args[3], args[4] = '_ts', ARGV[v0 - 3], '_seq', ARGV[v0 - 4]
      for f = 1, nf do
        args[3 + 2 * f] = ARGV[4 + f]
        args[4 + 2 * f] = ARGV[v0 + f - 1]
      end
      k = 4 + 2 * nf
    end
  end
  if fresh then
    for a = s0, d0 - 1 do
      k = k + 1
      args[k] = ARGV[a]
    end
    if nd > 0 then redis.call('HDEL', key, unpack(ARGV, d0, i - 1)) end
  end
  if k > 0 then
    redis.call('HSET', key, unpack(args, 1, k))
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
end
if fresh then
  local late = tonumber(ARGV[i])
  if late > 0 then redis.call('INCRBY', ARGV[i + 1], late) end
  redis.call('SET', ARGV[1], ARGV[2])
end
return applied
"#;

/// The hash of an entity under a feature set version's prefix; the entity in braces is the
/// cluster hash tag, so a future Redis Cluster keeps an entity's keys together.
pub fn entity_hash(prefix: &str, entity: &str) -> String {
    format!("{prefix}:{{{entity}}}")
}

/// The script, sent once and then called by its hash (`EVALSHA`).
static APPLY_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(APPLY));

/// What one batch makes durable in Redis.
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

/// Writes a feature set's rows to Redis.
#[derive(Clone)]
pub struct RedisTarget {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    /// Fields not stored with the row: windowed aggregates, evaluated from their tiles on read.
    derived: std::sync::Arc<std::collections::HashSet<String>>,
}

impl RedisTarget {
    /// A target for keys `<prefix>:<set>:v<version>:{<entity>}`.
    pub fn new(conn: ConnectionManager, prefix: &str, set: &str, version: u32, ttl_ms: u64) -> Self {
        RedisTarget {
            conn,
            prefix: Self::prefix(prefix, set, version),
            ttl_ms,
            derived: Default::default(),
        }
    }

    /// Leaves these fields out of the rows (they are evaluated on read; see [`crate::online`]).
    pub fn without(mut self, derived: Vec<String>) -> Self {
        self.derived = std::sync::Arc::new(derived.into_iter().collect());
        self
    }

    /// The prefix of every key of a feature set version.
    pub fn prefix(prefix: &str, set: &str, version: u32) -> String {
        format!("{prefix}:{set}:v{version}")
    }

    /// The hash key of an entity (the entity is the cluster hash tag).
    pub fn key(&self, entity: &str) -> String {
        entity_hash(&self.prefix, entity)
    }

    /// The key holding the last applied input sequence.
    pub fn applied_key(&self) -> String {
        format!("{}:_applied", self.prefix)
    }

    /// The last applied input sequence (0 before any).
    pub async fn applied(&mut self) -> Result<u64, TargetError> {
        let applied: Option<u64> = redis::cmd("GET")
            .arg(self.applied_key())
            .query_async(&mut self.conn)
            .await?;
        Ok(applied.unwrap_or(0))
    }

    /// The key counting events refused as late.
    pub fn late_key(&self) -> String {
        format!("{}:_late", self.prefix)
    }

    /// Writes a batch's rows, its aggregation state and its count of late events, and marks
    /// `last_seq` applied, atomically. Only the latest row of each entity (by event time, then
    /// sequence) is sent: the others would be overwritten in the same transaction anyway.
    pub async fn apply(&mut self, batch: &Durable) -> Result<(), TargetError> {
        let (rows, last_seq) = (&batch.rows, batch.last_seq);
        let stored: Vec<usize> = (0..rows.batch.fields.len())
            .filter(|&f| !self.derived.contains(&rows.batch.fields[f]))
            .collect();
        let latest = latest_per_entity(rows);
        // One entry per hash: its row (if the batch has one for it) with the state written to
        // the same hash, so each hash costs one HSET and one PEXPIRE; then state-only hashes.
        let mut state: std::collections::HashMap<&str, Vec<&StateWrite>> = std::collections::HashMap::new();
        for write in &batch.state {
            state.entry(write.hash.as_str()).or_default().push(write);
        }
        let mut entries: Vec<(String, Option<usize>)> = Vec::with_capacity(latest.len() + state.len());
        for i in latest {
            entries.push((self.key(&rows.batch.events[i].key), Some(i)));
        }
        let with_rows: std::collections::HashSet<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        let state_only: std::collections::BTreeSet<&str> = batch
            .state
            .iter()
            .map(|w| w.hash.as_str())
            .filter(|h| !with_rows.contains(h))
            .collect();
        let state_only: Vec<String> = state_only.into_iter().map(str::to_string).collect();
        entries.extend(state_only.into_iter().map(|h| (h, None)));
        let mut invocation = APPLY_SCRIPT.prepare_invoke();
        let cmd = &mut invocation;
        cmd.arg(self.applied_key())
            .arg(last_seq)
            .arg(self.ttl_ms)
            .arg(stored.len());
        for &f in &stored {
            cmd.arg(&rows.batch.fields[f]);
        }
        cmd.arg(entries.len());
        let none = Vec::new();
        for (key, row) in &entries {
            let writes = state.get(key.as_str()).unwrap_or(&none);
            let ns: usize = writes.iter().map(|w| w.set.len()).sum();
            let nd: usize = writes.iter().map(|w| w.delete.len()).sum();
            let (seq, time) = row.map_or((0, 0), |i| (rows.seqs[i], rows.batch.events[i].time));
            cmd.arg(key).arg(seq).arg(time).arg(ns).arg(nd);
            if let Some(i) = row {
                let event = &rows.batch.events[*i];
                for &f in &stored {
                    cmd.arg(event.values.get(f).map_or_else(|| "null".to_string(), json_text));
                }
            }
            for (field, value) in writes.iter().flat_map(|w| &w.set) {
                cmd.arg(field).arg(value);
            }
            for field in writes.iter().flat_map(|w| &w.delete) {
                cmd.arg(field);
            }
        }
        cmd.arg(batch.late).arg(self.late_key());
        let _: i64 = invocation.invoke_async(&mut self.conn).await?;
        Ok(())
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
