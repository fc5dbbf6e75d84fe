//! The online store behind every online read and write: Redis in production, an embedded file
//! ([`embedded`], redb) in the single-process mode. Both hold the same data model, so the
//! online target, online reads, the plugins' `lookup` and aggregation state work unchanged on
//! either:
//!
//! - a **hash** per (feature set version, entity): named fields holding bytes — the row's
//!   JSON values, `_ts` (event time, µs) and `_seq` (input sequence) as decimal text, and the
//!   aggregation tiles (`~<step>:…`);
//! - a TTL per hash, refreshed on every write; an expired hash reads as empty, tiles included;
//! - **counters** (a feature set version's last applied input sequence, its late events);
//! - **time series**: entries keyed by a start time (µs), one per start, trimmed by age (the
//!   closed windows of live monitoring).
//!
//! A batch is written by [`OnlineStore::apply`] atomically, with the rules of
//! [`BatchWrite`]; both stores pass one behavioural test suite (`tests/online_store.rs`).

pub mod embedded;
pub mod redis;

use futures::future::BoxFuture;

/// An online store that could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer or said "not now" (a timeout, a dropped connection, a server
    /// loading or out of memory): trying again can help.
    #[error("{0}")]
    Unavailable(String),
    /// The store refused the request, or what it holds cannot be read: trying again cannot
    /// help.
    #[error("{0}")]
    Failed(String),
}

impl crate::fault::Transient for StoreError {
    fn transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The fields of one hash, as read.
pub type HashFields = Vec<(String, Vec<u8>)>;

/// What one batch writes, store-neutral. Applied atomically with these rules (which make a
/// replayed batch change nothing):
///
/// - `fresh` = `last_seq` is above the counter `applied_key`;
/// - a hash's row is written (with `_ts` and `_seq`) when its sequence is above the applied
///   counter and its (time, sequence) is above the hash's stored (`_ts`, `_seq`);
/// - a hash's state fields are set and deleted only when the batch is fresh;
/// - a hash written to gets its TTL (`ttl_ms`, 0: none) renewed;
/// - when fresh, `late_key` grows by `late` and `applied_key` becomes `last_seq`.
#[derive(Debug, Default, Clone)]
pub struct BatchWrite {
    /// Counter of the last applied input sequence.
    pub applied_key: String,
    /// The highest input sequence the batch covers.
    pub last_seq: u64,
    /// TTL of every hash written, ms (0: none).
    pub ttl_ms: u64,
    /// Names of the row values, shared by every row.
    pub fields: Vec<String>,
    /// One entry per hash.
    pub hashes: Vec<HashWrite>,
    /// Events refused as late.
    pub late: u64,
    /// Counter of late events.
    pub late_key: String,
}

/// What a batch writes into one hash.
#[derive(Debug, Default, Clone)]
pub struct HashWrite {
    /// The hash.
    pub hash: String,
    /// Its new row, if the batch has one.
    pub row: Option<RowWrite>,
    /// State fields to set (absolute values).
    pub set: Vec<(String, Vec<u8>)>,
    /// State fields to delete.
    pub delete: Vec<String>,
}

/// A row: its sequence, event time (µs) and values as JSON text, in [`BatchWrite::fields`]
/// order.
#[derive(Debug, Default, Clone)]
pub struct RowWrite {
    /// Input sequence.
    pub seq: u64,
    /// Event time, µs since the epoch.
    pub time: i64,
    /// JSON text of each value.
    pub values: Vec<String>,
}

/// An online store. Async methods serve the pipeline's writes and the HTTP API; the
/// blocking read serves the graph (aggregation state, plugin lookups), which runs on a
/// blocking thread.
pub trait OnlineStore: Send + Sync {
    /// `redis` or `embedded`, for messages and `/readyz`.
    fn kind(&self) -> &'static str;

    /// Writes a batch atomically (see [`BatchWrite`] for the rules).
    fn apply<'a>(&'a self, batch: &'a BatchWrite) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The fields of each hash (empty when missing or expired), in one round trip.
    fn read<'a>(&'a self, hashes: &'a [String]) -> BoxFuture<'a, Result<Vec<HashFields>, StoreError>>;

    /// [`OnlineStore::read`], blocking the calling thread.
    fn read_blocking(&self, hashes: &[String]) -> Result<Vec<HashFields>, StoreError>;

    /// A counter (0 when never written).
    fn counter<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Writes entries of a time series, one per start (an entry written again replaces the
    /// one there), and removes the entries that start before `keep_from`; atomic.
    fn put_series<'a>(
        &'a self,
        series: &'a str,
        entries: &'a [(i64, Vec<u8>)],
        keep_from: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The entries of a time series that start in `[from, to)`, oldest first.
    fn read_series<'a>(
        &'a self,
        series: &'a str,
        from: i64,
        to: i64,
    ) -> BoxFuture<'a, Result<SeriesEntries, StoreError>>;

    /// Whether the store answers.
    fn ping(&self) -> BoxFuture<'_, bool>;
}

/// Entries of a time series: (start, bytes), oldest first.
pub type SeriesEntries = Vec<(i64, Vec<u8>)>;
