//! `impute`: fills null fields with a constant, or with the running mean of the values the
//! step has seen (kept in memory; it restarts from the first values after a restart).

use indexmap::IndexMap;

use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::event::{value_from_json, Value};
use crate::rows::{Failure, Rows};

/// `kind = "impute"`: fills null fields with a constant or the running mean of the field.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImputeConfig {
    /// Field → constant to use when it is null.
    #[serde(default)]
    pub constant: IndexMap<String, toml::Value>,
    /// Numeric fields to fill with the mean of the values seen so far.
    #[serde(default)]
    pub mean: Vec<String>,
}

impl StepSpec for ImputeConfig {
    fn resolve(&self, step: &mut Resolve) {
        if self.constant.is_empty() && self.mean.is_empty() {
            step.report("", "expected `constant` and/or `mean` fields to fill".into());
        }
        for f in self.constant.keys().chain(self.mean.iter()) {
            step.need(f, "fields");
        }
    }

    fn build(&self, _: String, _: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(Impute::new(&self.constant, &self.mean)))
    }
}

pub(crate) struct Impute {
    constant: Vec<(String, Value)>,
    mean: Vec<(String, f64, u64)>,
}

impl Impute {
    pub(crate) fn new(constant: &IndexMap<String, toml::Value>, mean: &[String]) -> Self {
        let constant = constant
            .iter()
            .map(|(f, v)| (f.clone(), value_from_json(&serde_json::to_value(v).unwrap_or_default())))
            .collect();
        Impute {
            constant,
            mean: mean.iter().map(|f| (f.clone(), 0.0, 0)).collect(),
        }
    }
}

fn is_null(values: &[Value], at: usize) -> bool {
    matches!(values.get(at), None | Some(Value::Null))
}

fn set(values: &mut Vec<Value>, at: usize, value: Value) {
    if values.len() <= at {
        values.resize(at + 1, Value::Null);
    }
    values[at] = value;
}

impl Step for Impute {
    fn apply(&mut self, mut rows: Rows, _failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        for (field, value) in &self.constant {
            let at = rows.field_position(field);
            for event in &mut rows.batch.events {
                if is_null(&event.values, at) {
                    set(&mut event.values, at, value.clone());
                }
            }
        }
        for (field, sum, count) in &mut self.mean {
            let at = rows.field_position(field);
            for event in &mut rows.batch.events {
                match event.values.get(at) {
                    Some(Value::Float(f)) => {
                        *sum += f;
                        *count += 1;
                    }
                    Some(Value::Integer(i)) => {
                        *sum += *i as f64;
                        *count += 1;
                    }
                    _ if *count > 0 && is_null(&event.values, at) => {
                        set(&mut event.values, at, Value::Float(*sum / *count as f64))
                    }
                    _ => {}
                }
            }
        }
        Ok(rows)
    }
}
