//! Live statistics of a feature set version: every row it writes is profiled into a tumbling
//! window of event time (`[feature_set.monitor] window`, default 1 minute), and each feature's
//! values are counted into the active reference's bins. Windows close on the host's clock (a
//! timer), once their end plus a grace (the set's allowed lateness, at least 2 s) has passed,
//! whether or not later rows came: event time makes a replay give the same windows as the
//! stream, the timer makes a quiet stream still close them. A row for a window already closed
//! is counted as late and left out. A closed window gets its scores against the reference and
//! against the window before it (sudden change), a verdict per feature and, through
//! [`Judge`], a status with hysteresis.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::drift::{self, Judge, Metric, Policy, Status};
use super::profile::{FeatureProfile, Profile};
use super::reference::{Binned, Reference, ReferenceFeature, QUANTILES};
use crate::duration::ConfigDuration;
use crate::event::Value;
use crate::rows::Rows;

/// `[feature_set.monitor]`: live statistics and drift.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The reference windows are compared with (built by `sluice profile --name`); none:
    /// statistics only.
    #[serde(default)]
    pub reference: Option<String>,
    /// The window (default `1m`).
    #[serde(default = "one_minute")]
    pub window: ConfigDuration,
    /// Thresholds per metric, the minimum count and the hysteresis.
    #[serde(default)]
    pub policy: Policy,
}

fn one_minute() -> ConfigDuration {
    ConfigDuration::new("1m")
}

/// Closed windows kept in memory per set (a day of 1-minute windows).
pub const KEPT_WINDOWS: usize = 1440;

/// One feature in a closed window.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureWindow {
    /// Values (not null).
    pub count: u64,
    /// Nulls.
    pub nulls: u64,
    /// Numbers: mean, standard deviation, p5, p50, p95.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericSummary>,
    /// Text and booleans: the most frequent values with their counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(String, u64)>,
    /// Scores against the reference.
    pub scores: BTreeMap<Metric, f64>,
    /// Scores against the window before (sudden change), on the reference's bins.
    pub sudden: BTreeMap<Metric, f64>,
    /// This window's verdict (`None`: no reference for it, or fewer values than the minimum).
    pub verdict: Option<Status>,
    /// The feature's status after this window.
    pub status: Status,
    /// Whether this window changed the status.
    pub changed: bool,
    /// The counts in the reference's bins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<u64>>,
}

/// A numeric feature's summary in a window.
#[derive(Debug, Clone, Serialize)]
pub struct NumericSummary {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
    /// 5th percentile.
    pub p5: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

/// A closed window.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedWindow {
    /// Its start, µs since the epoch (event time).
    pub start: i64,
    /// Its end (exclusive).
    pub end: i64,
    /// Rows profiled.
    pub rows: u64,
    /// Per feature.
    pub features: BTreeMap<String, FeatureWindow>,
}

/// A window still open.
#[derive(Default)]
struct Window {
    profile: Profile,
    bins: BTreeMap<String, Binned>,
}

/// The live statistics of one feature set version.
pub struct SetMonitor {
    window: i64,
    grace: i64,
    reference: Option<Reference>,
    policy: Policy,
    /// Fields that are not features (the entity's, the event time).
    skip: Vec<String>,
    open: BTreeMap<i64, Window>,
    /// Every window that starts before this is closed.
    closed_before: i64,
    previous: BTreeMap<String, Vec<u64>>,
    judges: BTreeMap<String, Judge>,
    /// The windows closed, oldest first, at most [`KEPT_WINDOWS`].
    pub closed: VecDeque<ClosedWindow>,
    /// Rows that came for a window already closed.
    pub late: u64,
}

impl SetMonitor {
    /// Windows of `window` µs (closed `grace` µs after their end), compared with `reference`;
    /// the `skip` fields are not profiled.
    pub fn new(window: i64, grace: i64, reference: Option<Reference>, policy: Policy, skip: Vec<String>) -> SetMonitor {
        SetMonitor {
            window: window.max(1),
            grace: grace.max(2_000_000),
            reference,
            policy,
            skip,
            open: BTreeMap::new(),
            closed_before: i64::MIN,
            previous: BTreeMap::new(),
            judges: BTreeMap::new(),
            closed: VecDeque::new(),
            late: 0,
        }
    }

