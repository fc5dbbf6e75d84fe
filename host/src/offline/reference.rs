//! `sluice profile`: a reference profile from the exact rows a model trained on (a training
//! set's Parquet file) or from a feature set version's offline rows over a time range. Two
//! passes over the rows: the first profiles every feature (moments, quantile sketch, frequent
//! values) and fixes the bins; the second counts the numbers into those bins. The reference is
//! stored under the data folder (`catalog::references`) and summarised on stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::history::part_files;
use super::training::FEATURE_METADATA;
use crate::catalog::references::{check_name, References};
use crate::config::{Config, FeatureSetConfig, TargetConfig};
use crate::event::{Event, Value};
use crate::monitor::live::{segment_of, OTHER_SEGMENT};
use crate::monitor::profile::Profile;
use crate::monitor::reference::{Binned, Reference, ReferenceFeature};
use crate::rows::Rows;
use crate::sources::arrow_json::cell_value;
use crate::sources::decode::parse_time_text;

/// Options of `sluice profile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileOptions {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// The feature set.
    #[arg(long)]
    pub set: String,
    /// A training set's Parquet file: the columns `sluice training-set` marked as this set's
    /// features (another file: every column but the entity's and the time).
    #[arg(long, conflicts_with = "version", required_unless_present = "version")]
    pub training_set: Option<PathBuf>,
    /// The training set's time column, left out with the entity columns.
    #[arg(long, default_value = "t")]
    pub time_field: String,
    /// Or an offline version of the set: its Parquet rows.
    #[arg(long)]
    pub version: Option<u32>,
    /// With --version: rows from this event time on (RFC 3339 or epoch ms).
    #[arg(long, requires = "version")]
    pub from: Option<String>,
    /// With --version: rows before this event time.
    #[arg(long, requires = "version")]
    pub to: Option<String>,
    /// The reference's name (letters, digits, `-`, `_`, `.`).
    #[arg(long)]
    pub name: String,
    /// Only these features, comma-separated (default: every feature in the rows). A set's
    /// monitor judges only the features its reference has (the others get statistics).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
}

