//! The plugin runtime against real components: limits as pairs (within / over), the host
//! surviving misbehaving plugins, per-event isolation, hot swap under concurrent calls,
//! rollback, the contract check and the artifact cache.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::event::{Batch, Event, Value};
use sluice::plugin::{FailureKind, Limits, MemoryLookup, NoLookup, PluginEngine, PluginError, Registry};
use sluice_tests::*;

fn registry() -> Registry {
    Registry::new(engine(), 4)
}

fn simple_batch(modes: &[&str]) -> Batch {
    Batch {
        fields: vec!["mode".into(), "n".into()],
        events: modes
            .iter()
            .enumerate()
            .map(|(i, m)| Event {
                key: format!("k{i}"),
                time: i as i64,
                values: vec![text(m), Value::Integer(i as i64)],
            })
            .collect(),
    }
}

fn currency_config() -> Vec<(String, String)> {
    vec![("rates".into(), RATES.into())]
}

#[test]
fn currency_converts_amounts_and_fails_only_the_unknown_currency() {
    let registry = registry();
    registry
        .deploy("currency", &bytes(&rust_plugin("currency")), None)
        .unwrap();
    let handle = registry
        .handle("currency", currency_config(), Limits::default(), Arc::new(NoLookup))
        .unwrap();
    let batch = transactions(&[
        (1, "u1", Value::Float(10.0), text("EUR"), "m1"),
        (2, "u2", Value::Integer(3), text("XYZ"), "m2"),
        (3, "u3", Value::Null, text("USD"), "m3"),
    ]);
    let out = handle.process(&batch);
    assert_eq!(out.outcomes.len(), 3);
    let first = &out.outcomes[0].as_ref().unwrap()[0];
    assert_eq!(field(&out.fields, first, "amount_usd"), &Value::Float(10.0 * 1.08));
    assert_eq!(field(&out.fields, first, "currency"), &text("EUR"));
    // Fields the plugin does not read are not sent to it, and kept in the output.
    assert_eq!(field(&out.fields, first, "merchant"), &text("m1"));
    assert_eq!(field(&out.fields, first, "transaction_id"), &Value::Integer(1));
    assert_eq!(
        out.fields,
        [
            "transaction_id",
            "user_id",
            "amount",
            "currency",
            "merchant",
            "amount_usd"
        ]
    );
    assert_eq!(first.key, "u1");
    let failure = out.outcomes[1].as_ref().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Rejected);
    assert_eq!(failure.reason, "unknown currency \"XYZ\"");
    let third = &out.outcomes[2].as_ref().unwrap()[0];
    assert_eq!(field(&out.fields, third, "amount_usd"), &Value::Null);
    assert_eq!(out.version.name.as_str(), "currency");
}

#[test]
fn a_bad_configuration_is_refused_when_the_step_is_built() {
    let registry = registry();
    registry
        .deploy("currency", &bytes(&rust_plugin("currency")), None)
        .unwrap();
    let err = registry
        .handle("currency", vec![], Limits::default(), Arc::new(NoLookup))
        .err()
        .unwrap();
    assert!(err.to_string().contains("config key \"rates\" is required"), "{err}");
    let bad = vec![("rates".to_string(), "[1,2]".to_string())];
    let err = registry
        .handle("currency", bad, Limits::default(), Arc::new(NoLookup))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("config key \"rates\" must be a JSON object"),
        "{err}"
    );
}

#[test]
fn deadline_within_limit_works_and_an_endless_loop_fails_only_its_event() {
    let registry = registry();
    registry.deploy("spin", &bytes(&rust_plugin("bad-loop")), None).unwrap();
    let limits = Limits {
        call_deadline: Duration::from_millis(200),
        ..Limits::default()
    };
    let handle = registry.handle("spin", vec![], limits, Arc::new(NoLookup)).unwrap();
    let ok = handle.process(&simple_batch(&["fast", "fast"]));
    assert!(ok.outcomes.iter().all(|o| o.is_ok()));
    let started = std::time::Instant::now();
    let out = handle.process(&simple_batch(&["fast", "loop", "fast"]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline must stop the loop"
    );
    assert!(out.outcomes[0].is_ok() && out.outcomes[2].is_ok());
    let failure = out.outcomes[1].as_ref().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Timeout);
    assert!(failure.reason.starts_with("plugin spin@"), "{}", failure.reason);
    // The handle keeps working after the timeout.
    assert!(handle.process(&simple_batch(&["fast"])).outcomes[0].is_ok());
}

