//! Point-in-time reads of a feature set's offline rows (its Parquet parts): the features of
//! an entity **as of a time `t`**, by the rule training sets and the skew check share with
//! online reads:
//!
//! - the row is the one with the latest event time `<= t` (ties: the highest input sequence);
//!   a row whose event time is exactly `t` counts; rows after `t` are never used;
//! - no row, or one older than the set's TTL at `t` (`t - time > ttl`), gives nulls;
//! - windowed aggregates keyed by the entity are **evaluated at `t`** from tiles rebuilt from
//!   the entity's rows with event time `<= t` (added in input-sequence order, as the pipeline
//!   added them), so they decay exactly as online values do; other fields (including those
//!   a `map` computed from aggregates) keep the value written with the row.
//!
//! Only the columns asked for (and the aggregates' inputs) are kept in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::config::{FeatureSetConfig, StepKind};
use crate::event::Value;
use crate::sources::arrow_json::cell_value;
use crate::steps::aggregate::{AggregateSpec, KeyState};

/// One offline row.
#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    time: i64,
    values: Vec<Value>,
}

/// A feature set version's offline rows, by entity.
pub struct History {
    /// Kept columns (features, aggregate inputs).
    columns: Vec<String>,
    /// Rows per entity, sorted by input sequence.
    entities: HashMap<String, Vec<Row>>,
    /// Aggregations keyed by the entity, with the positions of their inputs in `columns`.
    aggregates: Vec<(AggregateSpec, Vec<Option<usize>>)>,
    /// TTL, µs.
    ttl: Option<i64>,
    /// Rows read.
    rows: u64,
}

/// The partition of an entity key among `n` (a stable hash: the same in every pass).
pub fn partition_of(key: &str, n: u64) -> u64 {
    // FNV-1a.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % n.max(1)
}

/// The feature columns of a feature set version's parts (every part's schema, in order of
/// first appearance: a field a later part added is there too).
pub fn columns_of(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for part in part_files(dir) {
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&part)?)?;
        for field in builder.schema().fields() {
            if !field.name().starts_with('_') && !names.contains(field.name()) {
                names.push(field.name().clone());
            }
        }
    }
    Ok(names)
}

/// The part files of a feature set version's folder, in name order.
pub fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut parts = Vec::new();
    let Ok(dates) = std::fs::read_dir(dir) else {
        return parts;
    };
    for date in dates.flatten().filter(|d| d.path().is_dir()) {
        if let Ok(files) = std::fs::read_dir(date.path()) {
            parts.extend(
                files
                    .flatten()
                    .map(|f| f.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "parquet")),
            );
        }
    }
    parts.sort();
    parts
}

impl History {
    /// Reads the parts under `dir` of feature set version `set`, keeping the features named
    /// in `wanted` (`None`: every column).
    pub fn load(dir: &Path, set: &FeatureSetConfig, wanted: Option<&[String]>) -> anyhow::Result<History> {
        Self::load_partition(dir, set, wanted, None)
    }

