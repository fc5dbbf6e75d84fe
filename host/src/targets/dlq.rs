//! The dead-letter subject `sluice.dlq.<set>`: every event that could not be processed, with
//! the original bytes as the body and the reason, step and input sequence as headers; and
//! the late subject `sluice.late.<set>`, the same for events later than the allowed lateness.

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::TargetError;
use crate::graph::Failure;

/// The stream that keeps every dead-letter subject.
pub const DLQ_STREAM: &str = "SLUICE_DLQ";

/// The stream that keeps every late-events subject.
pub const LATE_STREAM: &str = "SLUICE_LATE";

/// Publishes dead letters of one feature set.
#[derive(Clone)]
pub struct DeadLetters {
    js: Context,
    set: String,
    version: u32,
}

impl DeadLetters {
    /// Dead letters of `set` go to `sluice.dlq.<set>`.
    pub fn new(js: Context, set: &str, version: u32) -> Self {
        DeadLetters {
            js,
            set: set.to_string(),
            version,
        }
    }

    /// The subject.
    pub fn subject(&self) -> String {
        format!("sluice.dlq.{}", self.set)
    }

    /// The late-events subject.
    pub fn late_subject(&self) -> String {
        format!("sluice.late.{}", self.set)
    }

    /// Makes sure the dead-letter and late-events streams exist.
    pub async fn ensure_stream(js: &Context) -> Result<(), TargetError> {
        crate::sources::jetstream::ensure_stream(js, DLQ_STREAM, "sluice.dlq.>", true).await?;
        crate::sources::jetstream::ensure_stream(js, LATE_STREAM, "sluice.late.>", true)
            .await
            .map(|_| ())
    }

    /// Publishes failures (with the original bytes of their input) and waits for the acks.
    pub async fn publish(&self, failures: &[(Failure, Bytes)]) -> Result<(), TargetError> {
        let mut acks = Vec::new();
        for (failure, body) in failures {
            let mut headers = HeaderMap::new();
            let (kind, subject) = match failure.late {
                false => ("dlq", self.subject()),
                true => ("late", self.late_subject()),
            };
            let id = format!("{kind}:{}:v{}:{}:{}", self.set, self.version, failure.seq, failure.step);
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Sluice-Reason", failure.reason.replace(['\r', '\n'], " ").as_str());
            headers.insert("Sluice-Step", failure.step.as_str());
            headers.insert("Sluice-Seq", failure.seq.to_string().as_str());
            headers.insert("Sluice-Version", self.version.to_string().as_str());
            let ack = self
                .js
                .publish_with_headers(subject, headers, body.clone())
                .await
                .map_err(|e| TargetError::Nats(format!("publishing a dead letter: {e}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await
                .map_err(|e| TargetError::Nats(format!("dead letter not stored: {e}")))?;
        }
        Ok(())
    }
}