/// Which rows and columns a pass reads.
struct Source {
    files: Vec<PathBuf>,
    /// Columns left out: the entity's, the time, Sluice's own (`_seq`, `_key`, `_ts`).
    skip: Vec<String>,
    /// `[from, to)` on `_ts`, µs.
    range: Option<(i64, i64)>,
    /// `<set>:`, the mark of this set's columns in a training set.
    prefix: String,
    /// Only these features (empty: all).
    only: Vec<String>,
    /// Fields read even when not among `only`: the segment fields.
    keep: Vec<String>,
    /// Every feature column seen, for the error naming a feature asked for but absent.
    seen: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

/// Builds, stores and returns the reference, and where it went.
pub fn build(options: &ProfileOptions) -> anyhow::Result<(Reference, PathBuf)> {
    check_name(&options.name)?;
    build_in(&crate::config::load(&options.config)?, options)
}

/// [`build`] with the config loaded (`options.config` is not read).
pub fn build_in(config: &Config, options: &ProfileOptions) -> anyhow::Result<(Reference, PathBuf)> {
    check_name(&options.name)?;
    let set = pick_set(config, &options.set, options.version)?;
    let set = &set;
    let read = rows_of(config, set, options)?;
    let skip = |name: &str| {
        read.skip.iter().any(|s| s == name) || (!read.only.is_empty() && !read.only.iter().any(|o| o == name))
    };
    let mut profile = Profile::default();
    let mut segments = Segmenter::new(&read.keep);
    read.each(|rows| {
        profile.add_rows(rows, skip);
        segments.profile(rows, skip);
    })?;
    let missing: Vec<&String> = read.only.iter().filter(|f| !read.seen.borrow().contains(*f)).collect();
    if !missing.is_empty() {
        let seen: Vec<String> = read.seen.borrow().iter().cloned().collect();
        anyhow::bail!(
            "--features: {} not among the features of the rows (they have: {})",
            missing
                .iter()
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(", "),
            seen.join(", ")
        );
    }
    anyhow::ensure!(
        profile.rows > 0,
        "no rows to profile: {} file(s) read{}, none with a row in the range asked (from {} to {})",
        read.files.len(),
        read.files
            .first()
            .and_then(|f| f.parent()?.parent())
            .map(|dir| format!(" under {}", dir.display()))
            .unwrap_or_default(),
        options.from.as_deref().unwrap_or("the start"),
        options.to.as_deref().unwrap_or("the end"),
    );
    let source = match (&options.training_set, options.version) {
        (Some(file), _) => format!("training set {}", file.display()),
        (None, Some(v)) => format!(
            "offline rows of {}@v{v} from {} to {}",
            set.name,
            options.from.as_deref().unwrap_or("the start"),
            options.to.as_deref().unwrap_or("the end")
        ),
        _ => unreachable!("clap requires one of them"),
    };
    if let Some(field) = read.keep.iter().find(|f| !read.seen.borrow().contains(*f)) {
        let seen: Vec<String> = read.seen.borrow().iter().cloned().collect();
        anyhow::bail!(
            "monitor.segments: \"{field}\" is not in the rows, so they cannot be sliced by it (they have: {})",
            seen.join(", ")
        );
    }
    let mut reference = Reference::from_profile(&profile, &options.name, &set.name, set.version, source.clone());
    let max = set.monitor.as_ref().map_or(0, |m| m.max_segments);
    let parts = segments.top(max);
    for (value, part) in &parts {
        let mut of = Reference::from_profile(part, &options.name, &set.name, set.version, source.clone());
        of.name = format!("{}[{value}]", options.name);
        reference.segments.insert(value.clone(), of);
    }
    reference.segment_fields = if reference.segments.is_empty() {
        Vec::new()
    } else {
        read.keep.clone()
    };
    let mut counted: BTreeMap<String, Binned> = BTreeMap::new();
    let mut counted_of: BTreeMap<String, BTreeMap<String, Binned>> = BTreeMap::new();
    read.each(|rows| {
        count_numbers(&reference, rows, None, &mut counted);
        for (value, only) in segments.split(rows, &reference.segments) {
            let part = &reference.segments[&value];
            count_numbers(part, rows, Some(&only), counted_of.entry(value).or_default());
        }
    })?;
    reference.count_numbers(&counted);
    for (value, counted) in &counted_of {
        if let Some(part) = reference.segments.get_mut(value) {
            part.count_numbers(counted);
        }
    }
    let path = References::new(&config.resolve(&config.host.data_dir)).save(&reference)?;
    Ok((reference, path))
}

/// The set's definition: the version asked for, else the served one, else the highest (see
/// `catalog::definition_of`); labelled with the version whose rows are read.
fn pick_set(config: &Config, name: &str, version: Option<u32>) -> anyhow::Result<FeatureSetConfig> {
    crate::catalog::definition_of(config, name, version).ok_or_else(|| {
        let names: Vec<&str> = config.feature_sets.iter().map(|s| s.name.as_str()).collect();
        anyhow::anyhow!("no feature set \"{name}\" in the config (it has: {})", names.join(", "))
    })
}

fn rows_of(config: &Config, set: &FeatureSetConfig, options: &ProfileOptions) -> anyhow::Result<Source> {
    // Offline rows: not the entity, time or plugin version fields (`_ts` is internal).
    let mut skip = set.not_features();
    let (files, range) = match (&options.training_set, options.version) {
        (Some(file), _) => {
            anyhow::ensure!(file.exists(), "--training-set {}: no such file", file.display());
            skip.push(options.time_field.clone());
            (vec![file.clone()], None)
        }
        (None, Some(version)) => {
            let root = set.targets.iter().find_map(|t| match t {
                TargetConfig::Parquet { root, .. } => Some(config.resolve(root)),
                _ => None,
            });
            let Some(root) = root else {
                anyhow::bail!(
                    "feature set {} has no parquet target: profile a training set instead",
                    set.name
                );
            };
            let dir = root.join(&set.name).join(format!("v{version}"));
            let files = part_files(&dir);
            anyhow::ensure!(
                !files.is_empty(),
                "no offline rows of {}@v{version} under {}",
                set.name,
                dir.display()
            );
            let time = |t: &Option<String>, default: i64| -> anyhow::Result<i64> {
                Ok(t.as_deref()
                    .map(|t| parse_time_text(t, "--from/--to"))
                    .transpose()?
                    .unwrap_or(default))
            };
            (
                files,
                Some((time(&options.from, i64::MIN)?, time(&options.to, i64::MAX)?)),
            )
        }
        _ => anyhow::bail!("expected --training-set FILE or --version N"),
    };
    Ok(Source {
        files,
        skip,
        range,
        prefix: format!("{}:", set.name),
        only: options.features.clone(),
        keep: segment_fields(set),
        seen: Default::default(),
    })
}

impl Source {
    /// Calls `f` with every record batch of the files as rows (features by name, Sluice's own
    /// columns and those out of the range left out).
    fn each(&self, mut f: impl FnMut(&Rows)) -> anyhow::Result<()> {
        for file in &self.files {
            let open = std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(open)
                .and_then(|b| b.build())
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for batch in reader {
                let batch = batch.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                f(&self.rows(&batch));
            }
        }
        Ok(())
    }

