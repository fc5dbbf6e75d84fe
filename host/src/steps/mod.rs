//! Built-in steps, one file per kind. A kind owns its whole story in its file: its config
//! (`kind = "<file name>"`), how it checks itself against the fields known before it (the
//! fields it needs, adds and removes: [`StepSpec::resolve`], which `sluice validate` runs) and
//! how it is built ([`StepSpec::build`]). [`step_kinds!`] below is the one registration list.

mod cel;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use crate::plugin::{OnlineLookup, PluginError, Registry};
use crate::rows::{Failure, Rows};

/// Declares the step kinds, one line each: `Variant(file::ConfigType) = "kind"` declares the
/// module `file` (the kind's file or folder), re-exports its config type and adds the kind.
macro_rules! step_kinds {
    ($($(#[$doc:meta])* $variant:ident($module:ident :: $config:ident) = $name:literal,)*) => {
        $(
            pub mod $module;
            pub use $module::$config;
        )*

        /// The kinds of step (`kind = "..."`), each implemented by the file of that name.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum StepKind {
            $($(#[$doc])* $variant($config),)*
        }

        impl StepKind {
            /// The `kind` string.
            pub fn name(&self) -> &'static str {
                match self {
                    $(StepKind::$variant(_) => $name,)*
                }
            }

            /// The kind's own resolution and builder.
            pub fn spec(&self) -> &dyn StepSpec {
                match self {
                    $(StepKind::$variant(config) => config,)*
                }
            }
        }
    };
}

step_kinds! {
    /// Keeps the events for which a CEL expression is true.
    Filter(filter::FilterConfig) = "filter",
    /// Computes fields with CEL expressions, in order.
    Map(map::MapConfig) = "map",
    /// Runs a deployed plugin.
    Wasm(wasm::WasmConfig) = "wasm",
    /// Keeps only some fields.
    Select(select::SelectConfig) = "select",
    /// Removes fields.
    Drop(drop::DropConfig) = "drop",
    /// Renames fields.
    Rename(rename::RenameConfig) = "rename",
    /// Fills null fields.
    Impute(impute::ImputeConfig) = "impute",
    /// Enriches events with another feature set's features as of their time.
    Join(join::JoinConfig) = "join",
    /// Per-key aggregates over time windows.
    Aggregate(aggregate::AggregateConfig) = "aggregate",
    /// Converts fields to int, float, bool, string or a timestamp.
    Cast(cast::CastConfig) = "cast",
}

/// One step of the graph: `id`, `kind` and the kind's own keys.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Step id, unique in its feature set.
    pub id: String,
    /// What the step does.
    pub kind: StepKind,
}

impl<'de> Deserialize<'de> for StepConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // `id` is taken out first so that the kind's keys are still checked strictly
        // (serde cannot refuse unknown keys through `flatten`).
        let mut table = toml::Table::deserialize(d)?;
        let id = match table.remove("id") {
            Some(toml::Value::String(id)) => id,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "step `id` must be text, found {}",
                    other.type_str()
                )))
            }
            None => return Err(D::Error::custom("every step needs an `id`")),
        };
        let kind = StepKind::deserialize(toml::Value::Table(table))
            .map_err(|e| D::Error::custom(format!("step \"{id}\": {}", e.message())))?;
        Ok(StepConfig { id, kind })
    }
}

/// What every step kind implements, in its own file.
pub trait StepSpec {
    /// Checks the step's config against the config and the fields known before it, reporting
    /// problems and recording the fields it adds and removes.
    fn resolve(&self, step: &mut Resolve);

    /// Builds the running step.
    fn build(&self, id: String, context: &BuildContext) -> Result<Box<dyn Step>, StepError>;
}

/// What a step checks itself against about a feature set (its own, or one it joins).
#[derive(Debug, Clone, Copy)]
pub struct SetFacts<'a> {
    /// The set's name.
    pub name: &'a str,
    /// Whether its events stream in (a stream source, not a file read once).
    pub streamed: bool,
    /// Whether it has an online target (`kind = "redis"`).
    pub online: bool,
    /// Its allowed lateness in µs, when declared and valid.
    pub lateness: Option<i64>,
}