    /// The reference, if any.
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref()
    }

    /// Each feature's status, with the scores of the last window that had a verdict.
    pub fn statuses(&self) -> &BTreeMap<String, Judge> {
        &self.judges
    }

    /// Profiles rows into their windows.
    pub fn add(&mut self, rows: &Rows) {
        if rows.is_empty() {
            return;
        }
        let start_of = |t: i64| t.div_euclid(self.window) * self.window;
        let first = start_of(rows.batch.events[0].time);
        if rows.batch.events.iter().all(|e| start_of(e.time) == first) {
            self.add_to(first, rows, None);
            return;
        }
        let mut by_window: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, e) in rows.batch.events.iter().enumerate() {
            by_window.entry(start_of(e.time)).or_default().push(i);
        }
        for (start, rows_of) in by_window {
            self.add_to(start, rows, Some(&rows_of));
        }
    }

    fn add_to(&mut self, start: i64, rows: &Rows, only: Option<&[usize]>) {
        if start < self.closed_before {
            self.late += only.map_or(rows.len(), <[usize]>::len) as u64;
            return;
        }
        let skip = &self.skip;
        let window = self.open.entry(start).or_default();
        window.profile.add_rows_of(rows, only, |name| {
            skip.iter().any(|s| s == name) || name.starts_with('_')
        });
        let Some(reference) = &self.reference else { return };
        for (at, name) in rows.batch.fields.iter().enumerate() {
            let Some(feature) = reference.features.get(name) else {
                continue;
            };
            if !window.bins.contains_key(name) {
                window.bins.insert(name.clone(), feature.binned());
            }
            let bins = window.bins.get_mut(name).expect("inserted above");
            let mut count = |value: &Value| match (feature, value) {
                (ReferenceFeature::Numeric { edges, .. }, Value::Integer(i)) => bins.add_number(edges, *i as f64),
                (ReferenceFeature::Numeric { edges, .. }, Value::Float(x)) => bins.add_number(edges, *x),
                (ReferenceFeature::Categorical { values, .. }, Value::Text(s)) => bins.add_value(values, s, 1),
                (ReferenceFeature::Categorical { values, .. }, Value::Boolean(b)) => {
                    bins.add_value(values, if *b { "true" } else { "false" }, 1)
                }
                _ => {}
            };
            match only {
                None => rows
                    .batch
                    .events
                    .iter()
                    .for_each(|e| count(e.values.get(at).unwrap_or(&Value::Null))),
                Some(only) => only
                    .iter()
                    .for_each(|&i| count(rows.batch.events[i].values.get(at).unwrap_or(&Value::Null))),
            }
        }
    }

    /// Closes the windows whose end plus the grace is at or before `now` (µs), oldest first.
    pub fn close_due(&mut self, now: i64) -> Vec<ClosedWindow> {
        let mut closed = Vec::new();
        while let Some((&start, _)) = self.open.first_key_value() {
            if start.saturating_add(self.window).saturating_add(self.grace) > now {
                break;
            }
            let window = self.open.remove(&start).expect("the first key is there");
            self.closed_before = self.closed_before.max(start + self.window);
            let done = self.judge(start, window);
            self.closed.push_back(done.clone());
            if self.closed.len() > KEPT_WINDOWS {
                self.closed.pop_front();
            }
            closed.push(done);
        }
        closed
    }

    fn judge(&mut self, start: i64, window: Window) -> ClosedWindow {
        let mut features = BTreeMap::new();
        for (name, profile) in &window.profile.features {
            let bins = window.bins.get(name);
            let reference = self.reference.as_ref().and_then(|r| r.features.get(name));
            let scores: BTreeMap<Metric, f64> = match (reference, bins) {
                (Some(reference), Some(bins)) => reference.scores(bins, quantile_table(profile).as_deref()),
                _ => Vec::new(),
            }
            .into_iter()
            .collect();
            let sudden = match (bins, self.previous.get(name)) {
                (Some(now), Some(before)) => sudden(before, &now.counts),
                _ => BTreeMap::new(),
            };
            let count = profile.values();
            let scored: Vec<(Metric, f64)> = scores.iter().map(|(m, v)| (*m, *v)).collect();
            let verdict = (!scored.is_empty())
                .then(|| self.policy.verdict(&scored, count))
                .flatten();
            let judge = self.judges.entry(name.clone()).or_default();
            let changed = judge.window(verdict, &self.policy).is_some();
            features.insert(
                name.clone(),
                FeatureWindow {
                    count,
                    nulls: profile.nulls,
                    numeric: numeric_summary(profile),
                    top: profile
                        .categorical
                        .as_ref()
                        .map(|c| c.top().into_iter().take(10).collect())
                        .unwrap_or_default(),
                    scores,
                    sudden,
                    verdict,
                    status: judge.status,
                    changed,
                    bins: bins.map(|b| b.counts.clone()),
                },
            );
        }
        self.previous = window.bins.into_iter().map(|(name, b)| (name, b.counts)).collect();
        ClosedWindow {
            start,
            end: start + self.window,
            rows: window.profile.rows,
            features,
        }
    }
}

