//! `rename`: renames fields (a field renamed onto an existing name replaces it).

use indexmap::IndexMap;

use super::drop::Drop;
use super::Step;
use crate::graph::{Failure, Rows};

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
    fn apply(&mut self, mut rows: Rows, failures: &mut Vec<Failure>) -> Rows {
        for (from, to) in &self.fields {
            let Some(at) = rows.batch.fields.iter().position(|f| f == from) else {
                continue;
            };
            if rows.batch.fields.iter().any(|f| f == to) {
                rows = Drop::new(std::slice::from_ref(to)).apply(rows, failures);
            }
            let at = rows.batch.fields.iter().position(|f| f == from).unwrap_or(at);
            rows.batch.fields[at] = to.clone();
        }
        rows
    }
}
