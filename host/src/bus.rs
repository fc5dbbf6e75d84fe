//! The message bus between the parts of a host: NATS JetStream in production, the embedded
//! store's logs in the single-process mode. Input events, the stream target's feature rows,
//! dead letters and late events all go through it; readers consume subjects with durable
//! cursors ([`crate::sources::subscription`]).

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::store::embedded::{Embedded, LogMessage, Outgoing};
use crate::targets::TargetError;

/// A message to publish.
pub struct Publish {
    /// Subject.
    pub subject: String,
    /// Headers; `Nats-Msg-Id` lets JetStream drop a replay within its duplicate window.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

/// NATS JetStream, or the embedded logs.
#[derive(Clone)]
pub enum Bus {
    /// JetStream.
    Nats(async_nats::jetstream::Context),
    /// The embedded store's logs.
    Embedded(Arc<Embedded>),
}

impl Bus {
    /// Publishes messages and waits until each is stored; returns their sequences (in their
    /// subject's stream).
    pub async fn publish(&self, messages: Vec<Publish>) -> Result<Vec<u64>, TargetError> {
        match self {
            Bus::Nats(js) => {
                let mut acks = Vec::with_capacity(messages.len());
                for message in messages {
                    let mut headers = HeaderMap::new();
                    for (name, value) in &message.headers {
                        headers.insert(*name, value.as_str());
                    }
                    let subject = message.subject;
                    let ack = js
                        .publish_with_headers(subject.clone(), headers, message.body)
                        .await
                        .map_err(|e| TargetError::Nats(format!("publishing on {subject}: {e}")))?;
                    acks.push((subject, ack));
                }
                let mut sequences = Vec::with_capacity(acks.len());
                for (subject, ack) in acks {
                    let ack = ack
                        .await
                        .map_err(|e| TargetError::Nats(format!("a message on {subject} was not stored: {e}")))?;
                    sequences.push(ack.sequence);
                }
                Ok(sequences)
            }
            Bus::Embedded(store) => {
                let outgoing: Vec<Outgoing<'_>> = messages
                    .iter()
                    .map(|m| Outgoing {
                        subject: &m.subject,
                        headers: &m.headers,
                        body: &m.body,
                    })
                    .collect();
                store.append(&outgoing).map_err(TargetError::Nats)
            }
        }
    }

    /// Makes sure a stream capturing `subject` exists (JetStream; the embedded logs need none).
    pub async fn ensure_stream(&self, stream: &str, subject: &str, create: bool) -> Result<(), TargetError> {
        match self {
            Bus::Nats(js) => crate::sources::jetstream::ensure_stream(js, stream, subject, create)
                .await
                .map(|_| ()),
            Bus::Embedded(_) => Ok(()),
        }
    }

    /// Whether the bus answers (a round trip to NATS).
    pub async fn ping(&self) -> bool {
        match self {
            Bus::Nats(js) => js.client().flush().await.is_ok(),
            Bus::Embedded(_) => true,
        }
    }

    /// Messages of `subject` not yet delivered to the consumer `durable`, and delivered but
    /// not acknowledged; `None` when unknown.
    pub async fn lag(&self, stream: &str, subject: &str, durable: &str) -> Option<(u64, usize)> {
        match self {
            Bus::Nats(js) => {
                let stream = js.get_stream(stream).await.ok()?;
                let mut consumer = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(durable)
                    .await
                    .ok()?;
                let info = consumer.info().await.ok()?;
                Some((info.num_pending, info.num_ack_pending))
            }
            Bus::Embedded(store) => {
                let head = store.head(subject).ok()?;
                let cursor = store.cursor(durable).ok()?;
                Some((head.saturating_sub(cursor), 0))
            }
        }
    }

    /// Up to `limit` messages of `subject` (in `stream`, for JetStream) after sequence
    /// `after`: how operators read dead letters and late events.
    pub async fn read(
        &self,
        stream: &str,
        subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogMessage>, TargetError> {
        match self {
            Bus::Nats(js) => {
                let stream = match js.get_stream(stream).await {
                    Ok(stream) => stream,
                    // No stream yet: nothing was ever published there.
                    Err(_) => return Ok(Vec::new()),
                };
                let mut found = Vec::new();
                let mut next = after + 1;
                while found.len() < limit {
                    let message = match stream
                        .raw_message_builder()
                        .sequence(next)
                        .next_by_subject(subject)
                        .send()
                        .await
                    {
                        Ok(message) => message,
                        Err(e) if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                            break
                        }
                        Err(e) => return Err(TargetError::Nats(format!("reading {subject}: {e}"))),
                    };
                    next = message.sequence + 1;
                    let headers = message
                        .headers
                        .iter()
                        .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.to_string())))
                        .collect();
                    found.push(LogMessage {
                        seq: message.sequence,
                        headers,
                        body: message.payload,
                    });
                }
                Ok(found)
            }
            Bus::Embedded(store) => store.fetch(subject, after, limit).map_err(TargetError::Nats),
        }
    }
}