/// The config around a step, as far as steps check it (the config implements it).
pub trait Around {
    /// The facts of the feature set named `name`, if the config has one.
    fn set(&self, name: &str) -> Option<SetFacts<'_>>;
    /// Whether `[plugins]` declares a plugin of this name.
    fn has_plugin(&self, name: &str) -> bool;
}

/// A step's view while it resolves: its key in the config, the fields known before it (when
/// the input fields are declared; unknown after a plugin), its feature set and the config
/// around it.
pub struct Resolve<'a> {
    /// The step's key, e.g. `feature_set[0].steps[2]`.
    pub key: String,
    /// The step's id.
    pub id: &'a str,
    /// Its feature set.
    pub set: SetFacts<'a>,
    /// The rest of the config.
    pub around: &'a dyn Around,
    known: &'a mut Option<BTreeSet<String>>,
    problems: &'a mut Vec<(String, String)>,
}

impl<'a> Resolve<'a> {
    /// Resolution of the step `id` at `key`, with the fields known before it.
    pub fn new(
        (key, id): (String, &'a str),
        (set, around): (SetFacts<'a>, &'a dyn Around),
        known: &'a mut Option<BTreeSet<String>>,
        problems: &'a mut Vec<(String, String)>,
    ) -> Resolve<'a> {
        Resolve {
            key,
            id,
            set,
            around,
            known,
            problems,
        }
    }

    /// Reports a problem at `<key>.<what>` (at the step's key when `what` is empty).
    pub fn report(&mut self, what: &str, message: String) {
        let key = match what {
            "" => self.key.clone(),
            what => format!("{}.{what}", self.key),
        };
        self.problems.push((key, message));
    }

    /// The step reads `field` (at `<key>.<what>`): a problem when it is known not to exist.
    pub fn need(&mut self, field: &str, what: &str) {
        let Some(known) = &*self.known else { return };
        if !known.contains(field) {
            let list: Vec<_> = known.iter().map(String::as_str).collect();
            let message = format!(
                "refers to field \"{field}\", which no earlier step produces (known: {})",
                list.join(", ")
            );
            self.report(what, message);
        }
    }

    /// The step adds `field`.
    pub fn add(&mut self, field: &str) {
        if let Some(known) = self.known {
            known.insert(field.to_string());
        }
    }

    /// The step removes `field`.
    pub fn remove(&mut self, field: &str) {
        if let Some(known) = self.known {
            known.remove(field);
        }
    }

    /// A step given a list of existing fields (`select`, `drop`): at least one, each known;
    /// afterwards only the listed ones remain (`keep_listed`) or all but them.
    pub fn field_list(&mut self, fields: &[String], keep_listed: bool) {
        if fields.is_empty() {
            self.report("fields", "expected at least one field".into());
        }
        for f in fields {
            self.need(f, "fields");
        }
        if let Some(known) = self.known {
            known.retain(|f| fields.contains(f) == keep_listed);
        }
    }

    /// Which fields follow is unknown (a plugin may add any): later steps are not checked.
    pub fn forget_fields(&mut self) {
        *self.known = None;
    }

    /// The variables an expression uses; reports it at `<key>.<what>` when it does not parse.
    pub fn expression_variables(&mut self, expr: &str, what: &str) -> Vec<String> {
        match ::cel::Program::compile(expr) {
            Ok(program) => program
                .references()
                .variables()
                .into_iter()
                .map(str::to_string)
                .collect(),
            Err(e) => {
                let text = e.to_string().replace('\n', " ");
                self.report(what, format!("not a valid CEL expression: {text}"));
                Vec::new()
            }
        }
    }
}

/// One node of the graph.
pub trait Step: Send {
    /// Transforms a batch; events that fail are dropped from it and recorded in `failures`. A
    /// step that cannot process the batch at all (see [`Halt`]) returns why.
    fn apply(&mut self, rows: Rows, failures: &mut Vec<Failure>) -> Result<Rows, Halt>;

    /// State the last batch changed that must be written with it (aggregation tiles).
    fn take_writes(&mut self, _out: &mut Vec<aggregate::StateWrite>) {}
}

