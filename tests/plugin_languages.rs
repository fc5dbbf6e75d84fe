//! The `currency` plugin written in Rust, Python and JavaScript gives identical outputs and
//! identical per-event errors on the same input, and refuses the same bad configurations.

use std::sync::Arc;

use sluice::event::Value;
use sluice::plugin::{FailureKind, Limits, NoLookup, Registry};
use sluice_tests::*;

fn plugins() -> Vec<(&'static str, std::path::PathBuf)> {
    vec![
        ("rust", rust_plugin("currency")),
        ("python", guest_plugin("currency-py")),
        ("javascript", guest_plugin("currency-js")),
    ]
}

type Outcome = Result<Vec<Value>, (FailureKind, String)>;

fn run_all(rows: &[(i64, &str, Value, Value, &str)]) -> Vec<(&'static str, Vec<String>, Vec<Outcome>)> {
    let registry = Registry::new(engine(), 2);
    plugins()
        .into_iter()
        .map(|(language, path)| {
            registry
                .deploy(language, &bytes(&path), None)
                .unwrap_or_else(|e| panic!("{language}: {e}"));
            let config = vec![("rates".to_string(), RATES.to_string())];
            let handle = registry
                .handle(language, config, Limits::default(), Arc::new(NoLookup))
                .unwrap();
            let out = handle.process(&transactions(rows));
            let outcomes = out
                .outcomes
                .into_iter()
                .map(|o| match o {
                    Ok(mut events) => {
                        assert_eq!(events.len(), 1, "{language}: one output per input");
                        Ok(events.remove(0).values)
                    }
                    Err(f) => Err((f.kind, f.reason)),
                })
                .collect();
            (language, out.fields, outcomes)
        })
        .collect()
}

#[test]
fn rust_python_and_javascript_agree_on_values_and_errors() {
    let rows = [
        (1, "u1", Value::Float(12.34), text("EUR"), "m1"),
        (2, "u2", Value::Integer(7), text("USD"), "m2"),
        (3, "u3", Value::Null, text("GBP"), "m3"),
        (4, "u4", Value::Float(1.0), Value::Null, "m4"),
        (5, "u5", Value::Float(1.0), Value::Integer(3), "m5"),
        (6, "u6", Value::Float(1.0), text("XYZ"), "m6"),
        (7, "u7", text("ten"), text("USD"), "m7"),
        (8, "u8", Value::Float(123456.789), text("JPY"), "m8"),
        (9, "u9", Value::Float(5.0), text("eur"), "m9"),
        (10, "u10", Value::Integer(9_007_199_254_740_993), text("GBP"), "m10"),
        (11, "u11", Value::Float(-0.1), text("EUR"), "m11"),
    ];
    let results = run_all(&rows);
    let (_, rust_fields, rust) = &results[0];
    assert_eq!(rust[0].as_ref().unwrap().last(), Some(&Value::Float(12.34 * 1.08)));
    assert_eq!(
        rust[3],
        Err((FailureKind::Rejected, "missing field \"currency\"".into()))
    );
    assert_eq!(
        rust[4],
        Err((FailureKind::Rejected, "field \"currency\" must be text".into()))
    );
    assert_eq!(rust[5], Err((FailureKind::Rejected, "unknown currency \"XYZ\"".into())));
    assert_eq!(
        rust[6],
        Err((FailureKind::Rejected, "field \"amount\" must be a number".into()))
    );
    assert_eq!(rust[8], Err((FailureKind::Rejected, "unknown currency \"eur\"".into())));
    for (language, fields, outcomes) in &results[1..] {
        assert_eq!(fields, rust_fields, "{language}: output fields");
        for (i, (got, want)) in outcomes.iter().zip(rust).enumerate() {
            assert_eq!(got, want, "{language} differs from rust on row {}", i + 1);
        }
    }
}

#[test]
fn every_language_refuses_a_missing_or_malformed_rate_table_the_same_way() {
    let registry = Registry::new(engine(), 2);
    for (language, path) in plugins() {
        registry.deploy(language, &bytes(&path), None).unwrap();
        let err = registry
            .handle(language, vec![], Limits::default(), Arc::new(NoLookup))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.ends_with("init refused the configuration: config key \"rates\" is required: a JSON object of currency code to USD rate"),
            "{language}: {err}"
        );
        let bad = vec![("rates".to_string(), "[1, 2]".to_string())];
        let err = registry
            .handle(language, bad, Limits::default(), Arc::new(NoLookup))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("init refused the configuration: config key \"rates\" must be a JSON object of currency code to USD rate: "),
            "{language}: {err}"
        );
    }
}

