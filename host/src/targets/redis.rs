//! The online target: one Redis hash per (feature set, version, entity), readable field names
//! holding JSON values, plus `_ts` (event time, µs) and `_seq` (input sequence); a TTL
//! refreshed on write; the last applied input sequence of the feature set; all written by one
//! Lua script per batch (atomic, one round trip).
//!
//! The script skips rows whose input sequence was already applied (redelivery after a crash)
//! and rows older (by event time, then sequence) than what the hash holds, and writes values
//! as absolute values, so replaying a batch changes nothing.

use redis::aio::ConnectionManager;

use super::{json_text, TargetError};
use crate::graph::Rows;

const APPLY: &str = r#"
local applied = tonumber(redis.call('GET', ARGV[1]) or '0')
local ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local i = 5
for r = 1, n do
  local key, seq, ts, nf = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  if seq > applied then
    local cur = redis.call('HMGET', key, '_ts', '_seq')
    local cts, cseq = tonumber(cur[1]), tonumber(cur[2])
    if (not cts) or cts < ts or (cts == ts and cseq < seq) then
      redis.call('HSET', key, '_ts', ARGV[i + 2], '_seq', ARGV[i + 1], unpack(ARGV, i + 4, i + 3 + 2 * nf))
      if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    end
  end
  i = i + 4 + 2 * nf
end
if tonumber(ARGV[2]) > applied then redis.call('SET', ARGV[1], ARGV[2]) end
return applied
"#;

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
        RedisTarget { conn, prefix: format!("{prefix}:{set}:v{version}"), ttl_ms }
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
        let applied: Option<u64> = redis::cmd("GET").arg(self.applied_key()).query_async(&mut self.conn).await?;
        Ok(applied.unwrap_or(0))
    }

    /// Writes a batch's rows and marks `last_seq` applied, atomically.
    pub async fn apply(&mut self, rows: &Rows, last_seq: u64) -> Result<(), TargetError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(APPLY).arg(0).arg(self.applied_key()).arg(last_seq).arg(self.ttl_ms).arg(rows.len());
        for (event, seq) in rows.batch.events.iter().zip(&rows.seqs) {
            let present = rows.batch.fields.len().min(event.values.len());
            cmd.arg(self.key(&event.key)).arg(seq).arg(event.time).arg(rows.batch.fields.len());
            for (i, field) in rows.batch.fields.iter().enumerate() {
                let value = if i < present { json_text(&event.values[i]) } else { "null".to_string() };
                cmd.arg(field).arg(value);
            }
        }
        let _: i64 = cmd.query_async(&mut self.conn).await?;
        Ok(())
    }
}
