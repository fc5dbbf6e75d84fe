//! Built-in steps, one file per kind, registered in [`build`].

mod cel;
mod drop;
mod filter;
mod impute;
mod map;
mod rename;
mod select;
mod wasm;

use std::sync::Arc;

use crate::config::{StepConfig, StepKind};
use crate::graph::{Failure, Rows};
use crate::plugin::{OnlineLookup, PluginError, Registry};

/// One node of the graph.
pub trait Step: Send {
    /// Transforms a batch; events that fail are dropped from it and recorded in `failures`.
    fn apply(&mut self, rows: Rows, failures: &mut Vec<Failure>) -> Rows;
}

/// A step that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An expression does not compile.
    #[error("step \"{step}\": {message}")]
    Expression {
        /// Step id.
        step: String,
        /// Why.
        message: String,
    },
    /// A plugin step could not bind its plugin.
    #[error("step \"{step}\": {source}")]
    Plugin {
        /// Step id.
        step: String,
        /// Why.
        source: PluginError,
    },
}

/// Builds a step from its config: the one list of step kinds.
pub fn build(step: &StepConfig, registry: &Registry, lookup: Arc<dyn OnlineLookup>) -> Result<Box<dyn Step>, StepError> {
    let id = step.id.clone();
    Ok(match &step.kind {
        StepKind::Filter { expr } => Box::new(filter::Filter::new(id, expr)?),
        StepKind::Map { fields } => Box::new(map::Map::new(id, fields)?),
        StepKind::Wasm { plugin, config } => Box::new(wasm::Wasm::new(id, plugin, config, registry, lookup)?),
        StepKind::Select { fields } => Box::new(select::Select::new(fields)),
        StepKind::Drop { fields } => Box::new(drop::Drop::new(fields)),
        StepKind::Rename { fields } => Box::new(rename::Rename::new(fields)),
        StepKind::Impute { constant, mean } => Box::new(impute::Impute::new(constant, mean)),
    })
}