/// Output events as (key, time, sorted named values), errors as their message.
type Named = Result<Vec<(String, i64, Vec<(String, Value)>)>, String>;

fn named(out: sluice::plugin::BatchOutput) -> Vec<Named> {
    out.outcomes
        .into_iter()
        .map(|o| {
            o.map(|events| {
                events
                    .into_iter()
                    .map(|e| {
                        let mut values: Vec<_> = out.fields.iter().cloned().zip(e.values).collect();
                        values.sort_by(|a, b| a.0.cmp(&b.0));
                        (e.key, e.time, values)
                    })
                    .collect()
            })
            .map_err(|f| f.reason)
        })
        .collect()
}

#[test]
fn the_three_sdks_agree_on_map_filter_flat_map_errors_inheritance_and_rekeying() {
    use sluice::event::{Batch, Event};
    let modes = ["keep", "drop", "split", "fail", "add", "clear", "rekey"];
    let batch = Batch {
        fields: ["mode", "note", "big", "doc"].map(String::from).to_vec(),
        events: modes
            .iter()
            .enumerate()
            .map(|(i, m)| Event {
                key: format!("k{i}"),
                time: 1000 + i as i64,
                values: vec![
                    text(m),
                    text("hello"),
                    Value::Integer((1 << 60) + 1),
                    Value::Json(r#"{"a": [1, 2.50]}"#.into()),
                ],
            })
            .collect(),
    };
    let registry = Registry::new(engine(), 2);
    let mut results = Vec::new();
    for (language, path) in [
        ("rust", rust_plugin("modes")),
        ("python", guest_plugin("modes-py")),
        ("javascript", guest_plugin("modes-js")),
    ] {
        registry.deploy(language, &bytes(&path), None).unwrap();
        let handle = registry
            .handle(language, vec![], Limits::default(), Arc::new(NoLookup))
            .unwrap();
        results.push((language, named(handle.process(&batch))));
    }
    let rust = &results[0].1;
    let input = |i: usize| -> Vec<(String, Value)> {
        vec![
            ("big".into(), Value::Integer((1 << 60) + 1)),
            ("doc".into(), Value::Json(r#"{"a": [1, 2.50]}"#.into())),
            ("mode".into(), text(modes[i])),
            ("note".into(), text("hello")),
        ]
    };
    let with = |i: usize, extra: &[(&str, Value)]| {
        let mut v = input(i);
        v.extend(extra.iter().map(|(n, x)| (n.to_string(), x.clone())));
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let no_new = [("extra", Value::Null), ("part", Value::Null)];
    assert_eq!(
        rust[0],
        Ok(vec![("k0".into(), 1000, with(0, &no_new))]),
        "keep: unchanged, json byte-exact"
    );
    assert_eq!(rust[1], Ok(vec![]), "drop");
    assert_eq!(
        rust[2],
        Ok(vec![
            (
                "k2".into(),
                1002,
                with(2, &[("extra", Value::Null), ("part", Value::Integer(1))])
            ),
            (
                "k2".into(),
                1002,
                with(2, &[("extra", Value::Null), ("part", Value::Integer(2))])
            ),
        ]),
        "split"
    );
    assert_eq!(rust[3], Err("failed on purpose".into()));
    assert_eq!(
        rust[4],
        Ok(vec![(
            "k4".into(),
            1004,
            with(4, &[("extra", text("yes")), ("part", Value::Null)])
        )]),
        "add inherits"
    );
    let mut cleared = with(5, &no_new);
    cleared.iter_mut().find(|(n, _)| n == "note").unwrap().1 = Value::Null;
    assert_eq!(rust[5], Ok(vec![("k5".into(), 1005, cleared)]), "clear");
    assert_eq!(rust[6], Ok(vec![("k6!".into(), 1007, with(6, &no_new))]), "rekey");
    for (language, got) in &results[1..] {
        assert_eq!(got, rust, "{language} differs from rust");
    }
}