/// Why a step could not process a batch at all. Nothing of the batch may then be made durable:
/// it is left unacknowledged and redelivered.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    /// Shutdown was requested while the step waited for the online store.
    #[error("step \"{0}\": stopped while waiting for the online store")]
    Shutdown(String),
    /// The online store refused what the step asked (trying again cannot help).
    #[error("step \"{step}\": {reason}")]
    Failed {
        /// Step id.
        step: String,
        /// Why.
        reason: String,
    },
}

impl Halt {
    /// What a retry that gave up means for the step `step`.
    pub fn gave_up<E: std::fmt::Display>(step: &str, gave_up: crate::fault::GaveUp<E>) -> Halt {
        match gave_up {
            crate::fault::GaveUp::Shutdown => Halt::Shutdown(step.to_string()),
            crate::fault::GaveUp::Permanent(e) => Halt::Failed {
                step: step.to_string(),
                reason: e.to_string(),
            },
        }
    }
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
    pub lateness: Option<i64>,
    /// Where plugin steps count calls, events, errors and time, and filters what they drop.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The feature set version's label (`name@vN`), for its steps' metrics.
    pub set: String,
    /// Becomes true on shutdown: a step waiting for the online store stops waiting.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Builds a step from its config.
pub fn build(step: &StepConfig, context: &BuildContext) -> Result<Box<dyn Step>, StepError> {
    step.kind.spec().build(step.id.clone(), context)
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
            set: "t@v1".into(),
            shutdown: tokio::sync::watch::channel(false).1,
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
        let out = step("id = 'f'\nkind = 'filter'\nexpr = \"country != 'US' && amount > 5\"")
            .apply(rows(), &mut failures)
            .unwrap();
        assert_eq!(out.seqs, [3], "a: US; b: null amount errors; c kept");
        assert_eq!(failures.len(), 1);
        assert_eq!((failures[0].seq, failures[0].step.as_str()), (2, "f"));
    }

    #[test]
    fn map_computes_fields_in_order_and_fails_only_the_event_it_cannot_compute() {
        let mut failures = Vec::new();
        let toml = "id = 'm'\nkind = 'map'\nfields = { twice = 'double(amount) * 2.0', big = 'twice > 30.0' }";
        let out = step(toml).apply(rows(), &mut failures).unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(column(&out, "twice"), [Value::Float(20.0), Value::Float(60.0)]);
        assert_eq!(column(&out, "big"), [Value::Boolean(false), Value::Boolean(true)]);
        assert_eq!(failures.iter().map(|f| f.seq).collect::<Vec<_>>(), [2]);
        assert!(
            failures[0].reason.starts_with("field \"twice\""),
            "{}",
            failures[0].reason
        );
        // The reason names the fields the expression read and what they held.
        assert!(
            failures[0].reason.ends_with("; the event has amount = null (null)"),
            "{}",
            failures[0].reason
        );
    }

    #[test]
    fn select_drop_and_rename_reshape_every_event() {
        let mut failures = Vec::new();
        let out = step("id = 's'\nkind = 'select'\nfields = ['country', 'user']")
            .apply(rows(), &mut failures)
            .unwrap();
        assert_eq!(out.batch.fields, ["country", "user"]);
        assert_eq!(
            out.batch.events[2].values,
            [Value::Text("FR".into()), Value::Text("c".into())]
        );
        let out = step("id = 'd'\nkind = 'drop'\nfields = ['amount']")
            .apply(rows(), &mut failures)
            .unwrap();
        assert_eq!(out.batch.fields, ["user", "country"]);
        assert_eq!(
            out.batch.events[1].values,
            [Value::Text("b".into()), Value::Text("DE".into())]
        );
        let out = step("id = 'r'\nkind = 'rename'\nfields = { amount = 'usd', country = 'user' }")
            .apply(rows(), &mut failures)
            .unwrap();
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
            .apply(rows(), &mut failures)
            .unwrap();
        assert_eq!(column(&out, "tier"), vec![Value::Text("basic".into()); 3]);
        assert_eq!(
            column(&out, "amount"),
            [Value::Float(10.0), Value::Float(10.0), Value::Integer(30)],
            "b gets the mean of what came before it"
        );
    }
}
