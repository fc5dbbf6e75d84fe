//! The offline writer of one feature set version: its own durable consumer on the stream
//! target's subject (JetStream or the embedded log), Parquet part files committed before the
//! messages they hold are acknowledged. A model's production set is written by the same
//! runner from its capture records ([`OfflineRunner::production`]).

use std::time::Duration;

use tokio::sync::watch;

use super::{PipelineError, Services};
use crate::bus::jetstream::SourceOptions;
use crate::bus::subscription::{Ack, Subscription};
use crate::config::{Config, FeatureSetConfig, ModelConfig};
use crate::fault::{Backoff, Transient};
use crate::plan::SetPlan;
use crate::rows::Rows;
use crate::store::BatchWrite;
use crate::targets::online::OnlineTarget;
use crate::targets::parquet::PartWriter;
use crate::targets::stream::RowBatch;

/// A running offline writer.
pub struct OfflineRunner {
    label: String,
    source: Subscription,
    writer: PartWriter,
    roll_rows: usize,
    roll: Duration,
    /// In a batch run: told when the feature set's input ended; the writer then drains the
    /// stream, commits and stops.
    input: Option<watch::Receiver<Option<super::InputEnd>>>,
    /// A message's rows, and the reasons any part of it was skipped.
    decode: Decode,
    /// A production set's online parts ([`crate::capture::ONLINE_PARTS`]), written as rows
    /// come (idempotent by sequence), before their Parquet commit.
    online: Vec<(&'static str, OnlineTarget)>,
}

/// The rows of one message (its sequence, its body), and why any part was skipped.
type Decode = fn(u64, &[u8]) -> (Rows, Vec<String>);

/// A writer's durable consumer on `(stream, subject, create the stream)`: batches of up to
/// 500 messages, an acknowledgement awaited for three roll periods and 30 s.
async fn consumer(
    services: &Services,
    (stream, subject, create): (&str, &str, bool),
    durable: String,
    roll_seconds: u64,
) -> Result<Subscription, crate::bus::BusError> {
    let options = SourceOptions {
        stream,
        subject,
        durable,
        create,
        batch: 500,
        max_wait: Duration::from_millis(500),
        max_ack_pending: -1,
        ack_wait: Duration::from_secs(roll_seconds * 3 + 30),
    };
    Subscription::open(&services.bus, options).await
}

/// Appends `rows` to `into`, over the union of their fields.
fn append(into: &mut Rows, rows: Rows) {
    let at: Vec<usize> = rows.batch.fields.iter().map(|f| into.field_position(f)).collect();
    for (event, seq) in rows.batch.events.into_iter().zip(rows.seqs) {
        let mut values = vec![crate::event::Value::Null; into.batch.fields.len()];
        for (value, &to) in event.values.into_iter().zip(&at) {
            values[to] = value;
        }
        into.push(seq, crate::event::Event { values, ..event });
    }
}

/// A message of the stream target: one batch of feature rows.
fn row_batch(_: u64, payload: &[u8]) -> (Rows, Vec<String>) {
    match serde_json::from_slice::<RowBatch>(payload) {
        Ok(batch) => (batch.into_rows(), Vec::new()),
        Err(e) => (Rows::default(), vec![format!("a message that is not a row batch: {e}")]),
    }
}

/// A message of a model's capture records.
fn capture_records(seq: u64, payload: &[u8]) -> (Rows, Vec<String>) {
    let mut rows = Rows::default();
    let skipped = crate::capture::production_rows(seq, payload, &mut rows);
    (rows, skipped)
}

impl OfflineRunner {
    /// Opens the part folder (resuming from its files) and binds the consumer.
    pub async fn start(config: &Config, set: &FeatureSetConfig, services: &Services) -> Result<Self, PipelineError> {
        let label = format!("{}@v{} offline", set.name, set.version);
        let fail = |reason: String| PipelineError::Build {
            set: label.clone(),
            reason,
        };
        let plan = SetPlan::compile(config, set).map_err(|e| fail(e.reason))?;
        let (Some((stream, subject, create)), Some(parquet)) = (plan.stream.clone(), plan.parquet.as_ref()) else {
            return Err(fail("no parquet target".into()));
        };
        let (roll_rows, roll_seconds) = (parquet.roll_rows, parquet.roll_seconds);
        let writer = plan
            .part_writer()
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("no parquet target".into()))?;
        let durable = format!("sluice-offline-{}-v{}", set.name, set.version);
        let source = consumer(services, (&stream, &subject, create), durable, roll_seconds)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(OfflineRunner {
            label,
            source,
            writer,
            roll_rows,
            roll: Duration::from_secs(roll_seconds),
            input: None,
            decode: row_batch,
            online: Vec::new(),
        })
    }

