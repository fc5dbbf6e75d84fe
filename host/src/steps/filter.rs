//! `filter`: keeps the events for which a CEL expression is true.

use super::cel::Expression;
use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::rows::{Failure, Rows};

/// `kind = "filter"`: keeps the events for which a CEL expression is true.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The condition, e.g. `amount_usd > 1.0`.
    pub expr: String,
}

impl StepSpec for FilterConfig {
    fn resolve(&self, step: &mut Resolve) {
        for var in step.expression_variables(&self.expr, "expr") {
            step.need(&var, "expr");
        }
    }

    fn build(&self, id: String, context: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        let mut filter = Filter::new(id, &self.expr)?;
        filter.dropped = context.metrics.as_ref().map(|m| m.filtered(&context.set, &filter.id));
        Ok(Box::new(filter))
    }
}

pub(crate) struct Filter {
    id: String,
    expr: Expression,
    /// Counts the events dropped (`sluice_events_filtered_total{set,step}`).
    dropped: Option<prometheus_client::metrics::counter::Counter>,
}

impl Filter {
    pub(crate) fn new(id: String, expr: &str) -> Result<Self, StepError> {
        Ok(Filter {
            expr: Expression::compile(&id, expr)?,
            id,
            dropped: None,
        })
    }
}

impl Step for Filter {
    fn apply(&mut self, rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        let positions = self.expr.positions(&rows);
        let verdicts: Vec<Result<bool, String>> = (0..rows.len())
            .map(|i| match self.expr.evaluate(&rows, i, &positions)? {
                cel::Value::Bool(keep) => Ok(keep),
                cel::Value::Null => Ok(false),
                other => Err(format!("the condition gave {other:?}, expected true or false")),
            })
            .collect();
        let mut out = Rows::new(rows.batch.fields);
        let mut dropped = 0;
        for ((event, seq), verdict) in rows.batch.events.into_iter().zip(rows.seqs).zip(verdicts) {
            match verdict {
                Ok(true) => out.push(seq, event),
                Ok(false) => dropped += 1,
                Err(reason) => failures.push(Failure::new(seq, &self.id, reason)),
            }
        }
        if let Some(counter) = &self.dropped {
            counter.inc_by(dropped);
        }
        Ok(out)
    }
}
