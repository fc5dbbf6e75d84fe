//! `rename`: renames fields (a field renamed onto an existing name replaces it).

use indexmap::IndexMap;

use super::drop::Drop;
use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::rows::{Failure, Rows};

/// `kind = "rename"`: old name → new name (onto an existing name, it replaces that field).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameConfig {
    /// Old name → new name.
    pub fields: IndexMap<String, String>,
}

impl StepSpec for RenameConfig {
    fn resolve(&self, step: &mut Resolve) {
        for (from, to) in &self.fields {
            step.need(from, &format!("fields.{from}"));
            step.remove(from);
            step.add(to);
        }
    }

    fn build(&self, _: String, _: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(Rename::new(&self.fields)))
    }
}

pub(crate) struct Rename {
    fields: Vec<(String, String)>,
}

impl Rename {
    pub(crate) fn new(fields: &IndexMap<String, String>) -> Self {
        Rename {
            fields: fields.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
        }
    }
}

impl Step for Rename {
    fn apply(&mut self, mut rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        for (from, to) in &self.fields {
            let Some(at) = rows.batch.fields.iter().position(|f| f == from) else {
                continue;
            };
            if rows.batch.fields.iter().any(|f| f == to) {
                rows = Drop::new(std::slice::from_ref(to)).apply(rows, failures)?;
            }
            let at = rows.batch.fields.iter().position(|f| f == from).unwrap_or(at);
            rows.batch.fields[at] = to.clone();
        }
        Ok(rows)
    }
}
