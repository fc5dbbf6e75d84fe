//! The embedded store: one redb file holding, for the single-process mode, what Redis and
//! NATS JetStream hold in production —
//!
//! - the online store ([`OnlineStore`]): hash fields, TTLs and counters, with a batch written
//!   in one ACID transaction by the same rules as the Redis script;
//! - message logs standing in for JetStream subjects: an append-only log per subject
//!   (ingested events, feature rows of the stream target, dead letters, late events) with a
//!   durable cursor per consumer. Appends are durable before they are acknowledged to the
//!   client; a consumer's cursor moves only after what it read is durable downstream.
//!
//! The file is locked by the process that opened it. TTL-expired hashes read as empty at
//! once and are removed from the file by a sweep at most once a minute.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{BatchWrite, HashFields, HashWrite, OnlineStore, SeriesEntries, StoreError};

mod log;
pub use log::{LogMessage, Outgoing};

/// (hash, field) → bytes.
const FIELDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("fields");
/// hash → expiry, ms since the epoch.
const EXPIRY: TableDefinition<&str, u64> = TableDefinition::new("expiry");
/// (expiry, hash), for the sweep.
const EXPIRING: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiring");
/// Counters (applied sequences, late events).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// (subject, sequence) → message (headers and body).
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");
/// subject → its last sequence.
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("log_heads");
/// consumer → the last sequence it acknowledged.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// (subject, message id) → its sequence: the duplicate window.
const MSG_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("msg_ids");
/// (when appended, subject, message id), to forget ids past the window.
const MSG_ID_TIMES: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("msg_id_times");

/// (series, start) → entry: the time series.
const SERIES: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("series");

/// (subject, when) → the subject's last sequence appended then: what log retention trims by.
const LOG_MARKS: TableDefinition<(&str, u64), u64> = TableDefinition::new("log_marks");

/// How long a message id is remembered: an append repeating it within the window is dropped
/// (JetStream's default duplicate window).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The header naming a message's id, as on JetStream.
const MSG_ID: &str = "Nats-Msg-Id";

/// How often expired hashes are removed from the file.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The embedded store and logs.
pub struct Embedded {
    db: Database,
    path: PathBuf,
    /// Woken on every append (consumers wait on it instead of polling).
    appended: tokio::sync::Notify,
    last_sweep: Mutex<Instant>,
    /// How long the logs keep a message, ms (0: for ever).
    retention_ms: std::sync::atomic::AtomicU64,
    last_trim: Mutex<Instant>,
}

