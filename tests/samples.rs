//! Seeded samples for the monitoring tests: normal values, categories in fixed shares or
//! drawn at random, and the reference the live tests monitor against.

use std::collections::BTreeMap;

use sluice::event::{Event, Value};
use sluice::monitor::profile::Profile;
use sluice::monitor::reference::{Reference, ReferenceFeature};
use sluice::rows::Rows;

/// The usual country mix (value, thousandths).
pub const USUAL: &[(&str, usize)] = &[("DE", 500), ("US", 300), ("FR", 200)];
/// A changed mix: fewer DE, a new IT.
pub const CHANGED: &[(&str, usize)] = &[("DE", 200), ("US", 300), ("FR", 200), ("IT", 300)];

/// A seeded normal sample (Box-Muller over a 64-bit LCG).
pub fn normal(n: usize, seed: u64, mean: f64, std: f64) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

/// `n` categories in fixed shares (value, thousandths), interleaved.
pub fn mix(n: usize, shares: &[(&str, usize)]) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut at = (i * 7919) % 1000;
            for (value, share) in shares {
                if at < *share {
                    return value.to_string();
                }
                at -= share;
            }
            shares[0].0.to_string()
        })
        .collect()
}

/// `n` categories drawn at random (seeded) in the shares given (value, thousandths).
pub fn draw(n: usize, seed: u64, shares: &[(&str, usize)]) -> Vec<String> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut at = ((state >> 33) % 1000) as usize;
            for (value, share) in shares {
                if at < *share {
                    return value.to_string();
                }
                at -= share;
            }
            shares[0].0.to_string()
        })
        .collect()
}

/// Rows of `amount`, `steady` and `country` (entity `u`, time 0, sequences from `first`).
pub fn feature_rows(first: u64, amounts: &[f64], steady: &[f64], countries: &[String]) -> Rows {
    let mut rows = Rows::new(vec!["amount".into(), "steady".into(), "country".into()]);
    for i in 0..amounts.len() {
        let values = vec![
            Value::Float(amounts[i]),
            Value::Float(steady[i]),
            Value::Text(countries[i].clone()),
        ];
        rows.push(
            first + i as u64,
            Event {
                key: "u".into(),
                time: 0,
                values,
            },
        );
    }
    rows
}

/// The reference the live tests monitor against, as `sluice profile` makes it: 20k rows of
/// amount ~ N(100, 15), steady ~ N(0, 1) and the [`USUAL`] country mix.
pub fn reference(set: &str, name: &str) -> Reference {
    reference_of(set, name, 100.0, USUAL)
}

/// A reference of the [`shifted`] windows' distribution: amount ~ N(115, 15), steady ~ N(0, 1)
/// and the [`CHANGED`] country mix (what a model retrained on them was trained with).
pub fn shifted_reference(set: &str, name: &str) -> Reference {
    reference_of(set, name, 115.0, CHANGED)
}

fn reference_of(set: &str, name: &str, mean: f64, countries: &[(&str, usize)]) -> Reference {
    let amounts = normal(20_000, 1, mean, 15.0);
    let steady = normal(20_000, 2, 0.0, 1.0);
    let countries = mix(20_000, countries);
    let mut profile = Profile::default();
    profile.add_rows(&feature_rows(1, &amounts, &steady, &countries), |_| false);
    let mut reference = Reference::from_profile(&profile, name, set, 1, "test".into());
    let mut counted = BTreeMap::new();
    for (feature, xs) in [("amount", &amounts), ("steady", &steady)] {
        let kind = &reference.features[feature];
        let ReferenceFeature::Numeric { edges, .. } = kind else {
            panic!("{feature} is numeric")
        };
        let mut bins = kind.binned();
        xs.iter().for_each(|&x| bins.add_number(edges, x));
        counted.insert(feature.to_string(), bins);
    }
    reference.count_numbers(&counted);
    reference
}

/// Whether window `w` of the live monitoring tests is one of the shifted ones (4 to 7 of 12).
pub fn shifted(w: i64) -> bool {
    (4..8).contains(&w)
}

/// Window `w` of the live monitoring tests (12 windows: 4 usual, 4 [`shifted`] with `amount`
/// one standard deviation higher and the `country` mix [`CHANGED`], 4 usual again): `n`
/// events of 50 users, their times inside the window that starts at `start` (ms), `steady`
/// unchanged throughout.
pub fn window_events(w: i64, start: i64, n: usize) -> Vec<serde_json::Value> {
    let amounts = normal(n, 100 + w as u64, if shifted(w) { 115.0 } else { 100.0 }, 15.0);
    let steady = normal(n, 200 + w as u64, 0.0, 1.0);
    let countries = mix(n, if shifted(w) { CHANGED } else { USUAL });
    (0..n)
        .map(|i| {
            serde_json::json!({ "user": format!("u{}", i % 50), "ts": start + (i as i64 % 1500),
                                "amount": amounts[i], "steady": steady[i], "country": countries[i] })
        })
        .collect()
}
