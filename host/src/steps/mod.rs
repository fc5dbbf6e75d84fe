//! Built-in steps, one file per kind, registered in [`build`].

pub mod aggregate;
mod cel;
mod drop;
mod filter;
mod impute;
mod join;
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

    /// State the last batch changed that must be written with it (aggregation tiles).
    fn take_writes(&mut self, _out: &mut Vec<aggregate::StateWrite>) {}
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
    /// A step's definition is wrong.
    #[error("step \"{step}\": {message}")]
    Invalid {
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

/// What steps are built with, beside their own config.
#[derive(Clone)]
pub struct BuildContext<'a> {
    /// Deployed plugins.
    pub registry: &'a Registry,
    /// Online lookups for plugins.
    pub lookup: Arc<dyn OnlineLookup>,
    /// Where aggregation state is kept durable (`None`: memory only).
    pub tiles: Option<aggregate::TileHome>,
    /// The feature set's allowed lateness.
    pub lateness: Option<&'a str>,
    /// Where plugin steps count calls, events, errors and time.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Builds a step from its config: the one list of step kinds.
pub fn build(step: &StepConfig, context: &BuildContext) -> Result<Box<dyn Step>, StepError> {
    let id = step.id.clone();
    let (registry, lookup) = (context.registry, context.lookup.clone());
    Ok(match &step.kind {
        StepKind::Filter { expr } => Box::new(filter::Filter::new(id, expr)?),
        StepKind::Map { fields } => Box::new(map::Map::new(id, fields)?),
        StepKind::Wasm { plugin, config } => Box::new(wasm::Wasm::new(
            id,
            plugin,
            config,
            registry,
            lookup,
            context.metrics.clone(),
        )?),
        StepKind::Select { fields } => Box::new(select::Select::new(fields)),
        StepKind::Drop { fields } => Box::new(drop::Drop::new(fields)),
        StepKind::Rename { fields } => Box::new(rename::Rename::new(fields)),
        StepKind::Impute { constant, mean } => Box::new(impute::Impute::new(constant, mean)),
        StepKind::Join { set, key, features } => Box::new(join::Join::new(id, set, key.clone(), features, lookup)),
        StepKind::Aggregate {
            key,
            period,
            max_keys,
            aggregations,
        } => {
            let spec =
                aggregate::AggregateSpec::new(&id, period, context.lateness, aggregations).map_err(|problems| {
                    let message = problems.join("; ");
                    StepError::Invalid {
                        step: id.clone(),
                        message,
                    }
                })?;
            Box::new(aggregate::step::Aggregate::new(
                id,
                spec,
                key.clone(),
                *max_keys,
                context.tiles.clone(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Value};

    fn rows() -> Rows {
        let mut rows = Rows::new(vec!["user".into(), "amount".into(), "country".into()]);
        let data = [
            ("a", Value::Float(10.0), "US"),
            ("b", Value::Null, "DE"),
            ("c", Value::Integer(30), "FR"),
        ];
        for (i, (user, amount, country)) in data.into_iter().enumerate() {
            rows.push(
                i as u64 + 1,
                Event {
                    key: user.into(),
                    time: 0,
                    values: vec![Value::Text(user.into()), amount, Value::Text(country.into())],
                },
            );
        }
        rows
    }

    fn step(toml: &str) -> Box<dyn Step> {
        let config: StepConfig = toml::from_str(toml).unwrap();
        let engine = crate::plugin::PluginEngine::new(None).unwrap();
        let registry = Registry::new(engine, 2);
        let context = BuildContext {
            registry: &registry,
            lookup: Arc::new(crate::plugin::NoLookup),
            tiles: None,
            lateness: None,
            metrics: None,
        };
        build(&config, &context).unwrap()
    }

    fn column(rows: &Rows, field: &str) -> Vec<Value> {
        let at = rows
            .batch
            .fields
            .iter()
            .position(|f| f == field)
            .unwrap_or_else(|| panic!("no {field}"));
        (0..rows.len()).map(|i| rows.value(i, at).clone()).collect()
    }

    #[test]
    fn filter_keeps_true_drops_false_and_dead_letters_errors() {
        let mut failures = Vec::new();
        let out =
            step("id = 'f'\nkind = 'filter'\nexpr = \"country != 'US' && amount > 5\"").apply(rows(), &mut failures);
        assert_eq!(out.seqs, [3], "a: US; b: null amount errors; c kept");
        assert_eq!(failures.len(), 1);
        assert_eq!((failures[0].seq, failures[0].step.as_str()), (2, "f"));
    }

    #[test]
    fn map_computes_fields_in_order_and_fails_only_the_event_it_cannot_compute() {
        let mut failures = Vec::new();
        let toml = "id = 'm'\nkind = 'map'\nfields = { twice = 'double(amount) * 2.0', big = 'twice > 30.0' }";
        let out = step(toml).apply(rows(), &mut failures);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(column(&out, "twice"), [Value::Float(20.0), Value::Float(60.0)]);
        assert_eq!(column(&out, "big"), [Value::Boolean(false), Value::Boolean(true)]);
        assert_eq!(failures.iter().map(|f| f.seq).collect::<Vec<_>>(), [2]);
        assert!(
            failures[0].reason.starts_with("field \"twice\""),
            "{}",
            failures[0].reason
        );
    }

    #[test]
    fn select_drop_and_rename_reshape_every_event() {
        let mut failures = Vec::new();
        let out = step("id = 's'\nkind = 'select'\nfields = ['country', 'user']").apply(rows(), &mut failures);
        assert_eq!(out.batch.fields, ["country", "user"]);
        assert_eq!(
            out.batch.events[2].values,
            [Value::Text("FR".into()), Value::Text("c".into())]
        );
        let out = step("id = 'd'\nkind = 'drop'\nfields = ['amount']").apply(rows(), &mut failures);
        assert_eq!(out.batch.fields, ["user", "country"]);
        assert_eq!(
            out.batch.events[1].values,
            [Value::Text("b".into()), Value::Text("DE".into())]
        );
        let out = step("id = 'r'\nkind = 'rename'\nfields = { amount = 'usd', country = 'user' }")
            .apply(rows(), &mut failures);
        assert_eq!(
            out.batch.fields,
            ["usd", "user"],
            "renaming onto an existing field replaces it"
        );
        assert_eq!(
            column(&out, "user"),
            [
                Value::Text("US".into()),
                Value::Text("DE".into()),
                Value::Text("FR".into())
            ]
        );
        assert!(failures.is_empty());
    }

    #[test]
    fn impute_fills_nulls_with_a_constant_or_the_running_mean() {
        let mut failures = Vec::new();
        let out = step("id = 'i'\nkind = 'impute'\nconstant = { tier = 'basic' }\nmean = ['amount']")
            .apply(rows(), &mut failures);
        assert_eq!(column(&out, "tier"), vec![Value::Text("basic".into()); 3]);
        assert_eq!(
            column(&out, "amount"),
            [Value::Float(10.0), Value::Float(10.0), Value::Integer(30)],
            "b gets the mean of what came before it"
        );
    }
}