#[test]
fn memory_within_the_cap_works_and_above_it_fails_only_its_event() {
    let registry = registry();
    registry
        .deploy("hog", &bytes(&rust_plugin("bad-memory")), None)
        .unwrap();
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let handle = registry.handle("hog", vec![], limits, Arc::new(NoLookup)).unwrap();
    let batch = |mbs: &[i64]| hog_batch("megabytes", mbs);
    assert!(handle.process(&batch(&[8, 16])).outcomes.iter().all(|o| o.is_ok()));
    let out = handle.process(&batch(&[1, 200, 2]));
    assert!(out.outcomes[0].is_ok() && out.outcomes[2].is_ok());
    let failure = out.outcomes[1].as_ref().unwrap_err();
    assert_eq!(failure.kind, FailureKind::OutOfMemory, "{}", failure.reason);
    assert!(failure.reason.contains("out of memory"), "{}", failure.reason);
}

#[test]
fn a_panic_fails_only_its_event_with_the_panic_message_and_the_host_goes_on() {
    let registry = registry();
    registry
        .deploy("panicky", &bytes(&rust_plugin("bad-panic")), None)
        .unwrap();
    let handle = registry
        .handle("panicky", vec![], Limits::default(), Arc::new(NoLookup))
        .unwrap();
    for _ in 0..3 {
        let out = handle.process(&simple_batch(&["ok", "panic", "ok", "ok"]));
        assert_eq!(out.outcomes.len(), 4);
        assert!(out.outcomes[0].is_ok() && out.outcomes[2].is_ok() && out.outcomes[3].is_ok());
        let failure = out.outcomes[1].as_ref().unwrap_err();
        assert_eq!(failure.kind, FailureKind::Trap);
        assert!(failure.reason.contains("boom on event k1"), "{}", failure.reason);
    }
}

#[test]
fn init_errors_refuse_the_step_with_the_plugins_message() {
    let registry = registry();
    registry
        .deploy("panicky", &bytes(&rust_plugin("bad-panic")), None)
        .unwrap();
    let config = vec![("fail_init".to_string(), "1".to_string())];
    let err = registry
        .handle("panicky", config, Limits::default(), Arc::new(NoLookup))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("init refused the configuration: init refused: fail_init is set"),
        "{err}"
    );
}

#[test]
fn batch_size_within_limit_is_one_call_and_above_it_is_split_or_refused() {
    let registry = registry();
    registry
        .deploy("currency", &bytes(&rust_plugin("currency")), None)
        .unwrap();
    let limits = Limits {
        batch_bytes: 4096,
        ..Limits::default()
    };
    let handle = registry
        .handle("currency", currency_config(), limits, Arc::new(NoLookup))
        .unwrap();
    let rows: Vec<_> = (0..200)
        .map(|i| (i, "u", Value::Float(1.0), text("USD"), "m"))
        .collect();
    let small = transactions(&rows[..10]);
    let before = handle.calls();
    let out = handle.process(&small);
    assert_eq!(out.outcomes.len(), 10);
    assert_eq!(handle.calls() - before, 1, "a batch within the limit is one call");
    let batch = transactions(&rows);
    let before = handle.calls();
    let out = handle.process(&batch);
    assert_eq!(out.outcomes.len(), 200);
    assert!(
        out.outcomes.iter().all(|o| o.is_ok()),
        "a large batch is split, not failed"
    );
    // Halved until each part fits: 200 events of ~40 bytes in 4,096-byte parts.
    let calls = handle.calls() - before;
    assert!((2..=16).contains(&calls), "split into {calls} calls");
    for (i, outcome) in out.outcomes.iter().enumerate() {
        assert_eq!(
            outcome.as_ref().unwrap()[0].time,
            batch.events[i].time,
            "outcome {i} is its own event's, in input order"
        );
    }
    let huge = "m".repeat(10_000);
    let out = handle.process(&transactions(&[
        (1, "u", Value::Float(1.0), text("USD"), &huge),
        (2, "u", Value::Float(2.0), text("USD"), "m"),
    ]));
    let failure = out.outcomes[0].as_ref().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Oversize);
    assert!(out.outcomes[1].is_ok());
}

fn hog_batch(field: &str, values: &[i64]) -> Batch {
    Batch {
        fields: vec![field.into()],
        events: values
            .iter()
            .map(|v| Event {
                key: "k".into(),
                time: 0,
                values: vec![Value::Integer(*v)],
            })
            .collect(),
    }
}

