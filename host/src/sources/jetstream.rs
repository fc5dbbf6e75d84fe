//! The JetStream source: a durable pull consumer per feature set version, read in batches
//! (up to N messages or T ms), acknowledged explicitly with "ack all" after everything a batch
//! produced is durable, with a bounded number of unacknowledged messages.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, Context};
use futures::StreamExt;

use crate::targets::TargetError;

/// A durable pull consumer of one feature set version.
pub struct JetStreamSource {
    consumer: PullConsumer,
    batch: usize,
    max_wait: Duration,
}

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
    /// Most unacknowledged messages.
    pub max_ack_pending: i64,
    /// Redelivery delay of an unacknowledged message.
    pub ack_wait: Duration,
}

fn nats(what: &str, e: impl std::fmt::Display) -> TargetError {
    TargetError::Nats(format!("{what}: {e}"))
}

/// Gets (or creates) a stream capturing `subject`.
pub async fn ensure_stream(js: &Context, name: &str, subject: &str, create: bool) -> Result<jetstream::stream::Stream, TargetError> {
    if create {
        let config = jetstream::stream::Config { name: name.to_string(), subjects: vec![subject.to_string()], ..Default::default() };
        js.get_or_create_stream(config).await.map_err(|e| nats(&format!("stream {name}"), e))
    } else {
        js.get_stream(name).await.map_err(|e| nats(&format!("stream {name} (set `create = true` to create it)"), e))
    }
}

impl JetStreamSource {
    /// Binds (creating if needed) the durable consumer.
    pub async fn open(js: &Context, options: SourceOptions<'_>) -> Result<Self, TargetError> {
        let stream = ensure_stream(js, options.stream, options.subject, options.create).await?;
        let config = pull::Config {
            durable_name: Some(options.durable.clone()),
            filter_subject: options.subject.to_string(),
            ack_policy: AckPolicy::All,
            ack_wait: options.ack_wait,
            max_ack_pending: options.max_ack_pending,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&options.durable, config)
            .await
            .map_err(|e| nats(&format!("consumer {}", options.durable), e))?;
        Ok(JetStreamSource { consumer, batch: options.batch, max_wait: options.max_wait })
    }

    /// The next batch: up to `batch` messages, waiting at most `max_wait` for them.
    pub async fn next_batch(&self) -> Result<Vec<jetstream::Message>, TargetError> {
        let mut messages = self
            .consumer
            .batch()
            .max_messages(self.batch)
            .expires(self.max_wait)
            .messages()
            .await
            .map_err(|e| nats("fetching a batch", e))?;
        let mut batch = Vec::with_capacity(self.batch);
        while let Some(message) = messages.next().await {
            batch.push(message.map_err(|e| nats("reading a batch", e))?);
        }
        Ok(batch)
    }
}

/// The stream sequence of a message.
pub fn sequence(message: &jetstream::Message) -> Result<u64, TargetError> {
    message.info().map(|i| i.stream_sequence).map_err(|e| nats("message metadata", e))
}
