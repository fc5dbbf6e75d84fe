//! The step graph of a feature set: built once from its config, run per batch over
//! [`Rows`](crate::rows::Rows).

use crate::config::FeatureSetConfig;
use crate::plugin::{OnlineLookup, Registry};
use crate::rows::{Failure, Rows};
use crate::steps::aggregate::{StateWrite, TileHome};
use crate::steps::{self, Halt, Step, StepError};
use std::sync::Arc;

/// The built graph of one feature set.
pub struct Graph {
    steps: Vec<Box<dyn Step>>,
}

impl Graph {
    /// Builds every step of a feature set (plugins must be deployed in `registry`); aggregation
    /// state is kept durable in `tiles` when given.
    pub fn build(
        set: &FeatureSetConfig,
        registry: &Registry,
        lookup: Arc<dyn OnlineLookup>,
        tiles: Option<TileHome>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Graph, StepError> {
        let context = steps::BuildContext {
            registry,
            lookup,
            tiles,
            lateness: set.allowed_lateness.as_ref().map(|l| l.micros()),
            metrics,
            set: format!("{}@v{}", set.name, set.version),
            shutdown,
        };
        let steps = set
            .steps
            .iter()
            .map(|step| steps::build(step, &context))
            .collect::<Result<_, _>>()?;
        Ok(Graph { steps })
    }

    /// The state writes of the last batch (written with it, atomically, by the Redis target).
    pub fn take_writes(&mut self) -> Vec<StateWrite> {
        let mut out = Vec::new();
        for step in &mut self.steps {
            step.take_writes(&mut out);
        }
        out
    }

    /// Runs a batch through every step; failed events are appended to `failures`. A step
    /// that halts ends the batch: nothing of it may be made durable.
    pub fn run(&mut self, mut rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        for step in &mut self.steps {
            if rows.is_empty() {
                break;
            }
            rows = step.apply(rows, failures)?;
        }
        Ok(rows)
    }
}