#[test]
fn output_within_limit_passes_and_above_it_fails_only_the_culprit() {
    let registry = registry();
    registry
        .deploy("hog", &bytes(&rust_plugin("bad-memory")), None)
        .unwrap();
    let limits = Limits {
        output_bytes: 64 * 1024,
        outputs_per_event: 10,
        ..Limits::default()
    };
    let handle = registry.handle("hog", vec![], limits, Arc::new(NoLookup)).unwrap();
    let out = handle.process(&hog_batch("blob_kb", &[1, 100, 2]));
    assert!(out.outcomes[0].is_ok() && out.outcomes[2].is_ok());
    let failure = out.outcomes[1].as_ref().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Oversize);
    assert!(
        failure.reason.contains("above the limit of 65536 bytes"),
        "{}",
        failure.reason
    );
    let out = handle.process(&hog_batch("copies", &[10, 11, 3]));
    assert_eq!(out.outcomes[0].as_ref().unwrap().len(), 10);
    assert_eq!(out.outcomes[2].as_ref().unwrap().len(), 3);
    assert!(out.outcomes[1]
        .as_ref()
        .unwrap_err()
        .reason
        .contains("emitted 11 events for one input"));
}

#[test]
fn a_plugin_for_another_contract_version_is_refused_naming_both_versions() {
    let registry = registry();
    let err = registry
        .deploy("old", &bytes(&rust_plugin("bad-version")), None)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PluginError::Contract(_)), "{text}");
    assert!(
        text.contains("sluice:plugin@0.2.0") && text.contains("sluice:plugin@0.1.0"),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
}

#[test]
fn a_core_module_or_garbage_is_refused_with_what_it_is() {
    let registry = registry();
    let module = b"\0asm\x01\0\0\0".to_vec();
    let err = registry.deploy("core", &module, None).unwrap_err();
    assert!(
        err.to_string().contains("core WebAssembly module, not a component"),
        "{err}"
    );
    let err = registry.deploy("text", b"print('hi')", None).unwrap_err();
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");
}

#[test]
fn rollback_restores_the_previous_version_and_deploying_the_same_bytes_changes_nothing() {
    let registry = registry();
    let v1 = registry
        .deploy("p", &bytes(&rust_plugin("bad-panic")), Some("alice"))
        .unwrap();
    let again = registry.deploy("p", &bytes(&rust_plugin("bad-panic")), None).unwrap();
    assert!(again.unchanged);
    let handle = registry
        .handle("p", currency_config(), Limits::default(), Arc::new(NoLookup))
        .unwrap();
    let v2 = registry.deploy("p", &bytes(&rust_plugin("risk")), Some("bob")).unwrap();
    assert_eq!(v2.previous.as_ref().unwrap().hash, v1.version.hash);
    assert_eq!(handle.active_version().hash, v2.version.hash);
    let out = handle.process(&transactions(&[(1, "u", Value::Float(1.0), text("USD"), "m")]));
    assert!(out.fields.contains(&"merchant_risk".to_string()));
    let back = registry.rollback("p").unwrap();
    assert_eq!(back.hash, v1.version.hash);
    assert_eq!(back.deployed_by.as_deref(), Some("alice"));
    let out = handle.process(&transactions(&[(1, "u", Value::Float(1.0), text("USD"), "m")]));
    assert_eq!(out.version.hash, v1.version.hash);
    assert!(!out.fields.contains(&"merchant_risk".to_string()));
    assert!(registry.rollback("p").is_err(), "no version before the first");
    let versions = registry.versions("p").unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions[0].1 && !versions[1].1, "the first version is active again");
    assert!(registry.activate("p", v2.version.version()).is_ok());
    assert!(
        matches!(registry.remove("p"), Err(PluginError::Conflict(_))),
        "in use by a handle"
    );
    drop(handle);
    registry.remove("p").unwrap();
    assert!(matches!(registry.versions("p"), Err(PluginError::NotFound(_))));
}

#[test]
fn a_deploy_whose_init_refuses_a_users_configuration_is_refused_and_the_old_version_stays() {
    let registry = registry();
    registry.deploy("p", &bytes(&rust_plugin("risk")), None).unwrap();
    let handle = registry
        .handle("p", vec![], Limits::default(), Arc::new(NoLookup))
        .unwrap();
    let before = handle.active_version();
    let err = registry
        .deploy("p", &bytes(&rust_plugin("currency")), None)
        .unwrap_err();
    assert!(
        err.to_string().contains("deploy refused") && err.to_string().contains("rates"),
        "{err}"
    );
    assert!(Arc::ptr_eq(&handle.active_version(), &before));
}

