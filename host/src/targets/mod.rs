//! Where feature rows go: the online store (Redis or the embedded file), a JetStream subject (feature rows in
//! batches), Parquet files (the offline writer, reading that subject), and the dead-letter
//! subject for events that failed.

pub mod dlq;
pub mod online;
pub mod parquet;
pub mod stream;
pub mod windows;

/// A target that could not take a batch; transient errors (an outage of Redis or NATS, a full
/// disk) are retried with backoff by the pipeline, which pauses rather than lose events.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The bus (dead letters, the stream target).
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    /// The online store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A Parquet file.
    #[error(transparent)]
    File(#[from] crate::fault::FileError),
    /// What was to be written cannot be encoded (trying again cannot help).
    #[error("encoding {0}")]
    Encode(String),
}

impl crate::fault::Transient for TargetError {
    fn transient(&self) -> bool {
        match self {
            TargetError::Bus(e) => e.transient(),
            TargetError::Store(e) => e.transient(),
            TargetError::File(e) => e.transient(),
            TargetError::Encode(_) => false,
        }
    }
}
