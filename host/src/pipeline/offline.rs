//! The offline writer of one feature set version: its own durable consumer on the stream
//! target, Parquet part files committed before the messages they hold are acknowledged.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use futures::StreamExt;
use tokio::sync::watch;

use super::retry::retry;
use super::{PipelineError, Services};
use crate::config::{Config, FeatureSetConfig, TargetConfig};
use crate::sources::jetstream::ensure_stream;
use crate::targets::parquet::PartWriter;
use crate::targets::stream::RowBatch;
use crate::targets::TargetError;

/// A running offline writer.
pub struct OfflineRunner {
    label: String,
    consumer: PullConsumer,
    writer: PartWriter,
    roll_rows: usize,
    roll: Duration,
}

impl OfflineRunner {
    /// Opens the part folder (resuming from its files) and binds the consumer.
    pub async fn start(config: &Config, set: &FeatureSetConfig, services: &Services) -> Result<Self, PipelineError> {
        let label = format!("{}@v{} offline", set.name, set.version);
        let fail = |reason: String| PipelineError::Build { set: label.clone(), reason };
        let Some((stream, subject, create)) = set.targets.iter().find_map(|t| match t {
            TargetConfig::Stream { stream, subject, create } => Some((stream, subject, *create)),
            _ => None,
        }) else {
            return Err(fail("the parquet target needs a stream target".into()));
        };
        let Some((root, roll_rows, roll_seconds)) = set.targets.iter().find_map(|t| match t {
            TargetConfig::Parquet { root, roll_rows, roll_seconds } => Some((root, *roll_rows, *roll_seconds)),
            _ => None,
        }) else {
            return Err(fail("no parquet target".into()));
        };
        let writer = PartWriter::open(&config.resolve(root), &set.name, set.version).map_err(|e| fail(e.to_string()))?;
        let stream = ensure_stream(&services.js, stream, subject, create).await.map_err(|e| fail(e.to_string()))?;
        let durable = format!("sluice-offline-{}-v{}", set.name, set.version);
        let consumer_config = pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: subject.clone(),
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_secs(roll_seconds * 3 + 30),
            max_ack_pending: -1,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&durable, consumer_config)
            .await
            .map_err(|e| fail(format!("consumer {durable}: {e}")))?;
        Ok(OfflineRunner { label, consumer, writer, roll_rows, roll: Duration::from_secs(roll_seconds) })
    }

    async fn fetch(&self) -> Result<Vec<async_nats::jetstream::Message>, TargetError> {
        let nats = |e: &dyn std::fmt::Display| TargetError::Nats(format!("offline writer: {e}"));
        let mut messages = self
            .consumer
            .batch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| nats(&e))?;
        let mut batch = Vec::new();
        while let Some(m) = messages.next().await {
            batch.push(m.map_err(|e| nats(&e))?);
        }
        Ok(batch)
    }

    /// Writes parts until shutdown; pending rows are committed before returning.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        tracing::info!(writer = %self.label, resume_after = self.writer.last_committed(), "offline writer running");
        let mut unacked: Option<async_nats::jetstream::Message> = None;
        loop {
            let stopping = *shutdown.borrow();
            if !stopping {
                let Some(messages) = retry(&self.label, &shutdown, || self.fetch()).await else { break };
                for message in messages {
                    match serde_json::from_slice::<RowBatch>(&message.payload) {
                        Ok(batch) => {
                            self.writer.add(batch.into_rows());
                        }
                        Err(e) => tracing::error!(writer = %self.label, "skipping a message that is not a row batch: {e}"),
                    }
                    unacked = Some(message);
                }
            }
            if self.writer.due(self.roll_rows, self.roll) || (stopping && self.writer.pending() > 0) {
                let writer = &mut self.writer;
                match tokio::task::block_in_place(|| writer.commit()) {
                    Ok(files) => tracing::debug!(writer = %self.label, files = files.len(), "parts committed"),
                    Err(e) => {
                        tracing::error!(writer = %self.label, "commit failed, will retry: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            if self.writer.pending() == 0 {
                if let Some(message) = unacked.take() {
                    if let Err(e) = message.ack().await {
                        tracing::warn!(writer = %self.label, "ack failed (rows will be redelivered and skipped): {e}");
                    }
                }
            }
            if stopping {
                break;
            }
        }
        tracing::info!(writer = %self.label, "offline writer stopped");
    }
}
