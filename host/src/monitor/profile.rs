//! Profiles: mergeable statistics of a set of feature rows, per feature. A numeric feature
//! (integers, floats) keeps its count, nulls, NaNs, min, max, mean and variance (Welford's
//! update, Chan's merge: numerically stable) and a DDSketch of its quantiles; a categorical one
//! (text, booleans) keeps its frequent items (filtered space-saving, top [`TOP_K`]; the rest is
//! "other") and a distinct-count sketch. A profile of any rows merges with the profile of any
//! others, and serialises to JSON with a format version (sketches in their standard binary
//! encodings, hex).

use std::collections::{BTreeMap, HashMap};

use cardinality_estimator::CardinalityEstimator;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};
use topk::FilteredSpaceSaving;

use crate::event::Value;
use crate::fault::Invalid;
use crate::rows::Rows;

/// The version of the serialised form; a profile of another version is refused by name.
pub const PROFILE_FORMAT: u32 = 1;

/// Frequent items kept per categorical feature; the rest count as "other".
pub const TOP_K: usize = 32;

/// The quantile sketch's relative accuracy (1%).
const SKETCH_ACCURACY: f64 = 0.01;

fn sketch() -> DDSketch {
    DDSketch::new(SketchConfig::new(SKETCH_ACCURACY, 2048, 1.0e-9))
}

/// Statistics of a numeric feature.
#[derive(Clone, Serialize, Deserialize)]
pub struct Numeric {
    /// Finite values seen.
    pub count: u64,
    /// NaN values seen (not in the other statistics).
    pub nan: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean (variance × count).
    pub m2: f64,
    /// Quantiles (DDSketch, 1% relative accuracy).
    #[serde(with = "sketch_hex")]
    pub sketch: DDSketch,
}

impl std::fmt::Debug for Numeric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Numeric")
            .field("count", &self.count)
            .field("nan", &self.nan)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("mean", &self.mean)
            .field("variance", &self.variance())
            .field("median", &self.quantile(0.5))
            .finish()
    }
}

impl Default for Numeric {
    fn default() -> Self {
        Numeric {
            count: 0,
            nan: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            sketch: sketch(),
        }
    }
}

impl Numeric {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        if x.is_nan() {
            self.nan += 1;
            return;
        }
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.sketch.add(x);
    }

    /// Adds the statistics of other values.
    pub fn merge(&mut self, other: &Numeric) {
        self.nan += other.nan;
        if other.count == 0 {
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let n = n1 + n2;
        let delta = other.mean - self.mean;
        self.mean += delta * n2 / n;
        self.m2 += other.m2 + delta * delta * n1 * n2 / n;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        // Every sketch is built with the same configuration, so merging cannot fail.
        self.sketch
            .merge(&other.sketch)
            .expect("sketches share one configuration");
    }

    /// The population variance (`None` without values).
    pub fn variance(&self) -> Option<f64> {
        (self.count > 0).then(|| self.m2 / self.count as f64)
    }

    /// The `q` quantile (0 ≤ q ≤ 1), within 1% of the true value.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q).ok().flatten()
    }
}

/// Statistics of a categorical feature.
#[derive(Clone, Serialize, Deserialize)]
pub struct Categorical {
    /// Values seen.
    pub count: u64,
    /// The most frequent values and their counts (exact while there are at most [`TOP_K`]
    /// distinct values).
    pub items: FilteredSpaceSaving<String>,
    /// Distinct values (exact up to a few hundred, HyperLogLog beyond).
    pub distinct: CardinalityEstimator<str>,
}

impl std::fmt::Debug for Categorical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Categorical")
            .field("count", &self.count)
            .field("top", &self.top())
            .field("distinct", &self.distinct.estimate())
            .finish()
    }
}

impl Default for Categorical {
    fn default() -> Self {
        Categorical {
            count: 0,
            items: FilteredSpaceSaving::new(TOP_K),
            distinct: CardinalityEstimator::new(),
        }
    }
}

impl Categorical {
    /// Adds `count` occurrences of a value.
    pub fn add(&mut self, value: &str, count: u64) {
        self.count += count;
        self.distinct.insert(value);
        self.items.insert(value.to_string(), count);
    }

    /// Adds the statistics of other values.
    pub fn merge(&mut self, other: &Categorical) {
        self.count += other.count;
        self.distinct.merge(&other.distinct);
        // Both keep the same k, so merging cannot fail.
        self.items.merge(&other.items).expect("frequent items share one k");
    }