    fn rows(&self, batch: &RecordBatch) -> Rows {
        let schema = batch.schema();
        let ts = schema.index_of("_ts").ok();
        // A Sluice training set marks its feature columns (`set:feature`): those of this set,
        // by their feature names. Other files: every column but Sluice's own.
        let marked = |i: usize| schema.field(i).metadata().get(FEATURE_METADATA).cloned();
        let any_marked = (0..schema.fields().len()).any(|i| marked(i).is_some());
        let columns: Vec<(usize, String)> = (0..schema.fields().len())
            .filter_map(|i| {
                let name = schema.field(i).name();
                match marked(i) {
                    Some(m) => Some((i, m.strip_prefix(&self.prefix)?.to_string())),
                    None if any_marked || name.starts_with('_') => None,
                    None => Some((i, name.clone())),
                }
            })
            .collect();
        let mut seen = self.seen.borrow_mut();
        seen.extend(
            columns
                .iter()
                .filter(|(_, name)| !self.skip.contains(name))
                .map(|(_, name)| name.clone()),
        );
        let columns: Vec<(usize, String)> = columns
            .into_iter()
            .filter(|(_, name)| self.only.is_empty() || self.only.contains(name) || self.keep.contains(name))
            .collect();
        let names = columns.iter().map(|(_, name)| name.clone()).collect();
        let mut rows = Rows::new(names);
        for r in 0..batch.num_rows() {
            if let (Some((from, to)), Some(ts)) = (self.range, ts) {
                let t = match cell_value(batch.column(ts).as_ref(), r) {
                    Value::Integer(t) => t,
                    _ => i64::MIN,
                };
                if t < from || t >= to {
                    continue;
                }
            }
            let values = columns
                .iter()
                .map(|&(c, _)| cell_value(batch.column(c).as_ref(), r))
                .collect();
            rows.push(
                r as u64,
                Event {
                    key: String::new(),
                    time: 0,
                    values,
                },
            );
        }
        rows
    }
}

/// The set's segment fields (`[feature_set.monitor] segments`).
fn segment_fields(set: &FeatureSetConfig) -> Vec<String> {
    set.monitor.as_ref().map(|m| m.segments.clone()).unwrap_or_default()
}

/// A profile per segment value (the values of the segment fields), up to [`MAX_DISTINCT`]
/// distinct ones (later values go to "other" at once); [`Segmenter::top`] keeps the most
/// frequent and merges the rest into "other".
struct Segmenter {
    fields: Vec<String>,
    profiles: BTreeMap<String, Profile>,
}

/// Distinct segment values profiled apart before the rest is gathered as "other".
const MAX_DISTINCT: usize = 1000;

impl Segmenter {
    fn new(fields: &[String]) -> Segmenter {
        Segmenter {
            fields: fields.to_vec(),
            profiles: BTreeMap::new(),
        }
    }

    /// Each row's segment (`None`: not segmented).
    fn of(&self, rows: &Rows) -> Option<Vec<String>> {
        if self.fields.is_empty() {
            return None;
        }
        let at: Vec<Option<usize>> = self
            .fields
            .iter()
            .map(|f| rows.batch.fields.iter().position(|n| n == f))
            .collect();
        Some(rows.batch.events.iter().map(|e| segment_of(e, &at)).collect())
    }

    fn profile(&mut self, rows: &Rows, skip: impl Fn(&str) -> bool + Copy) {
        let Some(values) = self.of(rows) else { return };
        let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, value) in values.into_iter().enumerate() {
            let value = if self.profiles.len() >= MAX_DISTINCT && !self.profiles.contains_key(&value) {
                OTHER_SEGMENT.to_string()
            } else {
                value
            };
            by.entry(value).or_default().push(i);
        }
        for (value, only) in by {
            self.profiles
                .entry(value)
                .or_default()
                .add_rows_of(rows, Some(&only), skip);
        }
    }

