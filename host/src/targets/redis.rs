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

const APPLY: &str = r#"
local applied = tonumber(redis.call('GET', ARGV[1]) or '0')
local ttl = tonumber(ARGV[3])
local nf = tonumber(ARGV[4])
local names = {}
for f = 1, nf do names[f] = ARGV[4 + f] end
local n = tonumber(ARGV[5 + nf])
local i = 6 + nf
local args = {'_ts', 0, '_seq', 0}
for r = 1, n do
  local key, seq, ts = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if seq > applied then
    local cur = redis.call('HMGET', key, '_ts', '_seq')
    local cts, cseq = tonumber(cur[1]), tonumber(cur[2])
    if (not cts) or cts < ts or (cts == ts and cseq < seq) then
      args[2] = ARGV[i + 2]
      args[4] = ARGV[i + 1]
      for f = 1, nf do
        args[3 + 2 * f] = names[f]
        args[4 + 2 * f] = ARGV[i + 2 + f]
      end
      redis.call('HSET', key, unpack(args))
      if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    end
  end
  i = i + 3 + nf
end
if tonumber(ARGV[2]) > applied then
  local nw = tonumber(ARGV[i])
  i = i + 1
  for w = 1, nw do
    local key, ns = ARGV[i], tonumber(ARGV[i + 1])
    i = i + 2
    if ns > 0 then redis.call('HSET', key, unpack(ARGV, i, i + 2 * ns - 1)) end
    i = i + 2 * ns
    local nd = tonumber(ARGV[i])
    i = i + 1
    if nd > 0 then redis.call('HDEL', key, unpack(ARGV, i, i + nd - 1)) end
    i = i + nd
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
  local late = tonumber(ARGV[i])
  if late > 0 then redis.call('INCRBY', ARGV[i + 1], late) end
  redis.call('SET', ARGV[1], ARGV[2])
end
return applied
"#;

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
}

impl RedisTarget {
    /// A target for keys `<prefix>:<set>:v<version>:{<entity>}`.
    pub fn new(conn: ConnectionManager, prefix: &str, set: &str, version: u32, ttl_ms: u64) -> Self {
        RedisTarget {
            conn,
            prefix: Self::prefix(prefix, set, version),
            ttl_ms,
        }
    }

    /// The prefix of every key of a feature set version.
    pub fn prefix(prefix: &str, set: &str, version: u32) -> String {
        format!("{prefix}:{set}:v{version}")
    }

    /// The hash key of an entity (the entity is the cluster hash tag).
    pub fn key(&self, entity: &str) -> String {
        format!("{}:{{{entity}}}", self.prefix)
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

    /// Events refused as late so far (those of applied batches).
    pub async fn late(&mut self) -> Result<u64, TargetError> {
        let late: Option<u64> = redis::cmd("GET")
            .arg(self.late_key())
            .query_async(&mut self.conn)
            .await?;
        Ok(late.unwrap_or(0))
    }

    /// Writes a batch's rows, its aggregation state and its count of late events, and marks
    /// `last_seq` applied, atomically. Only the latest row of each entity (by event time, then
    /// sequence) is sent: the others would be overwritten in the same transaction anyway.
    pub async fn apply(&mut self, batch: &Durable) -> Result<(), TargetError> {
        let (rows, last_seq) = (&batch.rows, batch.last_seq);
        let fields = &rows.batch.fields;
        let latest = latest_per_entity(rows);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(APPLY)
            .arg(0)
            .arg(self.applied_key())
            .arg(last_seq)
            .arg(self.ttl_ms)
            .arg(fields.len());
        for field in fields {
            cmd.arg(field);
        }
        cmd.arg(latest.len());
        for i in latest {
            let (event, seq) = (&rows.batch.events[i], rows.seqs[i]);
            cmd.arg(self.key(&event.key)).arg(seq).arg(event.time);
            for f in 0..fields.len() {
                cmd.arg(event.values.get(f).map_or_else(|| "null".to_string(), json_text));
            }
        }
        cmd.arg(batch.state.len());
        for write in &batch.state {
            cmd.arg(&write.hash).arg(write.set.len());
            for (field, value) in &write.set {
                cmd.arg(field).arg(value);
            }
            cmd.arg(write.delete.len());
            for field in &write.delete {
                cmd.arg(field);
            }
        }
        cmd.arg(batch.late).arg(self.late_key());
        let _: i64 = cmd.query_async(&mut self.conn).await?;
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
