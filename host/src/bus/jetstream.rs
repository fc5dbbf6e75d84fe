//! The JetStream consumer: a durable pull consumer, read in batches (up to N messages or T ms),
//! acknowledged with "ack all" after everything a batch produced is durable, with a bounded
//! number of unacknowledged messages.
//!
//! "Ack all" acknowledges every earlier message too, so the source must never move past a
//! message it has not processed. Two situations would: a restart while the previous instance
//! still had messages in flight (the server redelivers them only after `ack_wait`, and would
//! hand the new instance later ones first), and a delivered message lost on the way. So the
//! source starts from the consumer's acknowledged floor (re-creating the consumer there) and,
//! should a batch not start where the last one ended, repositions the consumer to that point.
//! "Where the last one ended" is told by the consumer's own delivery sequence (1, 2, 3, … for
//! each consumer created), not the stream sequence: a subject of a stream holding other
//! subjects too (the models' `sluice.capture.<model>` on `SLUICE_CAPTURE`) has gaps in its
//! stream sequences that are not lost messages.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, Context};
use futures::StreamExt;
use tokio::time::Instant;

use super::BusError;

/// How to read a stream.
pub struct SourceOptions<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Subject to read.
    pub subject: &'a str,
    /// Durable consumer name.
    pub durable: String,
    /// Create the stream when missing.
    pub create: bool,
    /// Messages per batch.
    pub batch: usize,
    /// Longest wait for a batch.
    pub max_wait: Duration,
    /// Most unacknowledged messages (-1: no limit).
    pub max_ack_pending: i64,
    /// Redelivery delay of an unacknowledged message.
    pub ack_wait: Duration,
}

/// A durable pull consumer that never skips a message.
pub struct JetStreamSource {
    stream: Stream,
    template: pull::Config,
    consumer: PullConsumer,
    /// The continuous pull (prefetching while a batch is processed).
    messages: pull::Stream,
    batch: usize,
    max_wait: Duration,
    /// The stream sequence after the last message read (at first, after the acknowledged
    /// floor): where a repositioned consumer starts.
    next: u64,
    /// The consumer's delivery sequence of the last message read (0 for a new consumer).
    delivered: u64,
}

fn nats(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{what}: {e}"))
}

/// Gets (or creates) a stream capturing `subject`.
pub async fn ensure_stream(js: &Context, name: &str, subject: &str, create: bool) -> Result<Stream, BusError> {
    if create {
        let config = jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| BusError::nats(&format!("stream {name}"), e))
    } else {
        js.get_stream(name)
            .await
            .map_err(|e| BusError::nats(&format!("stream {name} (set `create = true` to create it)"), e))
    }
}

impl JetStreamSource {
    /// Binds the durable consumer, resuming right after its acknowledged floor.
    pub async fn open(js: &Context, options: SourceOptions<'_>) -> Result<Self, BusError> {
        let stream = ensure_stream(js, options.stream, options.subject, options.create).await?;
        let template = pull::Config {
            durable_name: Some(options.durable.clone()),
            filter_subject: options.subject.to_string(),
            ack_policy: AckPolicy::All,
            ack_wait: options.ack_wait,
            max_ack_pending: options.max_ack_pending,
            ..Default::default()
        };
        let floor = match stream.get_consumer::<pull::Config>(&options.durable).await {
            Ok(mut existing) => {
                existing
                    .info()
                    .await
                    .map_err(|e| nats("consumer info", e))?
                    .ack_floor
                    .stream_sequence
            }
            Err(_) => 0,
        };
        let consumer = Self::create_at(&stream, &template, floor + 1).await?;
        let messages = Self::pull(&consumer, options.batch).await?;
        Ok(JetStreamSource {
            stream,
            template,
            consumer,
            messages,
            batch: options.batch,
            max_wait: options.max_wait,
            next: floor + 1,
            delivered: 0,
        })
    }

    async fn pull(consumer: &PullConsumer, batch: usize) -> Result<pull::Stream, BusError> {
        consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| nats("pulling messages", e))
    }

    /// (Re)creates the durable consumer delivering from stream sequence `start`.
    async fn create_at(stream: &Stream, template: &pull::Config, start: u64) -> Result<PullConsumer, BusError> {
        let name = template.durable_name.clone().unwrap_or_default();
        let _ = stream.delete_consumer(&name).await;
        let mut config = template.clone();
        config.deliver_policy = if start <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence { start_sequence: start }
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| BusError::nats(&format!("consumer {name}"), e))
    }

    /// The next batch: up to `batch` messages, waiting at most `max_wait` once the first has
    /// come (and as long for the first); empty when none came, or when the consumer had to be
    /// repositioned.
    pub async fn next_batch(&mut self) -> Result<Vec<jetstream::Message>, BusError> {
        let mut batch = Vec::with_capacity(self.batch);
        let mut deadline = Instant::now() + self.max_wait;
        while batch.len() < self.batch {
            let next = match tokio::time::timeout_at(deadline, self.messages.next()).await {
                Err(_) => break,
                Ok(next) => next,
            };
            match next {
                Some(Ok(m)) => {
                    if batch.is_empty() {
                        deadline = Instant::now() + self.max_wait;
                    }
                    batch.push(m);
                }
                // Keep what was delivered: dropping it would let a later "ack all" skip it.
                Some(Err(e)) if !batch.is_empty() => {
                    tracing::debug!("batch ended early: {e}");
                    break;
                }
                Some(Err(e)) => {
                    self.messages = Self::pull(&self.consumer, self.batch).await?;
                    return Err(nats("reading messages", e));
                }
                None => {
                    self.messages = Self::pull(&self.consumer, self.batch).await?;
                    break;
                }
            }
        }
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(batch);
        };
        let (first_delivery, last_delivery) = (delivery(first)?, delivery(last)?);
        if first_delivery > self.delivered + 1 {
            // A message delivered to this consumer never reached the batch.
            let next = self.next;
            tracing::warn!(
                expected = self.delivered + 1,
                got = first_delivery,
                from = next,
                "a batch skipped messages: repositioning the consumer"
            );
            self.consumer = Self::create_at(&self.stream, &self.template, next).await?;
            self.messages = Self::pull(&self.consumer, self.batch).await?;
            self.delivered = 0;
            return Ok(Vec::new());
        }
        self.delivered = last_delivery;
        self.next = sequence(last)? + 1;
        Ok(batch)
    }
}

/// The consumer's delivery sequence of a message (redeliveries count).
fn delivery(message: &jetstream::Message) -> Result<u64, BusError> {
    message
        .info()
        .map(|i| i.consumer_sequence)
        .map_err(|e| nats("message metadata", e))
}

/// The stream sequence of a message.
pub fn sequence(message: &jetstream::Message) -> Result<u64, BusError> {
    message
        .info()
        .map(|i| i.stream_sequence)
        .map_err(|e| nats("message metadata", e))
}
