//! `wasm`: runs a deployed plugin (always its active version) over the batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Step, StepError};
use crate::graph::{Failure, Rows};
use crate::plugin::{Limits, OnlineLookup, PluginHandle, Registry};

pub(crate) struct Wasm {
    id: String,
    handle: PluginHandle,
}

/// Config values as the plugin gets them: text as is, anything else as JSON.
fn config_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

impl Wasm {
    pub(crate) fn new(
        id: String,
        plugin: &str,
        config: &BTreeMap<String, toml::Value>,
        registry: &Registry,
        lookup: Arc<dyn OnlineLookup>,
    ) -> Result<Self, StepError> {
        let config = config.iter().map(|(k, v)| (k.clone(), config_text(v))).collect();
        let handle = registry
            .handle(plugin, config, Limits::default(), lookup)
            .map_err(|source| StepError::Plugin {
                step: id.clone(),
                source,
            })?;
        Ok(Wasm { id, handle })
    }
}

impl Step for Wasm {
    fn apply(&mut self, rows: Rows, failures: &mut Vec<Failure>) -> Rows {
        let seqs = rows.seqs;
        let output = self.handle.process_owned(rows.batch);
        let mut out = Rows::new(output.fields);
        for (seq, outcome) in seqs.into_iter().zip(output.outcomes) {
            match outcome {
                Ok(events) => events.into_iter().for_each(|e| out.push(seq, e)),
                Err(failure) => failures.push(Failure::new(seq, &self.id, failure.reason)),
            }
        }
        out
    }
}
