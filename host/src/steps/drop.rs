//! `drop`: removes the listed fields.

use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::rows::{Failure, Rows};

/// `kind = "drop"`: removes these fields.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// Fields to remove.
    pub fields: Vec<String>,
}

impl StepSpec for DropConfig {
    fn resolve(&self, step: &mut Resolve) {
        step.field_list(&self.fields, false);
    }

    fn build(&self, _: String, _: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(Drop::new(&self.fields)))
    }
}

pub(crate) struct Drop {
    fields: Vec<String>,
}

impl Drop {
    pub(crate) fn new(fields: &[String]) -> Self {
        Drop {
            fields: fields.to_vec(),
        }
    }
}

impl Step for Drop {
    fn apply(&mut self, mut rows: Rows, _failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        let keep: Vec<bool> = rows.batch.fields.iter().map(|f| !self.fields.contains(f)).collect();
        if keep.iter().all(|k| *k) {
            return Ok(rows);
        }
        for event in &mut rows.batch.events {
            let mut i = 0;
            event.values.retain(|_| {
                i += 1;
                keep.get(i - 1).copied().unwrap_or(true)
            });
        }
        let mut i = 0;
        rows.batch.fields.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        Ok(rows)
    }
}
