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

impl AggregateSpec {
    /// Resolves a step's config; every problem is reported.
    pub fn new(
        step: &str,
        period: &str,
        lateness: Option<i64>,
        aggregations: &[AggregationConfig],
    ) -> Result<AggregateSpec, Vec<String>> {
        let mut problems = Vec::new();
        let period_us = match parse_duration(period) {
            Ok(d) if d.as_micros() > 0 => d.as_micros() as i64,
            Ok(_) => {
                problems.push("`period` cannot be zero".to_string());
                1
            }
            Err(e) => {
                problems.push(format!("`period`: {e}"));
                1
            }
        };
        let lateness_us = lateness.unwrap_or(0);
        if aggregations.is_empty() {
            problems.push("expected at least one `[[...aggregations]]` entry".into());
        }
        let lateness_buckets = (lateness_us + period_us - 1) / period_us;
        let mut names = HashSet::new();
        let mut fields = Vec::new();
        for (a, agg) in aggregations.iter().enumerate() {
            let at = format!("aggregations[{a}] ({})", agg.field);
            if aggregations[..a].iter().any(|earlier| earlier.field == agg.field) {
                problems.push(format!(
                    "{at}: field \"{}\" is aggregated twice in this step; list all its functions and windows \
                     in one entry (or use another step)",
                    agg.field
                ));
            }
            if agg.functions.is_empty() || agg.windows.is_empty() {
                problems.push(format!("{at}: expected at least one function and one window"));
            }
            let mut functions = Vec::new();
            for f in &agg.functions {
                match Function::parse(f) {
                    Some(function) => functions.push((f.as_str(), function)),
                    None => problems.push(format!(
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
                let window = match Window::parse(w) {
                    Ok(window) => window,
                    Err(e) => {
                        problems.push(format!("{at}: window {e}"));
                        continue;
                    }
                };
                if !window.fits(period_us) {
                    problems.push(format!(
                        "{at}: window {w:?} is not a whole number of periods ({period})"
                    ));
                    continue;
                }
                if let Window::Sliding { length } | Window::Tumbling { length } = window {
                    longest = longest.max(length / period_us);
                }
                windows.push(window);
                for (fname, function) in &functions {
                    let default = format!("{}_{fname}_{}", agg.field, window_suffix(w));
                    let name = agg.names.get(&default).cloned().unwrap_or_else(|| default.clone());
                    defaults.push(default);
                    if !names.insert(name.clone()) {
                        problems.push(format!("{at}: feature name \"{name}\" is produced twice"));
                    }
                    features.push(Feature {
                        name,
                        function: *function,
                        window: windows.len() - 1,
                    });
                }
            }
            for renamed in agg.names.keys() {
                if !defaults.contains(renamed) {
                    problems.push(format!(
                        "{at}: `names` renames \"{renamed}\", which this aggregation does not produce"
                    ));
                }
            }
            fields.push(FieldSpec {
                field: agg.field.clone(),
                needs: Needs::of(functions.iter().map(|f| f.1)),
                since_start: windows.contains(&Window::SinceStart),
                windows,
                features,
                retain: longest + lateness_buckets,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
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
