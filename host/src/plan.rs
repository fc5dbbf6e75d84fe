//! A feature set compiled once into what running it needs, shared by `sluice run`, backfill,
//! the offline writer and the HTTP API: its keys and TTL, its online layout (which fields
//! the online rows leave out, how reads evaluate the aggregates), its Parquet target and
//! column types, and its stream target. Nothing downstream re-derives these from the config.
//!
//! [`Chain`] is the part of a run both drivers share: the steps over one batch, with the
//! accounting of failed and late events. Live runs and backfill differ only in where the
//! batch comes from and how its result is committed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow_schema::DataType;

use crate::config::{Config, FeatureSetConfig, TargetConfig};
use crate::graph::Graph;
use crate::online::OnlineView;
use crate::rows::{Failure, Rows, Tally};
use crate::steps::aggregate::{StateWrite, StoreTiles, TileHome};
use crate::steps::Halt;
use crate::store::OnlineStore;
use crate::targets::online::OnlineTarget;
use crate::targets::parquet::PartWriter;
use crate::targets::TargetError;

/// A feature set that cannot be planned (validation reports the same problems earlier).
#[derive(Debug, thiserror::Error)]
#[error("feature set {set}: {reason}")]
pub struct PlanError {
    /// `name@vN`.
    pub set: String,
    /// Why.
    pub reason: String,
}

/// The plan of one feature set version.
#[derive(Debug, Clone)]
pub struct SetPlan {
    /// `name@vN`, for logs and errors.
    pub label: String,
    /// The set's name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// The prefix of its keys in the online store (`<prefix>:<set>:v<version>`).
    pub keys: String,
    /// The TTL of its online rows, µs (`None`: none); reads treat an older row as absent.
    pub ttl: Option<i64>,
    /// How online reads evaluate its rows.
    pub view: OnlineView,
    /// The fields of its rows after the last step, when they are known (see
    /// [`crate::config::output_fields`]): names outside them are refused by lookups and
    /// training sets.
    pub fields: Option<std::collections::BTreeSet<String>>,
    /// Its online target, when it has one: the fields the online rows leave out.
    pub online: Option<Vec<String>>,
    /// Its Parquet target, when it has one.
    pub parquet: Option<ParquetPlan>,
    /// Where its feature rows are published (stream, subject, create): the declared stream
    /// target, or the set's own stream when only a Parquet target reads them.
    pub stream: Option<(String, String, bool)>,
}

/// Where and how a set's offline rows are written.
#[derive(Debug, Clone)]
pub struct ParquetPlan {
    /// The root folder (resolved against the config's folder).
    pub root: PathBuf,
    /// Rows per part file.
    pub roll_rows: usize,
    /// Seconds before a part is committed anyway.
    pub roll_seconds: u64,
    /// Column types the values may not tell (aggregates: counts are integers, the rest
    /// floats).
    pub types: HashMap<String, DataType>,
}

impl SetPlan {
    /// Compiles a set of `config` (keys under the config's online prefix).
    pub fn compile(config: &Config, set: &FeatureSetConfig) -> Result<SetPlan, PlanError> {
        let label = format!("{}@v{}", set.name, set.version);
        let fail = |reason: String| PlanError {
            set: label.clone(),
            reason,
        };
        let prefix = &config.host.redis_prefix;
        let view = OnlineView::new(prefix, set).map_err(|e| fail(e.into()))?;
        let ttl = set.ttl_micros().map_err(|e| fail(e.into()))?;
        let online = set
            .targets
            .iter()
            .any(|t| matches!(t, TargetConfig::Redis {}))
            .then(|| view.left_out(set));
        let parquet = set.targets.iter().find_map(|t| match t {
            TargetConfig::Parquet {
                root,
                roll_rows,
                roll_seconds,
            } => Some(ParquetPlan {
                root: config.resolve(root),
                roll_rows: *roll_rows,
                roll_seconds: *roll_seconds,
                types: set
                    .aggregate_types()
                    .into_iter()
                    .map(|(name, integer)| (name, if integer { DataType::Int64 } else { DataType::Float64 }))
                    .collect(),
            }),
            _ => None,
        });
        Ok(SetPlan {
            keys: crate::keys::set_prefix(prefix, &set.name, set.version),
            name: set.name.clone(),
            version: set.version,
            ttl,
            fields: crate::config::output_fields(config, set),
            view,
            online,
            parquet,
            stream: Config::stream_target(set),
            label,
        })
    }

    /// Where its aggregation state is kept durable: beside its online rows (`None` without
    /// an online target: state lives in memory only).
    pub fn tiles(&self, store: &Arc<dyn OnlineStore>) -> Option<TileHome> {
        self.online.as_ref().map(|_| TileHome {
            prefix: self.keys.clone(),
            store: Arc::new(StoreTiles(store.clone())),
        })
    }

    /// Its online target, when it has one.
    pub fn online_target(&self, store: &Arc<dyn OnlineStore>) -> Option<OnlineTarget> {
        let left_out = self.online.as_ref()?;
        // The store takes the TTL in ms (0: none).
        let ttl_ms = self.ttl.map_or(0, |us| us as u64 / 1000);
        Some(OnlineTarget::new(store.clone(), &self.keys, ttl_ms).without(left_out.clone()))
    }

    /// The writer of its Parquet parts, resuming from the files there; `None` without a
    /// Parquet target.
    pub fn part_writer(&self) -> Result<Option<PartWriter>, TargetError> {
        let Some(parquet) = &self.parquet else {
            return Ok(None);
        };
        let writer = PartWriter::open(&parquet.root, &self.name, self.version)?;
        Ok(Some(writer.with_types(parquet.types.clone())))
    }
}

/// What one batch through the steps produced, to be committed.
#[derive(Debug, Default)]
pub struct Computed {
    /// The feature rows.
    pub rows: Rows,
    /// Events that failed (and those refused as late, marked `late`).
    pub failures: Vec<Failure>,
    /// Aggregation state the batch changed.
    pub state: Vec<StateWrite>,
    /// How many of the failures are late events.
    pub late: u64,
}

/// A set's steps with the accounting every run keeps: the late events apart, and, for a run
/// judged at its end (a backfill, `sluice run --until-done`), the failures by reason.
pub struct Chain {
    graph: Graph,
    tally: Option<Arc<Mutex<Tally>>>,
}

impl Chain {
    /// The chain of a built graph (counting no failures by reason: a live set runs for ever).
    pub fn new(graph: Graph) -> Chain {
        Chain { graph, tally: None }
    }

    /// Counts failures by reason in `tally` (shared with whoever judges the run at its end).
    pub fn counting_in(mut self, tally: Arc<Mutex<Tally>>) -> Chain {
        self.tally = Some(tally);
        self
    }

    /// Counts failures found outside the steps (events that did not decode).
    pub fn count(&self, failures: &[Failure]) {
        if let Some(tally) = &self.tally {
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            failures.iter().for_each(|f| tally.add(f));
        }
    }

    /// The failures counted so far (empty when not counting).
    pub fn take_tally(&self) -> Tally {
        self.tally
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }

    /// Runs a batch through the steps; `failures` already holds the batch's decode failures.
    /// A step that halts ends the batch: nothing of it may be committed.
    pub fn run(&mut self, rows: Rows, mut failures: Vec<Failure>) -> Result<Computed, Halt> {
        let rows = self.graph.run(rows, &mut failures)?;
        let state = self.graph.take_writes();
        let late = failures.iter().filter(|f| f.late).count() as u64;
        if !failures.is_empty() {
            self.count(&failures);
        }
        Ok(Computed {
            rows,
            failures,
            state,
            late,
        })
    }
}
