//! A window of live statistics: while open, the profile of its rows and their counts in the
//! reference's bins ([`Window`]); once closed, its summary per feature with its drift scores
//! ([`ClosedWindow`]), which is what the store's time series, the Parquet files and the HTTP
//! routes hold. Base windows and their hourly and daily roll-ups share both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::drift::{self, Metric, Policy, Status};
use super::profile::{FeatureProfile, Profile};
use super::reference::{Binned, Reference, QUANTILES};

/// One feature in a closed window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureWindow {
    /// Values (not null).
    pub count: u64,
    /// Nulls.
    pub nulls: u64,
    /// Numbers: mean, standard deviation, p5, p50, p95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericSummary>,
    /// Text and booleans: the most frequent values with their counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(String, u64)>,
    /// Scores against the reference.
    pub scores: BTreeMap<Metric, f64>,
    /// Scores against the window before (sudden change), on the reference's bins.
    pub sudden: BTreeMap<Metric, f64>,
    /// This window's verdict (`None`: no reference for it, or fewer values than the minimum).
    pub verdict: Option<Status>,
    /// The feature's status after this window (a roll-up's: its verdict, or ok).
    pub status: Status,
    /// Whether this window changed the status.
    pub changed: bool,
    /// The verdict of the windows in a row that disagree with the status, and how many (the
    /// hysteresis' state, so a restart resumes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<(Status, u32)>,
    /// The counts in the reference's bins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Vec<u64>>,
    /// The reference has no such feature (added after it was built, e.g. by a plugin): it is
    /// profiled but never judged, and says so rather than pass for `ok`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_reference: bool,
}

/// A numeric feature's summary in a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosedWindow {
    /// Its start, µs since the epoch (event time).
    pub start: i64,
    /// Its end (exclusive).
    pub end: i64,
    /// Rows profiled.
    pub rows: u64,
    /// Whether the window was open when the host stopped and was resumed from a checkpoint.
    /// A streamed set's input is acknowledged only as far as a stored checkpoint holds, so
    /// such a window still has every row; a file run resumed after a kill may miss the rows
    /// between the last checkpoint and the kill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// The segment it is of (`None`: the whole set version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// The reference it was counted against and judged by ([`Reference::id`]; `None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Per feature.
    pub features: BTreeMap<String, FeatureWindow>,
}

impl ClosedWindow {
    /// Its width, µs.
    pub fn width(&self) -> i64 {
        self.end - self.start
    }
}

/// A window still open: its rows' profile and their counts in the reference's bins.
#[derive(Default, Serialize, Deserialize)]
pub struct Window {
    /// The profile.
    pub profile: Profile,
    /// Per feature with a reference: the counts in its bins.
    pub bins: BTreeMap<String, Binned>,
    /// The reference the bins are of ([`Reference::id`]): the one active when the window
    /// opened (a switch applies to the windows opened after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl Window {
    /// An empty window counted against the reference `reference` names.
    pub fn counted_against(reference: Option<String>) -> Window {
        Window {
            reference,
            ..Window::default()
        }
    }

    /// Adds another window's rows (a roll-up of base windows). A window counted against
    /// another reference (the active one was switched while the roll-up was open) brings its
    /// profile, and the roll-up then takes its reference: it is judged on the bins of the
    /// windows counted against that one.
    pub fn merge(&mut self, other: &Window) {
        self.profile.merge(&other.profile);
        if self.reference != other.reference {
            self.bins.clear();
            self.reference = other.reference.clone();
        }
        for (name, binned) in &other.bins {
            match self.bins.get_mut(name) {
                Some(mine) => mine.merge(binned),
                None => {
                    self.bins.insert(name.clone(), binned.clone());
                }
            }
        }
    }

    /// Each feature's summary and scores (against `reference`, and against `previous`, the
    /// bins of the window before), without a status: the caller judges.
    pub fn summarize(
        &self,
        reference: Option<&Reference>,
        previous: &BTreeMap<String, Vec<u64>>,
        policy: &Policy,
    ) -> BTreeMap<String, FeatureWindow> {
        let mut features = BTreeMap::new();
        for (name, profile) in &self.profile.features {
            let bins = self.bins.get(name);
            let scores: BTreeMap<Metric, f64> = match (reference.and_then(|r| r.features.get(name)), bins) {
                (Some(reference), Some(bins)) => reference.scores(bins, quantile_table(profile).as_deref()),
                _ => Vec::new(),
            }
            .into_iter()
            .collect();
            let sudden = match (bins, previous.get(name)) {
                (Some(now), Some(before)) => sudden(before, &now.counts),
                _ => BTreeMap::new(),
            };
            let count = profile.values();
            let scored: Vec<(Metric, f64)> = scores.iter().map(|(m, v)| (*m, *v)).collect();
            let verdict = (!scored.is_empty()).then(|| policy.verdict(&scored, count)).flatten();
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
                    status: verdict.unwrap_or(Status::Ok),
                    changed: false,
                    pending: None,
                    bins: bins.map(|b| b.counts.clone()),
                    no_reference: reference.is_none_or(|r| !r.features.contains_key(name)),
                },
            );
        }
        features
    }

    /// The bins of each feature, for the next window's sudden-change scores.
    pub fn into_bins(self) -> BTreeMap<String, Vec<u64>> {
        self.bins.into_iter().map(|(name, b)| (name, b.counts)).collect()
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
    if before.len() != now.len() || before.iter().sum::<u64>() == 0 || now.iter().sum::<u64>() == 0 {
        return BTreeMap::new();
    }
    BTreeMap::from([
        (Metric::Psi, drift::psi(&p, &q)),
        (Metric::Tvd, drift::total_variation(&p, &q)),
    ])
}
