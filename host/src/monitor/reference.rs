//! References: what a model trained on, per feature, as the fixed bins every live window is
//! compared on. A numeric feature's bins are equal-frequency bins of the reference (edges at
//! its minimum, its deciles and its maximum) plus the two open ends below and above; its
//! quantile table (101 entries) serves the KS statistic. A categorical feature's bins are its
//! frequent values plus "other". A window's values are counted into the same bins
//! ([`Binned`]), so the scores compare like with like.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::drift::{self, Metric};
use super::profile::{FeatureProfile, Profile};
use crate::fault::Invalid;

/// The version of the serialised form.
pub const REFERENCE_FORMAT: u32 = 1;

/// Equal-frequency bins of a numeric feature (the open ends come on top).
pub const BINS: usize = 10;

/// Entries of a quantile table (0%, 1%, … 100%).
pub const QUANTILES: usize = 101;

/// A feature as the reference saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReferenceFeature {
    /// Numbers.
    Numeric {
        /// Bin edges, ascending (distinct but for a constant's `[c, c]`): the bins are (−∞, e₀), [e₀, e₁), … [eₙ₋₂, eₙ₋₁],
        /// (eₙ₋₁, ∞).
        edges: Vec<f64>,
        /// The reference's share in each bin.
        shares: Vec<f64>,
        /// Its quantile table.
        quantiles: Vec<f64>,
        /// Values.
        count: u64,
        /// Nulls.
        nulls: u64,
        /// Mean.
        mean: f64,
        /// Standard deviation (population).
        std: f64,
    },
    /// Text or booleans.
    Categorical {
        /// The frequent values; every other value is "other", the last bin.
        values: Vec<String>,
        /// The reference's share of each value, then of "other".
        shares: Vec<f64>,
        /// Values.
        count: u64,
        /// Nulls.
        nulls: u64,
        /// Distinct values (estimated beyond a few hundred).
        distinct: u64,
    },
}

/// A reference profile of one feature set version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// [`REFERENCE_FORMAT`].
    pub format: u32,
    /// Its name.
    pub name: String,
    /// The feature set.
    pub set: String,
    /// Its version.
    pub version: u32,
    /// Where the rows came from (a training set's file, an offline range).
    pub source: String,
    /// When it was built (RFC 3339).
    pub created: String,
    /// Rows read.
    pub rows: u64,
    /// Per feature.
    pub features: BTreeMap<String, ReferenceFeature>,
    /// The fields its segments slice the rows by (`[feature_set.monitor] segments` when it
    /// was built; empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segment_fields: Vec<String>,
    /// The reference of each segment: its most frequent values, and "other" for the rest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, Reference>,
}

