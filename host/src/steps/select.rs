//! `select`: keeps only the listed fields, in the listed order.

use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::event::Value;
use crate::rows::{Failure, Rows};

/// `kind = "select"`: keeps only these fields, in this order.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// Fields to keep.
    pub fields: Vec<String>,
}

impl StepSpec for SelectConfig {
    fn resolve(&self, step: &mut Resolve) {
        step.field_list(&self.fields, true);
    }

    fn build(&self, _: String, _: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(Select::new(&self.fields)))
    }
}

pub(crate) struct Select {
    fields: Vec<String>,
}

impl Select {
    pub(crate) fn new(fields: &[String]) -> Self {
        Select {
            fields: fields.to_vec(),
        }
    }
}

impl Step for Select {
    fn apply(&mut self, mut rows: Rows, _failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        let positions: Vec<Option<usize>> = self
            .fields
            .iter()
            .map(|f| rows.batch.fields.iter().position(|g| g == f))
            .collect();
        for event in &mut rows.batch.events {
            let mut old = std::mem::take(&mut event.values);
            event.values = positions
                .iter()
                .map(|p| {
                    p.and_then(|p| old.get_mut(p))
                        .map_or(Value::Null, |v| std::mem::replace(v, Value::Null))
                })
                .collect();
        }
        rows.batch.fields = self.fields.clone();
        Ok(rows)
    }
}
