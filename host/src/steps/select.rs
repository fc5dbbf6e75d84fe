//! `select`: keeps only the listed fields, in the listed order.

use super::Step;
use crate::event::Value;
use crate::graph::{Failure, Rows};

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
    fn apply(&mut self, mut rows: Rows, _failures: &mut Vec<Failure>) -> Rows {
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
        rows
    }
}
