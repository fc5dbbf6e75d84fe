//! The message bus between the parts of a host: NATS JetStream in production, the embedded
//! store's logs in the single-process mode. Input events, the stream target's feature rows,
//! dead letters and late events all go through it; readers consume subjects with durable
//! cursors ([`subscription`]).

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::store::embedded::{Embedded, LogMessage, Outgoing};
use crate::store::StoreError;

pub mod jetstream;
pub mod subscription;

/// The bus could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS did not answer, or not in time (disconnected, a timeout, no responders, JetStream
    /// temporarily unavailable): trying again can help.
    #[error("nats: {0}")]
    Unavailable(String),
    /// JetStream refused the request (a stream that does not exist and may not be created, a
    /// stream or consumer config it will not take): trying again cannot help.
    #[error("nats: {0}")]
    Refused(String),
    /// The embedded logs failed.
    #[error("{0}")]
    Log(#[from] StoreError),
}

impl crate::fault::Transient for BusError {
    fn transient(&self) -> bool {
        match self {
            BusError::Unavailable(_) => true,
            BusError::Refused(_) => false,
            BusError::Log(e) => e.transient(),
        }
    }
}

impl BusError {
    /// A JetStream management error: refused when the server answered with an API error
    /// other than 503 (unavailable) or the request itself is invalid, unavailable otherwise.
    pub fn nats<K: Refusal>(what: &str, e: async_nats::error::Error<K>) -> BusError {
        let message = format!("{what}: {e}");
        if e.kind().refused() {
            BusError::Refused(message)
        } else {
            BusError::Unavailable(message)
        }
    }
}

/// Whether a NATS error kind means JetStream refused the request (as opposed to not answering).
pub trait Refusal: Clone + std::fmt::Debug + std::fmt::Display + PartialEq {
    /// True for a refusal.
    fn refused(&self) -> bool;
}

fn api_refused(e: &async_nats::jetstream::Error) -> bool {
    e.code() != 503
}

impl Refusal for async_nats::jetstream::context::CreateStreamErrorKind {
    fn refused(&self) -> bool {
        use async_nats::jetstream::context::CreateStreamErrorKind as K;
        match self {
            K::JetStream(e) => api_refused(e),
            K::EmptyStreamName | K::InvalidStreamName | K::DomainAndExternalSet => true,
            _ => false,
        }
    }
}

impl Refusal for async_nats::jetstream::context::GetStreamErrorKind {
    fn refused(&self) -> bool {
        use async_nats::jetstream::context::GetStreamErrorKind as K;
        match self {
            K::JetStream(e) => api_refused(e),
            K::EmptyName | K::InvalidStreamName => true,
            K::Request => false,
        }
    }
}

impl Refusal for async_nats::jetstream::stream::ConsumerErrorKind {
    fn refused(&self) -> bool {
        use async_nats::jetstream::stream::ConsumerErrorKind as K;
        match self {
            K::JetStream(e) => api_refused(e),
            K::InvalidConsumerType | K::InvalidName => true,
            _ => false,
        }
    }
}

/// A message to publish.
#[derive(Clone)]
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
#[allow(clippy::large_enum_variant)] // one per process, cloned rarely
pub enum Bus {
    /// JetStream.
    Nats(async_nats::jetstream::Context),
    /// The embedded store's logs.
    Embedded(Arc<Embedded>),
}

