//! The Redis online store: one Redis hash per hash, counters as plain keys, and a batch
//! written by one Lua script (atomic, one round trip, called by its hash with `EVALSHA`).

use std::sync::Mutex;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::{BatchWrite, HashFields, OnlineStore, SeriesEntries, StoreError};

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

// A time series is a sorted set scored by start; a member is `<start>:<bytes>`, so one start
// holds one entry: writing it again removes the one there first.
const PUT_SERIES: &str = r#"
for i = 1, #ARGV - 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i] .. ':' .. ARGV[i + 1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[#ARGV])
return 0
"#;

static PUT_SERIES_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PUT_SERIES));

/// The script, sent once and then called by its hash (`EVALSHA`).
static APPLY_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(APPLY));

impl StoreError {
    /// A Redis error, transient unless Redis says a retry cannot help (a refused command, a
    /// script error, a bad URL).
    pub fn redis(what: &str, e: redis::RedisError) -> StoreError {
        let transient = e.is_timeout()
            || e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.code() == Some("OOM")
            || !matches!(e.retry_method(), redis::RetryMethod::NoRetry);
        let message = format!("{what}: {e}");
        if transient {
            StoreError::Unavailable(message)
        } else {
            StoreError::Failed(message)
        }
    }
}

/// Redis as the online store.
pub struct RedisStore {
    conn: ConnectionManager,
    sync: SyncRedis,
}

impl RedisStore {
    /// Connects to `url` (the async connection reconnects by itself; the blocking one is
    /// opened on first use and again after an error).
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Failed(format!("Redis URL {url}: {e}")))?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| StoreError::redis(&format!("Redis at {url}"), e))?;
        Ok(RedisStore {
            conn,
            sync: SyncRedis {
                client,
                connection: Mutex::new(None),
            },
        })
    }

    /// The async connection (for callers that also run plain Redis commands).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

fn hgetall(hashes: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for hash in hashes {
        pipe.cmd("HGETALL").arg(hash);
    }
    pipe
}

impl OnlineStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn apply<'a>(&'a self, batch: &'a BatchWrite) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut invocation = APPLY_SCRIPT.prepare_invoke();
            let cmd = &mut invocation;
            cmd.arg(&batch.applied_key)
                .arg(batch.last_seq)
                .arg(batch.ttl_ms)
                .arg(batch.fields.len());
            for field in &batch.fields {
                cmd.arg(field);
            }
            cmd.arg(batch.hashes.len());
            for hash in &batch.hashes {
                let (seq, time) = hash.row.as_ref().map_or((0, 0), |r| (r.seq, r.time));
                cmd.arg(&hash.hash)
                    .arg(seq)
                    .arg(time)
                    .arg(hash.set.len())
                    .arg(hash.delete.len());
                if let Some(row) = &hash.row {
                    for value in &row.values {
                        cmd.arg(value);
                    }
                }
                for (field, value) in &hash.set {
                    cmd.arg(field).arg(value);
                }
                for field in &hash.delete {
                    cmd.arg(field);
                }
            }
            cmd.arg(batch.late).arg(&batch.late_key);
            let mut conn = self.conn.clone();
            let _: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| StoreError::redis("Redis", e))?;
            Ok(())
        })
    }

    fn read<'a>(&'a self, hashes: &'a [String]) -> BoxFuture<'a, Result<Vec<HashFields>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            hgetall(hashes)
                .query_async(&mut conn)
                .await
                .map_err(|e| StoreError::redis("Redis", e))
        })
    }

    fn read_blocking(&self, hashes: &[String]) -> Result<Vec<HashFields>, StoreError> {
        self.sync.query(&hgetall(hashes))
    }

    fn counter<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let value: Option<u64> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(|e| StoreError::redis("Redis", e))?;
            Ok(value.unwrap_or(0))
        })
    }

    fn put_series<'a>(
        &'a self,
        series: &'a str,
        entries: &'a [(i64, Vec<u8>)],
        keep_from: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut invocation = PUT_SERIES_SCRIPT.prepare_invoke();
            invocation.key(series);
            for (start, bytes) in entries {
                invocation.arg(*start).arg(bytes.as_slice());
            }
            invocation.arg(keep_from);
            let mut conn = self.conn.clone();
            let _: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| StoreError::redis("Redis", e))?;
            Ok(())
        })
    }

    fn read_series<'a>(
        &'a self,
        series: &'a str,
        from: i64,
        to: i64,
    ) -> BoxFuture<'a, Result<SeriesEntries, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                .arg(series)
                .arg(from)
                .arg(format!("({to}"))
                .arg("BYSCORE")
                .query_async(&mut conn)
                .await
                .map_err(|e| StoreError::redis("Redis", e))?;
            members
                .into_iter()
                .map(|member| {
                    let colon = member.iter().position(|b| *b == b':');
                    let start = colon.and_then(|at| std::str::from_utf8(&member[..at]).ok()?.parse().ok());
                    match (colon, start) {
                        (Some(at), Some(start)) => Ok((start, member[at + 1..].to_vec())),
                        _ => Err(StoreError::Failed(format!(
                            "Redis: {series} holds a member that is not `<start>:<bytes>`"
                        ))),
                    }
                })
                .collect()
        })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
        })
    }
}

/// One blocking connection, opened on first use and again after an error.
struct SyncRedis {
    client: redis::Client,
    connection: Mutex<Option<redis::Connection>>,
}

impl SyncRedis {
    /// Runs a pipeline; on error the connection is dropped and reopened next time.
    fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(
                self.client
                    .get_connection()
                    .map_err(|e| StoreError::redis("Redis unreachable", e))?,
            );
        }
        let connection = slot.as_mut().expect("connected above");
        pipe.query(connection).map_err(|e| {
            *slot = None;
            StoreError::redis("Redis", e)
        })
    }
}