    /// The frequent values with their estimated counts, most frequent first (ties by value).
    pub fn top(&self) -> Vec<(String, u64)> {
        let mut top: Vec<(String, u64)> = self
            .items
            .iter()
            .map(|(value, counter)| (value.clone(), counter.estimated_count()))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top
    }
}

/// The statistics of one feature: numeric, categorical or both (a feature whose values mix
/// numbers and text), with the nulls.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// Rows in which the feature was null or absent.
    pub nulls: u64,
    /// Its numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<Numeric>,
    /// Its text and booleans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorical: Option<Categorical>,
    /// Values of other kinds (JSON, bytes, lists), counted but not profiled.
    #[serde(default)]
    pub other: u64,
}

impl FeatureProfile {
    /// Adds the statistics of other rows of the same feature.
    pub fn merge(&mut self, other: &FeatureProfile) {
        self.nulls += other.nulls;
        self.other += other.other;
        if let Some(theirs) = &other.numeric {
            self.numeric.get_or_insert_with(Numeric::default).merge(theirs);
        }
        if let Some(theirs) = &other.categorical {
            self.categorical.get_or_insert_with(Categorical::default).merge(theirs);
        }
    }

    /// Non-null values.
    pub fn values(&self) -> u64 {
        self.numeric.as_ref().map_or(0, |n| n.count + n.nan)
            + self.categorical.as_ref().map_or(0, |c| c.count)
            + self.other
    }
}

/// The profile of a set of feature rows: one [`FeatureProfile`] per feature.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// [`PROFILE_FORMAT`].
    pub format: u32,
    /// Rows profiled.
    pub rows: u64,
    /// Per feature, by name.
    pub features: BTreeMap<String, FeatureProfile>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            format: PROFILE_FORMAT,
            rows: 0,
            features: BTreeMap::new(),
        }
    }
}

impl Profile {
    /// Adds a batch of rows: every field but those `skip` names (a categorical value is
    /// counted once per batch and value, not once per row).
    pub fn add_rows(&mut self, rows: &Rows, skip: impl Fn(&str) -> bool) {
        self.add_rows_of(rows, None, skip)
    }

    /// Like [`Profile::add_rows`], for the rows at `only` (all when `None`).
    pub fn add_rows_of(&mut self, rows: &Rows, only: Option<&[usize]>, skip: impl Fn(&str) -> bool) {
        let taken = only.map_or(rows.len(), <[usize]>::len);
        if taken == 0 {
            return;
        }
        self.rows += taken as u64;
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (at, name) in rows.batch.fields.iter().enumerate() {
            if skip(name) {
                continue;
            }
            let feature = match self.features.get_mut(name.as_str()) {
                Some(feature) => feature,
                None => self.features.entry(name.clone()).or_default(),
            };
            counts.clear();
            let mut add = |value: &Value| match value {
                Value::Null => feature.nulls += 1,
                Value::Integer(i) => feature.numeric.get_or_insert_with(Numeric::default).add(*i as f64),
                Value::Float(f) => feature.numeric.get_or_insert_with(Numeric::default).add(*f),
                Value::Text(_) | Value::Boolean(_) => {}
                Value::Json(_) | Value::Bytes(_) | Value::Floats(_) => feature.other += 1,
            };
            match only {
                None => {
                    for event in &rows.batch.events {
                        let value = event.values.get(at).unwrap_or(&Value::Null);
                        add(value);
                        count_category(value, &mut counts);
                    }
                }
                Some(only) => {
                    for &i in only {
                        let value = rows.batch.events[i].values.get(at).unwrap_or(&Value::Null);
                        add(value);
                        count_category(value, &mut counts);
                    }
                }
            }
            if !counts.is_empty() {
                let categorical = feature.categorical.get_or_insert_with(Categorical::default);
                for (value, count) in &counts {
                    categorical.add(value, *count);
                }
            }
        }
    }

