//! `sluice training-set`: point-in-time correct training data. For each entity row (the
//! entity's key fields and a time `t`), each feature's value as of `t` by the rule of
//! [`super::history`] — never a value from after `t`, nulls past the TTL, windowed aggregates
//! evaluated at `t`. Features may come from several feature sets (or a named feature vector);
//! the output is one Parquet file: the entity rows' own columns, then one column per feature.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde_json::{Map, Value as Json};

use super::history::History;
use super::progress::Progress;
use crate::config::{Config, FeatureSetConfig, TargetConfig, TimeFormat};
use crate::event::Value;
use crate::sources::decode::parse_time;
use crate::sources::file::FileSource;
use crate::sources::Decoder;

/// Options of `sluice training-set`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainingOptions {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Entity rows (JSONL, CSV or Parquet): each set's entity fields and the time field.
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub entities: Option<PathBuf>,
    /// `set:feature` (or `set:*`) entries, comma-separated, or the name of a feature vector.
    #[arg(long, value_delimiter = ',', num_args = 1.., required_unless_present = "model", conflicts_with = "model")]
    pub features: Vec<String>,
    /// Instead of entity rows and features: a model's captured lookups (`[[model]]`), one row
    /// each with the features as served, its prediction and its label.
    #[arg(long)]
    pub model: Option<String>,
    /// With `--model`: lookups captured at or after this time (RFC 3339 or epoch ms).
    #[arg(long, requires = "model")]
    pub from: Option<String>,
    /// With `--model`: lookups captured before this time (RFC 3339 or epoch ms).
    #[arg(long, requires = "model")]
    pub to: Option<String>,
    /// With `--model`: only the lookups a label came for.
    #[arg(long, requires = "model")]
    pub labelled_only: bool,
    /// The output Parquet file.
    #[arg(long)]
    pub out: PathBuf,
    /// The entity rows' time field (RFC 3339 text, or epoch milliseconds).
    #[arg(long, default_value = "t")]
    pub time_field: String,
    /// Read this version of every set (default: the highest in the config; a backfilled
    /// version is read with the definition of the highest).
    #[arg(long)]
    pub version: Option<u32>,
    /// Passes over the offline rows, each holding the entities whose key hashes to it (bounds
    /// the memory; default: one per 32 MiB of Parquet).
    #[arg(long)]
    pub partitions: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Parquet bytes per partition when `--partitions` is not given.
const PARTITION_BYTES: u64 = 32 << 20;

/// What a training set holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingReport {
    /// Entity rows (= output rows).
    pub rows: u64,
    /// Feature columns.
    pub features: Vec<String>,
    /// Feature values that were null because no row applied (none before `t`, or past TTL).
    pub missing: u64,
    /// Offline rows read.
    pub offline_rows: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// One requested feature.
struct Requested {
    set: usize,
    feature: String,
    column: String,
}

/// The field metadata key that marks a training set's feature columns (`set:feature`).
pub const FEATURE_METADATA: &str = "sluice:feature";

/// The feature sets asked for, and each feature as (index of its set, name).
pub type Resolved = (Vec<FeatureSetConfig>, Vec<(usize, String)>);

/// The feature sets and features a `--features` list names (or a vector's).
pub fn resolve(config: &Config, features: &[String], version: Option<u32>) -> anyhow::Result<Resolved> {
    let entries: Vec<String> = match features {
        [one] if !one.contains(':') => config
            .feature_vectors
            .iter()
            .find(|v| v.name == *one)
            .map(|v| v.features.clone())
            .ok_or_else(|| anyhow::anyhow!("--features {one}: no feature vector of that name, and not set:feature"))?,
        many => many.to_vec(),
    };
    let mut sets: Vec<FeatureSetConfig> = Vec::new();
    let mut wanted = Vec::new();
    for entry in &entries {
        let (set, feature) = entry
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--features {entry}: expected set:feature, set:* or a feature vector"))?;
        let index = match sets.iter().position(|s| s.name == set) {
            Some(i) => i,
            None => {
                // The version asked for, else the served one, else the highest (see
                // `catalog::definition_of`).
                let chosen = crate::catalog::definition_of(config, set, version)
                    .ok_or_else(|| anyhow::anyhow!("--features {entry}: no feature set \"{set}\" in the config"))?;
                sets.push(chosen);
                sets.len() - 1
            }
        };
        wanted.push((index, feature.to_string()));
    }
    Ok((sets, wanted))
}

