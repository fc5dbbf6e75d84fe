//! The shape of a feature set definition in the config file.

use crate::fault::Invalid;
use std::path::PathBuf;

use serde::Deserialize;

pub use crate::event_time::TimeFormat;
use crate::steps::aggregate::AggregateSpec;
pub use crate::steps::aggregate::AggregationConfig;
use crate::steps::SetFacts;
pub use crate::steps::{StepConfig, StepKind};

/// A feature set: entity key, event time, source, steps and targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSetConfig {
    /// Name (`[a-z0-9_-]`, used in subjects, keys and paths).
    pub name: String,
    /// Version: a new version runs beside the old one and never touches its data.
    #[serde(default = "one")]
    pub version: u32,
    /// Field(s) holding the entity key; several are joined with `:`.
    #[serde(deserialize_with = "one_or_many")]
    pub entity: Vec<String>,
    /// Field holding the event time, and its format.
    pub timestamp: TimestampConfig,
    /// How long online values live after their last write (`30d`, `12h`, `90m`, `3600s`).
    #[serde(default)]
    pub ttl: Option<super::ConfigDuration>,
    /// The input fields, when known: lets validation check what steps refer to.
    #[serde(default)]
    pub fields: Vec<String>,
    /// How far behind a key's latest event time an event may be and still count in its
    /// windows (`aggregate` steps); later ones go to `sluice.late.<set>`. Default: none (`0s`).
    #[serde(default)]
    pub allowed_lateness: Option<super::ConfigDuration>,
    /// Largest accepted input event, in bytes; larger ones go to the dead-letter subject.
    #[serde(default = "max_event_bytes")]
    pub max_event_bytes: usize,
    /// Where events come from.
    pub source: SourceConfig,
    /// The graph, in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// Where feature rows go.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Feature monitoring: live statistics per window, drift against a reference.
    #[serde(default)]
    pub monitor: Option<crate::monitor::live::MonitorConfig>,
}

fn one() -> u32 {
    1
}

fn max_event_bytes() -> usize {
    1 << 20
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The event-time field and how to read it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// The field.
    pub field: String,
    /// Its format: `auto` (text), `rfc3339`, `epoch_s`/`epoch_ms`/`epoch_us`/`epoch_ns`
    /// (numbers in that unit), or a strftime pattern such as `%d/%m/%Y %H:%M`.
    #[serde(default)]
    pub format: TimeFormat,
    /// The IANA time zone of naive times (text without an offset, Parquet timestamps without
    /// a zone); default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Where a feature set's events come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A JetStream stream, read by a durable pull consumer.
    Jetstream {
        /// Stream name.
        stream: String,
        /// Subject the events are published on.
        subject: String,
        /// Create the stream if it does not exist.
        #[serde(default)]
        create: bool,
        /// Most messages per batch.
        #[serde(default = "batch")]
        batch: usize,
        /// Longest wait for a batch to fill, in milliseconds.
        #[serde(default = "max_wait_ms")]
        max_wait_ms: u64,
        /// Most unacknowledged messages at once.
        #[serde(default = "max_ack_pending")]
        max_ack_pending: i64,
        /// Seconds before an unacknowledged message is redelivered.
        #[serde(default = "ack_wait_s")]
        ack_wait_s: u64,
    },
    /// A file of events, read once from start to end (line or row numbers are the sequence,
    /// so running it again writes nothing twice).
    File {
        /// The file (relative to the config file).
        path: PathBuf,
        /// Its format (default: from the extension: .jsonl/.json, .csv, .parquet).
        #[serde(default)]
        format: Option<FileFormat>,
        /// Events per batch.
        #[serde(default = "batch")]
        batch: usize,
    },
    /// The feature rows of another feature set (its stream target): graphs chain across
    /// feature sets, and hosts, through JetStream.
    FeatureSet {
        /// The upstream feature set.
        name: String,
        /// Its version (default: the highest configured).
        #[serde(default)]
        version: Option<u32>,
        /// Most messages (of up to hundreds of rows each) per batch.
        #[serde(default = "chained_batch")]
        batch: usize,
        /// Longest wait for a batch to fill, in milliseconds.
        #[serde(default = "max_wait_ms")]
        max_wait_ms: u64,
        /// Most unacknowledged messages at once.
        #[serde(default = "chained_ack_pending")]
        max_ack_pending: i64,
        /// Seconds before an unacknowledged message is redelivered.
        #[serde(default = "ack_wait_s")]
        ack_wait_s: u64,
    },
}

/// The format of a file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line; numbers, booleans and empty cells (null) are
    /// recognised.
    Csv,
    /// Parquet (any columns of scalar types).
    Parquet,
}

impl FileFormat {
    /// The format a file's extension implies (`.jsonl`/`.json`/`.ndjson`, `.csv`, `.parquet`).
    pub fn of(path: &std::path::Path) -> Option<FileFormat> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" | "ndjson" => Some(FileFormat::Jsonl),
            "csv" => Some(FileFormat::Csv),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// How a source is read, whatever its kind.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Messages per batch.
    pub batch: usize,
    /// Longest wait for a batch, ms.
    pub max_wait_ms: u64,
    /// Most unacknowledged messages.
    pub max_ack_pending: i64,
    /// Redelivery delay, s.
    pub ack_wait_s: u64,
}

