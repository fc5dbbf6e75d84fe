//! `sluice verify-parity`: the skew check. For a sample of a feature set's entities, the
//! online store's values as of now are compared with the offline rows evaluated at now by the
//! point-in-time rule ([`super::history`]); mismatches are counted per feature. Run it after
//! a deploy: a mismatch means the two paths disagree (or the offline writer is behind: parts
//! are committed every `roll_seconds`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::TargetConfig;
use crate::event::Value;
use crate::runtime::Services;

use super::history::History;

/// Options of `sluice verify-parity`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParityOptions {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// The feature set (its highest version in the config, or --version).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub set: Option<String>,
    /// Instead of a set: compare a model's captured lookups (the values as served) with what
    /// the offline rows give for each at its capture time.
    #[arg(long)]
    pub model: Option<String>,
    /// The version to check.
    #[arg(long)]
    pub version: Option<u32>,
    /// Entities compared (spread over the offline entities, in key order).
    #[arg(long, default_value_t = 1000)]
    pub sample: usize,
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParityReport {
    /// Entities compared.
    pub entities: usize,
    /// Values compared.
    pub values: u64,
    /// Per feature: (mismatches, one example `entity: online vs offline`).
    pub mismatches: BTreeMap<String, (u64, String)>,
    /// Entities with an offline row but none online (or the reverse).
    pub missing: Vec<String>,
}

impl ParityReport {
    /// Whether online and offline agree.
    pub fn agrees(&self) -> bool {
        self.mismatches.is_empty() && self.missing.is_empty()
    }
}

/// Equal, floats within a relative 1e-9 (sums may be added in another order).
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        (Value::Integer(x), Value::Float(y)) | (Value::Float(y), Value::Integer(x)) => *x as f64 == *y,
        _ => a == b,
    }
}

/// Runs the check.
pub fn run(options: &ParityOptions) -> anyhow::Result<ParityReport> {
    let config = crate::config::load(&options.config)?;
    let name = options
        .set
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--set: expected a feature set's name (or --model)"))?;
    let set = config
        .feature_sets
        .iter()
        .filter(|s| s.name == name && options.version.is_none_or(|v| v == s.version))
        .max_by_key(|s| s.version)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no feature set \"{}\" (version {:?}) in the config",
                name,
                options.version
            )
        })?;
    let root = set
        .targets
        .iter()
        .find_map(|t| match t {
            TargetConfig::Parquet { root, .. } => Some(config.resolve(root)),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("feature set {}: no parquet target to compare with", set.name))?;
    let history = History::load(&root.join(&set.name).join(format!("v{}", set.version)), set, None)?;
    let mut entities: Vec<&str> = history.entities().collect();
    entities.sort_unstable();
    let step = (entities.len() / options.sample.max(1)).max(1);
    let sample: Vec<&str> = entities.iter().step_by(step).take(options.sample).copied().collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1000;
    let plan = crate::plan::SetPlan::compile(&config, set)?;
    let view = &plan.view;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let online = runtime.block_on(async {
        let services = Services::connect(&config).await?;
        let mut rows = Vec::with_capacity(sample.len());
        for chunk in sample.chunks(500) {
            rows.extend(
                view.read(&*services.store, chunk, now)
                    .await
                    .map_err(anyhow::Error::msg)?,
            );
        }
        anyhow::Ok(rows)
    })?;
    let mut report = ParityReport {
        entities: sample.len(),
        ..Default::default()
    };
    // As lookups do (`outside_max_age`), an online row older than the TTL by event time is
    // not a value; the offline rule gives null there too.
    let ttl = plan.ttl;
    for (entity, online) in sample.iter().zip(online) {
        let online = online.filter(|row| ttl.is_none_or(|ttl| now - row.time <= ttl));
        let offline = history.as_of(entity, &[now]).pop().flatten();
        let (online, offline) = match (online, offline) {
            (Some(online), Some(offline)) => (online, offline),
            (None, None) => continue,
            _ => {
                report.missing.push(entity.to_string());
                continue;
            }
        };
        for (name, value) in &online.values {
            let other = offline.get(name).unwrap_or(&Value::Null);
            report.values += 1;
            if !same(value, other) {
                let entry = report.mismatches.entry(name.clone()).or_insert_with(|| {
                    (
                        0,
                        format!(
                            "entity \"{entity}\": online {} vs offline {}",
                            crate::event::json_text(value),
                            crate::event::json_text(other)
                        ),
                    )
                });
                entry.0 += 1;
            }
        }
    }
    Ok(report)
}
