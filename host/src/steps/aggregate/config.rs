//! `kind = "aggregate"`: its config, how it resolves (the features it adds), how it is built.

use indexmap::IndexMap;
use serde::Deserialize;

use super::{step::Aggregate, AggregateSpec};
use crate::steps::{BuildContext, Resolve, Step, StepError, StepSpec};

/// Per-key aggregates over time windows, as of each event's time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Field holding the key (default: the entity; tiles then live in the entity's hash and
    /// online lookups evaluate them as of the request time).
    #[serde(default)]
    pub key: Option<String>,
    /// Bucket period: every window is a whole number of periods (`10m`, `1h`).
    pub period: String,
    /// Keys kept in memory at most; the least recently used are evicted (and reloaded from
    /// Redis on their next event).
    #[serde(default = "max_keys")]
    pub max_keys: usize,
    /// What to aggregate.
    pub aggregations: Vec<AggregationConfig>,
}

fn max_keys() -> usize {
    100_000
}

/// One aggregated field of an `aggregate` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// The input field.
    pub field: String,
    /// Functions: count, sum, mean, stddev, variance, min, max, first, last, distinct, median,
    /// p1 … p99.
    pub functions: Vec<String>,
    /// Windows: sliding (`1h`, `24h`, `7d`), `tumbling:1h`, `since_start`.
    pub windows: Vec<String>,
    /// Default feature name (`<field>_<function>_<window>`) → the name to use instead.
    #[serde(default)]
    pub names: IndexMap<String, String>,
}

impl StepSpec for AggregateConfig {
    fn resolve(&self, step: &mut Resolve) {
        if let Some(k) = &self.key {
            step.need(k, "key");
        }
        for (a, agg) in self.aggregations.iter().enumerate() {
            step.need(&agg.field, &format!("aggregations[{a}].field"));
        }
        if self.max_keys == 0 {
            step.report("max_keys", "expected at least 1 key in memory".into());
        }
        let set = step.set;
        if set.streamed && !set.online {
            step.report(
                "",
                "an aggregate step keeps its state in Redis with each batch, so a restart resumes it: add a \
                 `kind = \"redis\"` target"
                    .into(),
            );
        }
        // A bad lateness is reported once, at its own key.
        match AggregateSpec::new(step.id, &self.period, set.lateness, &self.aggregations) {
            Ok(spec) => {
                for name in spec.feature_names() {
                    step.add(name);
                }
            }
            Err(problems) => {
                for problem in problems {
                    step.report("", problem);
                }
                // Which fields it would produce is unknown: later steps are not checked.
                step.forget_fields();
            }
        }
    }

    fn build(&self, id: String, context: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        let spec = AggregateSpec::new(&id, &self.period, context.lateness, &self.aggregations).map_err(|problems| {
            StepError::Invalid {
                step: id.clone(),
                message: problems.join("; "),
            }
        })?;
        Ok(Box::new(Aggregate::new(
            id,
            spec,
            self.key.clone(),
            self.max_keys,
            context.tiles.clone(),
            context.shutdown.clone(),
        )))
    }
}