    /// Adds another profile (of other rows of the same features).
    pub fn merge(&mut self, other: &Profile) {
        self.rows += other.rows;
        for (name, theirs) in &other.features {
            self.features.entry(name.clone()).or_default().merge(theirs);
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a profile serialises")
    }

    /// Reads the JSON form; another format version is refused by name.
    pub fn from_json(bytes: &[u8]) -> Result<Profile, Invalid> {
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| Invalid(format!("not a Sluice profile: {e}")))?;
        if version.format != PROFILE_FORMAT {
            return Err(Invalid(format!(
                "a profile of format {} (this Sluice reads format {PROFILE_FORMAT})",
                version.format
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| Invalid(format!("not a Sluice profile: {e}")))
    }
}

/// Counts a text or boolean value of a batch.
fn count_category<'a>(value: &'a Value, counts: &mut HashMap<&'a str, u64>) {
    match value {
        Value::Text(s) => *counts.entry(s.as_str()).or_default() += 1,
        Value::Boolean(b) => *counts.entry(if *b { "true" } else { "false" }).or_default() += 1,
        _ => {}
    }
}

/// A DDSketch as the hex of its standard (Java-compatible) encoding.
mod sketch_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use sketches_ddsketch::DDSketch;

    pub fn serialize<S: Serializer>(sketch: &DDSketch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(sketch.to_java_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DDSketch, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        DDSketch::from_java_bytes(&bytes).map_err(|e| serde::de::Error::custom(format!("a quantile sketch: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn rows(values: &[(Value, Value)]) -> Rows {
        let mut rows = Rows::new(vec!["amount".into(), "country".into()]);
        for (i, (a, c)) in values.iter().enumerate() {
            rows.push(
                i as u64,
                Event {
                    key: "k".into(),
                    time: 0,
                    values: vec![a.clone(), c.clone()],
                },
            );
        }
        rows
    }

    fn sample(n: usize, shift: f64) -> Vec<(Value, Value)> {
        (0..n)
            .map(|i| {
                let x = ((i * 7919) % 1000) as f64 / 10.0 + shift;
                let country = ["DE", "US", "US", "FR"][i % 4];
                let amount = if i % 50 == 0 { Value::Null } else { Value::Float(x) };
                (amount, Value::Text(country.into()))
            })
            .collect()
    }

    #[test]
    fn a_profile_counts_moments_quantiles_and_frequent_items() {
        let mut p = Profile::default();
        p.add_rows(&rows(&sample(1000, 0.0)), |_| false);
        let amount = &p.features["amount"];
        assert_eq!(amount.nulls, 20);
        let n = amount.numeric.as_ref().unwrap();
        assert_eq!(n.count, 980);
        let values: Vec<f64> = sample(1000, 0.0)
            .into_iter()
            .filter_map(|(a, _)| match a {
                Value::Float(f) => Some(f),
                _ => None,
            })
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((n.mean - mean).abs() < 1e-9 && (n.variance().unwrap() - variance).abs() < 1e-6);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!((n.min, n.max), (min, max));
        let median = n.quantile(0.5).unwrap();
        assert!((median - 50.0).abs() < 1.5, "{median}");
        let c = p.features["country"].categorical.as_ref().unwrap();
        assert_eq!(c.top()[0], ("US".to_string(), 500));
        assert_eq!(c.top().len(), 3);
        assert_eq!(c.distinct.estimate(), 3);
    }

    #[test]
    fn profiles_of_parts_merge_into_the_profile_of_the_whole() {
        let all = sample(3000, 5.0);
        let mut whole = Profile::default();
        whole.add_rows(&rows(&all), |_| false);
        let mut merged = Profile::default();
        for chunk in all.chunks(700) {
            let mut part = Profile::default();
            part.add_rows(&rows(chunk), |_| false);
            merged.merge(&part);
        }
        assert_eq!(merged.rows, whole.rows);
        let (a, b) = (
            merged.features["amount"].numeric.as_ref().unwrap(),
            whole.features["amount"].numeric.as_ref().unwrap(),
        );
        assert_eq!((a.count, a.min, a.max), (b.count, b.min, b.max));
        assert!((a.mean - b.mean).abs() < 1e-9 && (a.m2 - b.m2).abs() < 1e-6 * b.m2);
        assert_eq!(a.quantile(0.9), b.quantile(0.9));
        assert_eq!(
            merged.features["country"].categorical.as_ref().unwrap().top(),
            whole.features["country"].categorical.as_ref().unwrap().top()
        );
    }

    #[test]
    fn a_profile_round_trips_through_json_and_another_format_is_refused() {
        let mut p = Profile::default();
        p.add_rows(&rows(&sample(500, 0.0)), |name| name == "country");
        let back = Profile::from_json(&p.to_json()).unwrap();
        assert!(!back.features.contains_key("country"));
        let (a, b) = (&back.features["amount"], &p.features["amount"]);
        assert_eq!(
            a.numeric.as_ref().unwrap().quantile(0.25),
            b.numeric.as_ref().unwrap().quantile(0.25)
        );
        let mut json: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        json["format"] = 99.into();
        let refused = Profile::from_json(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(refused.0.contains("format 99"), "{refused}");
    }
}