fn offline_dir(config: &Config, set: &FeatureSetConfig) -> anyhow::Result<PathBuf> {
    set.targets
        .iter()
        .find_map(|t| match t {
            TargetConfig::Parquet { root, .. } => {
                Some(config.resolve(root).join(&set.name).join(format!("v{}", set.version)))
            }
            _ => None,
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "feature set {}: no parquet target, so no offline rows to read",
                set.name
            )
        })
}

/// Builds a training set (`options.config` is loaded).
pub fn run(options: &TrainingOptions) -> anyhow::Result<TrainingReport> {
    build(&crate::config::load(&options.config)?, options)
}

/// Builds a training set from a loaded config (`options.config` is not read).
pub fn build(config: &Config, options: &TrainingOptions) -> anyhow::Result<TrainingReport> {
    let started = std::time::Instant::now();
    let (sets, wanted) = resolve(config, &options.features, options.version)?;
    let entity_rows = read_entity_rows(options)?;
    let mut report = TrainingReport {
        rows: entity_rows.len() as u64,
        ..Default::default()
    };
    let dirs: Vec<PathBuf> = sets
        .iter()
        .map(|set| offline_dir(config, set))
        .collect::<anyhow::Result<_>>()?;
    refuse_unknown(config, &sets, &wanted, &dirs)?;
    let requested = requested_columns(&sets, &wanted, &dirs, &entity_rows)?;
    // Per set: group entity rows by key, read each entity's history once.
    let mut values: Vec<Vec<Value>> = vec![vec![Value::Null; entity_rows.len()]; requested.len()];
    let mut progress = Progress::new(entity_rows.len() as u64 * sets.len() as u64, options.quiet);
    let mut done = 0u64;
    for (index, set) in sets.iter().enumerate() {
        let fill = Fill {
            index,
            set,
            dir: &dirs[index],
            entity_rows: &entity_rows,
            requested: &requested,
        };
        fill.run(options, &mut values, &mut report, (&mut progress, &mut done))?;
    }
    progress.finish(done);
    let declared: HashMap<String, bool> = sets.iter().flat_map(|s| s.aggregate_types()).collect();
    let set_names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    write(options, &entity_rows, (&requested, &set_names), values, &declared)?;
    report.features = requested.iter().map(|r| r.column.clone()).collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The entity rows, as JSON objects, with their time.
fn read_entity_rows(options: &TrainingOptions) -> anyhow::Result<Vec<(Map<String, Json>, i64)>> {
    let mut entity_rows: Vec<(Map<String, Json>, i64)> = Vec::new();
    let path = options
        .entities
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--entities: expected the entity rows' file"))?;
    let mut source = FileSource::open(path, None, 10_000)?;
    loop {
        let batch = source.next_batch()?;
        if batch.is_empty() {
            break;
        }
        for (line, bytes) in batch {
            let object: Map<String, Json> = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{} line {line}: not a JSON object: {e}", path.display()))?;
            let t = parse_time(
                object.get(&options.time_field),
                &options.time_field,
                TimeFormat::EpochMs,
            )
            .map_err(|e| anyhow::anyhow!("{} line {line}: {e}", path.display()))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} line {line}: no time field \"{}\" (--time-field names it)",
                    path.display(),
                    options.time_field
                )
            })?;
            entity_rows.push((object, t));
        }
    }
    Ok(entity_rows)
}