impl Bus {
    /// Publishes messages and waits until each is stored; returns their sequences (in their
    /// subject's stream).
    pub async fn publish(&self, messages: Vec<Publish>) -> Result<Vec<u64>, BusError> {
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
                        .map_err(|e| BusError::Unavailable(format!("publishing on {subject}: {e}")))?;
                    acks.push((subject, ack));
                }
                let mut sequences = Vec::with_capacity(acks.len());
                for (subject, ack) in acks {
                    let ack = ack
                        .await
                        .map_err(|e| BusError::Unavailable(format!("a message on {subject} was not stored: {e}")))?;
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
                store.append(&outgoing).map_err(BusError::Log)
            }
        }
    }

    /// Makes sure a stream capturing `subject` exists (JetStream; the embedded logs need none).
    pub async fn ensure_stream(&self, stream: &str, subject: &str, create: bool) -> Result<(), BusError> {
        match self {
            Bus::Nats(js) => jetstream::ensure_stream(js, stream, subject, create).await.map(|_| ()),
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
    ) -> Result<Vec<LogMessage>, BusError> {
        self.replay(stream, subject, after).await?.next(limit).await
    }

    /// The messages of `subject` (in `stream`, for JetStream) after sequence `after`, up to
    /// the last one stored now, read in order a batch at a time: on JetStream through an
    /// ordered consumer (the server pushes batches; no request per message).
    pub async fn replay(&self, stream: &str, subject: &str, after: u64) -> Result<Replay, BusError> {
        match self {
            Bus::Nats(js) => {
                use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
                let stream = match js.get_stream(stream).await {
                    Ok(stream) => stream,
                    // No stream yet: nothing was ever published there.
                    Err(_) => return Ok(Replay::empty()),
                };
                let consumer = stream
                    .create_consumer(OrderedConfig {
                        filter_subject: subject.to_string(),
                        deliver_policy: DeliverPolicy::ByStartSequence {
                            start_sequence: after + 1,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| BusError::Unavailable(format!("reading {subject}: {e}")))?;
                let total = consumer.cached_info().num_pending;
                if total == 0 {
                    return Ok(Replay::empty());
                }
                let messages = consumer
                    .messages()
                    .await
                    .map_err(|e| BusError::Unavailable(format!("reading {subject}: {e}")))?;
                Ok(Replay {
                    total,
                    taken: 0,
                    from: ReplayFrom::Nats {
                        messages: Box::new(messages),
                        subject: subject.to_string(),
                    },
                })
            }
            Bus::Embedded(store) => {
                let end = store.head(subject).map_err(BusError::Log)?;
                // Log retention may have removed the oldest messages.
                let first = store.first_after(subject, after).map_err(BusError::Log)?;
                Ok(Replay {
                    total: first.map_or(0, |first| end + 1 - first),
                    taken: 0,
                    from: ReplayFrom::Embedded {
                        store: store.clone(),
                        subject: subject.to_string(),
                        after,
                        end,
                    },
                })
            }
        }
    }
}

/// How long a replay waits for the next message it counted before giving up.
const REPLAY_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// A subject's messages read in order up to where they ended when the replay began
/// ([`Bus::replay`]).
pub struct Replay {
    total: u64,
    taken: u64,
    from: ReplayFrom,
}

enum ReplayFrom {
    Nats {
        messages: Box<async_nats::jetstream::consumer::pull::Ordered>,
        subject: String,
    },
    Embedded {
        store: Arc<Embedded>,
        subject: String,
        after: u64,
        end: u64,
    },
    Empty,
}

impl Replay {
    fn empty() -> Replay {
        Replay {
            total: 0,
            taken: 0,
            from: ReplayFrom::Empty,
        }
    }

    /// How many messages the replay holds.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The next up to `limit` messages; empty at the end.
    pub async fn next(&mut self, limit: usize) -> Result<Vec<LogMessage>, BusError> {
        match &mut self.from {
            ReplayFrom::Nats { messages, subject } => {
                use futures::StreamExt;
                let want = (self.total - self.taken).min(limit as u64) as usize;
                let mut found = Vec::with_capacity(want);
                while found.len() < want {
                    // Messages counted when the replay began but gone since (purged, or removed
                    // by the stream's limits) never come: an error, not a silent early end.
                    let next = tokio::time::timeout(REPLAY_STALL, messages.next()).await.map_err(|_| {
                        BusError::Unavailable(format!(
                            "reading {subject}: no message for {} s with {} of {} still to come (removed from the stream meanwhile?)",
                            REPLAY_STALL.as_secs(),
                            self.total - self.taken - found.len() as u64,
                            self.total
                        ))
                    })?;
                    let message = match next {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => return Err(BusError::Unavailable(format!("reading {subject}: {e}"))),
                        None => break,
                    };
                    let seq = message
                        .info()
                        .map_err(|e| BusError::Unavailable(format!("reading {subject}: {e}")))?
                        .stream_sequence;
                    let message = message.split().0;
                    let headers = message
                        .headers
                        .iter()
                        .flat_map(|h| h.iter())
                        .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.to_string())))
                        .collect();
                    found.push(LogMessage {
                        seq,
                        headers,
                        body: message.payload,
                    });
                }
                self.taken += found.len() as u64;
                Ok(found)
            }
            ReplayFrom::Embedded {
                store,
                subject,
                after,
                end,
            } => {
                if *after >= *end {
                    return Ok(Vec::new());
                }
                let mut found = store.fetch(subject, *after, limit).map_err(BusError::Log)?;
                found.retain(|m| m.seq <= *end);
                if let Some(last) = found.last() {
                    *after = last.seq;
                } else {
                    *after = *end;
                }
                self.taken += found.len() as u64;
                Ok(found)
            }
            ReplayFrom::Empty => Ok(Vec::new()),
        }
    }
}