    /// Like [`History::load`], keeping only the entities of partition `(p, n)`: those whose
    /// key hashes to `p` modulo `n` ([`partition_of`]). Reading the rows in `n` passes bounds
    /// the memory to about `1/n` of them.
    pub fn load_partition(
        dir: &Path,
        set: &FeatureSetConfig,
        wanted: Option<&[String]>,
        partition: Option<(u64, u64)>,
    ) -> anyhow::Result<History> {
        let aggregates = set.entity_aggregates().map_err(anyhow::Error::msg)?;
        let ttl = set.ttl_micros().map_err(anyhow::Error::msg)?;
        let mut history = History {
            columns: Vec::new(),
            entities: HashMap::new(),
            aggregates: Vec::new(),
            ttl,
            rows: 0,
        };
        let inputs: Vec<String> = aggregates
            .iter()
            .flat_map(|spec| spec.fields.iter().map(|f| f.field.clone()))
            .collect();
        let keep = |name: &str| wanted.is_none_or(|w| w.iter().any(|x| x == name)) || inputs.iter().any(|i| i == name);
        let mut position: HashMap<String, usize> = HashMap::new();
        for part in part_files(dir) {
            let file = std::fs::File::open(&part)?;
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", part.display()))?;
            // Only the columns needed: the row's identity and the kept features.
            let schema = builder.schema().clone();
            let wanted_columns: Vec<usize> = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name().starts_with('_') || keep(f.name()))
                .map(|(i, _)| i)
                .collect();
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), wanted_columns);
            let reader = builder
                .with_projection(mask)
                .build()
                .map_err(|e| anyhow::anyhow!("{}: {e}", part.display()))?;
            for batch in reader {
                let batch = batch.map_err(|e| anyhow::anyhow!("{}: {e}", part.display()))?;
                history
                    .add_batch(&batch, &mut position, partition)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", part.display()))?;
            }
        }
        for rows in history.entities.values_mut() {
            rows.sort_by_key(|r| r.seq);
        }
        history.aggregates = aggregates
            .into_iter()
            .map(|spec| {
                let at = spec.fields.iter().map(|f| position.get(&f.field).copied()).collect();
                (spec, at)
            })
            .collect();
        Ok(history)
    }

    /// Adds a record batch of a part: its rows of the entities of `partition`, with their
    /// features at the columns `position` gives (new columns are added).
    fn add_batch(
        &mut self,
        batch: &arrow_array::RecordBatch,
        position: &mut HashMap<String, usize>,
        partition: Option<(u64, u64)>,
    ) -> anyhow::Result<()> {
        let batch_schema = batch.schema();
        let column = |name: &str| batch_schema.index_of(name).ok().map(|i| batch.column(i).clone());
        let (Some(seqs), Some(keys), Some(times)) = (column("_seq"), column("_key"), column("_ts")) else {
            anyhow::bail!("not a feature-row part (no _seq, _key or _ts)");
        };
        let features: Vec<(usize, arrow_array::ArrayRef)> = batch_schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| !f.name().starts_with('_'))
            .map(|(f, array)| {
                let at = *position.entry(f.name().clone()).or_insert_with(|| {
                    self.columns.push(f.name().clone());
                    self.columns.len() - 1
                });
                (at, array.clone())
            })
            .collect();
        for r in 0..batch.num_rows() {
            let number = |array: &arrow_array::ArrayRef| match cell_value(array.as_ref(), r) {
                Value::Integer(n) => Some(n),
                _ => None,
            };
            let (Some(seq), Some(time), Value::Text(key)) =
                (number(&seqs), number(&times), cell_value(keys.as_ref(), r))
            else {
                anyhow::bail!("a row without _seq, _ts or _key");
            };
            if partition.is_some_and(|(p, n)| partition_of(&key, n) != p) {
                continue;
            }
            let mut values = vec![Value::Null; self.columns.len()];
            for (at, array) in &features {
                values[*at] = cell_value(array.as_ref(), r);
            }
            self.rows += 1;
            self.entities.entry(key).or_default().push(Row {
                seq: seq as u64,
                time,
                values,
            });
        }
        Ok(())
    }

    /// The kept columns (features and aggregate inputs), in first-seen order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.clone()
    }

    /// Rows read.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Entities with at least one row.
    pub fn entities(&self) -> impl Iterator<Item = &str> {
        self.entities.keys().map(String::as_str)
    }

    /// Whether `name` is a windowed aggregate evaluated at the time asked.
    pub fn is_aggregate(&self, name: &str) -> bool {
        self.aggregates
            .iter()
            .any(|(spec, _)| spec.feature_names().any(|n| n == name))
    }

    /// The features of `entity` as of each time in `times` (µs), in that order: `None` where
    /// no row applies (none at or before `t`, or older than the TTL).
    ///
    /// When the entity's rows arrived in event-time order (the usual case), one sweep over
    /// the times in increasing order adds each row to the tiles once; otherwise the tiles
    /// are rebuilt for each time (a row that arrived before an earlier-timed one must not be
    /// added after it).
    pub fn as_of(&self, entity: &str, times: &[i64]) -> Vec<Option<IndexMap<String, Value>>> {
        let Some(rows) = self.entities.get(entity) else {
            return vec![None; times.len()];
        };
        let in_order = rows.windows(2).all(|w| w[0].time <= w[1].time);
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by_key(|&i| times[i]);
        let mut states: Vec<KeyState> = self.aggregates.iter().map(|(spec, _)| KeyState::new(spec)).collect();
        let mut added = 0;
        let mut out: Vec<Option<IndexMap<String, Value>>> = vec![None; times.len()];
        for i in order {
            let t = times[i];
            // The latest row by (time, sequence) at or before t.
            let row = if in_order {
                rows[..rows.partition_point(|r| r.time <= t)].last()
            } else {
                rows.iter().filter(|r| r.time <= t).max_by_key(|r| (r.time, r.seq))
            };
            let Some(row) = row else { continue };
            if self.ttl.is_some_and(|ttl| t - row.time > ttl) {
                continue;
            }
            let mut features: IndexMap<String, Value> = self
                .columns
                .iter()
                .enumerate()
                .map(|(c, name)| (name.clone(), row.values.get(c).cloned().unwrap_or(Value::Null)))
                .collect();
            if !in_order {
                states = self.aggregates.iter().map(|(spec, _)| KeyState::new(spec)).collect();
                added = 0;
            }
            for ((spec, positions), state) in self.aggregates.iter().zip(&mut states) {
                let eligible = rows.iter().enumerate().skip(added).filter(|(_, r)| r.time <= t);
                for (_, r) in eligible {
                    // Refused values (late, invalid) were refused live too.
                    let _ = state.add(spec, &r.values, positions, r.time, r.seq);
                }
                let mut names = spec.feature_names();
                spec.evaluate(state, t, |value| {
                    if let Some(name) = names.next() {
                        features.insert(name.to_string(), value);
                    }
                });
            }
            if in_order {
                added = rows.partition_point(|r| r.time <= t);
            }
            out[i] = Some(features);
        }
        out
    }
}