#[test]
fn hot_swap_under_concurrent_calls_answers_every_event_exactly_once_on_one_version() {
    let registry = Arc::new(registry());
    let currency = bytes(&rust_plugin("currency"));
    let risk = bytes(&rust_plugin("risk"));
    let first = registry.deploy("swap", &currency, None).unwrap().version;
    let handle = registry
        .handle("swap", currency_config(), Limits::default(), Arc::new(NoLookup))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let mut answered = 0usize;
                let mut versions = std::collections::HashSet::new();
                for b in 0..150 {
                    let rows: Vec<_> = (0..64)
                        .map(|i| (w * 1_000_000 + b * 1000 + i, "u", Value::Float(2.0), text("EUR"), "m"))
                        .collect();
                    let out = handle.process(&transactions(&rows));
                    assert_eq!(out.outcomes.len(), 64);
                    let is_currency = out.fields.contains(&"amount_usd".to_string());
                    let is_risk = out.fields.contains(&"merchant_risk".to_string());
                    assert!(is_currency != is_risk, "one version per batch: {:?}", out.fields);
                    for (i, outcome) in out.outcomes.iter().enumerate() {
                        let events = outcome.as_ref().expect("no event fails during a swap");
                        assert_eq!(events.len(), 1);
                        assert_eq!(
                            field(&out.fields, &events[0], "transaction_id"),
                            &Value::Integer(w * 1_000_000 + b * 1000 + i as i64)
                        );
                        answered += 1;
                    }
                    versions.insert(out.version.hash.clone());
                }
                (answered, versions)
            })
        })
        .collect();
    let swapper = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) {
                let next = if swaps % 2 == 0 { &risk } else { &currency };
                registry.deploy("swap", next, None).unwrap();
                swaps += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            swaps
        })
    };
    let mut total = 0;
    let mut seen = std::collections::HashSet::new();
    for w in workers {
        let (answered, versions) = w.join().unwrap();
        total += answered;
        seen.extend(versions);
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert_eq!(total, 3 * 150 * 64, "every event answered exactly once");
    assert!(swaps >= 2, "swaps happened while events flowed ({swaps})");
    assert!(seen.contains(&first.hash), "batches ran on the first version");
    assert_eq!(seen.len(), 2, "and on the second");
}

#[test]
fn risk_enriches_with_one_lookup_per_batch_and_falls_back_to_its_table() {
    let registry = registry();
    registry.deploy("risk", &bytes(&rust_plugin("risk")), None).unwrap();
    let store = Arc::new(MemoryLookup::default());
    store.put("merchants", "m1", vec![("risk_score".into(), Value::Float(0.9))]);
    let config = vec![
        ("lookup_set".to_string(), "merchants".to_string()),
        ("scores".to_string(), r#"{"m2":0.2}"#.to_string()),
    ];
    let handle = registry.handle("risk", config, Limits::default(), store).unwrap();
    let out = handle.process(&transactions(&[
        (1, "u", Value::Float(1.0), text("USD"), "m1"),
        (2, "u", Value::Float(1.0), text("USD"), "m2"),
        (3, "u", Value::Float(1.0), text("USD"), "m3"),
    ]));
    let risk: Vec<_> = out
        .outcomes
        .iter()
        .map(|o| field(&out.fields, &o.as_ref().unwrap()[0], "merchant_risk").clone())
        .collect();
    assert_eq!(risk, [Value::Float(0.9), Value::Float(0.2), Value::Float(0.5)]);
    // A lookup of an unknown feature set fails the batch's events with the store's message.
    let config = vec![("lookup_set".to_string(), "nope".to_string())];
    let handle = registry
        .handle("risk", config, Limits::default(), Arc::new(MemoryLookup::default()))
        .unwrap();
    let out = handle.process(&transactions(&[(1, "u", Value::Float(1.0), text("USD"), "m1")]));
    let failure = out.outcomes[0].as_ref().unwrap_err();
    assert!(
        failure.reason.contains("unknown feature set \"nope\""),
        "{}",
        failure.reason
    );
}

#[test]
fn the_artifact_cache_is_used_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let component = bytes(&rust_plugin("currency"));
    let first = PluginEngine::new(Some(dir.path().to_path_buf()))
        .unwrap()
        .compile(&component)
        .unwrap();
    assert!(!first.cached);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one artifact written");
    // A new engine (a restarted host) loads the artifact instead of compiling.
    let second = PluginEngine::new(Some(dir.path().to_path_buf()))
        .unwrap()
        .compile(&component)
        .unwrap();
    assert!(second.cached);
    assert_eq!(second.hash, first.hash);
    // A corrupt artifact is recompiled, not trusted. (Replaced by rename, as the engine
    // itself writes: the loaded artifact is memory-mapped and must not change under it.)
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let path = f.unwrap().path();
        std::fs::write(dir.path().join("tmp"), b"garbage").unwrap();
        std::fs::rename(dir.path().join("tmp"), path).unwrap();
    }
    let third = PluginEngine::new(Some(dir.path().to_path_buf()))
        .unwrap()
        .compile(&component)
        .unwrap();
    assert!(!third.cached);
}