/// Refuses features a set does not have: known from its offline rows' columns, its
/// aggregates and, where declared, its steps' outputs. A set with neither rows nor declared
/// outputs cannot tell, and is not checked.
fn refuse_unknown(
    config: &Config,
    sets: &[FeatureSetConfig],
    wanted: &[(usize, String)],
    dirs: &[PathBuf],
) -> anyhow::Result<()> {
    for (index, set) in sets.iter().enumerate() {
        let columns = super::history::columns_of(&dirs[index])?;
        let declared = crate::config::output_fields(config, set);
        if columns.is_empty() && declared.is_none() {
            continue;
        }
        let mut known: std::collections::BTreeSet<String> = columns.into_iter().collect();
        known.extend(aggregate_names(set));
        known.extend(declared.into_iter().flatten());
        let asked = wanted
            .iter()
            .filter(|(s, f)| *s == index && f != "*")
            .map(|(_, f)| f.as_str());
        crate::config::refuse_unknown(&set.name, asked, &known).map_err(|e| anyhow::anyhow!("--features: {e}"))?;
    }
    Ok(())
}

/// The feature columns asked for: a feature's name, or `set__feature` where two sets share a
/// name (`set:*` expands to the set's columns and aggregates).
fn requested_columns(
    sets: &[FeatureSetConfig],
    wanted: &[(usize, String)],
    dirs: &[PathBuf],
    entity_rows: &[(Map<String, Json>, i64)],
) -> anyhow::Result<Vec<Requested>> {
    let mut features: Vec<(usize, String)> = Vec::new();
    for (set, feature) in wanted {
        if feature == "*" {
            let mut names: Vec<String> = super::history::columns_of(&dirs[*set])?;
            for spec in aggregate_names(&sets[*set]) {
                if !names.contains(&spec) {
                    names.push(spec);
                }
            }
            features.extend(names.into_iter().map(|n| (*set, n)));
        } else {
            features.push((*set, feature.clone()));
        }
    }
    let mut requested: Vec<Requested> = Vec::new();
    for (set, feature) in &features {
        let shared = features.iter().filter(|(_, f)| f == feature).count() > 1;
        let column = if shared {
            format!("{}__{feature}", sets[*set].name)
        } else {
            feature.clone()
        };
        anyhow::ensure!(
            !entity_rows.first().is_some_and(|(o, _)| o.contains_key(&column)),
            "feature column \"{column}\" has the name of a column of the entity rows"
        );
        requested.push(Requested {
            set: *set,
            feature: feature.clone(),
            column,
        });
    }
    Ok(requested)
}

/// The values of one set's requested columns, read from its history (in partitions, when
/// its parts are large).
struct Fill<'a> {
    index: usize,
    set: &'a FeatureSetConfig,
    dir: &'a PathBuf,
    entity_rows: &'a [(Map<String, Json>, i64)],
    requested: &'a [Requested],
}

