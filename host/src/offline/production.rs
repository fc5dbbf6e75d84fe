//! `sluice training-set --model`: retraining data from a model's production set, one row per
//! captured lookup and entity — the features exactly as they were served, the prediction made
//! for that request (and entity), and the label that came later, joined by request id, or, for
//! a label given by entity and time, to that entity's last captured lookup at or before the
//! time, within the model's `label_within`.
//!
//! `sluice verify-parity --model` ([`parity`]) compares each captured lookup's values with what
//! the sets' offline rows give for that entity at the capture time.
//!
//! Each record counts once: a lookup recorded twice (a retry with the same request id) keeps
//! its first record, a prediction or label stored twice (beyond JetStream's duplicate window)
//! its first; the production set itself holds each record once ([`crate::capture`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::history::part_files;
use super::parity::ParityReport;
use super::training::FEATURE_METADATA;
use crate::capture::columns;
use crate::config::{Config, ModelConfig, ValueType};
use crate::event::Value;
use crate::sources::arrow_json::cell_value;
use crate::targets::parquet::{value_column, value_type};

/// What to build.
#[derive(Debug, Clone)]
pub struct ModelTraining<'a> {
    /// The model.
    pub model: &'a ModelConfig,
    /// Lookups captured at or after this time (µs), when given.
    pub from: Option<i64>,
    /// Lookups captured before this time (µs), when given.
    pub to: Option<i64>,
    /// Leave out the lookups no label came for.
    pub labelled_only: bool,
}

/// What a model's training set holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelTrainingReport {
    /// Output rows: captured lookups and entities (in the time range; labelled ones only if
    /// asked).
    pub rows: u64,
    /// Of those, rows with a prediction.
    pub predicted: u64,
    /// Of those, rows with a label.
    pub labelled: u64,
    /// The served feature columns, in the order first served.
    pub features: Vec<String>,
    /// Records read from the production set.
    pub records: u64,
    /// Records left out as repeats of one already read (a lookup retried with its request id).
    pub repeats: u64,
}

/// One row of the production set.
struct Record {
    seq: u64,
    request_id: String,
    time: i64,
    kind: String,
    entity: Option<String>,
    at: Option<i64>,
    values: Vec<(usize, Value)>,
}

/// A served row and what joined it.
struct Served {
    record: Record,
    prediction: Option<usize>,
    label: Option<usize>,
}

/// Reads every row of `dir` (a production set's version folder), with the column names.
fn read(dir: &Path) -> anyhow::Result<(Vec<Record>, Vec<String>)> {
    let mut names: Vec<String> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut records = Vec::new();
    for part in part_files(dir) {
        let file = std::fs::File::open(&part)?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| anyhow::anyhow!("{}: {e}", part.display()))?;
        for batch in reader {
            let batch = batch.map_err(|e| anyhow::anyhow!("{}: {e}", part.display()))?;
            let schema = batch.schema();
            let mut special: HashMap<&str, usize> = HashMap::new();
            let mut values: Vec<(usize, usize)> = Vec::new();
            for (i, field) in schema.fields().iter().enumerate() {
                let name = field.name().as_str();
                match name {
                    "_seq" | "_key" | "_ts" | columns::KIND | columns::ENTITY | columns::AT => {
                        special.insert(name, i);
                    }
                    _ => {
                        let at = *position.entry(name.to_string()).or_insert_with(|| {
                            names.push(name.to_string());
                            names.len() - 1
                        });
                        values.push((i, at));
                    }
                }
            }
            let cell = |name: &str, r: usize| {
                special
                    .get(name)
                    .map_or(Value::Null, |&i| cell_value(batch.column(i), r))
            };
            for r in 0..batch.num_rows() {
                let (Value::Integer(seq), Value::Text(request_id), Value::Integer(time), Value::Text(kind)) =
                    (cell("_seq", r), cell("_key", r), cell("_ts", r), cell(columns::KIND, r))
                else {
                    anyhow::bail!(
                        "{}: not a production set part (no _seq, _key, _ts or kind)",
                        part.display()
                    );
                };
                let entity = match cell(columns::ENTITY, r) {
                    Value::Text(e) => Some(e),
                    _ => None,
                };
                let at = match cell(columns::AT, r) {
                    Value::Integer(ms) => Some(ms * 1000),
                    _ => None,
                };
                let values = values
                    .iter()
                    .map(|&(i, at)| (at, cell_value(batch.column(i), r)))
                    .filter(|(_, v)| !matches!(v, Value::Null))
                    .collect();
                records.push(Record {
                    seq: seq as u64,
                    request_id,
                    time,
                    kind,
                    entity,
                    at,
                    values,
                });
            }
        }
    }
    records.sort_by_key(|r| r.seq);
    Ok((records, names))
}

