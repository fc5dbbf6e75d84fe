//! What an `aggregate` step computes, resolved once from its config: fields, functions,
//! windows, feature names, the period, the allowed lateness and how many tiles to keep.

use std::collections::HashSet;

use super::state::KeyState;
use super::tile::{Function, Needs, Tile};
use super::window::Window;
use super::AggregationConfig;
use crate::duration::parse_duration;
use crate::event::Value;

/// One output feature: a function of a field over a window.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Its name in the rows (default `<field>_<function>_<window>`).
    pub name: String,
    /// The function.
    pub function: Function,
    /// Index into the field's windows.
    pub window: usize,
}

/// One aggregated field.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    /// The input field.
    pub field: String,
    /// What its tiles keep.
    pub needs: Needs,
    /// Its windows.
    pub windows: Vec<Window>,
    /// Its features, grouped by window (features of one window are adjacent).
    pub features: Vec<Feature>,
    /// Whether a since-start window needs the tiles that left every other window.
    pub since_start: bool,
    /// Buckets kept behind the latest event time: the longest window plus the lateness.
    pub retain: i64,
}

/// The resolved definition of an `aggregate` step.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// Step id (prefixes its tile fields in Redis).
    pub step: String,
    /// Bucket period, µs.
    pub period: i64,
    /// Allowed lateness, µs: an event older than the key's latest event time by more is late.
    pub lateness: i64,
    /// The aggregated fields.
    pub fields: Vec<FieldSpec>,
}

/// The text of a window in a default feature name: `1h`, `tumbling_1h`, `since_start`.
fn window_suffix(text: &str) -> String {
    text.replace(':', "_")
}

/// A step's period in µs (1 when it is invalid, with the problem recorded).
fn parse_period(period: &str, problems: &mut Vec<String>) -> i64 {
    match parse_duration(period) {
        Ok(d) if d.as_micros() > 0 => d.as_micros() as i64,
        Ok(_) => {
            problems.push("`period` cannot be zero".to_string());
            1
        }
        Err(e) => {
            problems.push(format!("`period`: {e}"));
            1
        }
    }
}

/// Resolves a step's aggregations one by one, collecting every problem and the feature names
/// seen so far (a name produced twice is a problem).
struct Resolver<'a> {
    period: &'a str,
    period_us: i64,
    lateness_buckets: i64,
    names: HashSet<String>,
    problems: Vec<String>,
}

impl Resolver<'_> {
    /// One aggregated field: its functions, windows and feature names.
    fn field(&mut self, a: usize, agg: &AggregationConfig) -> FieldSpec {
        let at = format!("aggregations[{a}] ({})", agg.field);
        if agg.functions.is_empty() || agg.windows.is_empty() {
            self.problems
                .push(format!("{at}: expected at least one function and one window"));
        }
        let mut functions = Vec::new();
        for f in &agg.functions {
            match Function::parse(f) {
                Some(function) => functions.push((f.as_str(), function)),
                None => self.problems.push(format!(
                    "{at}: unknown function {f:?}; expected count, sum, mean, stddev, variance, min, max, \
                     first, last, distinct, median or p1 … p99"
                )),
            }
        }
        let mut windows = Vec::new();
        let mut features = Vec::new();
        let mut longest = 1;
        let mut defaults = Vec::new();
        for w in &agg.windows {
            let Some(window) = self.window(&at, w) else {
                continue;
            };
            if let Window::Sliding { length } | Window::Tumbling { length } = window {
                longest = longest.max(length / self.period_us);
            }
            windows.push(window);
            for (fname, function) in &functions {
                let default = format!("{}_{fname}_{}", agg.field, window_suffix(w));
                let name = agg.names.get(&default).cloned().unwrap_or_else(|| default.clone());
                defaults.push(default);
                if !self.names.insert(name.clone()) {
                    self.problems
                        .push(format!("{at}: feature name \"{name}\" is produced twice"));
                }
                features.push(Feature {
                    name,
                    function: *function,
                    window: windows.len() - 1,
                });
            }
        }
        for renamed in agg.names.keys().filter(|r| !defaults.contains(r)) {
            self.problems.push(format!(
                "{at}: `names` renames \"{renamed}\", which this aggregation does not produce"
            ));
        }
        FieldSpec {
            field: agg.field.clone(),
            needs: Needs::of(functions.iter().map(|f| f.1)),
            since_start: windows.contains(&Window::SinceStart),
            windows,
            features,
            retain: longest + self.lateness_buckets,
        }
    }

    /// A window of the field at `at`, if it parses and is a whole number of periods.
    fn window(&mut self, at: &str, w: &str) -> Option<Window> {
        let window = Window::parse(w).map_err(|e| self.problems.push(format!("{at}: window {e}"))).ok()?;
        if !window.fits(self.period_us) {
            self.problems.push(format!(
                "{at}: window {w:?} is not a whole number of periods ({})",
                self.period
            ));
            return None;
        }
        Some(window)
    }
}

impl AggregateSpec {
    /// Resolves a step's config; every problem is reported.
    pub fn new(
        step: &str,
        period: &str,
        lateness: Option<i64>,
        aggregations: &[AggregationConfig],
    ) -> Result<AggregateSpec, Vec<String>> {
        let mut problems = Vec::new();
        let period_us = parse_period(period, &mut problems);
        let lateness_us = lateness.unwrap_or(0);
        if aggregations.is_empty() {
            problems.push("expected at least one `[[...aggregations]]` entry".into());
        }
        let mut resolver = Resolver {
            period,
            period_us,
            lateness_buckets: (lateness_us + period_us - 1) / period_us,
            names: HashSet::new(),
            problems,
        };
        let fields = aggregations
            .iter()
            .enumerate()
            .map(|(a, agg)| {
                if aggregations[..a].iter().any(|earlier| earlier.field == agg.field) {
                    resolver.problems.push(format!(
                        "aggregations[{a}] ({}): field \"{}\" is aggregated twice in this step; list all its \
                         functions and windows in one entry (or use another step)",
                        agg.field, agg.field
                    ));
                }
                resolver.field(a, agg)
            })
            .collect();
        if !resolver.problems.is_empty() {
            return Err(resolver.problems);
        }
        Ok(AggregateSpec {
            step: step.to_string(),
            period: period_us,
            lateness: lateness_us,
            fields,
        })
    }

    /// Every feature name, in output order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .flat_map(|f| f.features.iter().map(|x| x.name.as_str()))
    }

    /// Evaluates every feature of a key at time `t`, in output order.
    pub fn evaluate(&self, state: &mut KeyState, t: i64, mut emit: impl FnMut(Value)) {
        for (spec, tiles) in self.fields.iter().zip(&mut state.fields) {
            let mut current_window = usize::MAX;
            let mut merged = Tile::default();
            for feature in &spec.features {
                if feature.window != current_window {
                    current_window = feature.window;
                    merged = tiles.window(feature.window, spec.windows[feature.window], t, self.period);
                }
                emit(match merged.evaluate(feature.function) {
                    None => Value::Null,
                    Some(v) if feature.function.is_integer() => Value::Integer(v as i64),
                    Some(v) => Value::Float(v),
                });
            }
        }
    }
}
