//! Where feature rows go: the online store (Redis or the embedded file), a JetStream subject (feature rows in
//! batches), Parquet files (the offline writer, reading that subject), and the dead-letter
//! subject for events that failed.

pub mod dlq;
pub mod online;
pub mod parquet;
pub mod stream;

/// A target that could not take a batch. Every variant is retried with backoff by the
/// pipeline: an outage of Redis or NATS pauses the pipeline, it does not lose events.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// NATS refused or is unreachable.
    #[error("nats: {0}")]
    Nats(String),
    /// Writing a file failed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}
