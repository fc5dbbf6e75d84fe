//! `map`: computes fields with CEL expressions, in order (a later one may use an earlier one).

use indexmap::IndexMap;

use super::cel::{from_cel, Expression};
use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::event::Value;
use crate::rows::{Failure, Rows};

/// `kind = "map"`: computes fields with CEL expressions, in order (a later one may use an
/// earlier one).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// Field name → expression.
    pub fields: IndexMap<String, String>,
}

impl StepSpec for MapConfig {
    fn resolve(&self, step: &mut Resolve) {
        for (name, expr) in &self.fields {
            let at = format!("fields.{name}");
            for var in step.expression_variables(expr, &at) {
                step.need(&var, &at);
            }
            step.add(name);
        }
    }

    fn build(&self, id: String, _: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(Map::new(id, &self.fields)?))
    }
}

pub(crate) struct Map {
    id: String,
    fields: Vec<(String, Expression)>,
}

impl Map {
    pub(crate) fn new(id: String, fields: &IndexMap<String, String>) -> Result<Self, StepError> {
        let fields = fields
            .iter()
            .map(|(name, expr)| Ok((name.clone(), Expression::compile(&id, expr)?)))
            .collect::<Result<_, StepError>>()?;
        Ok(Map { id, fields })
    }
}

impl Step for Map {
    fn apply(&mut self, mut rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        let mut failed = vec![None; rows.len()];
        for (name, expr) in &self.fields {
            let positions = expr.positions(&rows);
            let target = rows.field_position(name);
            for (i, slot) in failed.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                match expr.evaluate(&rows, i, &positions).and_then(from_cel) {
                    Ok(value) => {
                        let values = &mut rows.batch.events[i].values;
                        if values.len() <= target {
                            values.resize(target + 1, Value::Null);
                        }
                        values[target] = value;
                    }
                    Err(reason) => *slot = Some(format!("field \"{name}\": {reason}")),
                }
            }
        }
        Ok(rows.without_failed(failed, &self.id, failures))
    }
}