fn fail(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("embedded store: {e}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs blocking file work off the async workers when the runtime allows it.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

impl Embedded {
    /// Opens (or creates) the store file; its folder is created when missing.
    pub fn open(path: &Path) -> Result<Arc<Embedded>, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Failed(format!("creating {}: {e}", parent.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Failed(format!("embedded store {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(fail)?;
        {
            txn.open_table(FIELDS).map_err(fail)?;
            txn.open_table(EXPIRY).map_err(fail)?;
            txn.open_table(EXPIRING).map_err(fail)?;
            txn.open_table(COUNTERS).map_err(fail)?;
            txn.open_table(LOG).map_err(fail)?;
            txn.open_table(HEADS).map_err(fail)?;
            txn.open_table(CURSORS).map_err(fail)?;
            txn.open_table(MSG_IDS).map_err(fail)?;
            txn.open_table(MSG_ID_TIMES).map_err(fail)?;
            txn.open_table(LOG_MARKS).map_err(fail)?;
            txn.open_table(SERIES).map_err(fail)?;
        }
        txn.commit().map_err(fail)?;
        Ok(Arc::new(Embedded {
            db,
            path: path.to_path_buf(),
            appended: tokio::sync::Notify::new(),
            last_sweep: Mutex::new(Instant::now()),
            retention_ms: std::sync::atomic::AtomicU64::new(0),
            last_trim: Mutex::new(Instant::now()),
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, table: TableDefinition<&str, u64>, key: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(table).map_err(fail)?;
        let value = table.get(key).map_err(fail)?.map_or(0, |v| v.value());
        Ok(value)
    }

    fn read_now(&self, hashes: &[String]) -> Result<Vec<HashFields>, StoreError> {
        let now = now_ms();
        let txn = self.db.begin_read().map_err(fail)?;
        let fields = txn.open_table(FIELDS).map_err(fail)?;
        let expiry = txn.open_table(EXPIRY).map_err(fail)?;
        let mut found = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let mut read = HashFields::new();
            let expired = expiry
                .get(hash.as_str())
                .map_err(fail)?
                .is_some_and(|at| at.value() <= now);
            if !expired {
                for entry in fields.range((hash.as_str(), "")..).map_err(fail)? {
                    let (key, value) = entry.map_err(fail)?;
                    let (owner, field) = key.value();
                    if owner != hash {
                        break;
                    }
                    read.push((field.to_string(), value.value().to_vec()));
                }
            }
            found.push(read);
        }
        Ok(found)
    }

    fn apply_now(&self, batch: &BatchWrite) -> Result<(), StoreError> {
        let now = now_ms();
        let txn = self.db.begin_write().map_err(fail)?;
        {
            let mut counters = txn.open_table(COUNTERS).map_err(fail)?;
            let mut tables = HashTables {
                fields: txn.open_table(FIELDS).map_err(fail)?,
                expiry: txn.open_table(EXPIRY).map_err(fail)?,
                expiring: txn.open_table(EXPIRING).map_err(fail)?,
            };
            let applied = counters
                .get(batch.applied_key.as_str())
                .map_err(fail)?
                .map_or(0, |v| v.value());
            let fresh = batch.last_seq > applied;
            for write in &batch.hashes {
                tables.write(batch, write, applied, fresh, now)?;
            }
            if fresh {
                if batch.late > 0 {
                    let late = counters
                        .get(batch.late_key.as_str())
                        .map_err(fail)?
                        .map_or(0, |v| v.value());
                    counters
                        .insert(batch.late_key.as_str(), late + batch.late)
                        .map_err(fail)?;
                }
                counters
                    .insert(batch.applied_key.as_str(), batch.last_seq)
                    .map_err(fail)?;
            }
            self.sweep(now, &mut tables.fields, &mut tables.expiry, &mut tables.expiring)?;
        }
        txn.commit().map_err(fail)
    }

    fn put_series_now(&self, series: &str, entries: &[(i64, Vec<u8>)], keep_from: i64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(fail)?;
        {
            let mut table = txn.open_table(SERIES).map_err(fail)?;
            for (start, bytes) in entries {
                table.insert((series, *start), bytes.as_slice()).map_err(fail)?;
            }
            let old: Vec<i64> = table
                .range((series, i64::MIN)..(series, keep_from))
                .map_err(fail)?
                .map(|entry| entry.map(|(key, _)| key.value().1))
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            for start in old {
                table.remove((series, start)).map_err(fail)?;
            }
        }
        txn.commit().map_err(fail)
    }

    fn read_series_now(&self, series: &str, from: i64, to: i64) -> Result<SeriesEntries, StoreError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(SERIES).map_err(fail)?;
        let mut entries = Vec::new();
        for entry in table.range((series, from)..(series, to)).map_err(fail)? {
            let (key, value) = entry.map_err(fail)?;
            entries.push((key.value().1, value.value().to_vec()));
        }
        Ok(entries)
    }

    /// Removes expired hashes, at most once per [`SWEEP_EVERY`].
    fn sweep(
        &self,
        now: u64,
        fields: &mut redb::Table<(&str, &str), &[u8]>,
        expiry: &mut redb::Table<&str, u64>,
        expiring: &mut redb::Table<(u64, &str), ()>,
    ) -> Result<(), StoreError> {
        if !due(&self.last_sweep, SWEEP_EVERY) {
            return Ok(());
        }
        let mut due = Vec::new();
        for entry in expiring.range((0u64, "")..(now + 1, "")).map_err(fail)? {
            let (key, _) = entry.map_err(fail)?;
            let (at, hash) = key.value();
            due.push((at, hash.to_string()));
        }
        for (at, hash) in due {
            remove_hash(fields, expiry, expiring, &hash, at)?;
        }
        Ok(())
    }
}

/// The tables of the online hashes in a write transaction: fields, and expiry both ways.
struct HashTables<'t> {
    fields: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    expiry: redb::Table<'t, &'static str, u64>,
    expiring: redb::Table<'t, (u64, &'static str), ()>,
}

impl HashTables<'_> {
    /// One hash's part of a batch, as the Redis script does it: the row if it is newer than
    /// the stored one (by event time, then sequence) and not applied yet; the tiles if the
    /// batch is `fresh`; the TTL refreshed when anything was written.
    fn write(
        &mut self,
        batch: &BatchWrite,
        write: &HashWrite,
        applied: u64,
        fresh: bool,
        now: u64,
    ) -> Result<(), StoreError> {
        let hash = write.hash.as_str();
        // An expired hash is gone, tiles included, as in Redis.
        let at = self.expiry.get(hash).map_err(fail)?.map(|v| v.value());
        if let Some(at) = at.filter(|at| *at <= now) {
            remove_hash(&mut self.fields, &mut self.expiry, &mut self.expiring, hash, at)?;
        }
        let mut wrote = false;
        if let Some(row) = write.row.as_ref().filter(|r| r.seq > applied) {
            if self.newer(hash, row.time, row.seq)? {
                let fields = &mut self.fields;
                fields
                    .insert((hash, "_ts"), row.time.to_string().as_bytes())
                    .map_err(fail)?;
                fields
                    .insert((hash, "_seq"), row.seq.to_string().as_bytes())
                    .map_err(fail)?;
                for (name, value) in batch.fields.iter().zip(&row.values) {
                    fields.insert((hash, name.as_str()), value.as_bytes()).map_err(fail)?;
                }
                wrote = true;
            }
        }
        if fresh {
            for (name, value) in &write.set {
                self.fields
                    .insert((hash, name.as_str()), value.as_slice())
                    .map_err(fail)?;
            }
            for name in &write.delete {
                self.fields.remove((hash, name.as_str())).map_err(fail)?;
            }
            wrote |= !write.set.is_empty();
        }
        if wrote && batch.ttl_ms > 0 {
            if let Some(old) = self.expiry.get(hash).map_err(fail)?.map(|v| v.value()) {
                self.expiring.remove((old, hash)).map_err(fail)?;
            }
            let at = now + batch.ttl_ms;
            self.expiry.insert(hash, at).map_err(fail)?;
            self.expiring.insert((at, hash), ()).map_err(fail)?;
        }
        Ok(())
    }

    /// Whether a row at (`time`, `seq`) is newer than the hash's stored one.
    fn newer(&self, hash: &str, time: i64, seq: u64) -> Result<bool, StoreError> {
        let number = |name: &str| -> Result<Option<i64>, StoreError> {
            Ok(self
                .fields
                .get((hash, name))
                .map_err(fail)?
                .and_then(|v| std::str::from_utf8(v.value()).ok()?.parse().ok()))
        };
        let current_seq = number("_seq")?.unwrap_or(0) as u64;
        Ok(match number("_ts")? {
            None => true,
            Some(ts) => ts < time || (ts == time && current_seq < seq),
        })
    }
}

/// Whether `every` has passed since `last`; if so, `last` becomes now.
fn due(last: &Mutex<Instant>, every: Duration) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if last.elapsed() < every {
        return false;
    }
    *last = Instant::now();
    true
}

/// Removes a hash's fields and expiry.
fn remove_hash(
    fields: &mut redb::Table<(&str, &str), &[u8]>,
    expiry: &mut redb::Table<&str, u64>,
    expiring: &mut redb::Table<(u64, &str), ()>,
    hash: &str,
    at: u64,
) -> Result<(), StoreError> {
    let mut names = Vec::new();
    for entry in fields.range((hash, "")..).map_err(fail)? {
        let (key, _) = entry.map_err(fail)?;
        let (owner, field) = key.value();
        if owner != hash {
            break;
        }
        names.push(field.to_string());
    }
    for name in &names {
        fields.remove((hash, name.as_str())).map_err(fail)?;
    }
    expiry.remove(hash).map_err(fail)?;
    expiring.remove((at, hash)).map_err(fail)?;
    Ok(())
}

impl OnlineStore for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn apply<'a>(&'a self, batch: &'a BatchWrite) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { blocking(|| self.apply_now(batch)) })
    }

    fn read<'a>(&'a self, hashes: &'a [String]) -> BoxFuture<'a, Result<Vec<HashFields>, StoreError>> {
        Box::pin(async move { self.read_now(hashes) })
    }

    fn read_blocking(&self, hashes: &[String]) -> Result<Vec<HashFields>, StoreError> {
        self.read_now(hashes)
    }

    fn counter<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { self.get(COUNTERS, key) })
    }

    fn put_series<'a>(
        &'a self,
        series: &'a str,
        entries: &'a [(i64, Vec<u8>)],
        keep_from: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { blocking(|| self.put_series_now(series, entries, keep_from)) })
    }

    fn read_series<'a>(
        &'a self,
        series: &'a str,
        from: i64,
        to: i64,
    ) -> BoxFuture<'a, Result<SeriesEntries, StoreError>> {
        Box::pin(async move { blocking(|| self.read_series_now(series, from, to)) })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.db.begin_read().is_ok() })
    }
}