    /// The `max` segments with the most rows, and "other" with the rest (if any).
    fn top(&mut self, max: usize) -> BTreeMap<String, Profile> {
        let mut all: Vec<(String, Profile)> = std::mem::take(&mut self.profiles).into_iter().collect();
        all.sort_by(|a, b| b.1.rows.cmp(&a.1.rows).then_with(|| a.0.cmp(&b.0)));
        let mut kept = BTreeMap::new();
        let mut other: Option<Profile> = None;
        for (value, profile) in all {
            if kept.len() < max && value != OTHER_SEGMENT {
                kept.insert(value, profile);
            } else {
                other.get_or_insert_with(Profile::default).merge(&profile);
            }
        }
        if let Some(other) = other {
            kept.insert(OTHER_SEGMENT.to_string(), other);
        }
        kept
    }

    /// The rows of each segment the reference has (others under "other"), as indices.
    fn split(&self, rows: &Rows, segments: &BTreeMap<String, Reference>) -> BTreeMap<String, Vec<usize>> {
        let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let Some(values) = self.of(rows) else { return by };
        for (i, value) in values.into_iter().enumerate() {
            let value = if segments.contains_key(&value) {
                value
            } else {
                OTHER_SEGMENT.to_string()
            };
            if segments.contains_key(&value) {
                by.entry(value).or_default().push(i);
            }
        }
        by
    }
}

/// Counts a batch's numbers (the rows `only`, or all) into the reference's bins.
fn count_numbers(reference: &Reference, rows: &Rows, only: Option<&[usize]>, counted: &mut BTreeMap<String, Binned>) {
    for (at, name) in rows.batch.fields.iter().enumerate() {
        let Some(feature @ ReferenceFeature::Numeric { edges, .. }) = reference.features.get(name) else {
            continue;
        };
        let binned = counted.entry(name.clone()).or_insert_with(|| feature.binned());
        let events: Box<dyn Iterator<Item = &Event>> = match only {
            None => Box::new(rows.batch.events.iter()),
            Some(only) => Box::new(only.iter().map(|&i| &rows.batch.events[i])),
        };
        for event in events {
            match event.values.get(at) {
                Some(Value::Integer(i)) => binned.add_number(edges, *i as f64),
                Some(Value::Float(x)) => binned.add_number(edges, *x),
                _ => {}
            }
        }
    }
}

/// The summary `sluice profile` prints: one line per feature.
pub fn summary(reference: &Reference, path: &Path) -> String {
    let mut out = format!(
        "reference \"{}\" of {}@v{}: {} rows ({}), stored in {}\n",
        reference.name,
        reference.set,
        reference.version,
        reference.rows,
        reference.source,
        path.display()
    );
    for (name, feature) in &reference.features {
        let line = match feature {
            ReferenceFeature::Numeric {
                count,
                nulls,
                mean,
                std,
                quantiles,
                edges,
                ..
            } => {
                let q = |p: usize| quantiles.get(p).map_or("-".to_string(), |v| format!("{v:.4}"));
                format!(
                    "  {name:<28} numeric      {count:>9} values {nulls:>7} null  mean {mean:.4}  std {std:.4}  \
                     p5 {}  p50 {}  p95 {}  ({} bins)\n",
                    q(5),
                    q(50),
                    q(95),
                    edges.len() + 1
                )
            }
            ReferenceFeature::Categorical {
                count,
                nulls,
                distinct,
                values,
                shares,
            } => {
                let top: Vec<String> = values
                    .iter()
                    .zip(shares)
                    .take(3)
                    .map(|(v, s)| format!("{v} {:.1}%", s * 100.0))
                    .collect();
                format!(
                    "  {name:<28} categorical  {count:>9} values {nulls:>7} null  {distinct} distinct  top: {}\n",
                    top.join(", ")
                )
            }
        };
        out.push_str(&line);
    }
    if !reference.segments.is_empty() {
        let parts: Vec<String> = reference
            .segments
            .iter()
            .map(|(value, part)| format!("{value} ({} rows)", part.rows))
            .collect();
        out.push_str(&format!(
            "  segments by {}: {}\n",
            reference.segment_fields.join(", "),
            parts.join(", ")
        ));
    }
    out
}