/// The Arrow type of a declared prediction or label field.
fn declared(kind: ValueType) -> DataType {
    match kind {
        ValueType::Float => DataType::Float64,
        ValueType::Int => DataType::Int64,
        ValueType::Bool => DataType::Boolean,
        ValueType::String => DataType::Utf8,
    }
}

/// Builds the training set of `job.model` from its production set and writes it to `out`:
/// `request_id`, `entity`, `captured_at`, then the served features (`set:feature`, marked in
/// their field's metadata as a training set's features are), the prediction fields and the
/// label fields, by their declared names and types.
pub fn build(config: &Config, job: &ModelTraining<'_>, out: &Path) -> anyhow::Result<ModelTrainingReport> {
    let model = job.model;
    let dir = crate::capture::production_root(config).join(&model.name).join("v1");
    if !dir.is_dir() {
        anyhow::bail!(
            "model \"{}\" has no production set yet ({} does not exist): `sluice run` writes it from the \
             lookups captured with \"capture\": {{\"model\": \"{}\"}}",
            model.name,
            dir.display(),
            model.name
        );
    }
    let (records, names) = read(&dir)?;
    let mut report = ModelTrainingReport {
        records: records.len() as u64,
        ..Default::default()
    };
    let mut served: Vec<Served> = Vec::new();
    let mut seen: HashSet<(String, Option<String>)> = HashSet::new();
    let mut predictions: HashMap<(String, Option<String>), usize> = HashMap::new();
    let mut labels: HashMap<(String, Option<String>), usize> = HashMap::new();
    let mut by_entity: Vec<usize> = Vec::new();
    let mut others: Vec<Record> = Vec::new();
    for record in records {
        let key = (record.request_id.clone(), record.entity.clone());
        match record.kind.as_str() {
            "served" => {
                if seen.insert(key) {
                    served.push(Served {
                        record,
                        prediction: None,
                        label: None,
                    });
                } else {
                    report.repeats += 1;
                }
            }
            "prediction" | "label" => {
                let index = others.len();
                let first = match (record.kind.as_str(), record.at) {
                    ("prediction", _) => Some(*predictions.entry(key).or_insert(index)),
                    (_, None) => Some(*labels.entry(key).or_insert(index)),
                    (_, Some(_)) => {
                        by_entity.push(index);
                        None
                    }
                };
                if first.is_some_and(|first| first != index) {
                    report.repeats += 1;
                }
                others.push(record);
            }
            _ => {}
        }
    }
    // By request id (and entity, for a lookup of several), else by request id alone.
    let find = |map: &HashMap<(String, Option<String>), usize>, row: &Record| {
        map.get(&(row.request_id.clone(), row.entity.clone()))
            .or_else(|| map.get(&(row.request_id.clone(), None)))
            .copied()
    };
    for row in &mut served {
        row.prediction = find(&predictions, &row.record);
        row.label = find(&labels, &row.record);
    }
    // A label by entity and time: that entity's last lookup at or before the time, within
    // `label_within`, unless a label by request id came for it.
    let mut lookups: HashMap<&str, Vec<(i64, u64, usize)>> = HashMap::new();
    for (i, row) in served.iter().enumerate() {
        if let Some(entity) = &row.record.entity {
            lookups
                .entry(entity)
                .or_default()
                .push((row.record.time, row.record.seq, i));
        }
    }
    lookups.values_mut().for_each(|l| l.sort_unstable());
    let within = model.label_within_micros();
    let mut assigned: Vec<(usize, usize)> = Vec::new();
    for &label in &by_entity {
        let (Some(entity), Some(at)) = (&others[label].entity, others[label].at) else {
            continue;
        };
        let Some(rows) = lookups.get(entity.as_str()) else {
            continue;
        };
        let before = rows.partition_point(|(time, _, _)| *time <= at);
        if let Some(&(time, _, row)) = before.checked_sub(1).map(|i| &rows[i]) {
            if at - time <= within {
                assigned.push((row, label));
            }
        }
    }
    for (row, label) in assigned {
        if served[row].label.is_none() {
            served[row].label = Some(label);
        }
    }
    let kept: Vec<&Served> = served
        .iter()
        .filter(|row| job.from.is_none_or(|from| row.record.time >= from))
        .filter(|row| job.to.is_none_or(|to| row.record.time < to))
        .filter(|row| !job.labelled_only || row.label.is_some())
        .collect();
    report.rows = kept.len() as u64;
    report.predicted = kept.iter().filter(|r| r.prediction.is_some()).count() as u64;
    report.labelled = kept.iter().filter(|r| r.label.is_some()).count() as u64;

    // The columns: the row's identity, the features in the order first served, the declared
    // predictions and labels.
    let mut fields = vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, true),
        Field::new(
            "captured_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            kept.iter().map(|r| r.record.request_id.as_str()),
        )),
        Arc::new(StringArray::from_iter(kept.iter().map(|r| r.record.entity.as_deref()))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(kept.iter().map(|r| r.record.time)).with_timezone("UTC")),
    ];
    let not_features = [columns::VECTOR, columns::VERSIONS, columns::SERVED];
    let value_of = |record: &Record, column: usize| {
        record
            .values
            .iter()
            .find(|(at, _)| *at == column)
            .map_or(Value::Null, |(_, v)| v.clone())
    };
    for (column, name) in names.iter().enumerate() {
        if not_features.contains(&name.as_str())
            || name.starts_with(columns::PREDICTION)
            || name.starts_with(columns::LABEL)
        {
            continue;
        }
        let values: Vec<Value> = kept.iter().map(|r| value_of(&r.record, column)).collect();
        let kind = value_type(values.iter());
        let metadata = std::collections::HashMap::from([(FEATURE_METADATA.to_string(), name.clone())]);
        fields.push(Field::new(name, kind.clone(), true).with_metadata(metadata));
        arrays.push(value_column(values.iter(), &kind));
        report.features.push(name.clone());
    }
    for (prefix, declared_fields, joined) in [
        (
            columns::PREDICTION,
            &model.predictions,
            kept.iter().map(|r| r.prediction).collect::<Vec<_>>(),
        ),
        (
            columns::LABEL,
            &model.labels,
            kept.iter().map(|r| r.label).collect::<Vec<_>>(),
        ),
    ] {
        for (field, kind) in declared_fields {
            let column = names.iter().position(|n| *n == format!("{prefix}{field}"));
            let values: Vec<Value> = joined
                .iter()
                .map(|other| match (other, column) {
                    (Some(i), Some(column)) => value_of(&others[*i], column),
                    _ => Value::Null,
                })
                .collect();
            let kind = declared(*kind);
            fields.push(Field::new(field, kind.clone(), true));
            arrays.push(value_column(values.iter(), &kind));
        }
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    crate::targets::parquet::write_file(out, &batch)?;
    Ok(report)
}

