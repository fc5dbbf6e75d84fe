//! The loop of one feature set version: fetch a batch, decode, run the graph, make every
//! result durable (dead letters, stream rows, online values with the applied sequence), then
//! acknowledge. A crash anywhere before the ack means redelivery, which the targets absorb.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::{PipelineError, Services};
use crate::bus::jetstream::SourceOptions;
use crate::bus::subscription::{Ack, Subscription};
use crate::config::{Config, FeatureSetConfig, SourceConfig};
use crate::fault::{retry, Backoff, Transient};
use crate::graph::Graph;
use crate::metrics::SetMetrics;
use crate::plan::{Chain, SetPlan};
use crate::plugin::OnlineLookup;
use crate::rows::{Failure, Tally};
use crate::runner::{BatchRunner, Counts, Ran};
use crate::sources::file::FileSource;
use crate::sources::Decoder;
use crate::targets::dlq::DeadLetters;
use crate::targets::online::{Durable, OnlineTarget};
use crate::targets::stream::StreamTarget;

/// Where a feature set's events come from.
enum Input {
    /// A durable consumer (raw events, or another set's rows) on JetStream or the embedded
    /// logs.
    Stream(Subscription),
    /// A file, read once.
    File(FileSource),
}

/// One batch of input: (sequence, bytes) items and what to acknowledge once it is durable.
struct InputBatch {
    items: Vec<(u64, Bytes)>,
    ack: Option<Ack>,
}

/// What reading the input gave.
enum Next {
    Batch(Box<InputBatch>),
    Idle,
    /// Shutdown was requested, or a file ended.
    End,
    /// A file could not be read further.
    Broken,
}

/// How a batch run's input ended (`sluice run --until-done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEnd {
    /// Every event of the file was processed and made durable.
    Complete,
    /// Reading or writing stopped before the end (the log says why).
    Broken,
}