#[test]
fn a_plugin_reaches_no_environment_files_network_or_clock() {
    let registry = registry();
    registry
        .deploy("sandbox", &bytes(&guest_plugin("sandbox-py")), None)
        .unwrap();
    let handle = registry
        .handle("sandbox", vec![], Limits::default(), Arc::new(NoLookup))
        .unwrap();
    let out = handle.process(&simple_batch(&["probe"]));
    let event = &out.outcomes[0].as_ref().unwrap()[0];
    assert_eq!(
        field(&out.fields, event, "env"),
        &Value::Integer(0),
        "no environment variables"
    );
    for what in ["file", "listdir", "network"] {
        let Value::Text(answer) = field(&out.fields, event, what) else {
            panic!("{what}: not text")
        };
        assert!(answer.starts_with("refused"), "{what}: {answer}");
    }
    assert_eq!(
        field(&out.fields, event, "clock"),
        &Value::Float(0.0),
        "the clock reads zero unless granted"
    );
    // Granting the clock gives the real time.
    let limits = Limits {
        grant_clock: true,
        ..Limits::default()
    };
    let handle = registry.handle("sandbox", vec![], limits, Arc::new(NoLookup)).unwrap();
    let out = handle.process(&simple_batch(&["probe"]));
    let Value::Float(now) = field(&out.fields, &out.outcomes[0].as_ref().unwrap()[0], "clock") else {
        panic!()
    };
    assert!(*now > 1.7e9, "real clock when granted: {now}");
}

#[test]
fn lookup_keys_within_the_limit_are_answered_and_above_it_refused() {
    let registry = registry();
    registry.deploy("risk", &bytes(&rust_plugin("risk")), None).unwrap();
    let store = Arc::new(MemoryLookup::default());
    store.put("merchants", "m1", vec![("risk_score".into(), Value::Float(0.9))]);
    let limits = Limits {
        lookup_keys_per_call: 2,
        ..Limits::default()
    };
    let config = vec![("lookup_set".to_string(), "merchants".to_string())];
    let handle = registry.handle("risk", config, limits, store).unwrap();
    let rows = |merchants: &[&'static str]| -> Vec<_> {
        merchants
            .iter()
            .enumerate()
            .map(|(i, m)| (i as i64, "u", Value::Float(1.0), text("USD"), *m))
            .collect()
    };
    let out = handle.process(&transactions(&rows(&["m1", "m2", "m1"])));
    assert!(out.outcomes.iter().all(|o| o.is_ok()), "two distinct keys: one lookup");
    let out = handle.process(&transactions(&rows(&["m1", "m2", "m3"])));
    let failure = out.outcomes[0].as_ref().unwrap_err();
    assert!(
        failure
            .reason
            .contains("lookup of 3 keys refused: at most 2 keys per call"),
        "{}",
        failure.reason
    );
}

#[test]
fn a_javascript_plugin_reads_a_frozen_clock_unless_granted() {
    let registry = registry();
    registry
        .deploy("sandbox-js", &bytes(&guest_plugin("sandbox-js")), None)
        .unwrap();
    let clock = |limits: Limits| {
        let handle = registry
            .handle("sandbox-js", vec![], limits, Arc::new(NoLookup))
            .unwrap();
        let out = handle.process(&simple_batch(&["probe"]));
        let event = out.outcomes[0].as_ref().unwrap().first().cloned().unwrap();
        field(&out.fields, &event, "clock").clone()
    };
    assert_eq!(
        clock(Limits::default()),
        Value::Float(0.0),
        "the clock reads zero unless granted"
    );
    let granted = clock(Limits {
        grant_clock: true,
        ..Limits::default()
    });
    assert!(
        matches!(granted, Value::Float(t) if t > 1.7e9),
        "real clock when granted: {granted:?}"
    );
}
