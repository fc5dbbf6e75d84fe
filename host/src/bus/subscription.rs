//! A durable consumer of a subject on either bus: batches of (sequence, body), and an [`Ack`]
//! for the last message of each, to be called once everything the batch produced is durable.
//!
//! On the embedded logs, the consumer's cursor is the acknowledged floor: a restart resumes
//! right after it, and a batch always starts where the previous one ended.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::jetstream::{sequence, JetStreamSource, SourceOptions};
use super::{Bus, BusError};
use crate::store::embedded::Embedded;

/// What acknowledges a batch (everything up to its last message).
pub enum Ack {
    /// The last JetStream message ("ack all").
    Nats(Box<async_nats::jetstream::Message>),
    /// A cursor to move.
    Log {
        /// The store.
        store: Arc<Embedded>,
        /// The consumer.
        consumer: String,
        /// The last sequence of the batch.
        seq: u64,
    },
}

impl Ack {
    /// Acknowledges, confirmed by the server (an ack still buffered in the client when the
    /// process exits would be lost: harmless, the batch is redelivered and skipped).
    pub async fn ack(self) -> Result<(), BusError> {
        match self {
            Ack::Nats(message) => message
                .double_ack()
                .await
                .map_err(|e| BusError::Unavailable(format!("acknowledging: {e}"))),
            Ack::Log { store, consumer, seq } => Ok(store.ack(&consumer, seq)?),
        }
    }
}

/// A durable consumer.
pub enum Subscription {
    /// A JetStream pull consumer.
    Nats(Box<JetStreamSource>),
    /// A cursor on an embedded log.
    Log {
        /// The store.
        store: Arc<Embedded>,
        /// The subject.
        subject: String,
        /// The consumer name (its cursor).
        consumer: String,
        /// The last sequence delivered.
        after: u64,
        /// Messages per batch.
        batch: usize,
        /// Longest wait for a message while messages come.
        max_wait: Duration,
        /// The wait of the next empty fetch: `max_wait`, doubling while the log stays idle,
        /// up to [`IDLE_WAIT`]. An append wakes the wait at once whatever its length, so
        /// this costs no latency; it only makes an idle host's loops tick rarely.
        wait: Duration,
    },
}

/// The longest wait of an idle log subscription before its loop ticks (timers: window
/// closes, Parquet rolls) — the embedded mode's answer to polling an idle log.
pub const IDLE_WAIT: Duration = Duration::from_secs(1);

impl Subscription {
    /// Binds the durable consumer `options.durable`, resuming after its acknowledged floor.
    pub async fn open(bus: &Bus, options: SourceOptions<'_>) -> Result<Subscription, BusError> {
        match bus {
            Bus::Nats(js) => Ok(Subscription::Nats(Box::new(JetStreamSource::open(js, options).await?))),
            Bus::Embedded(store) => Ok(Subscription::Log {
                store: store.clone(),
                subject: options.subject.to_string(),
                after: store.cursor(&options.durable).map_err(BusError::Log)?,
                consumer: options.durable,
                batch: options.batch.max(1),
                max_wait: options.max_wait,
                wait: options.max_wait,
            }),
        }
    }

    /// The next batch (empty when nothing came within the wait) and what acknowledges it.
    pub async fn next_batch(&mut self) -> Result<(Vec<(u64, Bytes)>, Option<Ack>), BusError> {
        match self {
            Subscription::Nats(source) => {
                let mut messages = source.next_batch().await?;
                let mut items = Vec::with_capacity(messages.len());
                for message in &messages {
                    items.push((sequence(message)?, message.payload.clone()));
                }
                Ok((items, messages.pop().map(|m| Ack::Nats(Box::new(m)))))
            }
            Subscription::Log {
                store,
                subject,
                consumer,
                after,
                batch,
                max_wait,
                wait,
            } => {
                let mut found = store.fetch(subject, *after, *batch).map_err(BusError::Log)?;
                if found.is_empty() {
                    let known = *after;
                    store
                        .wait_for_append(*wait, || store.head(subject).is_ok_and(|head| head > known))
                        .await;
                    found = store.fetch(subject, *after, *batch).map_err(BusError::Log)?;
                }
                let Some(last) = found.last().map(|m| m.seq) else {
                    *wait = (*wait * 2).clamp(*max_wait, IDLE_WAIT.max(*max_wait));
                    return Ok((Vec::new(), None));
                };
                *wait = *max_wait;
                *after = last;
                let ack = Ack::Log {
                    store: store.clone(),
                    consumer: consumer.clone(),
                    seq: last,
                };
                Ok((found.into_iter().map(|m| (m.seq, m.body)).collect(), Some(ack)))
            }
        }
    }
}