/// Whether `name` may name a reference (letters, digits, `-`, `_`, `.`; not starting with
/// `.`; at most 64 characters).
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        Invalid(format!(
            "reference name {name:?}: expected 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    })
}

/// Refuses a reference (named `name`) whose segments are not the set's `segments`, with the
/// command that rebuilds it.
pub fn check_segments(reference: Option<&Reference>, name: Option<&str>, segments: &[String]) -> Result<(), String> {
    let fields = reference.map(|r| r.segment_fields.clone()).unwrap_or_default();
    if fields == segments {
        return Ok(());
    }
    let reference = match name {
        Some(name) => format!("\"{name}\""),
        None => "(none)".to_string(),
    };
    let built = if fields.is_empty() {
        "not segmented".to_string()
    } else {
        format!("segmented by {fields:?}")
    };
    Err(format!(
        "monitor.segments = {segments:?}, but the reference {reference} is {built}: build it again with `sluice profile` \
         (it then profiles each segment too)"
    ))
}

/// Edges that give each of `values` (ascending, distinct, at least two) a bin of its own:
/// halfway between neighbours, and as far beyond the first and last.
fn by_value(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    let mut edges = Vec::with_capacity(n + 1);
    edges.push(values[0] - (values[1] - values[0]) / 2.0);
    edges.extend(values.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    edges.push(values[n - 1] + (values[n - 1] - values[n - 2]) / 2.0);
    edges
}

/// The bin of `x` among `edges` (see [`ReferenceFeature::Numeric`]): 0 below the first edge,
/// `edges.len()` above the last.
pub fn bin_of(edges: &[f64], x: f64) -> usize {
    let n = edges.len();
    if n == 0 {
        return 0;
    }
    if x > edges[n - 1] {
        return n;
    }
    edges
        .partition_point(|&e| e <= x)
        .min(n - 1)
        .max(usize::from(x >= edges[0]))
}

impl ReferenceFeature {
    /// The bins of a feature from its profile (a numeric one's shares are left empty: they
    /// are counted in a second pass over the values, see [`Binned`]). `None` for a feature
    /// with no value.
    pub fn bins_of(profile: &FeatureProfile) -> Option<ReferenceFeature> {
        if let Some(n) = profile.numeric.as_ref().filter(|n| n.count > 0) {
            let mut edges = vec![n.min];
            edges.extend((1..BINS).filter_map(|i| n.quantile(i as f64 / BINS as f64)));
            edges.push(n.max);
            // The sketch's quantiles are within 1%: keep the edges inside [min, max], ascending.
            let mut edges: Vec<f64> = edges.into_iter().map(|e| e.clamp(n.min, n.max)).collect();
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            if edges.len() == 1 {
                // A constant: one closed bin [c, c] between the open ends.
                edges.push(edges[0]);
            } else if edges.len() < BINS + 1 {
                // Quantiles that coincide are point masses (a 0/1 flag, a small count): one
                // bin per value, edges halfway between them, so a change of their mix shows.
                edges = by_value(&edges);
            }
            let quantiles = (0..QUANTILES)
                .filter_map(|i| n.quantile(i as f64 / (QUANTILES - 1) as f64))
                .map(|q| q.clamp(n.min, n.max))
                .collect();
            return Some(ReferenceFeature::Numeric {
                edges,
                shares: Vec::new(),
                quantiles,
                count: n.count,
                nulls: profile.nulls,
                mean: n.mean,
                std: n.variance().unwrap_or(0.0).sqrt(),
            });
        }
        let c = profile.categorical.as_ref().filter(|c| c.count > 0)?;
        let top = c.top();
        let counts: Vec<u64> = top
            .iter()
            .map(|(_, n)| *n)
            .chain([c.count.saturating_sub(top.iter().map(|(_, n)| n).sum())])
            .collect();
        Some(ReferenceFeature::Categorical {
            values: top.into_iter().map(|(v, _)| v).collect(),
            shares: drift::shares(&counts),
            count: c.count,
            nulls: profile.nulls,
            distinct: c.distinct.estimate() as u64,
        })
    }

    /// An empty count of values over this feature's bins.
    pub fn binned(&self) -> Binned {
        match self {
            ReferenceFeature::Numeric { edges, .. } => Binned::new(edges.len() + 1),
            ReferenceFeature::Categorical { values, .. } => Binned::new(values.len() + 1),
        }
    }

    /// The scores of a window (its values counted in `binned`, its quantile table) against
    /// this reference: PSI, Jensen-Shannon, Hellinger, TVD and KS for numbers; TVD, PSI and
    /// the chi-square p-value for categories.
    pub fn scores(&self, binned: &Binned, quantiles: Option<&[f64]>) -> Vec<(Metric, f64)> {
        let actual = drift::shares(&binned.counts);
        match self {
            ReferenceFeature::Numeric {
                shares,
                quantiles: reference,
                ..
            } => {
                let mut scores = vec![
                    (Metric::Psi, drift::psi(shares, &actual)),
                    (Metric::JensenShannon, drift::jensen_shannon(shares, &actual)),
                    (Metric::Hellinger, drift::hellinger(shares, &actual)),
                    (Metric::Tvd, drift::total_variation(shares, &actual)),
                ];
                if let Some(live) = quantiles.filter(|q| !q.is_empty() && !reference.is_empty()) {
                    scores.push((Metric::Ks, drift::kolmogorov_smirnov(reference, live)));
                }
                scores
            }
            ReferenceFeature::Categorical { shares, .. } => vec![
                (Metric::Tvd, drift::total_variation(shares, &actual)),
                (Metric::Psi, drift::psi(shares, &actual)),
                (Metric::ChiSquareP, drift::chi_square(shares, &binned.counts).1),
            ],
        }
    }
}

/// Values counted into a reference feature's bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binned {
    /// Per bin.
    pub counts: Vec<u64>,
}

impl Binned {
    fn new(bins: usize) -> Binned {
        Binned { counts: vec![0; bins] }
    }

    /// Counts a number (`edges`: the feature's).
    pub fn add_number(&mut self, edges: &[f64], x: f64) {
        if !x.is_nan() {
            self.counts[bin_of(edges, x)] += 1;
        }
    }

    /// Counts `n` occurrences of a value (`values`: the feature's frequent ones).
    pub fn add_value(&mut self, values: &[String], value: &str, n: u64) {
        let at = values.iter().position(|v| v == value).unwrap_or(values.len());
        self.counts[at] += n;
    }

    /// Adds the counts of another window over the same bins.
    pub fn merge(&mut self, other: &Binned) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Reference {
    /// A reference's bins from the profile of its rows; numeric shares are then counted by
    /// [`Reference::count_numbers`] in a second pass over the values.
    pub fn from_profile(profile: &Profile, name: &str, set: &str, version: u32, source: String) -> Reference {
        Reference {
            format: REFERENCE_FORMAT,
            name: name.to_string(),
            set: set.to_string(),
            version,
            source,
            created: jiff::Timestamp::now().to_string(),
            rows: profile.rows,
            features: profile
                .features
                .iter()
                .filter_map(|(name, p)| Some((name.clone(), ReferenceFeature::bins_of(p)?)))
                .collect(),
            segment_fields: Vec::new(),
            segments: BTreeMap::new(),
        }
    }

    /// Sets the numeric features' shares from their values counted over their bins.
    pub fn count_numbers(&mut self, counted: &BTreeMap<String, Binned>) {
        for (name, feature) in self.features.iter_mut() {
            if let (ReferenceFeature::Numeric { shares, .. }, Some(binned)) = (feature, counted.get(name)) {
                *shares = drift::shares(&binned.counts);
            }
        }
    }

    /// What names this reference in the windows counted against it: `name@created` (a
    /// reference stored again under the same name is another one).
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.created)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a reference serialises")
    }

    /// Reads the JSON form; another format version is refused by name.
    pub fn from_json(bytes: &[u8]) -> Result<Reference, Invalid> {
        let reference: Reference =
            serde_json::from_slice(bytes).map_err(|e| Invalid(format!("not a Sluice reference profile: {e}")))?;
        if reference.format != REFERENCE_FORMAT {
            return Err(Invalid(format!(
                "a reference of format {} (this Sluice reads format {REFERENCE_FORMAT})",
                reference.format
            )));
        }
        Ok(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_closed_bins_and_the_open_ends() {
        let edges = [0.0, 1.0, 2.0, 3.0];
        let bins: Vec<usize> = [-1.0, 0.0, 0.5, 1.0, 2.9, 3.0, 3.5]
            .iter()
            .map(|&x| bin_of(&edges, x))
            .collect();
        assert_eq!(bins, vec![0, 1, 1, 2, 3, 3, 4]);
    }

    /// A 0/1 flag (30% ones) gets a bin per value, so a click rate moving to 60% scores as
    /// drift; with one bin for both values every score was 0.
    #[test]
    fn a_low_cardinality_number_is_binned_by_value_and_its_change_of_mix_scores() {
        let flags = |ones: usize| (0..1000).map(move |i| if i % 100 < ones { 1.0 } else { 0.0 });
        let mut profile = FeatureProfile::default();
        let numeric = profile.numeric.get_or_insert_with(Default::default);
        flags(30).for_each(|x| numeric.add(x));
        let mut feature = ReferenceFeature::bins_of(&profile).unwrap();
        let ReferenceFeature::Numeric { edges, .. } = &feature else {
            panic!("numeric")
        };
        let edges = edges.clone();
        assert_ne!(bin_of(&edges, 0.0), bin_of(&edges, 1.0), "{edges:?}");
        let count = |feature: &ReferenceFeature, xs: &mut dyn Iterator<Item = f64>| {
            let mut binned = feature.binned();
            xs.for_each(|x| binned.add_number(&edges, x));
            binned
        };
        let reference = drift::shares(&count(&feature, &mut flags(30)).counts);
        if let ReferenceFeature::Numeric { shares, .. } = &mut feature {
            *shares = reference;
        }
        let psi = |ones| {
            let scores = feature.scores(&count(&feature, &mut flags(ones)), None);
            scores.iter().find(|(m, _)| *m == Metric::Psi).unwrap().1
        };
        assert!(psi(30) < 1e-9, "{}", psi(30));
        assert!(psi(60) > 0.25, "{}", psi(60));
    }
}