impl Input {
    /// The set's input: its file, or a durable consumer of its stream subject (or of the
    /// stream target of the set it reads, `chained`).
    async fn open(
        config: &Config,
        set: &FeatureSetConfig,
        services: &Services,
        decoder: &Decoder,
    ) -> Result<(Input, bool), PipelineError> {
        let fail = |reason: String| PipelineError::Build {
            set: format!("{}@v{}", set.name, set.version),
            reason,
        };
        let reading = set.source.reading();
        let (stream, subject, create, chained) = match &set.source {
            SourceConfig::Jetstream {
                stream,
                subject,
                create,
                ..
            } => (stream.clone(), subject.clone(), *create, false),
            SourceConfig::FeatureSet { name, version, .. } => {
                let upstream = config
                    .upstream(name, *version)
                    .ok_or_else(|| fail(format!("no feature set \"{name}\"")))?;
                let (stream, subject, create) = Config::stream_target(upstream)
                    .ok_or_else(|| fail(format!("feature set \"{name}\" has no stream target")))?;
                (stream, subject, create, true)
            }
            SourceConfig::File { .. } => (String::new(), String::new(), false, false),
        };
        let input = match &set.source {
            SourceConfig::File { path, format, batch } => {
                let file = FileSource::open(&config.resolve(path), *format, *batch)
                    .map_err(|e| fail(e.to_string()))?
                    .reading_times(decoder.time_reader(), decoder.time_field());
                file.require(&decoder.required_fields())
                    .map_err(|e| fail(e.to_string()))?;
                Input::File(file)
            }
            _ => {
                let options = SourceOptions {
                    stream: &stream,
                    subject: &subject,
                    durable: format!("sluice-{}-v{}", set.name, set.version),
                    create,
                    batch: reading.batch,
                    max_wait: Duration::from_millis(reading.max_wait_ms),
                    max_ack_pending: reading.max_ack_pending,
                    ack_wait: Duration::from_secs(reading.ack_wait_s),
                };
                Input::Stream(
                    Subscription::open(&services.bus, options)
                        .await
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
        };
        Ok((input, chained))
    }

    async fn next(&mut self, label: &str, shutdown: &watch::Receiver<bool>) -> Next {
        match self {
            Input::Stream(source) => {
                let mut backoff = Backoff::default();
                loop {
                    match source.next_batch().await {
                        Ok((items, _)) if items.is_empty() => return Next::Idle,
                        Ok((items, ack)) => return Next::Batch(Box::new(InputBatch { items, ack })),
                        Err(e) if !e.transient() => {
                            tracing::error!(set = %label, "reading: {e}; trying again cannot help, stopping");
                            return Next::Broken;
                        }
                        Err(e) if *shutdown.borrow() => {
                            tracing::warn!(set = %label, "{e}; stopping");
                            return Next::End;
                        }
                        Err(e) => {
                            backoff.failed(&format!("{label}: reading"), &e, shutdown).await;
                        }
                    }
                }
            }
            Input::File(file) => match tokio::task::block_in_place(|| file.next_batch()) {
                Ok(items) if items.is_empty() => Next::End,
                Ok(items) => Next::Batch(Box::new(InputBatch { items, ack: None })),
                Err(e) => {
                    tracing::error!(set = %label, "reading the file failed, stopping: {e}");
                    Next::Broken
                }
            },
        }
    }
}

/// A running feature set version.
pub struct FeatureSetRunner {
    label: String,
    input: Input,
    runner: BatchRunner,
    dead_letters: DeadLetters,
    stream: Option<StreamTarget>,
    online: Option<OnlineTarget>,
    metrics: SetMetrics,
    /// Told how the input ended (a file source in a batch run).
    ended: Option<watch::Sender<Option<InputEnd>>>,
    /// A monitored set's acks, released by its monitor once a checkpoint covers them.
    deferred: Option<AckGate>,
}

/// The latest written batch's ack (its last input sequence, and the ack: JetStream's "ack all"
/// or the log's cursor, so acknowledging it covers every batch before), held until the set's
/// monitor has stored a checkpoint covering that sequence. A kill at any instant then
/// redelivers exactly the rows no stored checkpoint holds: each row is profiled once.
pub type AckGate = std::sync::Arc<std::sync::Mutex<Option<(u64, Ack)>>>;

impl FeatureSetRunner {
    /// Builds the graph, binds the consumer and the targets.
    pub async fn start(
        config: &Config,
        set: &FeatureSetConfig,
        services: &Services,
        lookup: Arc<dyn OnlineLookup>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Self, PipelineError> {
        let plan = SetPlan::compile(config, set).map_err(|e| PipelineError::Build {
            set: e.set,
            reason: e.reason,
        })?;
        let label = plan.label.clone();
        let fail = |reason: String| PipelineError::Build {
            set: label.clone(),
            reason,
        };
        let graph = Graph::build(
            set,
            &services.registry,
            lookup,
            plan.tiles(&services.store),
            Some(services.metrics.clone()),
            shutdown.clone(),
        )
        .map_err(|e| fail(e.to_string()))?;
        let decoder = Decoder::new(set).map_err(|e| fail(e.into()))?;
        let (input, chained) = Input::open(config, set, services, &decoder).await?;
        let mut runner = FeatureSetRunner {
            label: label.clone(),
            input,
            runner: BatchRunner::new(decoder, Chain::new(graph)).chained(chained),
            dead_letters: DeadLetters::new(services.bus.clone(), &set.name, set.version),
            stream: None,
            online: plan.online_target(&services.store),
            metrics: services.metrics.set(&label),
            ended: None,
            deferred: None,
        };
        // Rows go to the stream target, or, for a parquet target without one, to the set's own
        // stream (the offline writer reads whichever it is).
        if let Some((stream, subject, create)) = plan.stream.clone() {
            services
                .bus
                .ensure_stream(&stream, &subject, create)
                .await
                .map_err(|e| fail(e.to_string()))?;
            runner.stream = Some(StreamTarget::new(
                services.bus.clone(),
                &subject,
                &set.name,
                set.version,
            ));
        }
        Ok(runner)
    }

    /// Leaves each batch's ack in `gate` instead of acknowledging it (see [`AckGate`]).
    pub fn defer_acks(mut self, gate: Option<AckGate>) -> Self {
        self.deferred = gate;
        self
    }

    /// Profiles every batch's rows into `monitor` (a monitored set's live statistics).
    pub fn monitored(mut self, monitor: Option<crate::runtime::SharedMonitor>) -> Self {
        self.runner = self.runner.monitored(monitor);
        self
    }

    /// Reports how the input ended on `ended`, and counts failures by reason in `failures`:
    /// what a batch run (`sluice run --until-done`) waits for and judges.
    pub fn batch_run(mut self, ended: watch::Sender<Option<InputEnd>>, failures: Arc<std::sync::Mutex<Tally>>) -> Self {
        self.ended = Some(ended);
        self.runner = self.runner.map_chain(|chain| chain.counting_in(failures));
        self
    }

    /// Processes batches until shutdown; the batch in hand is finished first.
    ///
    /// The online write and the acknowledgement of a batch run while the next batch is
    /// decoded, computed and published to the stream target: the store works in parallel
    /// with the host.
    /// Writes and acks still happen strictly in batch order (the next batch's start waits for
    /// the previous batch's end).
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        tracing::info!(set = %self.label, "feature set running");
        let mut in_flight: Option<tokio::task::JoinHandle<bool>> = None;
        let mut end = InputEnd::Broken;
        while !*shutdown.borrow() {
            let batch = match self.input.next(&self.label, &shutdown).await {
                Next::Batch(batch) => batch,
                Next::Idle => continue,
                Next::End => {
                    end = InputEnd::Complete;
                    break;
                }
                Next::Broken => break,
            };
            let Some(durable) = self.process(&batch.items, &shutdown).await else {
                break;
            };
            if let Some(previous) = in_flight.take() {
                if !previous.await.unwrap_or(false) {
                    end = InputEnd::Broken;
                    break;
                }
            }
            let finish = Finish {
                label: self.label.clone(),
                online: self.online.clone(),
                shutdown: shutdown.clone(),
                deferred: self.deferred.clone(),
            };
            in_flight = Some(tokio::spawn(finish.run(durable, batch.ack)));
        }
        if let Some(previous) = in_flight.take() {
            if !previous.await.unwrap_or(false) {
                end = InputEnd::Broken;
            }
        }
        if let Some(ended) = &self.ended {
            let _ = ended.send(Some(end));
        }
        tracing::info!(set = %self.label, "feature set stopped");
    }

    /// Decodes and runs one batch, publishes its dead letters, late events and stream rows;
    /// returns what the online store must make durable. `None` if shutdown interrupted retries
    /// or a step halted (the batch is then redelivered).
    async fn process(&mut self, messages: &[(u64, Bytes)], shutdown: &watch::Receiver<bool>) -> Option<Durable> {
        let started = std::time::Instant::now();
        let runner = &mut self.runner;
        let ran = match tokio::task::block_in_place(|| runner.run_messages(messages)) {
            Ok(ran) => ran,
            Err(halt) => {
                tracing::warn!(set = %self.label, "{halt}; stopping, the batch is left unacknowledged");
                return None;
            }
        };
        let computed = std::time::Instant::now();
        let Ran {
            rows,
            state,
            failures,
            last_seq,
            counts,
            decode,
        } = ran;
        if !failures.is_empty() {
            let letters = self.letters(messages, failures);
            let dlq = &self.dead_letters;
            retry(&format!("{}: dead letters", self.label), shutdown, || {
                dlq.publish(&letters)
            })
            .await
            .ok()?;
        }
        if let Some(stream) = &self.stream {
            if !rows.is_empty() {
                retry(&format!("{}: stream target", self.label), shutdown, || {
                    stream.publish(&rows)
                })
                .await
                .ok()?;
            }
        }
        tracing::debug!(
            set = %self.label,
            events = messages.len(),
            decode_us = decode.as_micros() as u64,
            graph_us = ((computed - started).saturating_sub(decode)).as_micros() as u64,
            stream_us = computed.elapsed().as_micros() as u64,
            "batch"
        );
        self.count(&counts, started.elapsed());
        Some(Durable {
            rows,
            last_seq,
            state,
            late: counts.late,
        })
    }

    /// Adds a batch's counts to the set's metrics.
    fn count(&self, counts: &Counts, took: std::time::Duration) {
        let m = &self.metrics;
        m.events_in.inc_by(counts.events);
        m.rows_out.inc_by(counts.rows);
        m.failed.inc_by(counts.failed);
        m.late.inc_by(counts.late);
        crate::metrics::observe(&m.batch_seconds, took);
        if counts.late > 0 {
            tracing::info!(set = %self.label, late = counts.late, "events later than the allowed lateness sent to the late subject");
        }
    }

    /// A batch's failures (dead letters and late events) with their original bodies; a file
    /// event's names its file and line (or row).
    fn letters(&self, messages: &[(u64, Bytes)], failures: Vec<Failure>) -> Vec<(Failure, Bytes)> {
        // A file event's dead letter names its file and line (or row): its sequence.
        let origin = match &self.input {
            Input::File(file) => Some((file.path().display().to_string(), file.unit())),
            Input::Stream(_) => None,
        };
        failures
            .into_iter()
            .map(|mut f| {
                let body = self.runner.body(messages, f.seq);
                if let Some((path, unit)) = &origin {
                    f.reason = format!("{path}, {unit} {}: {}", f.seq, f.reason);
                }
                (f, body)
            })
            .collect()
    }
}

/// The end of a batch: its online write (values and applied sequence), then its ack.
struct Finish {
    label: String,
    online: Option<OnlineTarget>,
    shutdown: watch::Receiver<bool>,
    deferred: Option<AckGate>,
}

impl Finish {
    async fn run(self, batch: Durable, ack: Option<Ack>) -> bool {
        let last = batch.last_seq;
        if let Some(online) = &self.online {
            let started = std::time::Instant::now();
            let label = format!("{}: online target", self.label);
            let Durable {
                rows,
                last_seq,
                state,
                late,
            } = batch;
            let write = online.batch(&rows, last_seq, state, late);
            let attempt = || online.apply(&write);
            if retry(&label, &self.shutdown, attempt).await.is_err() {
                return false;
            }
            tracing::debug!(set = %self.label, online_us = started.elapsed().as_micros() as u64, "batch written");
        }
        match (ack, &self.deferred) {
            (Some(ack), Some(gate)) => {
                // Replaces an older one: acknowledging this batch covers it.
                *gate.lock().unwrap_or_else(|e| e.into_inner()) = Some((last, ack));
            }
            (Some(ack), None) => {
                if let Err(e) = ack.ack().await {
                    tracing::warn!(set = %self.label, "ack failed (the batch will be redelivered and skipped): {e}");
                }
            }
            (None, _) => {}
        }
        true
    }
}