impl Fill<'_> {
    fn run(
        &self,
        options: &TrainingOptions,
        values: &mut [Vec<Value>],
        report: &mut TrainingReport,
        (progress, done): (&mut Progress, &mut u64),
    ) -> anyhow::Result<()> {
        let (set, entity_rows) = (self.set, self.entity_rows);
        let decoder = Decoder::new(set).map_err(anyhow::Error::msg)?;
        let mut keys: Vec<String> = Vec::with_capacity(entity_rows.len());
        for (row, (object, _)) in entity_rows.iter().enumerate() {
            keys.push(decoder.key_of(object).map_err(|e| {
                anyhow::anyhow!(
                    "{} row {}: {e} (feature set {})",
                    options
                        .entities
                        .as_deref()
                        .unwrap_or(std::path::Path::new("entities"))
                        .display(),
                    row + 1,
                    set.name
                )
            })?);
        }
        let columns: Vec<(usize, &Requested)> = self
            .requested
            .iter()
            .enumerate()
            .filter(|(_, r)| r.set == self.index)
            .collect();
        let names: Vec<String> = columns.iter().map(|(_, r)| r.feature.clone()).collect();
        let bytes: u64 = super::history::part_files(self.dir)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let partitions = options.partitions.unwrap_or(bytes / PARTITION_BYTES + 1).max(1);
        for partition in 0..partitions {
            let history = History::load_partition(
                self.dir,
                set,
                Some(names.as_slice()),
                (partitions > 1).then_some((partition, partitions)),
            )?;
            report.offline_rows += history.rows();
            let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
            for (row, key) in keys.iter().enumerate() {
                if partitions == 1 || super::history::partition_of(key, partitions) == partition {
                    by_key.entry(key.as_str()).or_default().push(row);
                }
            }
            for (key, rows) in by_key {
                let times: Vec<i64> = rows.iter().map(|&r| entity_rows[r].1).collect();
                for (row, found) in rows.iter().zip(history.as_of(key, &times)) {
                    match found {
                        Some(features) => {
                            for (c, r) in &columns {
                                values[*c][*row] = features.get(&r.feature).cloned().unwrap_or(Value::Null);
                            }
                        }
                        None => report.missing += columns.len() as u64,
                    }
                }
                *done += rows.len() as u64;
                progress.show(*done);
            }
        }
        Ok(())
    }
}

fn aggregate_names(set: &FeatureSetConfig) -> Vec<String> {
    set.aggregate_types().into_iter().map(|(name, _)| name).collect()
}

/// Writes the training set: the entity rows' columns (text, numbers as found), `t` as a UTC
/// timestamp, then the features (aggregates with their declared types; others by their
/// values: Int64, Float64, Boolean, or text), each marked in its field's metadata
/// ([`FEATURE_METADATA`]: `set:feature`) so a reference profile knows which columns are features.
fn write(
    options: &TrainingOptions,
    entity_rows: &[(Map<String, Json>, i64)],
    (requested, set_names): (&[Requested], &[&str]),
    values: Vec<Vec<Value>>,
    declared: &HashMap<String, bool>,
) -> anyhow::Result<()> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    let mut names: Vec<&String> = Vec::new();
    if let Some((first, _)) = entity_rows.first() {
        names.extend(first.keys().filter(|k| **k != options.time_field));
    }
    for name in names {
        let column: Vec<Value> = entity_rows
            .iter()
            .map(|(o, _)| o.get(name).map_or(Value::Null, crate::event::value_from_json))
            .collect();
        let (field, array) = array(name, column, None);
        fields.push(field);
        arrays.push(array);
    }
    fields.push(Field::new(
        &options.time_field,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    arrays.push(Arc::new(
        TimestampMicrosecondArray::from(entity_rows.iter().map(|(_, t)| *t).collect::<Vec<_>>()).with_timezone("UTC"),
    ));
    for (request, column) in requested.iter().zip(values) {
        let (field, array) = array(&request.column, column, declared.get(&request.feature).copied());
        let marked = format!("{}:{}", set_names[request.set], request.feature);
        let metadata = std::collections::BTreeMap::from([(FEATURE_METADATA.to_string(), marked)]);
        fields.push(field.with_metadata(metadata));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    if let Some(parent) = options.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = options.out.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    std::fs::rename(&tmp, &options.out)?;
    Ok(())
}

/// A column from values: `integer` is the declared type of an aggregate (true: Int64).
fn array(name: &str, values: Vec<Value>, integer: Option<bool>) -> (Field, ArrayRef) {
    use crate::targets::parquet::{value_column, value_type};
    let kind = match integer {
        Some(true) => DataType::Int64,
        Some(false) => DataType::Float64,
        None => value_type(values.iter()),
    };
    (Field::new(name, kind.clone(), true), value_column(values.iter(), &kind))
}