/// What a backfill's graph reads: a `join` reads the joined sets' offline rows as of each
/// event's time; a plugin's `lookup` goes to the online store when the backfill has one.
pub struct HistoryLookup {
    histories: HashMap<String, History>,
    live: Option<std::sync::Arc<dyn crate::plugin::OnlineLookup>>,
}

impl HistoryLookup {
    /// Loads the offline rows of every set `set` joins (their highest version in the config).
    pub fn new(
        config: &crate::config::Config,
        set: &FeatureSetConfig,
        live: Option<std::sync::Arc<dyn crate::plugin::OnlineLookup>>,
    ) -> anyhow::Result<HistoryLookup> {
        let mut histories = HashMap::new();
        for step in &set.steps {
            let StepKind::Join(crate::steps::JoinConfig { set: other, .. }) = &step.kind else {
                continue;
            };
            if histories.contains_key(other) {
                continue;
            }
            let joined = config
                .feature_sets
                .iter()
                .filter(|s| s.name == *other)
                .max_by_key(|s| s.version)
                .ok_or_else(|| anyhow::anyhow!("step \"{}\": no feature set \"{other}\" to join", step.id))?;
            let root = joined
                .targets
                .iter()
                .find_map(|t| match t {
                    crate::config::TargetConfig::Parquet { root, .. } => Some(config.resolve(root)),
                    _ => None,
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "step \"{}\": a backfill joins {other} as of each event's time from its offline rows, and \
                         {other} has no parquet target",
                        step.id
                    )
                })?;
            let dir = root.join(&joined.name).join(format!("v{}", joined.version));
            histories.insert(other.clone(), History::load(&dir, joined, None)?);
        }
        Ok(HistoryLookup { histories, live })
    }
}

impl crate::plugin::OnlineLookup for HistoryLookup {
    fn lookup(
        &self,
        feature_set: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<crate::event::Field>>>, crate::plugin::LookupError> {
        match &self.live {
            Some(live) => live.lookup(feature_set, keys),
            None => crate::plugin::NoLookup.lookup(feature_set, keys),
        }
    }

    fn as_of(
        &self,
        feature_set: &str,
        keys: &[&str],
        times: &[i64],
    ) -> Result<Vec<Option<crate::plugin::AsOfRow>>, crate::plugin::LookupError> {
        let history = self.histories.get(feature_set).ok_or_else(|| {
            crate::plugin::LookupError::Refused(format!(
                "join: feature set \"{feature_set}\" is not joined by this graph"
            ))
        })?;
        Ok(keys
            .iter()
            .zip(times)
            .map(|(key, &t)| history.as_of(key, &[t]).pop().flatten())
            .collect())
    }
}
