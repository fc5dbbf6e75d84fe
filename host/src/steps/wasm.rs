//! `wasm`: runs a deployed plugin (always its active version) over the batch. Every output
//! row records the version that produced it, in the field `<step>_version`
//! (`currency@1a2b3c4d5e6f`): a hot swap is visible row by row.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BuildContext, Halt, Resolve, Step, StepError, StepSpec};
use crate::plugin::{Limits, OnlineLookup, PluginHandle, Registry};
use crate::rows::{Failure, Rows};

/// `kind = "wasm"`: runs a deployed plugin.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmConfig {
    /// The plugin's name (see `[plugins]`).
    pub plugin: String,
    /// Its configuration; non-text values are passed as JSON.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// The fields the plugin adds to each event, when declared: later steps are then checked
    /// against them, and lookups and training sets refuse names the set does not have.
    /// Undeclared, what follows the plugin is unknown until it runs.
    #[serde(default)]
    pub adds: Option<Vec<String>>,
}

impl StepSpec for WasmConfig {
    fn resolve(&self, step: &mut Resolve) {
        let plugin = &self.plugin;
        if !step.around.has_plugin(plugin) {
            step.report(
                "plugin",
                format!("no plugin \"{plugin}\" in [plugins]: add `{plugin} = \"path/to/{plugin}.wasm\"`"),
            );
        }
        match &self.adds {
            Some(adds) => {
                for field in adds {
                    step.add(field);
                }
                step.add(&format!("{}_version", step.id));
            }
            None => step.forget_fields(),
        }
    }

    fn build(&self, id: String, context: &BuildContext) -> Result<Box<dyn Step>, StepError> {
        Ok(Box::new(Wasm::new(
            id,
            &self.plugin,
            &self.config,
            context.registry,
            context.lookup.clone(),
            context.metrics.clone(),
        )?))
    }
}

pub(crate) struct Wasm {
    id: String,
    handle: PluginHandle,
    /// `<step>_version`.
    version_field: String,
    metrics: Option<Arc<crate::metrics::Metrics>>,
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
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Self, StepError> {
        let config = config.iter().map(|(k, v)| (k.clone(), config_text(v))).collect();
        let handle = registry
            .handle(plugin, config, Limits::default(), lookup)
            .map_err(|source| StepError::Plugin {
                step: id.clone(),
                source,
            })?;
        let version_field = format!("{id}_version");
        Ok(Wasm {
            id,
            handle,
            version_field,
            metrics,
        })
    }
}

impl Step for Wasm {
    fn apply(&mut self, rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt> {
        let seqs = rows.seqs;
        let started = std::time::Instant::now();
        let output = self.handle.process_owned(rows.batch);
        let took = started.elapsed();
        let mut out = Rows::new(output.fields);
        let at = out.field_position(&self.version_field);
        let label = output.version.label();
        if let Some(metrics) = &self.metrics {
            let m = metrics.plugin(&label);
            m.calls.inc();
            m.events.inc_by(seqs.len() as u64);
            m.errors
                .inc_by(output.outcomes.iter().filter(|o| o.is_err()).count() as u64);
            crate::metrics::observe(&m.batch_seconds, took);
        }
        for (seq, outcome) in seqs.into_iter().zip(output.outcomes) {
            match outcome {
                Ok(events) => events.into_iter().for_each(|mut e| {
                    if e.values.len() <= at {
                        e.values.resize(at + 1, crate::event::Value::Null);
                    }
                    e.values[at] = crate::event::Value::Text(label.clone());
                    out.push(seq, e)
                }),
                Err(failure) => failures.push(Failure::new(seq, &self.id, failure.reason)),
            }
        }
        Ok(out)
    }
}