/// The served-vs-offline check of `model`: each captured lookup's feature values (first record
/// of each request and entity) against the offline rows of the set version it read, evaluated
/// at the capture time by the point-in-time rule. A set version without a Parquet target is
/// named in `skipped` and not compared.
pub fn parity(config: &Config, model: &ModelConfig) -> anyhow::Result<(ParityReport, Vec<String>)> {
    use std::collections::BTreeMap;
    let dir = crate::capture::production_root(config).join(&model.name).join("v1");
    if !dir.is_dir() {
        anyhow::bail!(
            "model \"{}\" has no production set yet ({} does not exist)",
            model.name,
            dir.display()
        );
    }
    let (records, names) = read(&dir)?;
    let versions_at = names.iter().position(|n| n == columns::VERSIONS);
    // Per set version: its served rows (request, entity, time, values by feature).
    let mut by_set: BTreeMap<(String, u32), Vec<(String, i64, Vec<(String, Value)>)>> = BTreeMap::new();
    let mut seen: HashSet<(String, Option<String>)> = HashSet::new();
    for record in records.into_iter().filter(|r| r.kind == "served") {
        if !seen.insert((record.request_id.clone(), record.entity.clone())) {
            continue;
        }
        let Some(entity) = record.entity.clone() else { continue };
        let versions: HashMap<String, u32> = versions_at
            .and_then(|at| record.values.iter().find(|(c, _)| *c == at))
            .and_then(|(_, v)| match v {
                Value::Text(text) | Value::Json(text) => serde_json::from_str(text).ok(),
                _ => None,
            })
            .unwrap_or_default();
        let mut per_set: BTreeMap<(String, u32), Vec<(String, Value)>> = BTreeMap::new();
        for (column, value) in &record.values {
            let Some((set, feature)) = names[*column].split_once(':') else {
                continue;
            };
            let Some(&version) = versions.get(set) else { continue };
            per_set
                .entry((set.to_string(), version))
                .or_default()
                .push((feature.to_string(), value.clone()));
        }
        for (key, values) in per_set {
            by_set
                .entry(key)
                .or_default()
                .push((entity.clone(), record.time, values));
        }
    }
    let mut report = ParityReport::default();
    let mut skipped = Vec::new();
    let mut entities: HashSet<String> = HashSet::new();
    for ((set_name, version), rows) in by_set {
        let Some(set) = config
            .feature_sets
            .iter()
            .find(|s| s.name == set_name && s.version == version)
        else {
            skipped.push(format!("{set_name}@v{version}: not in the config"));
            continue;
        };
        let Some(root) = set.targets.iter().find_map(|t| match t {
            crate::config::TargetConfig::Parquet { root, .. } => Some(config.resolve(root)),
            _ => None,
        }) else {
            skipped.push(format!("{set_name}@v{version}: no parquet target to compare with"));
            continue;
        };
        let wanted: Vec<String> = rows
            .iter()
            .flat_map(|(_, _, values)| values.iter().map(|(f, _)| f.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let history = super::history::History::load(
            &root.join(&set.name).join(format!("v{}", set.version)),
            set,
            Some(&wanted),
        )?;
        for (entity, time, values) in rows {
            entities.insert(entity.clone());
            let offline = history.as_of(&entity, &[time]).pop().flatten();
            let Some(offline) = offline else {
                // No offline row at that time: the lookup found nothing too, or it did and the
                // offline rows lack it.
                if values.iter().any(|(_, v)| !matches!(v, Value::Null)) {
                    report
                        .missing
                        .push(format!("{entity} ({set_name}) at {}", crate::event_time::rfc3339(time)));
                }
                continue;
            };
            for (feature, served) in values {
                let other = offline.get(&feature).unwrap_or(&Value::Null);
                report.values += 1;
                if !super::parity::same(&served, other) {
                    let name = format!("{set_name}:{feature}");
                    let entry = report.mismatches.entry(name).or_insert_with(|| {
                        (
                            0,
                            format!(
                                "entity \"{entity}\" at {}: served {} vs offline {}",
                                crate::event_time::rfc3339(time),
                                crate::event::json_text(&served),
                                crate::event::json_text(other)
                            ),
                        )
                    });
                    entry.0 += 1;
                }
            }
        }
    }
    report.entities = entities.len();
    Ok((report, skipped))
}
