//! Drift scores against an independent computation: the same fixed samples scored by Sluice
//! (a reference built from a profile, a live window counted into its bins, KS from the
//! quantile sketches) and by numpy/scipy from the raw samples (`tests/monitor/drift_check.py`).

use std::collections::BTreeMap;

use sluice::event::{Event, Value};
use sluice::monitor::drift::Metric;
use sluice::monitor::profile::Profile;
use sluice::monitor::reference::{Reference, ReferenceFeature, QUANTILES};
use sluice::rows::Rows;
use sluice_tests::samples::{mix, normal};

fn rows(numbers: &[f64], texts: &[String]) -> Rows {
    let mut rows = Rows::new(vec!["amount".into(), "country".into()]);
    for (i, (x, c)) in numbers.iter().zip(texts).enumerate() {
        let values = vec![Value::Float(*x), Value::Text(c.clone())];
        rows.push(
            i as u64,
            Event {
                key: "k".into(),
                time: 0,
                values,
            },
        );
    }
    rows
}

#[test]
fn drift_scores_equal_numpy_and_scipy_on_fixed_samples() {
    let (reference_x, live_x) = (normal(5000, 7, 100.0, 15.0), normal(3000, 11, 107.5, 15.0));
    let reference_c = mix(5000, &[("DE", 500), ("US", 300), ("FR", 200)]);
    let live_c = mix(3000, &[("DE", 350), ("US", 300), ("FR", 200), ("IT", 150)]);

    let mut profile = Profile::default();
    profile.add_rows(&rows(&reference_x, &reference_c), |_| false);
    let mut reference = Reference::from_profile(&profile, "base", "tx", 1, "test".into());
    let amount = reference.features["amount"].clone();
    let ReferenceFeature::Numeric { edges, .. } = &amount else {
        panic!("amount is numeric")
    };
    let mut counted = BTreeMap::new();
    let mut binned = amount.binned();
    reference_x.iter().for_each(|&x| binned.add_number(edges, x));
    counted.insert("amount".to_string(), binned);
    reference.count_numbers(&counted);

    // The live window: counted into the reference's bins, its quantiles from its own profile.
    let mut live = Profile::default();
    live.add_rows(&rows(&live_x, &live_c), |_| false);
    let numeric = &reference.features["amount"];
    let mut live_bins = numeric.binned();
    live_x.iter().for_each(|&x| live_bins.add_number(edges, x));
    let sketch = live.features["amount"].numeric.as_ref().unwrap();
    let table: Vec<f64> = (0..QUANTILES)
        .filter_map(|i| sketch.quantile(i as f64 / (QUANTILES - 1) as f64))
        .collect();
    let ours_numeric = numeric.scores(&live_bins, Some(&table));
    let country = &reference.features["country"];
    let ReferenceFeature::Categorical { values, .. } = country else {
        panic!("country is categorical")
    };
    let mut live_mix = country.binned();
    live_c.iter().for_each(|c| live_mix.add_value(values, c, 1));
    let ours_categorical = country.scores(&live_mix, None);

    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case.json");
    let json = serde_json::json!({
        "reference": reference_x, "live": live_x, "edges": edges,
        "values": values, "reference_categories": reference_c, "live_categories": live_c,
    });
    std::fs::write(&case, json.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitor/drift_check.py");
    let out = std::process::Command::new(sluice_tests::live::pandas_python())
        .arg(&script)
        .arg(&case)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let check = |kind: &str, ours: &[(Metric, f64)]| {
        // Exactly the metrics the README lists for the kind: none goes missing silently.
        let names: std::collections::BTreeSet<&str> = ours.iter().map(|(m, _)| m.name()).collect();
        let want: std::collections::BTreeSet<&str> = match kind {
            "numeric" => ["psi", "jensen_shannon", "hellinger", "tvd", "ks"].into(),
            _ => ["psi", "tvd", "chi_square_p"].into(),
        };
        assert_eq!(names, want, "{kind}: the metrics Sluice scores");
        for (metric, value) in ours {
            let expected = theirs[kind][metric.name()].as_f64().unwrap();
            // KS: Sluice's comes from 1%-accurate quantile sketches, scipy's from the samples.
            let tolerance = if *metric == Metric::Ks {
                0.02
            } else {
                1e-9 + 1e-9 * expected.abs()
            };
            assert!(
                (value - expected).abs() <= tolerance,
                "{kind} {}: Sluice {value}, scipy {expected}",
                metric.name()
            );
        }
    };
    assert_eq!(ours_numeric.len(), 5, "{ours_numeric:?}");
    check("numeric", &ours_numeric);
    check("categorical", &ours_categorical);
    // The shift is real: every numeric metric sees it, and the mix change too.
    let psi = ours_numeric.iter().find(|(m, _)| *m == Metric::Psi).unwrap().1;
    assert!(psi > 0.1, "{ours_numeric:?}");
    let p = ours_categorical
        .iter()
        .find(|(m, _)| *m == Metric::ChiSquareP)
        .unwrap()
        .1;
    assert!(p < 1e-6, "{ours_categorical:?}");
}

/// Windows drawn from the reference's own distribution at the minimum count (the default
/// policy: 500 values, PSI 0.1/0.25, the others 0.1/0.2, two windows to raise): how often a
/// window's verdict is `possible` or `drift` by chance, and that no feature's status ever
/// becomes `drift`.
#[test]
fn windows_from_the_reference_distribution_raise_no_drift() {
    use sluice::monitor::drift::{Policy, Status};
    use sluice::monitor::live::SetMonitor;
    use sluice_tests::samples::{draw, feature_rows, reference, USUAL};

    let policy = Policy::default();
    let per_window = policy.min_count as usize;
    let second = 1_000_000;
    let mut monitor = SetMonitor::new(second, 0, Some(reference("scores", "base")), policy, Vec::new());
    let windows = 200u64;
    for w in 0..windows {
        let amounts = normal(per_window, 10_000 + w, 100.0, 15.0);
        let steady = normal(per_window, 20_000 + w, 0.0, 1.0);
        let countries = draw(per_window, 30_000 + w, USUAL);
        let mut rows = feature_rows(1 + w * per_window as u64, &amounts, &steady, &countries);
        rows.batch.events.iter_mut().for_each(|e| e.time = w as i64 * second);
        monitor.add(&rows);
    }
    // Closed on the data's time, then (no rows since) on the clock.
    let mut closed = monitor.close_due(i64::MAX);
    closed.extend(monitor.close_due(i64::MAX));
    closed.retain(|w| w.width() == second);
    assert_eq!(closed.len(), windows as usize);
    let mut report = Vec::new();
    for feature in ["amount", "steady", "country"] {
        let verdicts = |status: Status| {
            closed
                .iter()
                .filter(|w| w.features[feature].verdict == Some(status))
                .count()
        };
        let drifting = closed
            .iter()
            .filter(|w| w.features[feature].status == Status::Drift)
            .count();
        let worst = closed
            .iter()
            .flat_map(|w| w.features[feature].scores.get(&Metric::Psi).copied())
            .fold(0.0, f64::max);
        report.push(format!(
            "{feature}: {} possible, {} drift verdicts, {drifting} windows with status drift, max PSI {worst:.3}",
            verdicts(Status::Possible),
            verdicts(Status::Drift)
        ));
        assert_eq!(drifting, 0, "{feature}: a false drift status");
        assert!(
            closed.iter().all(|w| w.features[feature].verdict.is_some()),
            "every window has a verdict at the minimum count"
        );
    }
    eprintln!(
        "{windows} undrifted windows of {per_window} values: {}",
        report.join("; ")
    );
}

/// A reference built as `sluice profile` builds it: a profile, then the numbers counted
/// into its bins; over the rows `only` (all when `None`).
fn reference_of(rows: &Rows, only: Option<&[usize]>, name: &str) -> Reference {
    let mut profile = Profile::default();
    profile.add_rows_of(rows, only, |_| false);
    let mut reference = Reference::from_profile(&profile, name, "tx", 1, "test".into());
    let mut counted = BTreeMap::new();
    for (at, field) in rows.batch.fields.iter().enumerate() {
        let Some(kind @ ReferenceFeature::Numeric { edges, .. }) = reference.features.get(field) else {
            continue;
        };
        let mut bins = kind.binned();
        let all: Vec<usize> = (0..rows.len()).collect();
        for &i in only.unwrap_or(&all) {
            if let Value::Float(x) = rows.batch.events[i].values[at] {
                bins.add_number(edges, x);
            }
        }
        counted.insert(field.clone(), bins);
    }
    reference.count_numbers(&counted);
    reference
}

/// Rows of `amount` and `country` (DE 60%, US 30%, FR 10%), FR's amounts shifted by `fr_shift`.
fn segment_rows(first: u64, n: usize, seed: u64, fr_shift: f64, time: i64) -> Rows {
    let countries = mix(n, &[("DE", 600), ("US", 300), ("FR", 100)]);
    let amounts = normal(n, seed, 100.0, 15.0);
    let mut rows = Rows::new(vec!["amount".into(), "country".into()]);
    for i in 0..n {
        let shift = if countries[i] == "FR" { fr_shift } else { 0.0 };
        rows.push(
            first + i as u64,
            Event {
                key: "u".into(),
                time,
                values: vec![Value::Float(amounts[i] + shift), Value::Text(countries[i].clone())],
            },
        );
    }
    rows
}

/// `[feature_set.monitor] segments = ["country"]`: FR (10% of the rows) shifted by one
/// standard deviation for four windows is `drift` in FR alone, while the whole set (its mean
/// moved by a tenth of a standard deviation) and the other countries stay `ok`; it clears
/// after. Each segment's windows are in the store's series and in Parquet (under
/// `segment=FR/`, with a `segment` column) and come back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_in_one_segment_is_drift_for_that_segment_alone() {
    use sluice::monitor::drift::{Policy, Status};
    use sluice::monitor::live::SetMonitor;

    // The reference: 30k rows, and each country's own part of them.
    let sample = segment_rows(1, 30_000, 7, 0.0, 0);
    let mut reference = reference_of(&sample, None, "base");
    for country in ["DE", "US", "FR"] {
        let only: Vec<usize> = (0..sample.len())
            .filter(|&i| sample.batch.events[i].values[1] == Value::Text(country.into()))
            .collect();
        reference
            .segments
            .insert(country.into(), reference_of(&sample, Some(&only), country));
    }
    reference.segment_fields = vec!["country".into()];

    let second = 1_000_000;
    let monitor = || {
        SetMonitor::new(second, 0, Some(reference.clone()), Policy::default(), Vec::new())
            .with_segments(vec!["country".into()])
    };
    let mut live = monitor();
    let per_window = 6_000;
    let windows = 12u64;
    for w in 0..windows {
        let shift = if (4..8).contains(&w) { 15.0 } else { 0.0 };
        let rows = segment_rows(1 + w * per_window as u64, per_window, 100 + w, shift, w as i64 * second);
        live.add(&rows);
    }
    let mut closed = live.close_due(i64::MAX);
    closed.extend(live.close_due(i64::MAX));
    let base: Vec<_> = closed.iter().filter(|w| w.width() == second).cloned().collect();
    let statuses = |segment: Option<&str>| -> Vec<Status> {
        base.iter()
            .filter(|w| w.segment.as_deref() == segment)
            .map(|w| w.features["amount"].status)
            .collect()
    };
    let fr = statuses(Some("FR"));
    assert_eq!(fr.len(), windows as usize);
    assert_eq!(fr[3], Status::Ok, "{fr:?}");
    assert_eq!(fr[5], Status::Drift, "FR drifts from its second shifted window: {fr:?}");
    assert_eq!(fr[11], Status::Ok, "and clears: {fr:?}");
    for segment in [None, Some("DE"), Some("US")] {
        let s = statuses(segment);
        assert_eq!(s.len(), windows as usize, "{segment:?}");
        assert!(s.iter().all(|s| *s == Status::Ok), "{segment:?}: {s:?}");
    }
    let whole_psi = base
        .iter()
        .filter(|w| w.segment.is_none())
        .filter_map(|w| w.features["amount"].scores.get(&Metric::Psi).copied())
        .fold(0.0, f64::max);
    assert!(whole_psi < 0.1, "the whole looks fine: PSI {whole_psi}");
    let (_, fr_monitor) = live.segments().find(|(s, _)| *s == "FR").unwrap();
    assert_eq!(fr_monitor.statuses()["amount"].status, Status::Ok);
    assert_eq!(live.segments().count(), 3);

    // Stored and read back: the store's series per segment, Parquet under segment=<value>/.
    let dir = tempfile::tempdir().unwrap();
    let store = sluice::store::embedded::Embedded::open(&dir.path().join("store.redb")).unwrap();
    let sink = sluice::targets::windows::WindowSink::new(store, "p:tx:v1".into(), "tx", 1, dir.path(), second);
    sink.write(&closed).await.unwrap();
    let fr_file = dir
        .path()
        .join("_monitor/tx/v1/segment=FR/window=1s/date=1970-01-01")
        .join(format!("{:020}.parquet", 5 * second));
    let reader = sluice_tests::live::first_batch(std::fs::File::open(&fr_file).unwrap());
    let segment = reader.column_by_name("segment").expect("a segment column");
    let segment = segment.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
    assert!(segment.iter().all(|s| s == Some("FR")));
    let segments: Vec<String> = live.segments().map(|(s, _)| s.clone()).collect();
    let restored = sink.restore(&live.widths(), &segments).await.unwrap();
    assert_eq!(restored.len(), closed.len(), "every window of every segment once");
    let mut again = monitor();
    again.resume(restored, 0);
    for (segment, child) in again.segments() {
        let before = live.segments().find(|(s, _)| *s == segment).unwrap().1;
        assert_eq!(
            child.closed(second).unwrap().len(),
            before.closed(second).unwrap().len(),
            "{segment}"
        );
        assert_eq!(child.statuses()["amount"].status, before.statuses()["amount"].status);
    }
    assert_eq!(again.closed(second).unwrap().len(), live.closed(second).unwrap().len());
}