    /// The writer of `model`'s production set: its capture records (lookups as served,
    /// predictions, labels), one row each ([`crate::capture::production_rows`]), committed to
    /// Parquet under [`crate::capture::production_root`] by the same exactly-once rules as feature rows.
    pub async fn production(config: &Config, model: &ModelConfig, services: &Services) -> Result<Self, PipelineError> {
        let label = format!("{} production", model.name);
        let fail = |reason: String| PipelineError::Build {
            set: label.clone(),
            reason,
        };
        let writer = PartWriter::open(&crate::capture::production_root(config), &model.name, 1)
            .map_err(|e| fail(e.to_string()))?;
        let subject = crate::capture::subject(&model.name);
        let roll_seconds = 10;
        let durable = format!("sluice-production-{}", model.name);
        let stream = (crate::capture::CAPTURE_STREAM, subject.as_str(), false);
        let source = consumer(services, stream, durable, roll_seconds)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(OfflineRunner {
            label,
            source,
            writer,
            roll_rows: 100_000,
            roll: Duration::from_secs(roll_seconds),
            input: None,
            decode: capture_records,
            online: crate::capture::ONLINE_PARTS
                .iter()
                .map(|part| {
                    let prefix = crate::keys::set_prefix(&services.prefix, &format!("{}.{part}", model.name), 1);
                    (*part, OnlineTarget::new(services.store.clone(), &prefix, 0))
                })
                .collect(),
        })
    }

    /// Stops once `input` reports the end of the feature set's input and every row published
    /// before it is committed (a batch run).
    pub fn until(mut self, input: watch::Receiver<Option<super::InputEnd>>) -> Self {
        self.input = Some(input);
        self
    }

    /// Writes parts until shutdown (or, with [`OfflineRunner::until`], the end of the input);
    /// pending rows are committed before returning.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        tracing::info!(writer = %self.label, resume_after = self.writer.last_committed(), "offline writer running");
        let mut unacked: Option<Ack> = None;
        let mut backoff = Backoff::default();
        let mut drained = false;
        loop {
            let stopping = *shutdown.borrow();
            if !stopping {
                // Read before the fetch: the input's last rows were stored before it ended, so
                // an empty fetch after that means every row has been delivered.
                let input_ended = self.input.as_ref().is_some_and(|i| i.borrow().is_some());
                let (messages, ack) = match self.source.next_batch().await {
                    Ok(batch) => batch,
                    Err(e) if !e.transient() => {
                        tracing::error!(writer = %self.label, "{e}; trying again cannot help, stopping");
                        break;
                    }
                    Err(e) => {
                        backoff.failed(&self.label, &e, &shutdown).await;
                        continue;
                    }
                };
                let empty = messages.is_empty();
                // Decoded inline: a production set's writer has a runtime of its own (see
                // `in_background`), a feature set's decodes row batches it wrote itself.
                let (decode, writer, label) = (self.decode, &mut self.writer, &self.label);
                let mut online: Vec<(usize, BatchWrite)> = Vec::new();
                {
                    // The online rows of the whole batch, one write per part.
                    let mut parts: Vec<Rows> = self.online.iter().map(|_| Rows::default()).collect();
                    for (seq, payload) in messages {
                        let (rows, skipped) = decode(seq, &payload);
                        for reason in skipped {
                            tracing::error!(writer = %label, "skipped: {reason}");
                        }
                        if rows.is_empty() {
                            continue;
                        }
                        for ((part, _), into) in self.online.iter().zip(&mut parts) {
                            append(into, crate::capture::online_rows(&rows, part));
                        }
                        writer.add(rows);
                    }
                    for (i, ((_, target), rows)) in self.online.iter().zip(parts).enumerate() {
                        if let Some(&last) = rows.seqs.last() {
                            online.push((i, target.batch(&rows, last, Vec::new(), 0)));
                        }
                    }
                }
                // Written before the rows' Parquet commit and the acknowledgement: a
                // redelivery writes them again, which the store skips by sequence.
                for (i, batch) in &online {
                    let target = &self.online[*i].1;
                    let mut backoff = Backoff::default();
                    while let Err(e) = target.apply(batch).await {
                        if !e.transient() || *shutdown.borrow() {
                            tracing::error!(writer = %self.label, "online values not written: {e}");
                            break;
                        }
                        backoff
                            .failed(&format!("{}: online values", self.label), &e, &shutdown)
                            .await;
                    }
                }
                drained = input_ended && empty;
                if ack.is_some() {
                    unacked = ack;
                }
            }
            let stopping = stopping || drained;
            if self.writer.due(self.roll_rows, self.roll) || (stopping && self.writer.pending() > 0) {
                let writer = &mut self.writer;
                match tokio::task::block_in_place(|| writer.commit()) {
                    Ok(files) => {
                        tracing::debug!(writer = %self.label, files = files.len(), "parts committed");
                        backoff = Backoff::default();
                    }
                    // Unacknowledged rows are redelivered after a restart: giving up on
                    // shutdown loses nothing.
                    Err(_) if stopping && backoff.attempts >= 3 => break,
                    Err(e) if !e.transient() => {
                        tracing::error!(writer = %self.label, "commit: {e}; trying again cannot help, stopping");
                        break;
                    }
                    Err(e) => {
                        backoff.failed(&format!("{}: commit", self.label), &e, &shutdown).await;
                        continue;
                    }
                }
            }
            if self.writer.pending() == 0 {
                if let Some(ack) = unacked.take() {
                    if let Err(e) = ack.ack().await {
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
