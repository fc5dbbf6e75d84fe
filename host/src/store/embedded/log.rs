//! The message logs of the embedded store, standing in for JetStream subjects: appends
//! (deduplicated by `Nats-Msg-Id` within the duplicate window, as JetStream does), reads
//! after a sequence, durable consumer cursors, and retention.

use std::time::Duration;

use bytes::Bytes;
use redb::{Durability, ReadableTable};

use super::*;

/// A message of a log.
#[derive(Debug, Clone)]
pub struct LogMessage {
    /// Its sequence in its subject (from 1).
    pub seq: u64,
    /// Headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
}

/// A message to append.
pub struct Outgoing<'a> {
    /// Subject.
    pub subject: &'a str,
    /// Headers (name, value).
    pub headers: &'a [(&'static str, String)],
    /// Body.
    pub body: &'a [u8],
}

impl Embedded {
    /// Appends messages durably, in one transaction; returns their sequences. A message whose
    /// `Nats-Msg-Id` was appended to its subject within the [`DUPLICATE_WINDOW`] is dropped
    /// and gets the first one's sequence, as JetStream does: a batch redelivered after a crash
    /// does not repeat its dead letters or feature rows.
    pub fn append(&self, messages: &[Outgoing<'_>]) -> Result<Vec<u64>, StoreError> {
        let now = now_ms();
        let window = DUPLICATE_WINDOW.as_millis() as u64;
        let sequences = blocking(|| {
            let txn = self.db.begin_write().map_err(fail)?;
            let mut sequences = Vec::with_capacity(messages.len());
            {
                let mut log = txn.open_table(LOG).map_err(fail)?;
                let mut heads = txn.open_table(HEADS).map_err(fail)?;
                let mut ids = txn.open_table(MSG_IDS).map_err(fail)?;
                let mut id_times = txn.open_table(MSG_ID_TIMES).map_err(fail)?;
                let mut marks = txn.open_table(LOG_MARKS).map_err(fail)?;
                forget_ids(&mut ids, &mut id_times, now.saturating_sub(window))?;
                if let Some(cutoff) = self.trim_due(now) {
                    trim_logs(&heads, &mut log, &mut marks, cutoff)?;
                }
                // The last sequence appended per subject, for the marks.
                let mut last: Vec<(&str, u64)> = Vec::new();
                let mut encoded = Vec::new();
                for message in messages {
                    let id = message
                        .headers
                        .iter()
                        .find(|(name, _)| *name == MSG_ID)
                        .map(|(_, id)| id.as_str());
                    if let Some(id) = id {
                        if let Some(seq) = ids.get((message.subject, id)).map_err(fail)?.map(|v| v.value()) {
                            sequences.push(seq);
                            continue;
                        }
                    }
                    let seq = heads.get(message.subject).map_err(fail)?.map_or(0, |v| v.value()) + 1;
                    encoded.clear();
                    encoded.extend_from_slice(&[0; 4]);
                    serde_json::to_writer(&mut encoded, message.headers).map_err(fail)?;
                    let length = (encoded.len() - 4) as u32;
                    encoded[..4].copy_from_slice(&length.to_le_bytes());
                    encoded.extend_from_slice(message.body);
                    log.insert((message.subject, seq), encoded.as_slice()).map_err(fail)?;
                    heads.insert(message.subject, seq).map_err(fail)?;
                    if let Some(id) = id {
                        ids.insert((message.subject, id), seq).map_err(fail)?;
                        id_times.insert((now, message.subject, id), ()).map_err(fail)?;
                    }
                    match last.iter_mut().find(|(subject, _)| *subject == message.subject) {
                        Some(entry) => entry.1 = seq,
                        None => last.push((message.subject, seq)),
                    }
                    sequences.push(seq);
                }
                for (subject, seq) in last {
                    marks.insert((subject, now), seq).map_err(fail)?;
                }
            }
            txn.commit().map_err(fail)?;
            Ok::<_, StoreError>(sequences)
        })?;
        self.appended.notify_waiters();
        Ok(sequences)
    }

    /// How long the logs keep a message (`None`: for ever). Older messages are removed by
    /// appends, at most every minute (every half retention when that is shorter).
    pub fn set_log_retention(&self, retention: Option<Duration>) {
        let ms = retention.map_or(0, |r| (r.as_millis() as u64).max(1));
        self.retention_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cutoff (ms) when the logs are due for trimming.
    fn trim_due(&self, now: u64) -> Option<u64> {
        let retention = self.retention_ms.load(std::sync::atomic::Ordering::Relaxed);
        if retention == 0 {
            return None;
        }
        let every = Duration::from_millis(retention / 2).min(SWEEP_EVERY);
        due(&self.last_trim, every).then(|| now.saturating_sub(retention))
    }

    /// The first sequence of `subject` still in its log after `after` (`None`: none).
    pub fn first_after(&self, subject: &str, after: u64) -> Result<Option<u64>, StoreError> {
        blocking(|| {
            let txn = self.db.begin_read().map_err(fail)?;
            let log = txn.open_table(LOG).map_err(fail)?;
            let mut range = log.range((subject, after + 1)..=(subject, u64::MAX)).map_err(fail)?;
            match range.next() {
                Some(entry) => Ok(Some(entry.map_err(fail)?.0.value().1)),
                None => Ok(None),
            }
        })
    }

    /// Up to `max` messages of `subject` after sequence `after`.
    pub fn fetch(&self, subject: &str, after: u64, max: usize) -> Result<Vec<LogMessage>, StoreError> {
        blocking(|| {
            let txn = self.db.begin_read().map_err(fail)?;
            let log = txn.open_table(LOG).map_err(fail)?;
            let mut found = Vec::new();
            for entry in log.range((subject, after + 1)..=(subject, u64::MAX)).map_err(fail)? {
                if found.len() >= max {
                    break;
                }
                let (key, value) = entry.map_err(fail)?;
                let bytes = value.value();
                let length = u32::from_le_bytes(bytes[..4].try_into().map_err(fail)?) as usize;
                let headers: Vec<(String, String)> = serde_json::from_slice(&bytes[4..4 + length]).map_err(fail)?;
                found.push(LogMessage {
                    seq: key.value().1,
                    headers,
                    body: Bytes::copy_from_slice(&bytes[4 + length..]),
                });
            }
            Ok(found)
        })
    }

    /// The last sequence of a subject (0: empty).
    pub fn head(&self, subject: &str) -> Result<u64, StoreError> {
        self.get(HEADS, subject)
    }

    /// The last sequence a consumer acknowledged (0: none).
    pub fn cursor(&self, consumer: &str) -> Result<u64, StoreError> {
        self.get(CURSORS, consumer)
    }

    /// Moves a consumer's cursor to `seq` (never backwards). Not synced to disk by itself:
    /// a cursor lost in a crash means redelivery, which every consumer absorbs; the next
    /// durable commit makes it durable.
    pub fn ack(&self, consumer: &str, seq: u64) -> Result<(), StoreError> {
        blocking(|| {
            let mut txn = self.db.begin_write().map_err(fail)?;
            txn.set_durability(Durability::None).map_err(fail)?;
            {
                let mut cursors = txn.open_table(CURSORS).map_err(fail)?;
                let current = cursors.get(consumer).map_err(fail)?.map_or(0, |v| v.value());
                if seq > current {
                    cursors.insert(consumer, seq).map_err(fail)?;
                }
            }
            txn.commit().map_err(fail)
        })
    }

    /// Wakes every [`Self::wait_for_append`] in progress (on shutdown: an idle subscription
    /// waits up to a second otherwise).
    pub fn wake_waiters(&self) {
        self.appended.notify_waiters();
    }

    /// Waits until something is appended, or `timeout`.
    pub async fn wait_for_append(&self, timeout: Duration, after: impl FnOnce() -> bool) {
        let notified = self.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if after() {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }
}

/// Removes the log messages appended before `cutoff` (ms), subject by subject, as far as the
/// marks tell.
pub(super) fn trim_logs(
    heads: &redb::Table<&str, u64>,
    log: &mut redb::Table<(&str, u64), &[u8]>,
    marks: &mut redb::Table<(&str, u64), u64>,
    cutoff: u64,
) -> Result<(), StoreError> {
    let mut subjects = Vec::new();
    for entry in heads.iter().map_err(fail)? {
        subjects.push(entry.map_err(fail)?.0.value().to_string());
    }
    for subject in &subjects {
        let subject = subject.as_str();
        let (mut upto, mut old) = (0, Vec::new());
        for entry in marks.range((subject, 0)..(subject, cutoff)).map_err(fail)? {
            let (key, seq) = entry.map_err(fail)?;
            upto = upto.max(seq.value());
            old.push(key.value().1);
        }
        if upto > 0 {
            log.retain_in((subject, 0)..=(subject, upto), |_, _| false)
                .map_err(fail)?;
        }
        for at in old {
            marks.remove((subject, at)).map_err(fail)?;
        }
    }
    Ok(())
}

/// Forgets the message ids appended before `before` (ms).
pub(super) fn forget_ids(
    ids: &mut redb::Table<(&str, &str), u64>,
    id_times: &mut redb::Table<(u64, &str, &str), ()>,
    before: u64,
) -> Result<(), StoreError> {
    let mut old = Vec::new();
    for entry in id_times.range((0u64, "", "")..(before, "", "")).map_err(fail)? {
        let (key, _) = entry.map_err(fail)?;
        let (at, subject, id) = key.value();
        old.push((at, subject.to_string(), id.to_string()));
    }
    for (at, subject, id) in &old {
        ids.remove((subject.as_str(), id.as_str())).map_err(fail)?;
        id_times.remove((*at, subject.as_str(), id.as_str())).map_err(fail)?;
    }
    Ok(())
}
