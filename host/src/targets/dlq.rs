//! The dead-letter subject `sluice.dlq.<set>`: every event that could not be processed, with
//! the original bytes as the body and the reason, step and input sequence as headers; and
//! the late subject `sluice.late.<set>`, the same for events later than the allowed lateness.

use bytes::Bytes;

use super::TargetError;
use crate::bus::{Bus, Publish};
use crate::rows::Failure;

/// The stream that keeps every dead-letter subject.
pub const DLQ_STREAM: &str = "SLUICE_DLQ";

/// The stream that keeps every late-events subject.
pub const LATE_STREAM: &str = "SLUICE_LATE";

/// Publishes dead letters of one feature set.
#[derive(Clone)]
pub struct DeadLetters {
    bus: Bus,
    set: String,
    version: u32,
}

impl DeadLetters {
    /// Dead letters of `set` go to `sluice.dlq.<set>`.
    pub fn new(bus: Bus, set: &str, version: u32) -> Self {
        DeadLetters {
            bus,
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
    pub async fn ensure_stream(bus: &Bus) -> Result<(), TargetError> {
        bus.ensure_stream(DLQ_STREAM, "sluice.dlq.>", true).await?;
        Ok(bus.ensure_stream(LATE_STREAM, "sluice.late.>", true).await?)
    }

    /// Publishes failures (with the original bytes of their input) and waits until stored.
    pub async fn publish(&self, failures: &[(Failure, Bytes)]) -> Result<(), TargetError> {
        let messages = failures
            .iter()
            .map(|(failure, body)| {
                let (kind, subject) = match failure.late {
                    false => ("dlq", self.subject()),
                    true => ("late", self.late_subject()),
                };
                let id = format!("{kind}:{}:v{}:{}:{}", self.set, self.version, failure.seq, failure.step);
                Publish {
                    subject,
                    headers: vec![
                        ("Nats-Msg-Id", id),
                        ("Sluice-Reason", failure.reason.replace(['\r', '\n'], " ")),
                        ("Sluice-Step", failure.step.clone()),
                        ("Sluice-Seq", failure.seq.to_string()),
                        ("Sluice-Version", self.version.to_string()),
                    ],
                    body: body.clone(),
                }
            })
            .collect();
        self.bus.publish(messages).await?;
        Ok(())
    }
}