/// A profile's 101-entry quantile table (numbers only).
fn quantile_table(profile: &FeatureProfile) -> Option<Vec<f64>> {
    let n = profile.numeric.as_ref().filter(|n| n.count > 0)?;
    Some(
        (0..QUANTILES)
            .filter_map(|i| n.quantile(i as f64 / (QUANTILES - 1) as f64))
            .collect(),
    )
}

fn numeric_summary(profile: &FeatureProfile) -> Option<NumericSummary> {
    let n = profile.numeric.as_ref().filter(|n| n.count > 0)?;
    Some(NumericSummary {
        mean: n.mean,
        std: n.variance().unwrap_or(0.0).sqrt(),
        p5: n.quantile(0.05),
        p50: n.quantile(0.5),
        p95: n.quantile(0.95),
    })
}

/// PSI and TVD of a window against the window before, on the same bins.
fn sudden(before: &[u64], now: &[u64]) -> BTreeMap<Metric, f64> {
    let (p, q) = (drift::shares(before), drift::shares(now));
    if before.iter().sum::<u64>() == 0 || now.iter().sum::<u64>() == 0 {
        return BTreeMap::new();
    }
    BTreeMap::from([
        (Metric::Psi, drift::psi(&p, &q)),
        (Metric::Tvd, drift::total_variation(&p, &q)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    const MIN: i64 = 60_000_000;

    fn rows(start: i64, xs: &[f64], country: &str) -> Rows {
        let mut rows = Rows::new(vec!["user".into(), "amount".into(), "country".into()]);
        for (i, x) in xs.iter().enumerate() {
            let values = vec![Value::Text("u".into()), Value::Float(*x), Value::Text(country.into())];
            rows.push(
                i as u64,
                Event {
                    key: "u".into(),
                    time: start + i as i64,
                    values,
                },
            );
        }
        rows
    }

    fn reference() -> Reference {
        let mut profile = Profile::default();
        let xs: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        profile.add_rows(&rows(0, &xs, "DE"), |n| n == "user");
        let mut reference = Reference::from_profile(&profile, "r", "tx", 1, "test".into());
        let ReferenceFeature::Numeric { edges, .. } = reference.features["amount"].clone() else {
            panic!()
        };
        let mut bins = reference.features["amount"].binned();
        xs.iter().for_each(|&x| bins.add_number(&edges, x));
        reference.count_numbers(&BTreeMap::from([("amount".to_string(), bins)]));
        reference
    }

    #[test]
    fn windows_close_on_the_clock_and_drift_is_raised_after_two_windows() {
        let policy = Policy {
            min_count: 100,
            ..Policy::default()
        };
        let mut monitor = SetMonitor::new(MIN, 0, Some(reference()), policy, vec!["user".into()]);
        let same: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let shifted: Vec<f64> = same.iter().map(|x| x + 40.0).collect();
        for (w, xs) in [&same, &same, &shifted, &shifted, &shifted].iter().enumerate() {
            monitor.add(&rows(w as i64 * MIN, xs, "DE"));
        }
        assert!(monitor.close_due(MIN).is_empty(), "the grace has not passed");
        let closed = monitor.close_due(10 * MIN);
        assert_eq!(closed.len(), 5);
        let status: Vec<Status> = closed.iter().map(|w| w.features["amount"].status).collect();
        assert_eq!(
            status,
            vec![Status::Ok, Status::Ok, Status::Ok, Status::Drift, Status::Drift]
        );
        assert!(closed[3].features["amount"].changed);
        assert_eq!(closed[2].features["amount"].verdict, Some(Status::Drift));
        assert!(
            closed[2].features["amount"].sudden[&Metric::Psi] > 0.25,
            "a sudden change"
        );
        assert!(!closed[0].features.contains_key("user"), "the entity is not a feature");
        assert_eq!(closed[0].features["country"].verdict, Some(Status::Ok));
        // A row for a closed window is late and left out.
        monitor.add(&rows(0, &[1.0], "DE"));
        assert_eq!(monitor.late, 1);
        assert!(monitor.close_due(20 * MIN).is_empty());
    }

    #[test]
    fn rows_of_a_batch_go_to_their_own_windows() {
        let mut monitor = SetMonitor::new(MIN, 0, None, Policy::default(), Vec::new());
        let mut batch = rows(0, &[1.0, 2.0], "DE");
        batch.batch.events[1].time = MIN + 5;
        monitor.add(&batch);
        let closed = monitor.close_due(5 * MIN);
        assert_eq!(
            closed.iter().map(|w| (w.start, w.rows)).collect::<Vec<_>>(),
            vec![(0, 1), (MIN, 1)]
        );
        assert!(
            closed[0].features["amount"].scores.is_empty(),
            "no reference, no scores"
        );
    }
}