impl SourceConfig {
    /// Batch size and timing.
    pub fn reading(&self) -> Reading {
        match self {
            SourceConfig::Jetstream {
                batch,
                max_wait_ms,
                max_ack_pending,
                ack_wait_s,
                ..
            }
            | SourceConfig::FeatureSet {
                batch,
                max_wait_ms,
                max_ack_pending,
                ack_wait_s,
                ..
            } => Reading {
                batch: *batch,
                max_wait_ms: *max_wait_ms,
                max_ack_pending: *max_ack_pending,
                ack_wait_s: *ack_wait_s,
            },
            SourceConfig::File { batch, .. } => Reading {
                batch: *batch,
                max_wait_ms: 0,
                max_ack_pending: 0,
                ack_wait_s: 0,
            },
        }
    }
}

fn chained_batch() -> usize {
    20
}
fn chained_ack_pending() -> i64 {
    200
}

fn batch() -> usize {
    1000
}
fn max_wait_ms() -> u64 {
    50
}
fn max_ack_pending() -> i64 {
    20_000
}
fn ack_wait_s() -> u64 {
    60
}

impl FeatureSetConfig {
    /// The fields of its rows that are not features to monitor: the entity key fields, the
    /// event-time field and each plugin step's `<step>_version` (lineage, not a signal).
    pub fn not_features(&self) -> Vec<String> {
        let mut fields = self.entity.clone();
        fields.push(self.timestamp.field.clone());
        fields.extend(self.steps.iter().filter_map(|s| match s.kind {
            crate::steps::StepKind::Wasm(_) => Some(format!("{}_version", s.id)),
            _ => None,
        }));
        fields
    }

    /// What its steps check themselves against.
    pub fn facts(&self) -> SetFacts<'_> {
        SetFacts {
            name: &self.name,
            streamed: !matches!(self.source, SourceConfig::File { .. }),
            online: self.targets.iter().any(|t| matches!(t, TargetConfig::Redis {})),
            lateness: self
                .allowed_lateness
                .as_ref()
                .and_then(|l| l.get().ok())
                .map(|d| d.as_micros() as i64),
        }
    }

    /// The specs of its `aggregate` steps, each with its step id (those that do not resolve
    /// are left out: validation reports them).
    fn aggregate_specs(&self) -> impl Iterator<Item = (&StepConfig, Result<AggregateSpec, Vec<String>>)> {
        let lateness = self.allowed_lateness.as_ref().map(|l| l.micros());
        self.steps.iter().filter_map(move |step| match &step.kind {
            StepKind::Aggregate(aggregate) => Some((
                step,
                AggregateSpec::new(&step.id, &aggregate.period, lateness, &aggregate.aggregations),
            )),
            _ => None,
        })
    }

    /// Every aggregate it computes (all its `aggregate` steps), with whether it is an integer
    /// (counts) rather than a float: the declared types of those columns.
    pub fn aggregate_types(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for (_, spec) in self.aggregate_specs() {
            if let Ok(spec) = spec {
                for field in &spec.fields {
                    out.extend(field.features.iter().map(|f| (f.name.clone(), f.function.is_integer())));
                }
            }
        }
        out
    }

    /// The specs of its `aggregate` steps keyed by its entity (their tiles live in the
    /// entity's hash; online and offline reads evaluate them at the time asked).
    pub fn entity_aggregates(&self) -> Result<Vec<AggregateSpec>, Invalid> {
        let mut specs = Vec::new();
        for (step, spec) in self.aggregate_specs() {
            if matches!(&step.kind, StepKind::Aggregate(a) if a.key.is_some()) {
                continue;
            }
            specs.push(spec.map_err(|problems| format!("step \"{}\": {}", step.id, problems.join("; ")))?);
        }
        Ok(specs)
    }

    /// The TTL in µs (`None`: no TTL); an error names what the text should be.
    pub fn ttl_micros(&self) -> Result<Option<i64>, crate::fault::Invalid> {
        Ok(self
            .ttl
            .as_ref()
            .map(|t| t.get())
            .transpose()?
            .map(|d| d.as_micros() as i64))
    }
}

/// Where feature rows go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetConfig {
    /// Online values in Redis: one hash per entity.
    Redis {},
    /// Feature rows on a JetStream subject, in batches, de-duplicated by input sequence.
    Stream {
        /// Stream name.
        stream: String,
        /// Subject.
        subject: String,
        /// Create the stream if it does not exist.
        #[serde(default)]
        create: bool,
    },
    /// Parquet files written by the offline writer, from the stream target.
    Parquet {
        /// Root folder (relative to the config file).
        root: PathBuf,
        /// Rows per part file at most.
        #[serde(default = "roll_rows")]
        roll_rows: usize,
        /// Seconds before a part with rows is committed.
        #[serde(default = "roll_seconds")]
        roll_seconds: u64,
    },
}

fn roll_rows() -> usize {
    250_000
}
fn roll_seconds() -> u64 {
    10
}

impl TargetConfig {
    /// The `kind` string.
    pub fn name(&self) -> &'static str {
        match self {
            TargetConfig::Redis {} => "redis",
            TargetConfig::Stream { .. } => "stream",
            TargetConfig::Parquet { .. } => "parquet",
        }
    }
}
